// Package middleware puts "log in with WeChat" in front of any net/http
// handler.
//
// It serves its own routes under a prefix (default /wechat): the login page,
// QR-code creation, long-poll and Server-Sent-Events status, WeChat's push
// callback, user info, a forward-auth endpoint, a readiness probe and logout
// (by POST, or by a link that no other site can make work). Every other
// request needs a session: browsers without one are sent to the login page,
// other clients get 401. Requests with a session reach the wrapped handler
// with the user's identity on the context (IdentityFromContext; a handler
// that is an IdentifiedHandler gets it as an argument instead) and in the
// X-WeChat-* request headers, which are always stripped from what the
// client sent.
//
// The QR flow: the browser asks for a login scene, shows its QR code and
// waits; the user scans it with WeChat; WeChat pushes a signed, normally
// encrypted event to the callback; the waiting browser learns of it at once
// and redeems the scene, exactly once, for a session cookie. A scene is bound
// to the browser that created it by an HttpOnly cookie, so its id alone is
// useless to anyone else.
//
// The OAuth flows (web authorization inside WeChat's own browser, and Open
// Platform website login in a popup) share the sessions and protection; see
// oauth.go for their design, including what happens when WeChat's browser
// loses the state cookie.
package middleware

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/wechat-login/caddy-wechat-login/internal/loginpage"
	"github.com/wechat-login/caddy-wechat-login/internal/oauthflow"
	"github.com/wechat-login/caddy-wechat-login/internal/ratelimit"
	"github.com/wechat-login/caddy-wechat-login/internal/redirect"
	"github.com/wechat-login/caddy-wechat-login/internal/session"
	"github.com/wechat-login/caddy-wechat-login/middleware/bigcachestore"
	"github.com/wechat-login/caddy-wechat-login/middleware/store"
	"github.com/wechat-login/caddy-wechat-login/wechat"
)

// Middleware is the WeChat login middleware. Create it with New; it is safe
// for concurrent use, and its configuration cannot change after creation.
type Middleware struct {
	cfg      Config
	log      *zap.Logger
	wc       *wechat.Client
	crypter  *wechat.Crypter // nil when pushes are plaintext
	store    store.Store
	ownStore bool
	// cookies seals the middleware's cookies; sessions are the logins.
	cookies  *session.Cookies
	sessions *session.Manager
	// ownRevocations, when set, is the logout list New opened; Close
	// closes it.
	ownRevocations io.Closer
	notifier       Notifier
	redirects      redirect.Policy
	qrLimiter      *ratelimit.Limiter
	// oauth runs the OAuth login flows (internal/oauthflow).
	oauth *oauthflow.Flows
	// qrCeiling and codeCeiling bound the QR codes and the login codes
	// created, whatever the addresses (see creationCeiling).
	qrCeiling   creationCeiling
	codeCeiling creationCeiling
	// qrRefusedUntil is when a remembered 48001 for QR creation is
	// forgotten (unix nanoseconds).
	qrRefusedUntil atomic.Int64
	waiters        *waiters
	fresh          freshScenes // scenes watched since this instance made them
	csrf           *http.CrossOriginProtection
	metrics        Metrics
	page           *loginpage.Renderer
	public         publicPaths
	// handoffs seals (on a login host) and opens (on a site with a
	// LoginHost) logins handed to other sites; handoffTo holds the
	// canonical HandoffTo origins.
	handoffs  *session.Handoffs
	handoffTo map[string]bool

	done      chan struct{} // closed by Close: waiting requests end
	closeOnce sync.Once
}

