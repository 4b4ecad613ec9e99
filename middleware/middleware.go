// Package middleware puts "log in with WeChat" in front of any net/http
// handler.
//
// It serves its own routes under a prefix (default /wechat): the login page,
// QR-code creation, long-poll and Server-Sent-Events status, WeChat's push
// callback, user info, a forward-auth endpoint and logout. Every other request
// needs a session: browsers without one are sent to the login page, other
// clients get 401. Requests with a session reach the wrapped handler with the
// user's identity on the context (IdentityFromContext) and in the
// X-WeChat-* request headers, which are always stripped from what the client
// sent.
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
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
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
// for concurrent use and immutable after creation.
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
	// qrCeiling bounds QR creation by this instance, whatever the address.
	qrCeiling *ratelimit.Limiter
	waiters   *waiters
	csrf      *http.CrossOriginProtection
	metrics   Metrics
	page      *loginpage.Renderer
	public    publicPaths

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
	if m.crypter == nil || cfg.AllowPlaintextPushes {
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
	m.qrCeiling = ratelimit.New(float64(cfg.QRCeiling)/60, cfg.QRCeiling, ratelimit.WithClock(cfg.Now), ratelimit.WithMaxKeys(1))
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
	m.oauth = m.newOAuthFlows()
	return m, nil
}

// Close ends waiting long-polls and event streams and releases the default
// store. A Store passed in Config is left open: its owner closes it.
func (m *Middleware) Close() error {
	var err error
	m.closeOnce.Do(func() {
		close(m.done)
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

	path := r.URL.Path
	if path == m.cfg.Prefix || strings.HasPrefix(path, m.cfg.Prefix+"/") {
		m.route(w, r, strings.TrimPrefix(path, m.cfg.Prefix), next)
		return nil
	}
	if m.public.match(r.URL) {
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
	id := identityOf(rec)
	if !m.allowed(id) {
		return &AccessError{Status: http.StatusForbidden}
	}
	setIdentityHeaders(r.Header, id)
	next.ServeHTTP(w, r.WithContext(ContextWithIdentity(r.Context(), id)))
	return nil
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
	switch sub {
	case "/login", "", "/":
		m.serveLogin(w, r)
	case "/qr":
		m.csrf.Handler(http.HandlerFunc(m.handleCreateQR)).ServeHTTP(w, r)
	case "/qr.svg":
		m.handleQRImage(w, r)
	case "/poll":
		m.handlePoll(w, r)
	case "/events":
		m.handleEvents(w, r)
	case "/callback":
		m.handleCallback(w, r, next)
	case "/userinfo":
		m.handleUserInfo(w, r)
	case "/auth":
		m.handleAuth(w, r)
	case "/oauth/start":
		m.oauth.Start(w, r)
	case "/oauth/callback":
		m.oauth.Callback(w, r)
	case "/logout":
		m.csrf.Handler(http.HandlerFunc(m.handleLogout)).ServeHTTP(w, r)
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
	writeJSON(w, http.StatusOK, identityOf(rec))
}

// handleAuth serves GET {prefix}/auth for forward_auth and nginx
// auth_request: 200 with the identity headers, or 401 (403 for someone not
// on the allowlist).
func (m *Middleware) handleAuth(w http.ResponseWriter, r *http.Request) {
	rec, err := m.sessions.Get(r)
	switch {
	case errors.Is(err, session.ErrNone):
		writeError(w, http.StatusUnauthorized, "not logged in")
		return
	case err != nil:
		m.storeFailure(w, "check session", err)
		return
	case !m.allowed(identityOf(rec)):
		writeError(w, http.StatusForbidden, "this WeChat account is not allowed here")
		return
	}
	setIdentityHeaders(w.Header(), identityOf(rec))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}

// handleLogout serves POST {prefix}/logout: the session is revoked
// server-side (a copy of the cookie stops working too) and the cookie cleared.
func (m *Middleware) handleLogout(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		methodNotAllowed(w, http.MethodPost)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	_ = r.ParseForm()
	rec, err := m.sessions.Get(r)
	switch {
	case err == nil:
		if err := m.sessions.Revoke(r.Context(), rec.ID, rec.ExpiresAt); err != nil {
			m.storeFailure(w, "revoke session", err)
			return
		}
		m.log.Info("logout", zap.String("openid", logID(rec.OpenID)))
		m.metrics.Logout()
	case !errors.Is(err, session.ErrNone):
		m.storeFailure(w, "check session", err)
		return
	}
	m.sessions.Clear(w, r)
	w.Header().Set("Cache-Control", "no-store")
	target, ok := m.redirects.Next(r.Form["next"])
	if !ok {
		target = "/"
	}
	if strings.Contains(r.Header.Get("Accept"), "application/json") {
		writeJSON(w, http.StatusOK, map[string]string{"status": "logged out", "redirect": target})
		return
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
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
