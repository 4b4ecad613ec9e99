// Package oauthflow runs the two OAuth login flows:
//
//   - MethodOAuth, web authorization inside WeChat's own browser with the
//     Official Account (connect/oauth2/authorize, the configured scope);
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
package oauthflow

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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
	"github.com/wechat-login/caddy-wechat-login/internal/ratelimit"
	"github.com/wechat-login/caddy-wechat-login/internal/redirect"
	"github.com/wechat-login/caddy-wechat-login/internal/session"
	"github.com/wechat-login/caddy-wechat-login/internal/useragent"
	"github.com/wechat-login/caddy-wechat-login/middleware/store"
	"github.com/wechat-login/caddy-wechat-login/wechat"
)

// The two methods, as in middleware.MethodOAuth and middleware.MethodOpen.
const (
	MethodOAuth = "oauth"
	MethodOpen  = "open"
)

// Metrics receives the flows' events; middleware.Metrics is one.
type Metrics interface {
	Login(method string)
	LoginDenied(method string)
	WeChatFailure(what string)
}

// Config is what the flows need from the middleware. Every field is
// required, except that InWeChat or Website is nil when its method is off.
type Config struct {
	Prefix string
	// InWeChat is the Official Account, for MethodOAuth with Scope.
	InWeChat *wechat.OAuthApp
	Scope    string
	// Website is the Open Platform website app, for MethodOpen.
	Website *wechat.OAuthApp
	// Frame styles WeChat's page when website login is embedded in the
	// login page (see Embed); its English field is set per request.
	Frame wechat.FrameOptions

	Store     store.Store
	Cookies   *session.Cookies
	Redirects redirect.Policy
	Page      *loginpage.Renderer
	// Limiter bounds the flows one client (ClientKey) may start.
	Limiter   *ratelimit.Limiter
	ClientKey func(*http.Request) string
	// Origin is the site's origin as the browser sees it.
	Origin func(*http.Request) string
	// LoginURL is the login page that goes on to next.
	LoginURL func(next string) string
	// LoggedIn reports whether the request carries a valid session.
	LoggedIn func(*http.Request) bool
	// Allowed applies the site's allowlists.
	Allowed func(openid, unionid string) bool
	// RequireUnionID refuses a login for which WeChat gives no unionid:
	// the site knows people by it, and an openid in its place would make
	// one person two users.
	RequireUnionID bool
	// Login starts the session of a user the flow authenticated.
	Login func(http.ResponseWriter, *http.Request, session.Record) error

	Metrics Metrics
	Log     *zap.Logger
	Now     func() time.Time
}

// Flows serves the OAuth routes.
type Flows struct{ cfg Config }

// New returns the flows for cfg.
func New(cfg Config) *Flows { return &Flows{cfg: cfg} }

func (f *Flows) enabled(method string) bool {
	return method == MethodOAuth && f.cfg.InWeChat != nil || method == MethodOpen && f.cfg.Website != nil
}

// app returns the WeChat app that serves method, and the scope to ask.
func (f *Flows) app(method string) (*wechat.OAuthApp, string) {
	if method == MethodOpen {
		return f.cfg.Website, wechat.ScopeLogin
	}
	return f.cfg.InWeChat, f.cfg.Scope
}

func randomState() string {
	b := make([]byte, stateLen/2)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it panics rather than return short)
	return hex.EncodeToString(b)
}

const (
	// Cookie binds OAuth states to the browser that asked for thef.
	Cookie = "wechat_oauth"
	// stateTTL bounds a whole authorization: consent plus the QR scan
	// of website login, whose codes themselves last ten minutes.
	stateTTL = 10 * time.Minute
	// doneTTL is how long a completed login is remembered for refreshes
	// and the back button.
	doneTTL = 5 * time.Minute
	// stateLen is the length of a state: 128 random bits in hex.
	stateLen = 32
	// MaxFlows is how many recent states one browser keeps, one per tab
	// it logs in from; the oldest goes first. It keeps the cookie small.
	MaxFlows = 5
	// maxCodeLen bounds the code; WeChat's are 32 characters.
	maxCodeLen = 256
	// AutoStartLimit automatic starts within autoStartWindow send the
	// browser to the login page instead of into another authorization.
	AutoStartLimit  = 3
	autoStartWindow = time.Minute
)

