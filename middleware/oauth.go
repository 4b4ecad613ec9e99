package middleware

// The two OAuth login flows:
//
//   - MethodOAuth, web authorization inside WeChat's own browser with the
//     Official Account (connect/oauth2/authorize, scope OAuthScope);
//   - MethodOpen, Open Platform website login (connect/qrconnect, scope
//     snsapi_login), normally in a popup opened by the login page.
//
// Both start at GET {prefix}/oauth/start and come back to
// GET {prefix}/oauth/callback with code and state.
//
// The state is 128 random bits (32 hex digits, inside WeChat's limit of 128
// letters and digits). Everything the flow needs later (method, next, popup,
// scope) is kept server-side under "oauth:<state>" for ten minutes, so the
// callback trusts nothing but code and state from its URL. The state is
// also written into a sealed HttpOnly cookie that lists the few flows this
// browser started (one per tab), which binds it to the browser: the
// callback only spends a code when the state is in that list, so a victim
// cannot be logged in to an attacker's account with a link carrying the
// attacker's code and state (login CSRF). The state is taken out of the
// store, exactly once, before the code is exchanged.
//
// Refreshing the callback URL or going back to it replays a spent code,
// which WeChat answers with 40163. The callback never calls WeChat for it:
// the state is gone by then, and the outcome of a successful login is
// remembered for a few minutes ("oauthdone:<state>"), so the browser that
// completed it (holding the binding cookie, or a session) is just sent on to
// next.
//
// Lost state cookie. WeChat's browser is known to drop cookies between the
// authorization redirect and the callback, which is why other libraries
// switch the state check off. We never log anyone in without the binding.
// When a callback for an in-WeChat flow arrives with a valid, pending state
// but no binding cookie at all, the old state is spent without using its
// code and the flow is started once more from the same record (same next),
// with a new state and a new cookie: silent for snsapi_base, a second
// consent screen at worst for snsapi_userinfo. This gives an attacker
// nothing: the attacker's code is never exchanged, and the victim only ends
// up logged in as themselves on a same-site page, as with any link to
// /oauth/start. If the cookie is lost again on the restarted flow the user
// gets a page asking them to allow cookies, with a link to try again, so
// there is no redirect loop. A callback whose browser has a binding cookie
// that does not list the state, or a website-login (desktop) callback
// without one, is refused with 403.
//
// Browsers inside WeChat (not WeCom) that navigate to a protected page or
// to the login page go straight into MethodOAuth when it is enabled. A
// browser that keeps coming back without a session (it drops the session
// cookie, or the site refuses the user) is sent to the login page instead
// after a few automatic starts a minute, so that cannot loop either.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/wechat-login/caddy-wechat-login/internal/loginpage"
	"github.com/wechat-login/caddy-wechat-login/internal/useragent"
	"github.com/wechat-login/caddy-wechat-login/middleware/store"
	"github.com/wechat-login/caddy-wechat-login/wechat"
)

const (
	// oauthCookie binds OAuth states to the browser that asked for them.
	oauthCookie = "wechat_oauth"
	// oauthStateTTL bounds a whole authorization: consent plus the QR scan
	// of website login, whose codes themselves last ten minutes.
	oauthStateTTL = 10 * time.Minute
	// oauthDoneTTL is how long a completed login is remembered for refreshes
	// and the back button.
	oauthDoneTTL = 5 * time.Minute
	// oauthStateLen is the length of a state: 128 random bits in hex.
	oauthStateLen = 32
	// maxOAuthFlows is how many recent states one browser keeps, one per tab
	// it logs in from; the oldest goes first. It keeps the cookie small.
	maxOAuthFlows = 5
	// maxOAuthCodeLen bounds the code; WeChat's are 32 characters.
	maxOAuthCodeLen = 256
	// autoStartLimit automatic starts within autoStartWindow send the
	// browser to the login page instead of into another authorization.
	autoStartLimit  = 3
	autoStartWindow = time.Minute
)

