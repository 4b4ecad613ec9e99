// Package caddymodule is the Caddy v2 plugin: the http.handlers.wechat_login
// module and its Caddyfile directive wechat_login. It is the only package of
// this project that imports Caddy; the work is done by package middleware.
package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/wechat-login/caddy-wechat-login/internal/loginpage"
	"github.com/wechat-login/caddy-wechat-login/middleware"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler is the wechat_login HTTP handler: "log in with WeChat" in front of
// everything after it in the route. See package middleware for what it does,
// and UnmarshalCaddyfile for the Caddyfile syntax.
//
// Secrets may be given as placeholders, {env.NAME} or {file./path}, which are
// resolved when the config is loaded and never appear in `caddy adapt`
// output.
type Handler struct {
	// The Official Account whose QR codes users scan.
	AppID     string `json:"app_id,omitempty"`
	AppSecret string `json:"app_secret,omitempty"`
	// Token is the push token from the Official Account's server settings.
	Token string `json:"token,omitempty"`
	// EncodingAESKey is the 43-character message key. When set, pushes must
	// be encrypted (safe or compatible mode) unless AllowPlaintextPushes.
	EncodingAESKey       string `json:"encoding_aes_key,omitempty"`
	AllowPlaintextPushes bool   `json:"allow_plaintext_pushes,omitempty"`

	// Methods are the login methods offered: qr, oauth (inside WeChat's
	// browser) and open (website login; needs open_app_id). Default: qr and
	// oauth, plus open when a website app is configured.
	Methods []string `json:"methods,omitempty"`
	// Scope of in-WeChat authorization: snsapi_base (default, silent) or
	// snsapi_userinfo (consent; adds nickname and avatar).
	Scope string `json:"scope,omitempty"`
	// OpenAppID and OpenAppSecret identify an Open Platform website app.
	OpenAppID     string `json:"open_app_id,omitempty"`
	OpenAppSecret string `json:"open_app_secret,omitempty"`
	// OpenDisplay is how the login page shows website login: embedded
	// (default; WeChat's QR in a frame on the page), popup or page.
	OpenDisplay string `json:"open_display,omitempty"`
	// OpenFrameStyle (black or white text) and OpenFrameCSS (an https or
	// data:text/css;base64 URL) style the embedded QR page.
	OpenFrameStyle string `json:"open_frame_style,omitempty"`
	OpenFrameCSS   string `json:"open_frame_css,omitempty"`

	// SessionKeys seal the session cookies: each at least 32 characters of
	// secret randomness (for example `openssl rand -base64 32`). The first
	// seals, all open, so keys can be rotated without logging anyone out.
	SessionKeys []string `json:"session_keys,omitempty"`

	// Prefix of the module's own routes. Default /wechat.
	Prefix string `json:"prefix,omitempty"`
	// SessionTTL is how long a login lasts (with SessionRefresh, from the
	// latest refresh). Default 24h.
	SessionTTL caddy.Duration `json:"session_ttl,omitempty"`
	// SessionRefresh re-issues the cookie of a session in use once this
	// much time has passed since it was issued, valid for SessionTTL from
	// then, same session; never past SessionMaxAge from the login. Shorter
	// than SessionTTL; default none. Behind forward_auth the refreshed
	// cookie does not reach the browser (see middleware.Config).
	SessionRefresh caddy.Duration `json:"session_refresh,omitempty"`
	// SessionMaxAge is the longest a session lasts from its login, however
	// often refreshed; older sessions are refused. Required with
	// SessionRefresh (and then longer than SessionTTL); default SessionTTL.
	SessionMaxAge caddy.Duration `json:"session_max_age,omitempty"`
	// QRTTL is how long a login QR code can be scanned. Default 5m.
	QRTTL caddy.Duration `json:"qr_ttl,omitempty"`

	// SiteName is shown on the login page and in the chat reply.
	SiteName string `json:"site_name,omitempty"`
	// Logo is the URL of an image shown on the login page (a path on this
	// site, or a data: URL: the page's CSP allows nothing else).
	Logo string `json:"logo,omitempty"`
	// LoginTemplate is the path of an html/template file that replaces the
	// built-in login page; it receives the same data.
	LoginTemplate string `json:"login_template,omitempty"`
	// LoginReply and ExpiredReply replace the chat messages sent after a
	// scan and after scanning an expired code.
	LoginReply   string `json:"login_reply,omitempty"`
	ExpiredReply string `json:"expired_reply,omitempty"`

	// AccountName is the Official Account's name, for the code login
	// steps; FollowQR the URL of the account's own QR code, shown next to
	// a login code; WelcomeReply the chat reply to ordinary follows.
	AccountName  string `json:"account_name,omitempty"`
	FollowQR     string `json:"follow_qr,omitempty"`
	WelcomeReply string `json:"welcome_reply,omitempty"`

	// PublicPaths are path prefixes that need no login.
	PublicPaths []string `json:"public_paths,omitempty"`
	// AllowOpenIDs and AllowUnionIDs restrict who may pass (403 for others).
	AllowOpenIDs  []string `json:"allow_openids,omitempty"`
	AllowUnionIDs []string `json:"allow_unionids,omitempty"`
	// RedirectHosts may be targets of `next` besides this site's paths.
	RedirectHosts []string `json:"redirect_hosts,omitempty"`
	// CookieDomain shares the session cookie with every host under this
	// domain (__Secure- prefix over HTTPS); other hosts get host-only
	// cookies. See middleware.Config.CookieDomain.
	CookieDomain string `json:"cookie_domain,omitempty"`
	// PublicOrigin is this site's origin as browsers see it, for
	// redirect_uris, handoffs and cookies, whatever Host a proxy passed.
	PublicOrigin string `json:"public_origin,omitempty"`
	// LoginHost is the origin of the login host that logs users in for
	// this site, which then needs no WeChat app, only session_key.
	LoginHost string `json:"login_host,omitempty"`
	// HandoffTo lists, on a login host, the origins of the sites it may
	// log users in to.
	HandoffTo []string `json:"handoff_to,omitempty"`
	// ConfirmInChat makes a QR scan ask the user, in the chat, to confirm
	// the login (naming the asking browser) before it completes.
	ConfirmInChat bool `json:"confirm_in_chat,omitempty"`
	// FetchUnionID looks up the unionid of QR-code scanners.
	FetchUnionID bool `json:"fetch_unionid,omitempty"`
	// PassThroughPushes hands pushes that are not login scans to the next
	// handler instead of answering them "success".
	PassThroughPushes bool `json:"pass_through_pushes,omitempty"`
	// UseHandleErrors returns the refusals of protected paths (401 for
	// API clients, 403 for users not allowed) to Caddy as errors, for the
	// site's handle_errors to answer, instead of answering them with the
	// built-in JSON and refusal page.
	UseHandleErrors bool `json:"use_handle_errors,omitempty"`
	// UserID chooses what {http.auth.user.id} holds: "openid" (default) or
	// "unionid" (falling back to the openid when there is none), and what
	// the user headers of ForwardUserHeaders carry (with no fallback: a user
	// without a unionid gets no user header).
	UserID string `json:"user_id,omitempty"`
	// ForwardUserHeaders also sends the user (see UserID) to the next
	// handler in X-Forwarded-User, X-Auth-Request-User and Remote-User.
	// Client-sent copies of those headers are removed with or without it.
	ForwardUserHeaders bool `json:"forward_user_headers,omitempty"`
	// StripSessionCookie keeps this module's cookies (the session and the
	// login-binding cookies) out of the Cookie header the next handler
	// sees; other cookies pass unchanged.
	StripSessionCookie bool `json:"strip_session_cookie,omitempty"`

	// QRRateLimit is how many QR codes one client IP may create per minute
	// (default 10), QRRateBurst how many at once (default 5).
	QRRateLimit float64 `json:"qr_rate_limit,omitempty"`
	QRRateBurst int     `json:"qr_rate_burst,omitempty"`
	// QRCeiling is the most QR codes the site creates per minute, whatever
	// the client addresses (default 60; with store redis, for the whole
	// cluster). MaxWaiting bounds the browsers waiting on this instance
	// (default 20000).
	QRCeiling  int `json:"qr_ceiling,omitempty"`
	MaxWaiting int `json:"max_waiting,omitempty"`

	// WeChat base URLs, to point the module at a fake WeChat.
	APIBase   string `json:"api_base,omitempty"`
	OAuthBase string `json:"oauth_base,omitempty"`
	MPBase    string `json:"mp_base,omitempty"`

	// Store is where login state lives: "memory" (default; an embedded
	// store for a single instance) or "redis" (for any number of instances
	// behind a load balancer), with RedisURL (redis://, rediss:// or
	// unix:// for one server; redis-sentinel:// or redis-cluster://, and
	// their rediss- forms, for Sentinel and Cluster; see redisstore) and an
	// optional key prefix.
	Store       string `json:"store,omitempty"`
	RedisURL    string `json:"redis_url,omitempty"`
	RedisPrefix string `json:"redis_prefix,omitempty"`

	// RevocationFile is where logouts are kept with the memory store, so a
	// restart forgets none. Default: a file per app under Caddy's data
	// directory. With store redis, Redis keeps them.
	RevocationFile string `json:"revocation_file,omitempty"`

	// Sandbox serves a fake WeChat under {prefix}/sandbox and wires
	// everything to it, so the whole login can be tried without a WeChat
	// account. Never for production.
	Sandbox bool `json:"sandbox,omitempty"`
	// SandboxAccount "subscription" makes the sandbox's account a
	// subscription account, which WeChat does not let make parametric QR
	// codes: the login page falls back to code login.
	SandboxAccount string `json:"sandbox_account,omitempty"`

	mw            *middleware.Middleware
	logger        *zap.Logger
	shared        *sharedState
	poolKey       string
	revKey        string
	sandbox       *sandbox
	sandboxPrefix string
	sandboxPage   loginpage.Sandbox // the login page's "Simulate scan" control
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.wechat_login",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision checks the configuration, then builds the middleware. Every
// check comes before the usage pool is touched, so a configuration that is
// refused neither creates shared state nor keeps it alive. It makes no
// network calls, so `caddy validate` works offline.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if err := h.Validate(); err != nil {
		return err
	}
	repl := caddy.NewReplacer()
	cfg, storeCfg, err := h.config(repl)
	if err != nil {
		return err
	}

	// State that must survive a config reload (pending scenes, revoked
	// sessions, waiting browsers, the access token) lives in a usage pool
	// keyed by what identifies it, so a reload that keeps the same app and
	// store picks it up where the old config left it.
	h.poolKey = poolKey(cfg, storeCfg)
	shared, loaded, err := pool.LoadOrNew(h.poolKey, func() (caddy.Destructor, error) {
		return newSharedState(cfg, storeCfg, h.Sandbox)
	})
	if err != nil {
		return fmt.Errorf("shared state: %w", err)
	}
	h.shared = shared.(*sharedState)
	if loaded {
		h.logger.Debug("reusing login state from the previous configuration")
	}
	if h.Sandbox {
		h.useSandbox(&cfg, h.shared.sandbox)
	}
	cfg.Store = h.shared.store
	cfg.Notifier = h.shared.notifier
	if storeCfg.kind == "memory" {
		app := cfg.AppID
		if app == "" { // a site with website login only
			app = cfg.OpenAppID
		}
		if cfg.Revocations, err = h.revocations(storeCfg.revocationFile, app); err != nil {
			return err
		}
		if cfg.CookieDomain != "" {
			// The list is pooled per app, so every site block of this
			// process with the same app shares it; no other process sees it.
			h.logger.Info("cookie_domain with the embedded store: a logout holds on every site of this Caddy with the same app; hosts under the domain served by another Caddy need store redis to share logouts")
		}
	}
	cfg.TokenSource = h.shared.tokens(cfg)
	cfg.Metrics = newMetrics(ctx, h.logger)

	h.mw, err = middleware.New(cfg)
	if err != nil {
		return optionError(err)
	}
	if h.sandbox != nil {
		h.sandbox.current.Store(h.mw)
	}
	return nil
}