// record is a pending authorization, stored under StateKey(state).
type record struct {
	Method string `json:"method"`
	Next   string `json:"next"`
	Popup  bool   `json:"popup,omitempty"`
	// Frame marks website login embedded in the login page: the callback
	// runs in a frame and hands the result to the page (see embed.go).
	Frame bool   `json:"frame,omitempty"`
	Scope string `json:"scope"`
	// Restarted marks a flow begun again because the browser came back
	// without its binding cookie; it is not restarted a second time.
	Restarted bool  `json:"restarted,omitempty"`
	ExpiresAt int64 `json:"exp"` // unix seconds
}

// done is a completed login, stored under doneKey(state).
type done struct {
	Next      string `json:"next"`
	Popup     bool   `json:"popup,omitempty"`
	ExpiresAt int64  `json:"exp"`
}

func StateKey(state string) string { return "oauth:" + state }
func doneKey(state string) string  { return "oauthdone:" + state }

// flow is one state in the binding cookie.
type flow struct {
	State   string `json:"s"`
	Started int64  `json:"t"` // unix seconds
}

// binding is what the Cookie seals.
type binding struct {
	Flows []flow `json:"f"`
}

func (b binding) has(state string) bool {
	return slices.ContainsFunc(b.Flows, func(f flow) bool { return f.State == state })
}

// startedSince counts the flows started at or after t.
func (b binding) startedSince(t time.Time) int {
	n := 0
	for _, f := range b.Flows {
		if f.Started >= t.Unix() {
			n++
		}
	}
	return n
}