// oauthRecord is a pending authorization, stored under oauthKey(state).
type oauthRecord struct {
	Method string `json:"method"`
	Next   string `json:"next"`
	Popup  bool   `json:"popup,omitempty"`
	Scope  string `json:"scope"`
	// Restarted marks a flow begun again because the browser came back
	// without its binding cookie; it is not restarted a second time.
	Restarted bool  `json:"restarted,omitempty"`
	ExpiresAt int64 `json:"exp"` // unix seconds
}

// oauthDone is a completed login, stored under oauthDoneKey(state).
type oauthDone struct {
	Next      string `json:"next"`
	Popup     bool   `json:"popup,omitempty"`
	ExpiresAt int64  `json:"exp"`
}

func oauthKey(state string) string     { return "oauth:" + state }
func oauthDoneKey(state string) string { return "oauthdone:" + state }

// oauthFlow is one state in the binding cookie.
type oauthFlow struct {
	State   string `json:"s"`
	Started int64  `json:"t"` // unix seconds
}

// oauthBinding is what the oauthCookie seals.
type oauthBinding struct {
	Flows []oauthFlow `json:"f"`
}

func (b oauthBinding) has(state string) bool {
	return slices.ContainsFunc(b.Flows, func(f oauthFlow) bool { return f.State == state })
}

// startedSince counts the flows started at or after t.
func (b oauthBinding) startedSince(t time.Time) int {
	n := 0
	for _, f := range b.Flows {
		if f.Started >= t.Unix() {
			n++
		}
	}
	return n
}

func validOAuthState(s string) bool {
	if len(s) != oauthStateLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// validOAuthCode accepts what WeChat issues (letters and digits) with a
// little slack for format changes; anything else never reaches WeChat.
func validOAuthCode(s string) bool {
	if s == "" || len(s) > maxOAuthCodeLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// oauthCallbackParams are the parts of the callback URL we use. Anything
// else in it (next, connect_redirect, …) is ignored.
type oauthCallbackParams struct {
	State   string
	Code    string
	HasCode bool // false: the user declined consent
}

// parseOAuthCallback validates the callback's query: exactly one
// well-formed state, and at most one well-formed code.
func parseOAuthCallback(rawQuery string) (oauthCallbackParams, error) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return oauthCallbackParams{}, errors.New("malformed query")
	}
	var p oauthCallbackParams
	switch s := q["state"]; {
	case len(s) == 0:
		return p, errors.New("missing state")
	case len(s) > 1:
		return p, errors.New("state given more than once")
	case !validOAuthState(s[0]):
		return p, errors.New("malformed state")
	default:
		p.State = s[0]
	}
	switch c := q["code"]; {
	case len(c) == 0:
	case len(c) > 1:
		return p, errors.New("code given more than once")
	case !validOAuthCode(c[0]):
		return p, errors.New("malformed code")
	default:
		p.Code, p.HasCode = c[0], true
	}
	return p, nil
}

// parseOAuthStart reads method and popup from the start URL's query.
func parseOAuthStart(q url.Values) (method string, popup bool, err error) {
	if len(q["method"]) > 1 || len(q["popup"]) > 1 {
		return "", false, errors.New("parameter given more than once")
	}
	switch q.Get("method") {
	case "", MethodOAuth:
		method = MethodOAuth
	case MethodOpen:
		method = MethodOpen
	default:
		return "", false, errors.New("unknown method")
	}
	switch q.Get("popup") {
	case "", "0":
	case "1":
		popup = true
	default:
		return "", false, errors.New("popup must be 1 or 0")
	}
	return method, popup, nil
}

// oauthApp returns the WeChat app that serves method, and the scope to ask.
func (m *Middleware) oauthApp(method string) (*wechat.OAuthApp, string) {
	app := &wechat.OAuthApp{
		AppID:      m.cfg.AppID,
		AppSecret:  m.cfg.AppSecret,
		Endpoint:   m.cfg.Endpoint,
		HTTPClient: m.wc.HTTPClient, // cfg.HTTPClient, observed by the metrics
	}
	if method == MethodOpen {
		app.AppID, app.AppSecret = m.cfg.OpenAppID, m.cfg.OpenAppSecret
		return app, wechat.ScopeLogin
	}
	return app, m.cfg.OAuthScope
}