// Validate checks the module's own rules: the options that are not fields
// of middleware.Config, and how options combine. It needs no placeholder
// resolved, so Provision runs it before anything else; the options that
// become middleware.Config fields are checked by middleware.Config.Validate
// once config has resolved them.
func (h *Handler) Validate() error {
	switch h.Store {
	case "", "memory":
		if h.RedisURL != "" {
			return errors.New("redis_url is only for store redis")
		}
	case "redis":
		if h.RevocationFile != "" {
			return errors.New("revocation_file is only for store memory: with store redis, Redis keeps the logouts")
		}
		if h.RedisURL == "" {
			return errors.New("store redis needs a URL, such as redis://127.0.0.1:6379/0")
		}
	default:
		return fmt.Errorf("store must be memory or redis, not %q", h.Store)
	}
	switch h.UserID {
	case "", "openid", "unionid":
	default:
		return fmt.Errorf("user_id must be openid or unionid, not %q", h.UserID)
	}
	if time.Duration(h.SessionTTL) > maxSessionTTL {
		return fmt.Errorf("session_ttl %v is longer than the maximum of %v", time.Duration(h.SessionTTL), maxSessionTTL)
	}
	// A logout of a refreshed session is kept until its max age has passed.
	if time.Duration(h.SessionMaxAge) > maxSessionTTL {
		return fmt.Errorf("session_max_age %v is longer than the maximum of %v", time.Duration(h.SessionMaxAge), maxSessionTTL)
	}
	if h.Sandbox && (h.AppID != "" || h.AppSecret != "" || h.APIBase != "" || h.OAuthBase != "" || h.MPBase != "") {
		return errors.New("sandbox cannot be combined with app_id, app_secret or the *_base options: it replaces WeChat entirely")
	}
	if h.SandboxAccount != "" && (!h.Sandbox || h.SandboxAccount != "subscription") {
		return fmt.Errorf("sandbox_account %q: only \"subscription\", with sandbox", h.SandboxAccount)
	}
	if h.Sandbox && h.LoginHost != "" {
		return errors.New("sandbox cannot be combined with login_host: a site with a login host has no WeChat of its own, fake or real")
	}
	return nil
}

