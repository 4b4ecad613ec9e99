package middleware

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/wechat-login/caddy-wechat-login/middleware/store"
	"github.com/wechat-login/caddy-wechat-login/wechat"
)

// pushBudget bounds the work done for one push, counted from its request's
// arrival. WeChat gives up after five seconds and shows the user "this
// account cannot serve you right now"; an honest 503 before then is better,
// and lets its retry succeed.
const pushBudget = 4 * time.Second

// dedupeTTL outlives WeChat's retries (three attempts, five seconds apart)
// and the push freshness window.
const dedupeTTL = 15 * time.Minute

// handleCallback serves WeChat's server URL: the GET verification handshake
// and POSTed pushes.
func (m *Middleware) handleCallback(w http.ResponseWriter, r *http.Request, next http.Handler) {
	switch r.Method {
	case http.MethodGet:
		m.handleVerify(w, r)
	case http.MethodPost:
		m.handlePush(w, r, next)
	default:
		methodNotAllowed(w, "GET, POST")
	}
}

// pushVerifier checks requests against the account's configuration.
func (m *Middleware) pushVerifier() *wechat.PushVerifier {
	return &wechat.PushVerifier{
		Token:          m.cfg.PushToken,
		Crypter:        m.crypter,
		AllowPlaintext: m.cfg.AllowPlaintextPushes,
		MaxAge:         m.cfg.PushMaxAge,
		Now:            m.cfg.Now,
	}
}

// handleVerify answers WeChat's URL verification by echoing echostr.
func (m *Middleware) handleVerify(w http.ResponseWriter, r *http.Request) {
	echo, err := m.pushVerifier().Handshake(r.URL.Query())
	if err != nil {
		m.refusePush(w, err)
		return
	}
	writeText(w, http.StatusOK, echo)
}

// refusePush answers a request the verifier refused and counts it.
func (m *Middleware) refusePush(w http.ResponseWriter, err error) {
	var pe *wechat.PushError
	if !errors.As(err, &pe) {
		writeText(w, http.StatusBadRequest, "bad push")
		return
	}
	if pe.Kind != "" {
		m.metrics.PushRejected(pe.Kind)
	}
	m.pushMisconfigured(pe)
	writeText(w, pe.Status, pe.Reason)
}

// pushResult is what processing a push decided to answer.
type pushResult struct {
	reply   string // chat text for a passive reply; empty means "success"
	pass    bool   // hand the push to the wrapped handler
	failure error  // could not record the outcome: let WeChat retry
}