// origin is this site's origin as the browser sees it.
func (m *Middleware) origin(r *http.Request) string {
	scheme := "http"
	if m.isHTTPS(r) {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// oauthRedirectURI is where WeChat sends the browser back. It is built from
// the request's Host: WeChat only redirects to the domain registered for the
// app (anything else ends on WeChat's error page 10003), so a forged Host
// cannot send codes elsewhere, but behind a proxy the Host must be the
// public one (Caddy keeps it; others need to pass it through). WeChat lets
// every page of the registered domain receive codes, so an open redirect
// anywhere on that host can leak them: a host that serves only this site is
// best.
func (m *Middleware) oauthRedirectURI(r *http.Request) string {
	return m.origin(r) + m.cfg.Prefix + "/oauth/callback"
}

// oauthStartURL is the link that begins a flow again.
func (m *Middleware) oauthStartURL(method, next string, popup bool) string {
	q := url.Values{"next": {next}}
	if method == MethodOpen {
		q.Set("method", MethodOpen)
	}
	if popup {
		q.Set("popup", "1")
	}
	return m.cfg.Prefix + "/oauth/start?" + q.Encode()
}

// oauthBindingOf returns the flows this browser started, and whether it sent
// a binding cookie at all (even one that no longer opens).
func (m *Middleware) oauthBindingOf(r *http.Request) (oauthBinding, bool) {
	present := m.cookies.Present(r, oauthCookie)
	payload := m.cookies.Open(r, oauthCookie)
	if payload == nil {
		return oauthBinding{}, present
	}
	var b oauthBinding
	if json.Unmarshal(payload, &b) != nil {
		return oauthBinding{}, present
	}
	return b, present
}

// setOAuthBinding adds state to the browser's binding, dropping flows that
// have expired and the oldest beyond maxOAuthFlows.
func (m *Middleware) setOAuthBinding(w http.ResponseWriter, r *http.Request, b oauthBinding, state string, now time.Time) error {
	flows := []oauthFlow{{State: state, Started: now.Unix()}}
	for _, f := range slices.Backward(b.Flows) {
		if len(flows) == maxOAuthFlows {
			break
		}
		if now.Unix()-f.Started < int64(oauthStateTTL/time.Second) && validOAuthState(f.State) {
			flows = append(flows, f)
		}
	}
	slices.Reverse(flows)
	payload, err := json.Marshal(oauthBinding{Flows: flows})
	if err != nil {
		return fmt.Errorf("encode OAuth binding: %w", err)
	}
	exp := now.Add(oauthStateTTL)
	return m.cookies.Set(w, r, oauthCookie, payload, exp, oauthStateTTL)
}

// handleOAuthStart serves GET {prefix}/oauth/start?next=…[&method=open][&popup=1]:
// a new state, bound to this browser, and a redirect to WeChat.
func (m *Middleware) handleOAuthStart(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, http.MethodGet)
		return
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		m.oauthPage(w, r, http.StatusBadRequest, loginpage.MsgBadRequest, m.cfg.Prefix+"/login", nil)
		return
	}
	method, popup, err := parseOAuthStart(q)
	if err != nil {
		m.oauthPage(w, r, http.StatusBadRequest, loginpage.MsgBadRequest, m.cfg.Prefix+"/login", nil)
		return
	}
	next, ok := m.redirects.Next(q["next"])
	if !ok {
		m.oauthPage(w, r, http.StatusBadRequest, loginpage.MsgBadNext, m.cfg.Prefix+"/login", nil)
		return
	}
	if !m.cfg.enabled(method) {
		m.oauthPage(w, r, http.StatusNotFound, loginpage.MsgNotEnabled, m.loginURL(next), nil)
		return
	}
	if _, err := m.sessions.Get(r); err == nil {
		// Already logged in: nothing to authorize.
		m.oauthSucceeded(w, r, next, popup, "")
		return
	}
	if ok, retry := m.oauthLimiter.Allow(m.clientKey(r)); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(retry)))
		m.oauthPage(w, r, http.StatusTooManyRequests, loginpage.MsgTooMany, m.loginURL(next), nil)
		return
	}
	b, _ := m.oauthBindingOf(r)
	m.startOAuth(w, r, oauthRecord{Method: method, Next: next, Popup: popup}, b)
}