// New validates cfg and returns a ready middleware. It makes no network
// calls.
func New(cfg Config) (*Middleware, error) {
	cfg, parts, err := cfg.prepare()
	if err != nil {
		return nil, err
	}
	m := &Middleware{
		cfg:       cfg,
		log:       cfg.Logger.Named("wechat_login"),
		crypter:   parts.crypter,
		public:    parts.public,
		page:      parts.page,
		redirects: redirect.Policy{AllowedHosts: cfg.RedirectHosts},
		csrf:      http.NewCrossOriginProtection(),
		metrics:   cfg.Metrics,
		done:      make(chan struct{}),
	}
	m.csrf.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusForbidden, "cross-origin request refused")
	}))
	if cfg.PublicOrigin != "" {
		// Behind a proxy that passes another Host, the browser's Origin is
		// still this one.
		if err := m.csrf.AddTrustedOrigin(cfg.PublicOrigin); err != nil {
			return nil, fieldError("PublicOrigin", "%v", err)
		}
	}
	if cfg.PushToken != "" && (m.crypter == nil || cfg.AllowPlaintextPushes) {
		m.log.Warn("WeChat pushes are accepted in plaintext (no EncodingAESKey, or AllowPlaintextPushes): their signature does not cover the message, which is only right for WeChat test accounts; use encrypted (safe) mode with an EncodingAESKey in production")
	}
	m.wc = &wechat.Client{
		AppID:      cfg.AppID,
		AppSecret:  cfg.AppSecret,
		Endpoint:   cfg.Endpoint,
		HTTPClient: m.instrumentedClient(cfg.HTTPClient),
		Tokens:     cfg.TokenSource,
	}
	m.qrLimiter = ratelimit.New(cfg.QRRateLimit/60, cfg.QRRateBurst, ratelimit.WithClock(cfg.Now))
	m.qrCeiling = newCreationCeiling(cfg.QRCeiling, "rl:qr:all", "qr_ceiling", cfg.Now)
	m.codeCeiling = newCreationCeiling(codeCeilingPerMinute(cfg.SceneTTL), "rl:code:all", "code_ceiling", cfg.Now)
	m.waiters = &waiters{max: cfg.MaxWaiting}
	m.store = cfg.Store
	if m.store == nil {
		s, err := bigcachestore.New(bigcachestore.Config{Now: cfg.Now, MaxTTL: storeMaxTTL(cfg)})
		if err != nil {
			return nil, fmt.Errorf("middleware: default store: %w", err)
		}
		m.store, m.ownStore = s, true
	}
	// A shared store brings its own notifications, so that a push that
	// reaches one instance wakes the browser waiting on another.
	m.notifier = cfg.Notifier
	if b, ok := m.store.(store.Broadcaster); ok && m.notifier == nil {
		m.notifier = b
	}
	if m.notifier == nil {
		m.notifier = &LocalNotifier{}
	}
	if err := m.setUpSessions(); err != nil {
		_ = m.Close()
		return nil, err
	}
	if err := m.setUpHandoffs(); err != nil {
		_ = m.Close()
		return nil, err
	}
	m.oauth = m.newOAuthFlows()
	return m, nil
}

// Close ends waiting long-polls and event streams and releases the default
// store. A Store passed in Config is left open: its owner closes it.
func (m *Middleware) Close() error {
	var err error
	m.closeOnce.Do(func() {
		close(m.done)
		m.fresh.close()
		if m.ownStore {
			err = m.store.Close()
		}
		if m.ownRevocations != nil {
			err = errors.Join(err, m.ownRevocations.Close())
		}
	})
	return err
}

// Handler wraps next: the middleware's own routes are served under the
// prefix, public paths pass through, and everything else needs a session.
func (m *Middleware) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.ServeNext(w, r, next)
	})
}

// ServeNext handles one request the way Handler(next) would. It is for
// adapters (such as the Caddy module) whose next handler changes per request.
func (m *Middleware) ServeNext(w http.ResponseWriter, r *http.Request, next http.Handler) {
	if denied := m.ServeOrRefuse(w, r, next); denied != nil {
		m.WriteAccessError(w, r, denied)
	}
}

// AccessError is a request for a protected path that was refused: Status is
// 401 for a client that is not logged in (browsers navigating are sent to
// the login page instead, which is not a refusal) and 403 for a user the
// allowlists refuse.
type AccessError struct {
	Status int
	// LoginURL is where to log in (401 only).
	LoginURL string
}