func validState(s string) bool {
	if len(s) != stateLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// validCode accepts what WeChat issues (letters and digits) with a
// little slack for format changes; anything else never reaches WeChat.
func validCode(s string) bool {
	if s == "" || len(s) > maxCodeLen {
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

// callbackParams are the parts of the callback URL we use. Anything
// else in it (next, connect_redirect, …) is ignored.
type callbackParams struct {
	State   string
	Code    string
	HasCode bool // false: the user declined consent
}

// parseCallback validates the callback's query: exactly one
// well-formed state, and at most one well-formed code.
func parseCallback(rawQuery string) (callbackParams, error) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return callbackParams{}, errors.New("malformed query")
	}
	var p callbackParams
	switch s := q["state"]; {
	case len(s) == 0:
		return p, errors.New("missing state")
	case len(s) > 1:
		return p, errors.New("state given more than once")
	case !validState(s[0]):
		return p, errors.New("malformed state")
	default:
		p.State = s[0]
	}
	switch c := q["code"]; {
	case len(c) == 0:
	case len(c) > 1:
		return p, errors.New("code given more than once")
	case !validCode(c[0]):
		return p, errors.New("malformed code")
	default:
		p.Code, p.HasCode = c[0], true
	}
	return p, nil
}

// parseStart reads method and popup from the start URL's query.
func parseStart(q url.Values) (method string, popup bool, err error) {
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

// redirectURI is where WeChat sends the browser back. It is built from
// the request's Host: WeChat only redirects to the domain registered for the
// app (anything else ends on WeChat's error page 10003), so a forged Host
// cannot send codes elsewhere, but behind a proxy the Host must be the
// public one (Caddy keeps it; others need to pass it through). WeChat lets
// every page of the registered domain receive codes, so an open redirect
// anywhere on that host can leak them: a host that serves only this site is
// best.
func (f *Flows) redirectURI(r *http.Request) string {
	return f.cfg.Origin(r) + f.cfg.Prefix + "/oauth/callback"
}

// startURL is the link that begins a flow again.
func (f *Flows) startURL(method, next string, popup bool) string {
	q := url.Values{"next": {next}}
	if method == MethodOpen {
		q.Set("method", MethodOpen)
	}
	if popup {
		q.Set("popup", "1")
	}
	return f.cfg.Prefix + "/oauth/start?" + q.Encode()
}

// bindingOf returns the flows this browser started, and whether it sent
// a binding cookie at all (even one that no longer opens).
func (f *Flows) bindingOf(r *http.Request) (binding, bool) {
	present := f.cfg.Cookies.Present(r, Cookie)
	payload := f.cfg.Cookies.Open(r, Cookie)
	if payload == nil {
		return binding{}, present
	}
	var b binding
	if json.Unmarshal(payload, &b) != nil {
		return binding{}, present
	}
	return b, present
}

// setBinding adds state to the browser's binding, dropping flows that
// have expired and the oldest beyond MaxFlows.
func (f *Flows) setBinding(w http.ResponseWriter, r *http.Request, b binding, state string, now time.Time) error {
	flows := []flow{{State: state, Started: now.Unix()}}
	for _, f := range slices.Backward(b.Flows) {
		if len(flows) == MaxFlows {
			break
		}
		if now.Unix()-f.Started < int64(stateTTL/time.Second) && validState(f.State) {
			flows = append(flows, f)
		}
	}
	slices.Reverse(flows)
	payload, err := json.Marshal(binding{Flows: flows})
	if err != nil {
		return fmt.Errorf("encode OAuth binding: %w", err)
	}
	exp := now.Add(stateTTL)
	return f.cfg.Cookies.Set(w, r, Cookie, payload, exp, stateTTL)
}

// Start serves GET {prefix}/oauth/start?next=…[&method=open][&popup=1]:
// a new state, bound to this browser, and a redirect to WeChat.
func (f *Flows) Start(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w)
		return
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		f.page(w, r, http.StatusBadRequest, loginpage.MsgBadRequest, f.cfg.Prefix+"/login", nil)
		return
	}
	method, popup, err := parseStart(q)
	if err != nil {
		f.page(w, r, http.StatusBadRequest, loginpage.MsgBadRequest, f.cfg.Prefix+"/login", nil)
		return
	}
	next, ok := f.cfg.Redirects.Next(q["next"])
	if !ok {
		f.page(w, r, http.StatusBadRequest, loginpage.MsgBadNext, f.cfg.Prefix+"/login", nil)
		return
	}
	if !f.enabled(method) {
		f.page(w, r, http.StatusNotFound, loginpage.MsgNotEnabled, f.cfg.LoginURL(next), nil)
		return
	}
	if f.cfg.LoggedIn(r) {
		// Already logged in: nothing to authorize.
		f.succeeded(w, r, next, popup, "")
		return
	}
	if ok, retry := f.cfg.Limiter.Allow(f.cfg.ClientKey(r)); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(max(1, (retry+time.Second-1)/time.Second))))
		f.page(w, r, http.StatusTooManyRequests, loginpage.MsgTooMany, f.cfg.LoginURL(next), nil)
		return
	}
	b, _ := f.bindingOf(r)
	f.start(w, r, record{Method: method, Next: next, Popup: popup}, b)
}

// AutoStart sends a browser inside WeChat (MicroMessenger in the
// User-Agent) straight into in-WeChat authorization when that method is
// enabled, and reports whether it did.
func (f *Flows) AutoStart(w http.ResponseWriter, r *http.Request, next string) bool {
	if r.Method != http.MethodGet || !f.enabled(MethodOAuth) || !useragent.InWeChat(r.UserAgent()) {
		return false
	}
	b, _ := f.bindingOf(r)
	if b.startedSince(f.cfg.Now().Add(-autoStartWindow)) >= AutoStartLimit {
		f.cfg.Log.Info("not starting WeChat authorization again: this browser keeps coming back without a session")
		return false
	}
	if ok, _ := f.cfg.Limiter.Allow(f.cfg.ClientKey(r)); !ok {
		return false
	}
	f.start(w, r, record{Method: MethodOAuth, Next: next}, b)
	return true
}