// Per-address limits on starting OAuth flows: generous for people (a few
// tabs, a few retries), tight enough that nobody fills the store with
// states.
const (
	oauthStartsPerMinute = 30
	oauthStartBurst      = 10
)

// oauthAutoRedirect sends a browser inside WeChat (MicroMessenger in the
// User-Agent) straight into in-WeChat authorization when that method is
// enabled, and reports whether it did.
func (m *Middleware) oauthAutoRedirect(w http.ResponseWriter, r *http.Request, next string) bool {
	if r.Method != http.MethodGet || !m.cfg.enabled(MethodOAuth) || !useragent.InWeChat(r.UserAgent()) {
		return false
	}
	b, _ := m.oauthBindingOf(r)
	if b.startedSince(m.cfg.Now().Add(-autoStartWindow)) >= autoStartLimit {
		m.log.Info("not starting WeChat authorization again: this browser keeps coming back without a session")
		return false
	}
	if ok, _ := m.oauthLimiter.Allow(m.clientKey(r)); !ok {
		return false
	}
	m.startOAuth(w, r, oauthRecord{Method: MethodOAuth, Next: next}, b)
	return true
}

// startOAuth stores rec under a new state, binds the state to the browser
// and redirects to WeChat. It always answers the request.
func (m *Middleware) startOAuth(w http.ResponseWriter, r *http.Request, rec oauthRecord, b oauthBinding) {
	app, scope := m.oauthApp(rec.Method)
	state := randomHex(oauthStateLen / 2)
	redirectURI := m.oauthRedirectURI(r)
	var target string
	var err error
	if rec.Method == MethodOpen {
		target, err = app.QRConnectURL(redirectURI, state)
	} else {
		target, err = app.AuthorizeURL(redirectURI, scope, state)
	}
	if err != nil {
		// Only the Host can make this fail.
		m.log.Warn("cannot build the WeChat authorization URL", zap.String("method", rec.Method), zap.Error(err))
		m.oauthPage(w, r, http.StatusBadRequest, loginpage.MsgBadRequest, "", nil)
		return
	}
	now := m.cfg.Now()
	rec.Scope = scope
	rec.ExpiresAt = now.Add(oauthStateTTL).Unix()
	raw, err := json.Marshal(rec)
	if err != nil {
		m.oauthPage(w, r, http.StatusInternalServerError, loginpage.MsgUnavailable, "", nil)
		return
	}
	if err := m.store.Create(r.Context(), oauthKey(state), raw, oauthStateTTL); err != nil {
		m.oauthStoreFailure(w, r, "create OAuth state", err, nil)
		return
	}
	if err := m.setOAuthBinding(w, r, b, state, now); err != nil {
		m.log.Error("cannot bind the OAuth state", zap.Error(err))
		m.oauthPage(w, r, http.StatusInternalServerError, loginpage.MsgUnavailable, "", nil)
		return
	}
	m.log.Debug("OAuth flow started", zap.String("method", rec.Method), zap.String("state", state[:8]), zap.Bool("restarted", rec.Restarted))
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, target, http.StatusFound)
}

// handleOAuthCallback serves GET {prefix}/oauth/callback?code=…&state=…, where
// WeChat sends the browser back.
func (m *Middleware) handleOAuthCallback(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	if r.Method != http.MethodGet {
		methodNotAllowed(w, http.MethodGet)
		return
	}
	p, err := parseOAuthCallback(r.URL.RawQuery)
	if err != nil {
		m.log.Info("OAuth callback refused", zap.String("reason", err.Error()))
		m.oauthPage(w, r, http.StatusBadRequest, loginpage.MsgBadRequest, m.cfg.Prefix+"/login", nil)
		return
	}
	b, hasCookie := m.oauthBindingOf(r)
	if !b.has(p.State) {
		m.unboundCallback(w, r, p, hasCookie)
		return
	}
	ctx := r.Context()
	// Spend the state first, whatever happens next: one code exchange per
	// state, however many times this URL is loaded.
	raw, err := m.store.Take(ctx, oauthKey(p.State))
	switch {
	case errors.Is(err, store.ErrNotFound):
		m.callbackAgain(w, r, p.State)
		return
	case err != nil:
		m.oauthStoreFailure(w, r, "take OAuth state", err, nil)
		return
	}
	rec, ok := m.decodeOAuthRecord(raw)
	if !ok {
		m.oauthPage(w, r, http.StatusBadRequest, loginpage.MsgExpired, m.cfg.Prefix+"/login", nil)
		return
	}
	m.finishOAuth(w, r, p, rec)
}