// config resolves the options into the middleware's configuration and the
// store's, and checks the former with middleware.Config.Validate, naming
// the option at fault. What comes from the shared state (store, notifier,
// logouts, access tokens, the sandbox's wiring) and the metrics are added
// by Provision.
func (h *Handler) config(repl *caddy.Replacer) (middleware.Config, storeConfig, error) {
	resolve := func(s string) (string, error) { return repl.ReplaceOrErr(s, true, true) }
	cfg := middleware.Config{
		Prefix:               h.Prefix,
		Methods:              h.Methods,
		OAuthScope:           h.Scope,
		OpenDisplay:          h.OpenDisplay,
		OpenFrameStyle:       h.OpenFrameStyle,
		OpenFrameCSS:         h.OpenFrameCSS,
		SessionTTL:           time.Duration(h.SessionTTL),
		SessionRefresh:       time.Duration(h.SessionRefresh),
		SessionMaxAge:        time.Duration(h.SessionMaxAge),
		SceneTTL:             time.Duration(h.QRTTL),
		SiteName:             h.SiteName,
		LogoURL:              h.Logo,
		LoginReply:           h.LoginReply,
		ExpiredReply:         h.ExpiredReply,
		AccountName:          h.AccountName,
		FollowQR:             h.FollowQR,
		WelcomeReply:         h.WelcomeReply,
		PublicPaths:          h.PublicPaths,
		AllowedOpenIDs:       h.AllowOpenIDs,
		AllowedUnionIDs:      h.AllowUnionIDs,
		UserID:               h.UserID,
		UserHeaders:          h.ForwardUserHeaders,
		StripSessionCookie:   h.StripSessionCookie,
		RedirectHosts:        h.RedirectHosts,
		FetchUnionID:         h.FetchUnionID,
		ConfirmInChat:        h.ConfirmInChat,
		PassThroughPushes:    h.PassThroughPushes,
		AllowPlaintextPushes: h.AllowPlaintextPushes,
		QRRateLimit:          h.QRRateLimit,
		QRRateBurst:          h.QRRateBurst,
		QRCeiling:            h.QRCeiling,
		MaxWaiting:           h.MaxWaiting,
		Logger:               h.logger,
		ClientIP:             clientIP,
		TrustedProxy:         trustedProxy,
	}
	var sc storeConfig
	var err error
	for _, f := range []struct {
		name string
		in   string
		out  *string
	}{
		{"app_id", h.AppID, &cfg.AppID},
		{"app_secret", h.AppSecret, &cfg.AppSecret},
		{"token", h.Token, &cfg.PushToken},
		{"encoding_aes_key", h.EncodingAESKey, &cfg.EncodingAESKey},
		{"open_app_id", h.OpenAppID, &cfg.OpenAppID},
		{"open_app_secret", h.OpenAppSecret, &cfg.OpenAppSecret},
		{"api_base", h.APIBase, &cfg.Endpoint.API},
		{"oauth_base", h.OAuthBase, &cfg.Endpoint.Authorize},
		{"mp_base", h.MPBase, &cfg.Endpoint.MP},
		{"cookie_domain", h.CookieDomain, &cfg.CookieDomain},
		{"public_origin", h.PublicOrigin, &cfg.PublicOrigin},
		{"login_host", h.LoginHost, &cfg.LoginHost},
	} {
		if *f.out, err = resolve(f.in); err != nil {
			return cfg, sc, fmt.Errorf("%s: %w", f.name, err)
		}
	}
	if h.LoginTemplate != "" {
		path, err := resolve(h.LoginTemplate)
		if err != nil {
			return cfg, sc, fmt.Errorf("login_template: %w", err)
		}
		tmpl, err := os.ReadFile(path)
		if err != nil {
			return cfg, sc, fmt.Errorf("login_template: %w", err)
		}
		cfg.LoginTemplate = string(tmpl)
	}
	for i, o := range h.HandoffTo {
		v, err := resolve(o)
		if err != nil {
			return cfg, sc, fmt.Errorf("handoff_to %d: %w", i+1, err)
		}
		cfg.HandoffTo = append(cfg.HandoffTo, v)
	}
	for i, k := range h.SessionKeys {
		v, err := resolve(k)
		if err != nil {
			return cfg, sc, fmt.Errorf("session_key %d: %w", i+1, err)
		}
		cfg.SessionKeys = append(cfg.SessionKeys, []byte(v))
	}
	if h.Sandbox {
		if err := h.sandboxConfig(&cfg); err != nil {
			return cfg, sc, err
		}
	}
	if sc, err = h.storeConfig(repl); err != nil {
		return cfg, sc, err
	}

	check := cfg
	if h.Sandbox && len(check.SessionKeys) == 0 {
		// The sandbox seals with a random key of its own, which only the
		// shared state holds.
		check.SessionKeys = [][]byte{make([]byte, 32)}
	}
	if err := check.Validate(); err != nil {
		return cfg, sc, optionError(err)
	}
	return cfg, sc, nil
}