// start stores rec under a new state, binds the state to the browser
// and redirects to WeChat. It always answers the request.
func (f *Flows) start(w http.ResponseWriter, r *http.Request, rec record, b binding) {
	app, scope := f.app(rec.Method)
	state := randomState()
	redirectURI := f.redirectURI(r)
	var target string
	var err error
	if rec.Method == MethodOpen {
		target, err = app.QRConnectURL(redirectURI, state)
	} else {
		target, err = app.AuthorizeURL(redirectURI, scope, state)
	}
	if err != nil {
		// Only the Host can make this fail.
		f.cfg.Log.Warn("cannot build the WeChat authorization URL", zap.String("method", rec.Method), zap.Error(err))
		f.page(w, r, http.StatusBadRequest, loginpage.MsgBadRequest, "", nil)
		return
	}
	now := f.cfg.Now()
	rec.Scope = scope
	rec.ExpiresAt = now.Add(stateTTL).Unix()
	raw, err := json.Marshal(rec)
	if err != nil {
		f.page(w, r, http.StatusInternalServerError, loginpage.MsgUnavailable, "", nil)
		return
	}
	if err := f.cfg.Store.Create(r.Context(), StateKey(state), raw, stateTTL); err != nil {
		f.storeFailure(w, r, "create OAuth state", err, nil)
		return
	}
	if err := f.setBinding(w, r, b, state, now); err != nil {
		f.cfg.Log.Error("cannot bind the OAuth state", zap.Error(err))
		f.page(w, r, http.StatusInternalServerError, loginpage.MsgUnavailable, "", nil)
		return
	}
	f.cfg.Log.Debug("OAuth flow started", zap.String("method", rec.Method), zap.String("state", state[:8]), zap.Bool("restarted", rec.Restarted))
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, target, http.StatusFound)
}

// Callback serves GET {prefix}/oauth/callback?code=…&state=…, where
// WeChat sends the browser back.
func (f *Flows) Callback(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	if r.Method != http.MethodGet {
		methodNotAllowed(w)
		return
	}
	p, err := parseCallback(r.URL.RawQuery)
	if err != nil {
		f.cfg.Log.Info("OAuth callback refused", zap.String("reason", err.Error()))
		f.page(w, r, http.StatusBadRequest, loginpage.MsgBadRequest, f.cfg.Prefix+"/login", nil)
		return
	}
	b, hasCookie := f.bindingOf(r)
	if !b.has(p.State) {
		f.unboundCallback(w, r, p, hasCookie)
		return
	}
	ctx := r.Context()
	// Spend the state first, whatever happens next: one code exchange per
	// state, however many times this URL is loaded.
	raw, err := f.cfg.Store.Take(ctx, StateKey(p.State))
	switch {
	case errors.Is(err, store.ErrNotFound):
		f.callbackAgain(w, r, p.State)
		return
	case err != nil:
		f.storeFailure(w, r, "take OAuth state", err, nil)
		return
	}
	rec, ok := f.decodeRecord(raw)
	if !ok {
		f.page(w, r, http.StatusBadRequest, loginpage.MsgExpired, f.cfg.Prefix+"/login", nil)
		return
	}
	f.finish(w, r, p, rec)
}

func (f *Flows) decodeRecord(raw []byte) (record, bool) {
	var rec record
	if err := json.Unmarshal(raw, &rec); err != nil || rec.Next == "" ||
		(rec.Method != MethodOAuth && rec.Method != MethodOpen) || rec.ExpiresAt <= f.cfg.Now().Unix() {
		return record{}, false
	}
	return rec, true
}

// callbackAgain answers a callback whose state was already spent by this
// browser: a refresh or the back button after a completed login goes on to
// next; anything else is an expired link.
func (f *Flows) callbackAgain(w http.ResponseWriter, r *http.Request, state string) {
	raw, err := f.cfg.Store.Get(r.Context(), doneKey(state))
	var done done
	if err == nil && json.Unmarshal(raw, &done) == nil && done.Next != "" && done.ExpiresAt > f.cfg.Now().Unix() {
		f.succeeded(w, r, done.Next, done.Popup, f.againURL(state))
		return
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		f.storeFailure(w, r, "load OAuth outcome", err, nil)
		return
	}
	f.page(w, r, http.StatusBadRequest, loginpage.MsgExpired, f.cfg.Prefix+"/login", nil)
}