func (e *AccessError) Error() string {
	if e.Status == http.StatusForbidden {
		return "this WeChat account is not allowed here"
	}
	return "login required"
}

// ServeOrRefuse is ServeNext for adapters with error handling of their own
// (the Caddy module's use_handle_errors): a refused request for a protected
// path is not answered but returned, and the caller must answer it, with
// WriteAccessError or otherwise. next is never called for it. Every other
// request is answered, and nil returned.
func (m *Middleware) ServeOrRefuse(w http.ResponseWriter, r *http.Request, next http.Handler) *AccessError {
	// Identity headers are ours alone, whatever route this is.
	stripIdentityHeaders(r.Header)

	path, prefix := r.URL.Path, m.cfg.Prefix
	if strings.HasPrefix(path, prefix) && (len(path) == len(prefix) || path[len(prefix)] == '/') {
		m.route(w, r, path[len(prefix):], next)
		return nil
	}
	if m.public.match(r.URL) {
		m.stripOwnCookies(r)
		next.ServeHTTP(w, r)
		return nil
	}
	rec, err := m.sessions.Get(r)
	if err != nil && !errors.Is(err, session.ErrNone) {
		m.storeFailure(w, "check session", err)
		return nil
	}
	if err != nil {
		return m.unauthenticated(w, r)
	}
	if !m.allowed(identityOf(rec)) {
		return &AccessError{Status: http.StatusForbidden}
	}
	id := identityOf(m.refreshSession(w, r, rec))
	// Stripped on the way in, above.
	m.addIdentityHeaders(r.Header, id)
	m.stripOwnCookies(r)
	if ih, ok := next.(IdentifiedHandler); ok {
		ih.ServeIdentified(w, r, id)
		return nil
	}
	next.ServeHTTP(w, r.WithContext(ContextWithIdentity(r.Context(), id)))
	return nil
}

// IdentifiedHandler is implemented by next handlers that take the identity
// of a request with a session as an argument, as adapters (the Caddy
// module, which publishes it as placeholders) can. ServeNext and
// ServeOrRefuse then call ServeIdentified with the request as it is,
// instead of ServeHTTP with the identity on a copy of it: the copy, and the
// context layer that every later context lookup of the request would walk
// through, are for handlers that read IdentityFromContext. The identity
// headers are set either way.
type IdentifiedHandler interface {
	http.Handler
	ServeIdentified(w http.ResponseWriter, r *http.Request, id Identity)
}

// WriteAccessError answers a request refused with err the built-in way: a
// JSON body with the reason (and the login URL) for scripts and API
// clients, the refusal page for browsers.
func (m *Middleware) WriteAccessError(w http.ResponseWriter, r *http.Request, err *AccessError) {
	switch {
	case err.Status == http.StatusForbidden && wantsHTML(r):
		m.serveForbidden(w, r)
	case err.Status == http.StatusForbidden:
		writeError(w, http.StatusForbidden, err.Error())
	default:
		writeJSON(w, err.Status, map[string]string{"error": err.Error(), "login_url": err.LoginURL})
	}
}