// options names the option behind each middleware.Config field the module
// sets, for errors in the user's terms. QRRateBurst can only be wrong in
// JSON, where it has a key of its own.
var options = map[string]string{
	"AppID":           "app_id",
	"AppSecret":       "app_secret",
	"PushToken":       "token",
	"EncodingAESKey":  "encoding_aes_key",
	"Methods":         "methods",
	"OAuthScope":      "scope",
	"OpenAppID":       "open_app_id",
	"OpenAppSecret":   "open_app_secret",
	"OpenDisplay":     "open_display",
	"OpenFrameStyle":  "open_frame_style",
	"OpenFrameCSS":    "open_frame_css",
	"SessionKeys":     "session_key",
	"Prefix":          "prefix",
	"SessionTTL":      "session_ttl",
	"SessionRefresh":  "session_refresh",
	"SessionMaxAge":   "session_max_age",
	"UserID":          "user_id",
	"SceneTTL":        "qr_ttl",
	"SiteName":        "site_name",
	"LogoURL":         "logo",
	"LoginTemplate":   "login_template",
	"LoginReply":      "login_reply",
	"ExpiredReply":    "expired_reply",
	"AccountName":     "account_name",
	"FollowQR":        "follow_qr",
	"WelcomeReply":    "welcome_reply",
	"PublicPaths":     "public_paths",
	"AllowedOpenIDs":  "allow_openids",
	"AllowedUnionIDs": "allow_unionids",
	"RedirectHosts":   "redirect_hosts",
	"CookieDomain":    "cookie_domain",
	"PublicOrigin":    "public_origin",
	"LoginHost":       "login_host",
	"HandoffTo":       "handoff_to",
	"QRRateLimit":     "qr_rate_limit",
	"QRRateBurst":     "qr_rate_burst",
	"QRCeiling":       "qr_ceiling",
	"MaxWaiting":      "max_waiting",
}

