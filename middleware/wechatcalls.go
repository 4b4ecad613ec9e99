package middleware

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxObservedBody bounds what instrumentation reads of a WeChat answer; the
// client applies the same cap.
const maxObservedBody = 1 << 20

// observedTransport reports every call to WeChat (which endpoint, its
// outcome, its latency) to the metrics, without changing what the client
// sees. Only the URL path is reported: queries hold secrets and codes.
type observedTransport struct {
	base    http.RoundTripper
	metrics Metrics
}

func (t observedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	call := strings.TrimPrefix(r.URL.Path, "/")
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		t.metrics.WeChatCall(call, "transport_error", time.Since(start))
		return resp, err
	}
	outcome := "http_" + strconv.Itoa(resp.StatusCode)
	// WeChat reports failures inside 200 answers; images (showqrcode) are
	// not inspected.
	if resp.StatusCode == http.StatusOK && !strings.HasPrefix(resp.Header.Get("Content-Type"), "image/") {
		body, rerr := io.ReadAll(io.LimitReader(resp.Body, maxObservedBody+1))
		_ = resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		if rerr != nil {
			// Let the client see the same failure when it reads.
			resp.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), errReader{rerr}))
		}
		outcome = "ok"
		var status struct {
			Errcode *int `json:"errcode"`
		}
		if json.Unmarshal(body, &status) == nil && status.Errcode != nil && *status.Errcode != 0 {
			outcome = "errcode_" + strconv.Itoa(*status.Errcode)
		}
	}
	t.metrics.WeChatCall(call, outcome, time.Since(start))
	return resp, nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// instrumentedClient returns a copy of hc (or of the default client) whose
// calls are reported to the middleware's metrics.
func (m *Middleware) instrumentedClient(hc *http.Client) *http.Client {
	return ObservedClient(hc, m.cfg.Metrics)
}

// ObservedClient returns a copy of hc (nil means a client with a 10 s
// timeout) that reports every call to WeChat to mt: the endpoint path, the
// outcome ("ok", "errcode_N", "http_N", "transport_error") and the latency.
// Adapters that make calls of their own (the Caddy module's access-token
// cache, shared across reloads) use it so that those calls are counted too.
func ObservedClient(hc *http.Client, mt Metrics) *http.Client {
	c := &http.Client{Timeout: 10 * time.Second}
	if hc != nil {
		cp := *hc
		c = &cp
	}
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	if mt == nil {
		mt = nopMetrics{}
	}
	c.Transport = observedTransport{base: base, metrics: mt}
	return c
}