func (m *Middleware) route(w http.ResponseWriter, r *http.Request, sub string, next http.Handler) {
	if m.cfg.LoginHost != "" && m.serveHandoffSite(w, r, sub) {
		return
	}
	switch sub {
	case "/login", "", "/":
		m.serveLogin(w, r)
	case "/qr":
		if !m.cfg.enabled(MethodQR) {
			writeError(w, http.StatusNotFound, "QR login is not enabled on this site")
			return
		}
		m.csrf.Handler(http.HandlerFunc(m.handleCreateQR)).ServeHTTP(w, r)
	case "/code":
		if !m.cfg.enabled(MethodCode) {
			writeError(w, http.StatusNotFound, "code login is not enabled on this site")
			return
		}
		m.csrf.Handler(http.HandlerFunc(m.handleCreateCode)).ServeHTTP(w, r)
	case "/qr.svg":
		m.handleQRImage(w, r)
	case "/poll":
		m.handlePoll(w, r)
	case "/events":
		m.handleEvents(w, r)
	case "/callback":
		if m.cfg.PushToken == "" {
			// No push token, nothing can be verified: this site takes no
			// pushes (it offers no QR login).
			writeError(w, http.StatusNotFound, "this site takes no WeChat pushes")
			return
		}
		m.handleCallback(w, r, next)
	case "/userinfo":
		m.handleUserInfo(w, r)
	case "/auth":
		m.handleAuth(w, r)
	case "/oauth/start":
		m.oauth.Start(w, r)
	case "/oauth/callback":
		m.oauth.Callback(w, r)
	case "/oauth/embed":
		m.csrf.Handler(http.HandlerFunc(m.oauth.Embed)).ServeHTTP(w, r)
	case "/oauth/redeem":
		m.csrf.Handler(http.HandlerFunc(m.oauth.Redeem)).ServeHTTP(w, r)
	case "/logout":
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			m.handleLogoutLink(w, r)
			return
		}
		m.csrf.Handler(http.HandlerFunc(m.handleLogout)).ServeHTTP(w, r)
	case "/ready":
		m.handleReady(w, r)
	case "/handoff":
		m.handleHandoff(w, r)
	case "/handoff/start":
		m.handleHandoffStart(w, r)
	default:
		writeError(w, http.StatusNotFound, "no such route")
	}
}

// allowed applies the optional openid/unionid allowlists.
func (m *Middleware) allowed(id Identity) bool {
	if len(m.cfg.AllowedOpenIDs) == 0 && len(m.cfg.AllowedUnionIDs) == 0 {
		return true
	}
	return slices.Contains(m.cfg.AllowedOpenIDs, id.OpenID) ||
		id.UnionID != "" && slices.Contains(m.cfg.AllowedUnionIDs, id.UnionID)
}

// wantsHTML reports whether the client is a browser navigating, as opposed to
// an API client or a script.
func wantsHTML(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

// unauthenticated sends a browser navigating to a protected page to log in
// (or, inside WeChat, straight into authorization), and refuses anything
// else with a 401 AccessError.
func (m *Middleware) unauthenticated(w http.ResponseWriter, r *http.Request) *AccessError {
	back := redirect.ReturnAddress(r)
	login := m.loginURL(back)
	if !wantsHTML(r) {
		return &AccessError{Status: http.StatusUnauthorized, LoginURL: login}
	}
	if m.cfg.LoginHost != "" {
		next, ok := m.redirects.Next([]string{back})
		if !ok {
			next = "/"
		}
		m.beginHandoff(w, r, next)
		return nil
	}
	if next, ok := m.redirects.Next([]string{back}); ok && m.oauth.AutoStart(w, r, next) {
		return nil
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, login, http.StatusFound)
	return nil
}

// handleUserInfo serves GET {prefix}/userinfo: the session's identity.
func (m *Middleware) handleUserInfo(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, http.MethodGet)
		return
	}
	rec, err := m.sessions.Get(r)
	if errors.Is(err, session.ErrNone) {
		writeError(w, http.StatusUnauthorized, "not logged in")
		return
	}
	if err != nil {
		m.storeFailure(w, "check session", err)
		return
	}
	writeJSON(w, http.StatusOK, identityOf(m.refreshSession(w, r, rec)))
}

