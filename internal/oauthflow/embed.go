package oauthflow

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/wechat-login/caddy-wechat-login/internal/loginpage"
	"github.com/wechat-login/caddy-wechat-login/internal/session"
	"github.com/wechat-login/caddy-wechat-login/middleware/store"
)

// Website login embedded in the login page (OpenDisplay embedded).
//
// The login page shows WeChat's website-login page in an iframe
// (connect/qrconnect in wxLogin.js's embedded mode, self_redirect=true).
// After the scan WeChat navigates the frame, from its own site, to our
// callback. That navigation is cross-site, so browsers may withhold our
// SameSite cookies from it, and may refuse cookies it tries to set: the
// frame can neither prove which browser started the flow nor start a
// session. The parent page, first-party, does both:
//
//  1. POST {prefix}/oauth/embed (same-origin, from the login page's script)
//     stores a state marked Frame, lists it in the browser's binding cookie
//     as /oauth/start does, and answers the frame's URL.
//  2. The callback in the frame spends the state and the code as usual, with
//     or without the binding cookie, but logs nobody in: it keeps the
//     identity under "oauthframe:<state>" for frameResultTTL with a fresh
//     128-bit token, and its page posts {state, token} to window.parent at
//     this site's exact origin. The page may be framed by this origin only.
//  3. The parent POSTs state and token to {prefix}/oauth/redeem. The session
//     starts only if the browser's binding cookie lists the state and the
//     token matches; the result is taken out of the store, so it is redeemed
//     once.
//
// A frame result is therefore worth nothing without the binding cookie of
// the browser that asked for the frame (a sealed, HttpOnly cookie no page
// can read or forge), and the token, which only the frame's page and its
// parent see. An attacker who lures a victim's browser to a callback with
// the attacker's own code and state gains nothing: the victim's binding
// does not list that state, so the victim is not logged in as the attacker
// (login CSRF), and the result waits for a redemption that only the
// attacker's browser can make.

const (
	// frameResultTTL is how long a frame's result waits for its parent:
	// the parent redeems it at once, retrying a dropped request.
	frameResultTTL = 2 * time.Minute
	// tokenLen is a frame token's length: 128 random bits in hex.
	tokenLen = 32
	// maxFormBytes bounds the bodies of the embed and redeem requests,
	// which carry a next path or a state and a token.
	maxFormBytes = 8 << 10
)

func frameKey(state string) string { return "oauthframe:" + state }

// frameResult is a frame's completed login, waiting for its parent.
type frameResult struct {
	Token     string         `json:"token"`
	ID        session.Record `json:"id"`
	Next      string         `json:"next"`
	ExpiresAt int64          `json:"exp"`
}

// embedAnswer is {prefix}/oauth/embed's answer.
type embedAnswer struct {
	Status    string `json:"status"` // "frame", or "confirmed" for a browser already logged in
	State     string `json:"state,omitempty"`
	FrameURL  string `json:"frame_url,omitempty"`
	ExpiresIn int    `json:"expires_in,omitempty"`
	Redirect  string `json:"redirect,omitempty"`
}

// parseForm reads a small urlencoded POST body into one value per name;
// a name given twice, or a body that is not a form, is an error.
func parseForm(w http.ResponseWriter, r *http.Request, names ...string) (map[string]string, error) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return nil, errors.New("malformed form")
	}
	out := make(map[string]string, len(names))
	for _, n := range names {
		v := r.PostForm[n]
		if len(v) > 1 {
			return nil, errors.New(n + " given more than once")
		}
		if len(v) == 1 {
			out[n] = v[0]
		}
	}
	return out, nil
}

// Embed serves POST {prefix}/oauth/embed with form field next: a new
// website-login state bound to this browser, and the URL of WeChat's
// embedded page for it. The caller protects it from cross-origin requests.
func (f *Flows) Embed(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	if !f.enabled(MethodOpen) {
		writeError(w, http.StatusNotFound, "website login is not enabled on this site")
		return
	}
	form, err := parseForm(w, r, "next")
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var nexts []string
	if v, ok := form["next"]; ok {
		nexts = []string{v}
	}
	next, ok := f.cfg.Redirects.Next(nexts)
	if !ok {
		writeError(w, http.StatusBadRequest, "next is not a path on this site")
		return
	}
	if f.cfg.LoggedIn(r) {
		writeJSON(w, http.StatusOK, embedAnswer{Status: "confirmed", Redirect: next})
		return
	}
	if ok, retry := f.cfg.Limiter.Allow(f.cfg.ClientKey(r)); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(max(1, (retry+time.Second-1)/time.Second))))
		writeError(w, http.StatusTooManyRequests, "too many logins started; wait a moment")
		return
	}
	state := randomState()
	opts := f.cfg.Frame
	opts.English = loginpage.Lang(r) == "en"
	frameURL, err := f.cfg.Website.QRConnectFrameURL(f.redirectURI(r), state, opts)
	if err != nil {
		// Only the Host can make this fail: the options were checked with
		// the configuration.
		f.cfg.Log.Warn("cannot build the WeChat login frame URL", zap.Error(err))
		writeError(w, http.StatusBadRequest, "cannot build the login frame for this host")
		return
	}
	now := f.cfg.Now()
	rec := record{Method: MethodOpen, Next: next, Frame: true, Scope: "snsapi_login", ExpiresAt: now.Add(stateTTL).Unix()}
	raw, err := json.Marshal(rec)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "cannot start the login")
		return
	}
	if err := f.cfg.Store.Create(r.Context(), StateKey(state), raw, stateTTL); err != nil {
		f.cfg.Log.Error("store failure", zap.String("op", "create OAuth state"), zap.Error(err))
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "login temporarily unavailable")
		return
	}
	b, _ := f.bindingOf(r)
	if err := f.setBinding(w, r, b, state, now); err != nil {
		f.cfg.Log.Error("cannot bind the OAuth state", zap.Error(err))
		writeError(w, http.StatusInternalServerError, "cannot start the login")
		return
	}
	f.cfg.Log.Debug("OAuth flow started", zap.String("method", MethodOpen), zap.Bool("frame", true), zap.String("state", state[:8]))
	writeJSON(w, http.StatusOK, embedAnswer{Status: "frame", State: state, FrameURL: frameURL, ExpiresIn: int(stateTTL / time.Second)})
}

