package wechattest

import (
	"bytes"
	"io"
	"net/http"
	"time"
)

// Fault is a failure injected into the next calls of a path. Its effects
// apply in order: Delay, then Drop, then Errcode or HTTPStatus. A Fault with
// only a Delay lets the call proceed normally afterwards.
type Fault struct {
	// Errcode answers with WeChat's errcode JSON; Errmsg overrides WeChat's
	// text for the code. The ", rid: ..." suffix is added either way.
	Errcode int
	Errmsg  string
	// HTTPStatus sets the status: of the errcode JSON when Errcode is set
	// (200 otherwise), or of a plain text answer.
	HTTPStatus int
	// Drop closes the connection without an answer.
	Drop bool
	// Delay holds the answer back, or until the client gives up.
	Delay time.Duration
}

// FailNext makes the next n calls of path (for example "/cgi-bin/token")
// fail with f, after any faults already queued for it. n <= 0 clears the
// path's queued faults.
func (p *Platform) FailNext(path string, n int, f Fault) {
	p.knobMu.Lock()
	defer p.knobMu.Unlock()
	if n <= 0 {
		delete(p.faults, path)
		return
	}
	for range n {
		p.faults[path] = append(p.faults[path], f)
	}
}

// SetLatency delays every call of path by d; an empty path means every
// path. d <= 0 removes the delay.
func (p *Platform) SetLatency(path string, d time.Duration) {
	p.knobMu.Lock()
	defer p.knobMu.Unlock()
	if d <= 0 {
		delete(p.latency, path)
		return
	}
	p.latency[path] = d
}

// Calls returns how many requests path has received, faulted ones included.
func (p *Platform) Calls(path string) int {
	p.knobMu.Lock()
	defer p.knobMu.Unlock()
	return p.calls[path]
}

// enter counts a call of path and takes its next queued fault, if any.
func (p *Platform) enter(path string) (Fault, bool) {
	p.knobMu.Lock()
	defer p.knobMu.Unlock()
	p.calls[path]++
	q := p.faults[path]
	if len(q) == 0 {
		return Fault{}, false
	}
	f := q[0]
	if len(q) == 1 {
		delete(p.faults, path)
	} else {
		p.faults[path] = q[1:]
	}
	return f, true
}

func (p *Platform) latencyFor(path string) time.Duration {
	p.knobMu.Lock()
	defer p.knobMu.Unlock()
	return p.latency[""] + p.latency[path]
}

// sleep waits for d or until the client goes away; it reports whether the
// request should still be answered.
func sleep(r *http.Request, d time.Duration) bool {
	// net/http notices a client that went away only once the request body
	// has been read, so read it first: then a delayed POST ends as soon as
	// its client gives up, as it would at WeChat.
	if r.Body != nil && r.Body != http.NoBody {
		b, err := io.ReadAll(io.LimitReader(r.Body, maxBufferedBody))
		if err != nil {
			return false
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// maxBufferedBody bounds what sleep reads ahead; requests to the fake are
// small, and the handlers apply their own, smaller limits.
const maxBufferedBody = 8 << 20

// applyFault applies f and reports whether it answered the request.
func (p *Platform) applyFault(w http.ResponseWriter, r *http.Request, f Fault) bool {
	if f.Delay > 0 && !sleep(r, f.Delay) {
		return true
	}
	switch {
	case f.Drop:
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			_ = conn.Close()
			return true
		}
		// HTTP/2 and recorders cannot hijack; aborting resets the stream.
		panic(http.ErrAbortHandler)
	case f.Errcode != 0:
		status := cmpOr(f.HTTPStatus, http.StatusOK)
		writeJSON(w, status, struct {
			Errcode int    `json:"errcode"`
			Errmsg  string `json:"errmsg"`
		}{f.Errcode, (&apiError{code: f.Errcode, msg: f.Errmsg}).text()})
		return true
	case f.HTTPStatus != 0:
		http.Error(w, http.StatusText(f.HTTPStatus), f.HTTPStatus)
		return true
	}
	return false
}