// handleLogout serves POST {prefix}/logout: the session is revoked
// server-side (a copy of the cookie stops working too) and the cookie cleared.
func (m *Middleware) handleLogout(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		methodNotAllowed(w, "GET, POST")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	_ = r.ParseForm()
	if !m.endSession(w, r) {
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	target, ok := m.redirects.Next(r.Form["next"])
	if !ok {
		target = "/"
	}
	target = m.logoutTarget(r, target, r.Form.Get("everywhere") == "1")
	if strings.Contains(r.Header.Get("Accept"), "application/json") {
		writeJSON(w, http.StatusOK, map[string]string{"status": "logged out", "redirect": target})
		return
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// handleLogoutLink serves GET {prefix}/logout?next=…: a logout from a link
// or the address bar. A GET must not end a session because another site
// made the browser send it (an image or a link on a hostile page), and
// http.CrossOriginProtection lets every GET through. So only a navigation
// the browser marks as coming from this origin, or from the user alone
// (Sec-Fetch-Site: none: typed or bookmarked), logs out at once. Any other
// request (cross-site, same-site, which is another origin, or from a
// browser that sends no Sec-Fetch-* headers and so cannot tell us) gets a
// page asking to confirm with a button that POSTs to the protected logout.
// Either way, next is validated as for a login.
func (m *Middleware) handleLogoutLink(w http.ResponseWriter, r *http.Request) {
	next, ok := m.redirects.Next(r.URL.Query()["next"])
	if !ok {
		next = "/"
	}
	everywhere := r.URL.Query().Get("everywhere") == "1"
	if r.Method != http.MethodGet || !userNavigation(r) {
		m.serveLogoutConfirm(w, r, next, everywhere)
		return
	}
	if !m.endSession(w, r) {
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, m.logoutTarget(r, next, everywhere), http.StatusSeeOther)
}

// userNavigation reports whether the browser says the request is a
// top-level navigation that this origin or the user started: a link on
// this site, or an address typed or bookmarked. A subresource or a script's
// fetch on this origin does not count (a page of the site that shows
// user content could hold an <img> pointing at the logout), nor does a
// prefetch, which the browser makes before anyone follows the link.
func userNavigation(r *http.Request) bool {
	h := r.Header
	switch h.Get("Sec-Fetch-Site") {
	case "same-origin", "none":
	default:
		return false
	}
	if h.Get("Sec-Fetch-Mode") != "navigate" || h.Get("Sec-Fetch-Dest") != "document" {
		return false
	}
	return !strings.Contains(h.Get("Sec-Purpose"), "prefetch") &&
		h.Get("Purpose") != "prefetch" && h.Get("X-Moz") != "prefetch"
}

// logoutConfirm is the page asking a browser that followed a logout link
// from elsewhere to confirm. It loads nothing, runs no script, and its one
// form posts to this site.
var logoutConfirm = template.Must(template.New("logout").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>Log out? · 退出登录？</title>
<style nonce="{{.Nonce}}">
body{margin:0;font:16px/1.5 system-ui,-apple-system,"PingFang SC","Microsoft YaHei",sans-serif;background:#f5f5f5;color:#222;display:flex;min-height:100vh;align-items:center;justify-content:center}
main{background:#fff;border-radius:8px;box-shadow:0 1px 4px rgba(0,0,0,.1);padding:2rem;max-width:26rem;margin:1rem;text-align:center}
h1{font-size:1.2rem;margin:0 0 1rem}
p{margin:0 0 1.25rem}
button{font:inherit;padding:.6rem 1.4rem;border:0;border-radius:4px;background:#07c160;color:#fff;cursor:pointer}
</style>
</head>
<body>
<main>
<h1>{{.SiteName}}</h1>
<p>Log out of this site?<br><span lang="zh-CN">要退出登录吗？</span></p>
<form method="post" action="{{.Action}}">
<input type="hidden" name="next" value="{{.Next}}">
{{if .Everywhere}}<input type="hidden" name="everywhere" value="1">
{{end -}}
<button type="submit">Log out · <span lang="zh-CN">退出登录</span></button>
</form>
</main>
</body>
</html>
`))

// serveLogoutConfirm answers a logout link that is not to be trusted with
// the confirmation page. Its policy lets the form post to this origin, and
// to the origin of next when that is another allowed host (or the login
// host, for a logout everywhere): browsers hold the redirect that follows
// the post to the same rule.
func (m *Middleware) serveLogoutConfirm(w http.ResponseWriter, r *http.Request, next string, everywhere bool) {
	nonce := randomHex(16)
	var buf bytes.Buffer
	err := logoutConfirm.Execute(&buf, map[string]any{
		"Nonce": nonce, "SiteName": m.cfg.SiteName, "Action": m.cfg.Prefix + "/logout", "Next": next,
		"Everywhere": everywhere && m.cfg.LoginHost != "",
	})
	if err != nil {
		m.pageDone(w, err)
		return
	}
	formAction := "'self'"
	if u, err := url.Parse(next); err == nil && u.Host != "" && plainOrigin(u.Host) {
		formAction += " " + u.Scheme + "://" + u.Host
	}
	if everywhere && m.cfg.LoginHost != "" {
		formAction += " " + m.cfg.LoginHost
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'nonce-"+nonce+"'; form-action "+formAction+"; base-uri 'none'; frame-ancestors 'none'")
	// Not no-referrer: under it browsers send "Origin: null" with the
	// form's POST, which the cross-origin protection must refuse wherever
	// the browser sends no Sec-Fetch-Site (plain HTTP on a named host).
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(buf.Bytes())
	}
}

// plainOrigin reports whether host holds nothing but what a host and port
// are made of, so that it cannot change the policy it is written into.
func plainOrigin(host string) bool {
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(".-:[]", c) >= 0) {
			return false
		}
	}
	return true
}

// readyKey is the key GET {prefix}/ready reads. Nothing is stored under it:
// the store answering "not found" is the answer sought.
const readyKey = "ready-probe"

// readyTimeout bounds the store's answer to a readiness probe, which load
// balancers wait on for a few seconds at most.
const readyTimeout = 2 * time.Second

// handleReady serves GET {prefix}/ready, for load balancers and
// orchestrators: 200 when the store answers (it holds the logins and, with
// a shared store, the logouts, so without it nothing works), 503 with a
// short reason otherwise. It needs no login and changes nothing.
func (m *Middleware) handleReady(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, "GET, HEAD")
		return
	}
	select {
	case <-m.done:
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": "shutting down"})
		return
	default:
	}
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	if _, err := m.store.Get(ctx, readyKey); err != nil && !errors.Is(err, store.ErrNotFound) {
		m.log.Warn("not ready: the store does not answer", zap.Error(err))
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": "store unavailable"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// storeMaxTTL is the longest time to live the middleware asks of its store:
// a "not me" code lasts as long as the session it can end, which may start
// as late as the end of its login code's life.
func storeMaxTTL(cfg Config) time.Duration {
	return max(cfg.SessionTTL+cfg.SceneTTL, dedupeTTL) + 2*time.Minute
}

// randomHex returns n random bytes, hex-encoded: scene ids and OAuth states.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it panics rather than return short)
	return hex.EncodeToString(b)
}

// Metrics receives the middleware's events. The Caddy module turns them
// into Prometheus metrics; the default discards them.
type Metrics interface {
	SceneCreated()
	Scan(outcome string) // confirmed, expired, conflict, mismatch
	DuplicatePush()
	PushRejected(reason string)
	Login(method string)
	LoginDenied(method string)
	Logout()
	WeChatFailure(call string)
	// WeChatCall reports one HTTP call to WeChat: the endpoint path (for
	// example "cgi-bin/qrcode/create"), its outcome ("ok", "errcode_40001",
	// "http_502", "transport_error") and how long it took.
	WeChatCall(endpoint, outcome string, took time.Duration)
	// Waiting counts browsers waiting on a scene (long-poll or events):
	// +1 when one starts, -1 when it ends.
	Waiting(delta int)
	// Limited reports a request refused by a limit: "qr_ceiling",
	// "waiters_scene" or "waiters_instance".
	Limited(what string)
}

type nopMetrics struct{}

func (nopMetrics) SceneCreated()                            {}
func (nopMetrics) Scan(string)                              {}
func (nopMetrics) DuplicatePush()                           {}
func (nopMetrics) PushRejected(string)                      {}
func (nopMetrics) Login(string)                             {}
func (nopMetrics) LoginDenied(string)                       {}
func (nopMetrics) Logout()                                  {}
func (nopMetrics) WeChatFailure(string)                     {}
func (nopMetrics) WeChatCall(string, string, time.Duration) {}
func (nopMetrics) Waiting(int)                              {}
func (nopMetrics) Limited(string)                           {}