// unboundCallback answers a callback whose state this browser's binding
// cookie does not list. It never exchanges the code.
func (f *Flows) unboundCallback(w http.ResponseWriter, r *http.Request, p callbackParams, hasCookie bool) {
	ctx := r.Context()
	raw, err := f.cfg.Store.Get(ctx, StateKey(p.State))
	if errors.Is(err, store.ErrNotFound) {
		// Spent or unknown. A browser that is logged in may be refreshing a
		// completed login after its binding cookie aged out.
		if f.cfg.LoggedIn(r) {
			f.callbackAgain(w, r, p.State)
			return
		}
		f.page(w, r, http.StatusBadRequest, loginpage.MsgExpired, f.cfg.Prefix+"/login", nil)
		return
	}
	if err != nil {
		f.storeFailure(w, r, "load OAuth state", err, nil)
		return
	}
	rec, ok := f.decodeRecord(raw)
	switch {
	case !ok:
		f.page(w, r, http.StatusBadRequest, loginpage.MsgExpired, f.cfg.Prefix+"/login", nil)
	case rec.Frame:
		// The frame is sent here from WeChat's site, so its request may
		// well lack our cookies. It needs none: it only hands a token to
		// the page that holds the binding (see embed.go).
		if _, err := f.cfg.Store.Take(ctx, StateKey(p.State)); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				f.page(w, r, http.StatusBadRequest, loginpage.MsgExpired, "", &rec)
				return
			}
			f.storeFailure(w, r, "take OAuth state", err, &rec)
			return
		}
		f.finish(w, r, p, rec)
	case !p.HasCode:
		// Declining reveals nothing and logs nobody in; say so plainly even
		// if the cookie went missing.
		f.page(w, r, http.StatusForbidden, loginpage.MsgDeclined, f.startURL(rec.Method, rec.Next, rec.Popup), nil)
	case !hasCookie && rec.Method == MethodOAuth && !rec.Restarted:
		// WeChat's browser lost the cookie: spend the old state without
		// its code and start over once (see the comment at the top).
		if _, err := f.cfg.Store.Take(ctx, StateKey(p.State)); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				f.page(w, r, http.StatusBadRequest, loginpage.MsgExpired, f.cfg.Prefix+"/login", nil)
				return
			}
			f.storeFailure(w, r, "take OAuth state", err, nil)
			return
		}
		f.cfg.Log.Info("OAuth state cookie missing at the callback; starting authorization once more",
			zap.String("state", p.State[:8]))
		rec.Restarted = true
		f.start(w, r, rec, binding{})
	case !hasCookie && rec.Restarted:
		f.cfg.Log.Info("OAuth state cookie missing again after a restart; asking the user to allow cookies",
			zap.String("state", p.State[:8]))
		f.page(w, r, http.StatusBadRequest, loginpage.MsgCookies, f.startURL(rec.Method, rec.Next, rec.Popup), nil)
	default:
		f.cfg.Log.Warn("OAuth callback with a state from another browser refused",
			zap.String("method", rec.Method), zap.String("state", p.State[:8]), zap.Bool("binding_cookie", hasCookie))
		f.page(w, r, http.StatusForbidden, loginpage.MsgOtherBrowser, f.cfg.Prefix+"/login", nil)
	}
}