func (m *Middleware) decodeOAuthRecord(raw []byte) (oauthRecord, bool) {
	var rec oauthRecord
	if err := json.Unmarshal(raw, &rec); err != nil || rec.Next == "" ||
		(rec.Method != MethodOAuth && rec.Method != MethodOpen) || rec.ExpiresAt <= m.cfg.Now().Unix() {
		return oauthRecord{}, false
	}
	return rec, true
}

// callbackAgain answers a callback whose state was already spent by this
// browser: a refresh or the back button after a completed login goes on to
// next; anything else is an expired link.
func (m *Middleware) callbackAgain(w http.ResponseWriter, r *http.Request, state string) {
	raw, err := m.store.Get(r.Context(), oauthDoneKey(state))
	var done oauthDone
	if err == nil && json.Unmarshal(raw, &done) == nil && done.Next != "" && done.ExpiresAt > m.cfg.Now().Unix() {
		m.oauthSucceeded(w, r, done.Next, done.Popup, m.oauthAgainURL(state))
		return
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		m.oauthStoreFailure(w, r, "load OAuth outcome", err, nil)
		return
	}
	m.oauthPage(w, r, http.StatusBadRequest, loginpage.MsgExpired, m.cfg.Prefix+"/login", nil)
}

// unboundCallback answers a callback whose state this browser's binding
// cookie does not list. It never exchanges the code.
func (m *Middleware) unboundCallback(w http.ResponseWriter, r *http.Request, p oauthCallbackParams, hasCookie bool) {
	ctx := r.Context()
	raw, err := m.store.Get(ctx, oauthKey(p.State))
	if errors.Is(err, store.ErrNotFound) {
		// Spent or unknown. A browser that is logged in may be refreshing a
		// completed login after its binding cookie aged out.
		if _, serr := m.sessions.Get(r); serr == nil {
			m.callbackAgain(w, r, p.State)
			return
		}
		m.oauthPage(w, r, http.StatusBadRequest, loginpage.MsgExpired, m.cfg.Prefix+"/login", nil)
		return
	}
	if err != nil {
		m.oauthStoreFailure(w, r, "load OAuth state", err, nil)
		return
	}
	rec, ok := m.decodeOAuthRecord(raw)
	switch {
	case !ok:
		m.oauthPage(w, r, http.StatusBadRequest, loginpage.MsgExpired, m.cfg.Prefix+"/login", nil)
	case !p.HasCode:
		// Declining reveals nothing and logs nobody in; say so plainly even
		// if the cookie went missing.
		m.oauthPage(w, r, http.StatusForbidden, loginpage.MsgDeclined, m.oauthStartURL(rec.Method, rec.Next, rec.Popup), nil)
	case !hasCookie && rec.Method == MethodOAuth && !rec.Restarted:
		// WeChat's browser lost the cookie: spend the old state without
		// its code and start over once (see the comment at the top).
		if _, err := m.store.Take(ctx, oauthKey(p.State)); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				m.oauthPage(w, r, http.StatusBadRequest, loginpage.MsgExpired, m.cfg.Prefix+"/login", nil)
				return
			}
			m.oauthStoreFailure(w, r, "take OAuth state", err, nil)
			return
		}
		m.log.Info("OAuth state cookie missing at the callback; starting authorization once more",
			zap.String("state", p.State[:8]))
		rec.Restarted = true
		m.startOAuth(w, r, rec, oauthBinding{})
	case !hasCookie && rec.Restarted:
		m.log.Info("OAuth state cookie missing again after a restart; asking the user to allow cookies",
			zap.String("state", p.State[:8]))
		m.oauthPage(w, r, http.StatusBadRequest, loginpage.MsgCookies, m.oauthStartURL(rec.Method, rec.Next, rec.Popup), nil)
	default:
		m.log.Warn("OAuth callback with a state from another browser refused",
			zap.String("method", rec.Method), zap.String("state", p.State[:8]), zap.Bool("binding_cookie", hasCookie))
		m.oauthPage(w, r, http.StatusForbidden, loginpage.MsgOtherBrowser, m.cfg.Prefix+"/login", nil)
	}
}