// optionError rewords a middleware error to name the option at fault
// rather than the Go field: "encoding_aes_key must be 43 characters, got
// 5", "session_key 2 is 5 bytes, need at least 32" (elements of a list
// count from 1, as they are written).
func optionError(err error) error {
	var ce *middleware.ConfigError
	if errors.As(err, &ce) {
		if opt, ok := options[ce.Field]; ok {
			if ce.Index >= 0 {
				return fmt.Errorf("%s %d %s", opt, ce.Index+1, ce.Reason)
			}
			return fmt.Errorf("%s %s", opt, ce.Reason)
		}
	}
	return errors.New(strings.TrimPrefix(err.Error(), "middleware: "))
}

// Cleanup releases this config's hold on the shared state and ends its
// waiting long-polls; the state itself lives on while a newer config uses it.
func (h *Handler) Cleanup() error {
	if h.mw != nil {
		_ = h.mw.Close()
	}
	var errs []error
	if h.revKey != "" {
		_, err := revocationPool.Delete(h.revKey)
		errs = append(errs, err)
		h.revKey = ""
	}
	if h.shared != nil {
		_, err := pool.Delete(h.poolKey)
		errs = append(errs, err)
		h.shared = nil
	}
	return errors.Join(errs...)
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if h.sandbox != nil {
		if h.serveSandbox(w, r) {
			return nil
		}
		// Only the login page, under the prefix (the sandbox's parent),
		// reads the sandbox's control: other requests are spared a copy.
		prefix := strings.TrimSuffix(h.sandboxPrefix, "/sandbox")
		if p := r.URL.Path; strings.HasPrefix(p, prefix) && (len(p) == len(prefix) || p[len(prefix)] == '/') {
			r = r.WithContext(loginpage.WithSandbox(r.Context(), h.sandboxPage))
		}
	}
	n := nextHandler{next: next, userID: h.UserID}
	if !h.UseHandleErrors {
		h.mw.ServeNext(w, r, &n)
		return n.err
	}
	if denied := h.mw.ServeOrRefuse(w, r, &n); denied != nil {
		// As Caddy's own authentication handler does: handle_errors sees
		// {err.status_code} and {err.message}.
		return caddyhttp.Error(denied.Status, denied)
	}
	return n.err
}