// finish completes a flow whose state this browser owned and has just
// spent.
func (f *Flows) finish(w http.ResponseWriter, r *http.Request, p callbackParams, rec record) {
	retry := f.startURL(rec.Method, rec.Next, rec.Popup)
	if !p.HasCode {
		f.cfg.Log.Info("OAuth consent declined", zap.String("method", rec.Method))
		f.cfg.Metrics.LoginDenied(rec.Method)
		f.page(w, r, http.StatusForbidden, loginpage.MsgDeclined, retry, &rec)
		return
	}
	ctx := r.Context()
	app, _ := f.app(rec.Method)
	if app == nil {
		// Begun before a reload that switched the method off.
		f.page(w, r, http.StatusNotFound, loginpage.MsgNotEnabled, f.cfg.LoginURL(rec.Next), &rec)
		return
	}
	tok, err := app.Exchange(ctx, p.Code)
	if err != nil {
		f.exchangeFailure(w, r, rec, err)
		return
	}
	if tok.IsSnapshotUser {
		// WeChat's rule: the snapshot page's user is virtual; never make an
		// account of it.
		f.cfg.Log.Info("OAuth login by a snapshot-page user refused", zap.String("method", rec.Method))
		f.cfg.Metrics.LoginDenied(rec.Method)
		f.page(w, r, http.StatusOK, loginpage.MsgSnapshot, retry, &rec)
		return
	}
	id := session.Record{AppID: app.AppID, OpenID: tok.OpenID, UnionID: tok.UnionID, Method: rec.Method}
	if rec.Scope != wechat.ScopeBase {
		f.addProfile(ctx, app, tok, &id)
	}
	if f.cfg.RequireUnionID && id.UnionID == "" {
		f.cfg.Log.Info("login refused: WeChat gave no unionid", zap.String("method", rec.Method), zap.String("openid", session.LogID(id.OpenID)))
		f.cfg.Metrics.LoginDenied(rec.Method)
		f.page(w, r, http.StatusForbidden, loginpage.MsgNoUnionID, "", &rec)
		return
	}
	if !f.cfg.Allowed(id.OpenID, id.UnionID) {
		f.cfg.Log.Info("login refused by allowlist", zap.String("method", rec.Method), zap.String("openid", session.LogID(id.OpenID)))
		f.cfg.Metrics.LoginDenied(rec.Method)
		f.page(w, r, http.StatusForbidden, loginpage.MsgForbidden, "", &rec)
		return
	}
	if rec.Frame {
		f.finishFrame(w, r, p.State, rec, id)
		return
	}
	if err := f.cfg.Login(w, r, id); err != nil {
		f.cfg.Log.Error("cannot issue session", zap.Error(err))
		f.page(w, r, http.StatusInternalServerError, loginpage.MsgUnavailable, retry, &rec)
		return
	}
	f.cfg.Log.Info("login", zap.String("method", rec.Method), zap.String("openid", session.LogID(id.OpenID)),
		zap.Bool("unionid", id.UnionID != ""))
	f.cfg.Metrics.Login(rec.Method)
	f.succeeded(w, r, rec.Next, rec.Popup, f.remember(ctx, p.State, rec))
}

// addProfile fills in nickname, avatar and unionid from sns/userinfo. The
// login does not depend on it: a failure is logged and the identity stays
// as the token exchange gave it.
func (f *Flows) addProfile(ctx context.Context, app *wechat.OAuthApp, tok *wechat.OAuthToken, id *session.Record) {
	info, err := app.UserInfo(ctx, tok.AccessToken, tok.OpenID)
	if err != nil {
		f.cfg.Log.Warn("WeChat call failed; logging in without the profile", wechatFields("sns/userinfo", err)...)
		f.cfg.Metrics.WeChatFailure("oauth userinfo")
		return
	}
	id.Nickname, id.AvatarURL = info.Nickname, info.HeadImgURL
	if id.UnionID == "" {
		id.UnionID = info.UnionID
	}
}

// remember keeps a completed login's outcome for refreshes of the
// callback URL, and returns the URL that shows it again (the callback
// without its code), or "" if it could not be kept.
func (f *Flows) remember(ctx context.Context, state string, rec record) string {
	raw, err := json.Marshal(done{Next: rec.Next, Popup: rec.Popup, ExpiresAt: f.cfg.Now().Add(doneTTL).Unix()})
	if err == nil {
		err = f.cfg.Store.Create(ctx, doneKey(state), raw, doneTTL)
	}
	if err != nil {
		// Only a refresh of the callback suffers: it will show "expired".
		f.cfg.Log.Warn("cannot remember the OAuth outcome", zap.Error(err))
		return ""
	}
	return f.againURL(state)
}

// againURL is the callback URL without its code: loading it again
// after the login shows the outcome without calling WeChat.
func (f *Flows) againURL(state string) string {
	return f.cfg.Prefix + "/oauth/callback?state=" + state
}