// finishOAuth completes a flow whose state this browser owned and has just
// spent.
func (m *Middleware) finishOAuth(w http.ResponseWriter, r *http.Request, p oauthCallbackParams, rec oauthRecord) {
	retry := m.oauthStartURL(rec.Method, rec.Next, rec.Popup)
	if !p.HasCode {
		m.log.Info("OAuth consent declined", zap.String("method", rec.Method))
		m.metrics.LoginDenied(rec.Method)
		m.oauthPage(w, r, http.StatusForbidden, loginpage.MsgDeclined, retry, &rec)
		return
	}
	ctx := r.Context()
	app, _ := m.oauthApp(rec.Method)
	tok, err := app.Exchange(ctx, p.Code)
	if err != nil {
		m.oauthExchangeFailure(w, r, rec, err)
		return
	}
	if tok.IsSnapshotUser {
		// WeChat's rule: the snapshot page's user is virtual; never make an
		// account of it.
		m.log.Info("OAuth login by a snapshot-page user refused", zap.String("method", rec.Method))
		m.metrics.LoginDenied(rec.Method)
		m.oauthPage(w, r, http.StatusOK, loginpage.MsgSnapshot, retry, &rec)
		return
	}
	id := Identity{AppID: app.AppID, OpenID: tok.OpenID, UnionID: tok.UnionID, Method: rec.Method}
	if rec.Scope != wechat.ScopeBase {
		m.addProfile(ctx, app, tok, &id)
	}
	if !m.allowed(id) {
		m.log.Info("login refused by allowlist", zap.String("method", rec.Method), zap.String("openid", logID(id.OpenID)))
		m.metrics.LoginDenied(rec.Method)
		m.oauthPage(w, r, http.StatusForbidden, loginpage.MsgForbidden, "", &rec)
		return
	}
	if err := m.startSession(w, r, id, ""); err != nil {
		m.log.Error("cannot issue session", zap.Error(err))
		m.oauthPage(w, r, http.StatusInternalServerError, loginpage.MsgUnavailable, retry, &rec)
		return
	}
	m.log.Info("login", zap.String("method", rec.Method), zap.String("openid", logID(id.OpenID)),
		zap.Bool("unionid", id.UnionID != ""))
	m.metrics.Login(rec.Method)
	m.oauthSucceeded(w, r, rec.Next, rec.Popup, m.rememberOAuth(ctx, p.State, rec))
}

// addProfile fills in nickname, avatar and unionid from sns/userinfo. The
// login does not depend on it: a failure is logged and the identity stays
// as the token exchange gave it.
func (m *Middleware) addProfile(ctx context.Context, app *wechat.OAuthApp, tok *wechat.OAuthToken, id *Identity) {
	info, err := app.UserInfo(ctx, tok.AccessToken, tok.OpenID)
	if err != nil {
		m.log.Warn("WeChat call failed; logging in without the profile", wechatFields("sns/userinfo", err)...)
		m.metrics.WeChatFailure("oauth userinfo")
		return
	}
	id.Nickname, id.AvatarURL = info.Nickname, info.HeadImgURL
	if id.UnionID == "" {
		id.UnionID = info.UnionID
	}
}