// handlePush processes a push on the request's own goroutine, under a
// context that ends pushBudget after the request arrived (or when WeChat
// hangs up). Every store and WeChat call takes that context and gives up
// when it ends; the push is then answered 503, and once the handler has
// returned nothing of the push runs any more, but for a store call already
// under way when the context ended, which the store may still apply (see
// deadlineStore). WeChat's retry redoes what did not happen: it is answered
// as a duplicate only once the first attempt finished (see confirmScene).
func (m *Middleware) handlePush(w http.ResponseWriter, r *http.Request, next http.Handler) {
	ctx, cancel := context.WithTimeout(r.Context(), pushBudget)
	defer cancel()
	// The verifier caps the body too; this reader also tells the server to
	// close the connection instead of draining an oversized body.
	r.Body = http.MaxBytesReader(w, r.Body, wechat.MaxPushBytes)
	push, err := m.pushVerifier().Verify(r)
	if err != nil {
		m.refusePush(w, err)
		return
	}
	if !push.Encrypted() {
		if status, reason := m.checkPlainReuse(ctx, push); status != 0 {
			writeText(w, status, reason)
			return
		}
	}

	res := m.processPush(ctx, push.Event)
	switch {
	case res.failure != nil:
		m.log.Error("push not processed; WeChat will retry", zap.Error(res.failure))
		writeText(w, http.StatusServiceUnavailable, "temporarily unavailable")
	case res.pass && next != nil && m.cfg.PassThroughPushes:
		r.Body = io.NopCloser(bytes.NewReader(push.Body))
		r.ContentLength = int64(len(push.Body))
		next.ServeHTTP(w, r)
	case res.reply == "":
		writeText(w, http.StatusOK, "success")
	default:
		body, err := push.ReplyText(res.reply, m.cfg.Now())
		if err != nil {
			m.log.Error("cannot encrypt passive reply", zap.Error(err))
			writeText(w, http.StatusOK, "success")
			return
		}
		w.Header().Set("Content-Type", "application/xml; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
	}
}

// checkPlainReuse binds a plaintext push's signed query to its body. The
// URL signature covers only token, timestamp and nonce, so whoever saw one
// push URL (in an access log, a proxy, a trace) could post any body under
// it while the timestamp is fresh. The first body seen under a signed query
// is remembered: WeChat's retries (same URL, same bytes) go on and are
// answered as the first delivery was; any other body is refused. The
// freshness window makes a query useless after PushMaxAge, so it is
// remembered for a little over twice that (clocks may differ either way).
func (m *Middleware) checkPlainReuse(ctx context.Context, p *wechat.Push) (int, string) {
	key := digestKey("pushurl:", p.Signature+"|"+p.Timestamp+"|"+p.Nonce)
	sum := sha256.Sum256(p.Body)
	ttl := 2*m.cfg.PushMaxAge + time.Minute
	st := m.pushStore()
	for range 2 {
		err := st.Create(ctx, key, sum[:], ttl)
		if err == nil {
			return 0, ""
		}
		if !errors.Is(err, store.ErrExists) {
			m.log.Error("cannot record plaintext push URL; WeChat will retry", zap.Error(err))
			return http.StatusServiceUnavailable, "temporarily unavailable"
		}
		seen, err := st.Get(ctx, key)
		switch {
		case err == nil && bytes.Equal(seen, sum[:]):
			return 0, "" // a retry of the same push
		case err == nil:
			m.metrics.PushRejected("replay")
			m.log.Warn("plaintext push URL reused with another body; refused")
			return http.StatusForbidden, "push URL already used for another body"
		case errors.Is(err, store.ErrNotFound):
			continue // expired between the two calls
		default:
			m.log.Error("cannot check plaintext push URL; WeChat will retry", zap.Error(err))
			return http.StatusServiceUnavailable, "temporarily unavailable"
		}
	}
	return http.StatusServiceUnavailable, "temporarily unavailable"
}

// processPush applies a verified push. Login scans confirm their scene;
// chat codes end or confirm a login, or log in by code; other follows get
// the welcome reply; everything else is acknowledged or passed on.
func (m *Middleware) processPush(ctx context.Context, ev *wechat.Event) pushResult {
	if err := ctx.Err(); err != nil { // the budget ran out while the body was read
		return pushResult{failure: err}
	}
	kind := ev.Kind()
	if ev.MsgType == "text" {
		if res, handled := m.handleChatCode(ctx, ev); handled {
			return res
		}
	}
	scene, ok := ev.LoginScene()
	if kind == wechat.EventSubscribe && !(ok && validSceneID(scene)) && m.cfg.WelcomeReply != "" {
		return pushResult{reply: m.withSiteName(m.cfg.WelcomeReply)}
	}
	if !ok || (kind != wechat.EventSubscribe && kind != wechat.EventScan) {
		return pushResult{pass: true}
	}
	if !validOpenID(ev.FromUserName) {
		m.log.Warn("login scan with a malformed FromUserName ignored")
		return pushResult{}
	}
	if !validSceneID(scene) {
		// A scan of some other parametric code of this account (a poster,
		// a campaign): not ours to answer.
		return pushResult{pass: true}
	}
	return m.confirmScene(ctx, scene, ev, dedupeKey(ev))
}

// validOpenID accepts what WeChat issues: 28 characters of [A-Za-z0-9_-]
// today; a little slack for the future.
func validOpenID(s string) bool {
	if len(s) < 6 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