// nextHandler adapts Caddy's error-returning next handler, and sets the
// identity placeholders on the way.
type nextHandler struct {
	next   caddyhttp.Handler
	userID string
	err    error
}

// ServeHTTP serves a request without a session: a public path.
func (n *nextHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n.err = n.next.ServeHTTP(w, r)
}

// ServeIdentified serves a request with a session, whose identity the
// middleware hands over directly (middleware.IdentifiedHandler): handlers
// after this one read it from the placeholders, not the context.
func (n *nextHandler) ServeIdentified(w http.ResponseWriter, r *http.Request, id middleware.Identity) {
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		setPlaceholders(repl, id, n.userID)
	}
	n.err = n.next.ServeHTTP(w, r)
}

// setPlaceholders publishes the identity as {http.auth.user.*}, the names
// Caddy's own authentication handler gives it, so that the access log's
// user_id and the placeholders work. The values are answered by one
// provider, looked up only when a placeholder is used, rather than stored
// in the replacer's map one by one (a lock, an insert and a boxed string
// each) on every request, whether or not anything reads them.
func setPlaceholders(repl *caddy.Replacer, id middleware.Identity, userID string) {
	repl.Map(identityPlaceholders{id: id, unionID: userID == "unionid"}.get)
}

// identityPlaceholders answers the identity placeholders of one request.
type identityPlaceholders struct {
	id middleware.Identity
	// unionID makes the user id the unionid: never the openid in its
	// place, since the middleware refuses logins without a unionid in this
	// mode, and an application keyed by unionid must not be handed an
	// openid for one.
	unionID bool
}

func (p identityPlaceholders) get(key string) (any, bool) {
	name, ok := strings.CutPrefix(key, "http.auth.user.")
	if !ok {
		return nil, false
	}
	switch name {
	case "id":
		if p.unionID {
			return p.id.UnionID, true
		}
		return p.id.OpenID, true
	case "openid":
		return p.id.OpenID, true
	case "unionid":
		return p.id.UnionID, true
	case "app_id":
		return p.id.AppID, true
	case "login_method":
		return p.id.Method, true
	case "nickname":
		return p.id.Nickname, p.id.Nickname != ""
	}
	return nil, false
}

// clientIP uses the client address Caddy determined (honouring
// trusted_proxies), falling back to the connection's peer.
func clientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return ip
	}
	host := r.RemoteAddr
	if i := strings.LastIndexByte(host, ':'); i > 0 {
		host = host[:i]
	}
	return strings.Trim(host, "[]")
}

// trustedProxy reports whether Caddy found the request's peer in the
// server's trusted_proxies; only then is X-Forwarded-Proto believed.
func trustedProxy(r *http.Request) bool {
	trusted, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool)
	return trusted
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