// rememberOAuth keeps a completed login's outcome for refreshes of the
// callback URL, and returns the URL that shows it again (the callback
// without its code), or "" if it could not be kept.
func (m *Middleware) rememberOAuth(ctx context.Context, state string, rec oauthRecord) string {
	raw, err := json.Marshal(oauthDone{Next: rec.Next, Popup: rec.Popup, ExpiresAt: m.cfg.Now().Add(oauthDoneTTL).Unix()})
	if err == nil {
		err = m.store.Create(ctx, oauthDoneKey(state), raw, oauthDoneTTL)
	}
	if err != nil {
		// Only a refresh of the callback suffers: it will show "expired".
		m.log.Warn("cannot remember the OAuth outcome", zap.Error(err))
		return ""
	}
	return m.oauthAgainURL(state)
}

// oauthAgainURL is the callback URL without its code: loading it again
// after the login shows the outcome without calling WeChat.
func (m *Middleware) oauthAgainURL(state string) string {
	return m.cfg.Prefix + "/oauth/callback?state=" + state
}

// oauthSucceeded sends a logged-in browser on: a plain flow to next, a popup
// flow to the page that tells the opener. again is the code-free callback
// URL that renders that page; while the request still carries a code the
// browser is redirected there, so a refresh never replays the code.
func (m *Middleware) oauthSucceeded(w http.ResponseWriter, r *http.Request, next string, popup bool, again string) {
	w.Header().Set("Cache-Control", "no-store")
	switch {
	case !popup:
		http.Redirect(w, r, next, http.StatusSeeOther)
	case again != "" && r.URL.Query().Has("code"):
		http.Redirect(w, r, again, http.StatusSeeOther)
	default:
		m.oauthPopupDone(w, r, next)
	}
}

// wechatFields describes a failed WeChat call for the log. Error texts from
// package wechat never hold secrets, codes or tokens.
func wechatFields(call string, err error) []zap.Field {
	fields := []zap.Field{zap.String("call", call), zap.Error(err)}
	if code, ok := wechat.ErrorCode(err); ok {
		fields = append(fields, zap.Int("errcode", code))
	}
	return fields
}

// WeChat errcodes that mean the site's own configuration is wrong.
var oauthConfigErrcodes = []int{40002, 40013, 40125, 40243, 41002, 41004, wechat.CodeIPNotWhitelisted, wechat.CodeIPNotRegistered}

// oauthExchangeFailure answers a failed code exchange: a page with a retry
// link for the user, one precise line for the operator.
func (m *Middleware) oauthExchangeFailure(w http.ResponseWriter, r *http.Request, rec oauthRecord, err error) {
	const call = "sns/oauth2/access_token"
	retry := m.oauthStartURL(rec.Method, rec.Next, rec.Popup)
	code, _ := wechat.ErrorCode(err)
	switch {
	case wechat.IsCodeInvalid(err), errors.Is(err, wechat.ErrInvalidArgument):
		// Expired or already spent: common and harmless (a slow user, a
		// reload that raced the first load).
		m.log.Info("OAuth code refused by WeChat", wechatFields(call, err)...)
		m.oauthPage(w, r, http.StatusBadRequest, loginpage.MsgCodeInvalid, retry, &rec)
	case slices.Contains(oauthConfigErrcodes, code):
		m.log.Error("OAuth code exchange failed: check the app ID, app secret and API IP allowlist of the "+rec.Method+" app",
			wechatFields(call, err)...)
		m.metrics.WeChatFailure("oauth exchange")
		m.oauthPage(w, r, http.StatusBadGateway, loginpage.MsgMisconfigured, retry, &rec)
	default:
		// -1 (busy), rate limits, timeouts, WeChat unreachable.
		m.log.Error("OAuth code exchange failed", wechatFields(call, err)...)
		m.metrics.WeChatFailure("oauth exchange")
		w.Header().Set("Retry-After", "5")
		m.oauthPage(w, r, http.StatusServiceUnavailable, loginpage.MsgBusy, retry, &rec)
	}
}

func (m *Middleware) oauthStoreFailure(w http.ResponseWriter, r *http.Request, what string, err error, rec *oauthRecord) {
	m.log.Error("store failure", zap.String("op", what), zap.Error(err))
	w.Header().Set("Retry-After", "5")
	m.oauthPage(w, r, http.StatusServiceUnavailable, loginpage.MsgUnavailable, m.cfg.Prefix+"/login", rec)
}