// finishFrame keeps the identity of a login completed inside the frame for
// the parent to redeem, and renders the page that hands the parent the
// token. Nothing here depends on cookies the frame's request may lack.
func (f *Flows) finishFrame(w http.ResponseWriter, r *http.Request, state string, rec record, id session.Record) {
	token := randomHex(tokenLen / 2)
	raw, err := json.Marshal(frameResult{Token: token, ID: id, Next: rec.Next, ExpiresAt: f.cfg.Now().Add(frameResultTTL).Unix()})
	if err == nil {
		err = f.cfg.Store.Create(r.Context(), frameKey(state), raw, frameResultTTL)
	}
	if err != nil {
		f.storeFailure(w, r, "keep frame result", err, &rec)
		return
	}
	f.cfg.Log.Debug("website login in a frame awaits its page", zap.String("state", state[:8]))
	o := loginpage.Outcome{Message: loginpage.MsgSuccess, Next: rec.Next, Frame: true, State: state, Token: token, Origin: f.cfg.Origin(r)}
	f.pageDone(w, f.cfg.Page.Outcome(w, r, http.StatusOK, o))
}

// Redeem serves POST {prefix}/oauth/redeem with form fields state and
// token: the login page trades its frame's result for the session. The
// caller protects it from cross-origin requests.
func (f *Flows) Redeem(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	if r.Method != http.MethodPost {
		h.Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	form, err := parseForm(w, r, "state", "token")
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	state, token := form["state"], form["token"]
	if !validState(state) {
		writeError(w, http.StatusBadRequest, "malformed state")
		return
	}
	if len(token) != tokenLen || !validState(token) {
		writeError(w, http.StatusBadRequest, "malformed token")
		return
	}
	if b, _ := f.bindingOf(r); !b.has(state) {
		// Checked before the store is read: another browser learns
		// nothing, not even whether the result exists.
		f.cfg.Log.Warn("frame result redeemed by a browser that did not start it", zap.String("state", state[:8]))
		writeError(w, http.StatusForbidden, "this login was started in another browser")
		return
	}
	ctx := r.Context()
	raw, err := f.cfg.Store.Get(ctx, frameKey(state))
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusGone, "no such login, or it was already used")
		return
	case err != nil:
		f.redeemStoreFailure(w, "load frame result", err)
		return
	}
	var res frameResult
	if json.Unmarshal(raw, &res) != nil || res.Next == "" || res.ExpiresAt <= f.cfg.Now().Unix() {
		writeError(w, http.StatusGone, "no such login, or it was already used")
		return
	}
	// A wrong token changes nothing: the right one can still redeem.
	if subtle.ConstantTimeCompare([]byte(res.Token), []byte(token)) != 1 {
		writeError(w, http.StatusForbidden, "wrong token")
		return
	}
	// Taking it is what makes the redemption single: of two concurrent
	// requests with the right token, one gets it.
	if _, err := f.cfg.Store.Take(ctx, frameKey(state)); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, http.StatusGone, "no such login, or it was already used")
			return
		}
		f.redeemStoreFailure(w, "take frame result", err)
		return
	}
	if err := f.cfg.Login(w, r, res.ID); err != nil {
		f.cfg.Log.Error("cannot issue session", zap.Error(err))
		writeError(w, http.StatusInternalServerError, "cannot start the session")
		return
	}
	f.cfg.Log.Info("login", zap.String("method", res.ID.Method), zap.Bool("frame", true),
		zap.String("openid", session.LogID(res.ID.OpenID)), zap.Bool("unionid", res.ID.UnionID != ""))
	f.cfg.Metrics.Login(res.ID.Method)
	writeJSON(w, http.StatusOK, map[string]string{"status": "confirmed", "redirect": res.Next})
}

func (f *Flows) redeemStoreFailure(w http.ResponseWriter, what string, err error) {
	f.cfg.Log.Error("store failure", zap.String("op", what), zap.Error(err))
	w.Header().Set("Retry-After", "5")
	writeError(w, http.StatusServiceUnavailable, "login temporarily unavailable")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it panics rather than return short)
	return hex.EncodeToString(b)
}