// succeeded sends a logged-in browser on: a plain flow to next, a popup
// flow to the page that tells the opener. again is the code-free callback
// URL that renders that page; while the request still carries a code the
// browser is redirected there, so a refresh never replays the code.
func (f *Flows) succeeded(w http.ResponseWriter, r *http.Request, next string, popup bool, again string) {
	w.Header().Set("Cache-Control", "no-store")
	switch {
	case !popup:
		http.Redirect(w, r, next, http.StatusSeeOther)
	case again != "" && r.URL.Query().Has("code"):
		http.Redirect(w, r, again, http.StatusSeeOther)
	default:
		f.popupDone(w, r, next)
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

// exchangeFailure answers a failed code exchange: a page with a retry
// link for the user, one precise line for the operator.
func (f *Flows) exchangeFailure(w http.ResponseWriter, r *http.Request, rec record, err error) {
	const call = "sns/oauth2/access_token"
	retry := f.startURL(rec.Method, rec.Next, rec.Popup)
	switch {
	case wechat.IsCodeInvalid(err), errors.Is(err, wechat.ErrInvalidArgument):
		// Expired or already spent: common and harmless (a slow user, a
		// reload that raced the first load).
		f.cfg.Log.Info("OAuth code refused by WeChat", wechatFields(call, err)...)
		f.page(w, r, http.StatusBadRequest, loginpage.MsgCodeInvalid, retry, &rec)
	case wechat.IsConfigError(err):
		// The same refusals as the QR flow's "misconfigured" answer (see
		// wechat.IsConfigError): a retry cannot cure them.
		f.cfg.Log.Error("OAuth code exchange failed: check the app ID, app secret and API IP allowlist of the "+rec.Method+" app",
			wechatFields(call, err)...)
		f.cfg.Metrics.WeChatFailure("oauth exchange")
		f.page(w, r, http.StatusBadGateway, loginpage.MsgMisconfigured, retry, &rec)
	default:
		// -1 (busy), rate limits, timeouts, WeChat unreachable.
		f.cfg.Log.Error("OAuth code exchange failed", wechatFields(call, err)...)
		f.cfg.Metrics.WeChatFailure("oauth exchange")
		w.Header().Set("Retry-After", "5")
		f.page(w, r, http.StatusServiceUnavailable, loginpage.MsgBusy, retry, &rec)
	}
}

func (f *Flows) storeFailure(w http.ResponseWriter, r *http.Request, what string, err error, rec *record) {
	f.cfg.Log.Error("store failure", zap.String("op", what), zap.Error(err))
	w.Header().Set("Retry-After", "5")
	f.page(w, r, http.StatusServiceUnavailable, loginpage.MsgUnavailable, f.cfg.Prefix+"/login", rec)
}

// page renders the page for an OAuth flow that went wrong. When the flow
// runs in a popup (rec.Popup) or the login page's frame (rec.Frame), the
// page also reports the error to the opener or the parent.
func (f *Flows) page(w http.ResponseWriter, r *http.Request, status int, msg loginpage.Message, retry string, rec *record) {
	o := loginpage.Outcome{Message: msg, RetryURL: retry, Popup: rec != nil && rec.Popup, Origin: f.cfg.Origin(r)}
	if rec != nil && rec.Frame {
		// The login page offers the retry: a link in the frame would leave
		// the embedded mode.
		o.Frame, o.RetryURL = true, ""
	}
	f.pageDone(w, f.cfg.Page.Outcome(w, r, status, o))
}

// popupDone renders the page that ends a login in a popup: it tells the
// opener, which goes on to next.
func (f *Flows) popupDone(w http.ResponseWriter, r *http.Request, next string) {
	o := loginpage.Outcome{Message: loginpage.MsgSuccess, Next: next, Popup: true, Origin: f.cfg.Origin(r)}
	f.pageDone(w, f.cfg.Page.Outcome(w, r, http.StatusOK, o))
}

// pageDone answers 500 for a page that could not be rendered, and so was
// not written at all.
func (f *Flows) pageDone(w http.ResponseWriter, err error) {
	if err != nil {
		f.cfg.Log.Error("cannot render page", zap.Error(err))
		writeError(w, http.StatusInternalServerError, "cannot render page")
	}
}

func methodNotAllowed(w http.ResponseWriter) {
	w.Header().Set("Allow", http.MethodGet)
	writeError(w, http.StatusMethodNotAllowed, "method not allowed")
}

func writeError(w http.ResponseWriter, status int, reason string) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": reason})
}
