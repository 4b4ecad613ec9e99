package middleware

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/wechat-login/caddy-wechat-login/internal/loginpage"
	"github.com/wechat-login/caddy-wechat-login/internal/session"
	"github.com/wechat-login/caddy-wechat-login/middleware/store"
	"github.com/wechat-login/caddy-wechat-login/wechat"
)

// Config configures the login middleware. The zero value of every optional
// field selects a secure default; Validate, and New, report the first field
// that is wrong.
type Config struct {
	// AppID and AppSecret identify the WeChat Official Account whose
	// parametric QR codes users scan. Required.
	AppID     string
	AppSecret string

	// PushToken is the token configured on the Official Account's server
	// settings page (令牌 Token); WeChat signs every push with it. Required.
	PushToken string

	// EncodingAESKey is the 43-character message encryption key. When it is
	// set, pushes must arrive encrypted (WeChat's safe or compatible mode)
	// unless AllowPlaintextPushes is true: a plaintext push's signature does
	// not cover its body, so anyone who once saw a callback URL could forge
	// one.
	EncodingAESKey string

	// PreviousEncodingAESKeys are older keys still accepted for decryption
	// while WeChat's side is being rotated.
	PreviousEncodingAESKeys []string

	// AllowPlaintextPushes accepts unencrypted pushes even though an
	// EncodingAESKey is configured. Only for migrations.
	AllowPlaintextPushes bool

	// Methods are the login methods offered: MethodQR (parametric QR code
	// on desktop browsers), MethodCode (the page shows a code that the user
	// sends to the Official Account in chat: for accounts WeChat does not
	// let make parametric QR codes), MethodOAuth (web authorization inside
	// WeChat's own browser, with the same Official Account) and MethodOpen
	// (Open Platform website login, needs OpenAppID). Default: qr and
	// oauth, plus open when OpenAppID is set. With both qr and code, the
	// page shows the QR code and falls back to a code by itself when WeChat
	// refuses the account QR codes (errcode 48001).
	Methods []string

	// AccountName is the Official Account's name, as users find it in
	// WeChat's search, for the code login steps ("follow <AccountName>,
	// then send this code"). Default: the page says "our Official Account".
	AccountName string

	// FollowQR is the URL of the Official Account's own QR code (the one
	// the console offers to download, which follows the account when
	// scanned), shown next to a login code so that users who do not follow
	// the account yet can. An absolute path on this site, or an http(s)
	// URL, whose origin the login page's Content-Security-Policy then
	// allows for images.
	FollowQR string

	// WelcomeReply is the chat message sent to users who follow the account
	// other than by scanning a login QR code: once a server URL is set,
	// WeChat no longer sends the auto-reply configured in its console.
	// Default: none, except with code login (and without
	// PassThroughPushes), where a line tells the new follower to send the
	// code shown on the site.
	WelcomeReply string

	// OAuthScope is the scope of in-WeChat authorization: "snsapi_base"
	// (silent, openid only; the default) or "snsapi_userinfo" (asks for
	// consent, adds nickname and avatar).
	OAuthScope string

	// OpenAppID and OpenAppSecret identify an Open Platform website app,
	// for website login (qrconnect).
	OpenAppID     string
	OpenAppSecret string

	// OpenDisplay is how the login page shows website login:
	// OpenDisplayEmbedded (the default) puts WeChat's login QR in a frame
	// on the page, as WeChat's wxLogin.js does, and finishes the login
	// without leaving the page; OpenDisplayPopup opens WeChat's page in a
	// popup (a full-page visit when the popup is blocked); OpenDisplayPage
	// goes to WeChat's page in the same window. Only with website login.
	OpenDisplay string

	// OpenFrameStyle is the text colour of the embedded QR page: "black"
	// (WeChat's default, for light pages) or "white" (for dark ones).
	// OpenFrameCSS is custom CSS for it, as WeChat allows: an https URL or
	// a data:text/css;base64 URL. Both only with OpenDisplayEmbedded.
	OpenFrameStyle string
	OpenFrameCSS   string

	// SessionKeys seal the session and browser-binding cookies. Each key is
	// at least 32 bytes of secret randomness. The first key seals; all keys
	// open, so a new key can be put first while old cookies stay valid.
	// Required.
	SessionKeys [][]byte

	// Prefix is the path under which the middleware serves its own routes.
	// Default "/wechat".
	Prefix string

	// SessionTTL is how long a login lasts, or with SessionRefresh, how
	// long a session lasts from its latest refresh. Default 24h.
	SessionTTL time.Duration

	// SessionRefresh keeps sessions that are in use alive: when a session
	// is used (a request through the gate, or {prefix}/userinfo) once this
	// much time has passed since its cookie was issued, the cookie is
	// issued again, valid for SessionTTL from then, under the same session
	// id (so a logout still ends every copy of it) and never past
	// SessionMaxAge from the login. It must be shorter than SessionTTL, and
	// needs a SessionMaxAge longer than SessionTTL. Zero, the default,
	// never refreshes: a session ends SessionTTL after the login, used or
	// not.
	//
	// The refreshed cookie rides on the response to the request that used
	// the session. {prefix}/auth answers a proxy, not the browser: behind
	// Caddy's forward_auth, which passes no header of a successful auth
	// response back to the browser, sessions are refreshed only by requests
	// that reach the middleware itself (such as {prefix}/userinfo).
	SessionRefresh time.Duration

	// SessionMaxAge is how long a session can last from its login, however
	// often it is refreshed: no refresh carries it further, and a session
	// older than this is refused. A logout of a session that can be
	// refreshed is kept until this bound has passed. At least SessionTTL;
	// required with SessionRefresh, and without it no longer than
	// SessionTTL, since nothing else extends a session. Default SessionTTL.
	SessionMaxAge time.Duration

	// SceneTTL is how long a QR code can be scanned. Default 5 minutes,
	// at most 30 minutes.
	SceneTTL time.Duration

	// LongPollTimeout bounds how long one poll request waits for a change.
	// Default 25s (below common proxy idle timeouts).
	LongPollTimeout time.Duration

	// PushMaxAge is the freshness window for pushes: a push whose timestamp
	// is further than this from now, in either direction, is rejected.
	// Default 5 minutes.
	PushMaxAge time.Duration

	// PublicPaths are path prefixes served without a session (for example
	// "/static/" or "/healthz"). A prefix matches at a segment boundary
	// only ("/healthz" opens "/healthz" and "/healthz/x", not "/healthzz"),
	// and only request paths in canonical form are public: a path with dot
	// or empty segments, a backslash, or an encoded slash, backslash, dot
	// or percent sign always needs a session, whatever prefix it starts
	// with, because the handler behind may resolve it elsewhere.
	PublicPaths []string

	// AllowedOpenIDs and AllowedUnionIDs, when either is non-empty, restrict
	// who may pass: a user matching neither list gets 403.
	AllowedOpenIDs  []string
	AllowedUnionIDs []string

	// UserID is how the site knows a person: "openid" (the default; one
	// per app, so website login and the Official Account give the same
	// person two) or "unionid" (one per person across every app bound to
	// the same Open Platform account). It is what UserHeaders carry. With
	// "unionid", every login must come with a unionid and none falls back
	// to the openid: QR logins look it up (cgi-bin/user/info, as
	// FetchUnionID does), website login and snsapi_userinfo get it from
	// WeChat, and a login WeChat gives none for (an app not bound to an
	// Open Platform account; snsapi_base mostly) is refused with a page
	// that says why.
	UserID string

	// UserHeaders also passes the user to the wrapped handler in the
	// headers that applications behind other authentication proxies
	// already read: X-Forwarded-User, X-Auth-Request-User and Remote-User,
	// each carrying the user's UserID. With UserID "unionid", a user
	// without a unionid gets none of them, never the openid in its place:
	// an application keyed by unionid must not take an openid for one. The
	// X-WeChat-* headers are set either way.
	//
	// Copies of these headers sent by the client are removed whether or
	// not this is set, in any spelling, like the X-WeChat-* headers: no
	// client may name a user to the application.
	UserHeaders bool

	// StripSessionCookie removes the middleware's own cookies (the
	// session, and the login-binding cookies, under every name they can
	// have) from the Cookie header of requests passed to the wrapped
	// handler, leaving the application's cookies as they were. The
	// application then never holds a session it could leak or replay;
	// it gets the identity from the headers and the request's context.
	StripSessionCookie bool

	// RedirectHosts are hosts (exact "host[:port]", or "*.example.com" for
	// subdomains) that `next` may point to besides same-origin paths.
	RedirectHosts []string

	// CookieDomain shares logins between the subdomains of one domain
	// ("example.com"): on a request for a host at or under it
	// (a.example.com), the session cookie is set for the whole domain,
	// named with the __Secure- prefix over HTTPS instead of __Host-, so a
	// login on a.example.com serves b.example.com too. A request for any
	// other host gets a host-only cookie, as without it. The login-binding
	// cookies stay host-only. Every site under the domain must use the
	// same SessionKeys and share logouts (one process, or a shared Store),
	// and every host under it can read and set the cookie, so all of them
	// must be trusted.
	CookieDomain string

	// PublicOrigin is this site's origin as browsers see it, such as
	// "https://login.example.com": redirect_uris, handoffs and cookie
	// attributes follow it instead of the scheme and Host of each request,
	// which a proxy in front may change. For a site served under one name.
	PublicOrigin string

	// LoginHost is the origin of another site, running this middleware
	// with HandoffTo listing this site, that logs users in for this one:
	// browsers without a session are sent to its login page, and come back
	// to {Prefix}/handoff with a sealed, single-use handoff that starts
	// this site's own session. The site then has no WeChat app of its
	// own (AppID, AppSecret, PushToken, EncodingAESKey, OpenAppID,
	// OpenAppSecret and Methods stay empty), needs the login host's first
	// session key among its SessionKeys, and the same Prefix.
	LoginHost string

	// HandoffTo, on a login host, lists the origins ("https://shop.example.net")
	// of the sites it may log users in to, compared exactly (scheme, host
	// and port). Their hosts are also allowed as next, like RedirectHosts,
	// so that a logout everywhere can return to the site it began on.
	HandoffTo []string

	// SiteName is shown on the login page and in the chat reply after a
	// scan. Default "this site".
	SiteName string

	// LogoURL is an image shown above the site name on the login page. A
	// path on this site is best: the page's Content-Security-Policy allows
	// images from this origin only (and data: URLs).
	LogoURL string

	// LoginTemplate, when set, replaces the built-in login page: the text of
	// an html/template that receives the same data as the built-in one.
	LoginTemplate string

	// LoginReply and ExpiredReply are the chat messages sent to the user
	// after a successful scan and after scanning an expired code. "%s" in
	// LoginReply is replaced by SiteName.
	LoginReply   string
	ExpiredReply string

	// ConfirmInChat adds a confirmation step to QR logins: the scan only
	// moves the login to "scanned" and the chat reply tells the user which
	// browser (family and address) is asking, and gives a six-digit code
	// drawn for this login alone. Only the scanner replying with that code
	// confirms it; everyday replies ("1", "yes", "确认") confirm nothing and
	// reach the site like any message, and after five wrong codes the login
	// is refused. A QR code relayed to a victim (QRLJacking) then needs the
	// victim to type the code of a login they can see is not theirs.
	//
	// Whether or not it is set, the reply after every QR login also offers
	// a "not me" code that ends that login at once.
	ConfirmInChat bool

	// ConfirmReply is the chat message asking for that confirmation; "%s"
	// is replaced by SiteName, "%[2]s" by the browser's description and
	// "%[3]s" by the confirmation code. A text without "%[3]s" gets the
	// code on a line of its own after it.
	ConfirmReply string

	// FetchUnionID looks up the scanner's unionid through cgi-bin/user/info
	// after a QR scan (the Official Account must be bound to an Open
	// Platform account for WeChat to have one).
	FetchUnionID bool

	// PassThroughPushes hands pushes that are not login scans to the wrapped
	// handler, body intact, so a site can keep handling its other Official
	// Account messages on the same server URL. Without it they are answered
	// "success".
	PassThroughPushes bool

	// QRRateLimit and QRRateBurst limit how many new QR codes one client IP
	// may create (per minute, and at once). WeChat's QR quota is per
	// account, and a public endpoint is an easy way to burn it.
	// Defaults 10 per minute, burst 5.
	QRRateLimit float64
	QRRateBurst int

	// QRCeiling is the most QR codes this instance (and, with a store that
	// counts across instances, the whole cluster) creates per minute,
	// whatever the client addresses. Default 60, which keeps a day's use
	// (86,400) under WeChat's daily qrcode/create quota of 100,000.
	QRCeiling int

	// MaxWaiting bounds how many browsers may wait on this instance at
	// once (long-polls and event streams); more get 429. Default 20,000.
	// One login code has at most 4 waiting at once, whatever this says.
	MaxWaiting int

	// ClientIP returns the client address used for rate limiting. Default:
	// the host part of r.RemoteAddr. Set it when behind a trusted proxy.
	// Limits count IPv6 clients by their /64.
	ClientIP func(r *http.Request) string

	// TrustForwardedProto treats every request with "X-Forwarded-Proto:
	// https" as HTTPS when choosing cookie attributes and redirect_uris.
	// Only enable it when every request comes through a proxy that sets
	// the header; otherwise use TrustedProxy.
	TrustForwardedProto bool

	// TrustedProxy reports whether a request came from a proxy whose
	// X-Forwarded-Proto header is to be believed; from any other peer the
	// header changes nothing. The Caddy module answers it from Caddy's
	// trusted_proxies.
	TrustedProxy func(r *http.Request) bool

	// Endpoint overrides WeChat's base URLs (for the fake WeChat in tests
	// and the sandbox).
	Endpoint wechat.Endpoint

	// HTTPClient is used for calls to WeChat. Default: a client with a 10s
	// timeout.
	HTTPClient *http.Client

	// TokenSource supplies access tokens. Default: stable_token, cached.
	TokenSource wechat.TokenSource

	// Store keeps scenes, push dedupe markers and revocations. Default: an
	// embedded bigcache store, which is right for a single instance only.
	Store store.Store

	// RevocationFile is the file where logouts are kept when the Store is
	// not a durable shared one (the embedded default is not): every logout
	// is written to it before the response, and read back at start, so a
	// restart forgets none and logs nobody else out. Empty keeps them in
	// memory only (a restart then forgets every logout; New logs a
	// warning). One process per file.
	RevocationFile string

	// Revocations, when set, keeps logouts instead of the Store or
	// RevocationFile. The Caddy module passes a file-backed list that
	// outlives configuration reloads.
	Revocations RevocationList

	// Notifier wakes waiting browsers when a scene changes. Default: the
	// Store itself when it is a store.Broadcaster (Redis: across
	// instances), otherwise in process.
	Notifier Notifier

	// Metrics receives the middleware's events (logins, pushes, limits,
	// calls to WeChat). Default: discarded. The Caddy module passes
	// Prometheus collectors.
	Metrics Metrics

	// Logger receives operational logs. Nil means silent. Secrets, tokens,
	// codes and full openids are never logged.
	Logger *zap.Logger

	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// The values of Config.OpenDisplay.
const (
	OpenDisplayEmbedded = "embedded"
	OpenDisplayPopup    = "popup"
	OpenDisplayPage     = "page"
)

const (
	defaultPrefix          = "/wechat"
	defaultSessionTTL      = 24 * time.Hour
	defaultSceneTTL        = 5 * time.Minute
	maxSceneTTL            = 30 * time.Minute
	defaultLongPollTimeout = 25 * time.Second
	defaultPushMaxAge      = 5 * time.Minute
	defaultSiteName        = "this site"
	defaultLoginReply      = "已登录 %s。\nYou are now logged in to %[1]s."
	defaultConfirmReply    = "有人正在用你的微信登录 %s（%s）。如果是你本人，请回复确认码 %s 完成登录；如果不是，请忽略本消息。\nSomeone is logging in to %[1]s as you (%[2]s). If this is you, reply with the code %[3]s to confirm; if not, ignore this message."
	defaultExpiredReply    = "这个登录二维码已失效，请在网页上刷新后重新扫码。\nThis login code has expired: refresh the page and scan again."
	defaultCodeWelcome     = "欢迎关注！要登录 %s，请把网页上显示的登录码发到这里。\nWelcome! To log in to %[1]s, send the login code shown on the site here."
	minSessionKeyLen       = 32
)

// encodingAESKeyLen is the length of WeChat's EncodingAESKey: 32 bytes in
// base64 without its padding.
const encodingAESKeyLen = 43

// ConfigError is a mistake in a Config. Validate and New report every
// mistake in the values of a Config as one, so that a program presenting
// the Config under names of its own (the Caddy module's options) can say
// which of its settings is wrong.
type ConfigError struct {
	// Field is the Config field at fault, such as "EncodingAESKey".
	Field string
	// Index is the element at fault of a list field, counting from 0, or
	// -1 when the field as a whole is wrong.
	Index int
	// Reason says what is wrong, worded to follow the field's name: "is
	// required", "must be 43 characters, got 5".
	Reason string
}

func (e *ConfigError) Error() string {
	if e.Index >= 0 {
		return fmt.Sprintf("middleware: %s[%d] %s", e.Field, e.Index, e.Reason)
	}
	return "middleware: " + e.Field + " " + e.Reason
}

func fieldError(field, format string, args ...any) error {
	return &ConfigError{Field: field, Index: -1, Reason: fmt.Sprintf(format, args...)}
}

func elementError(field string, i int, format string, args ...any) error {
	return &ConfigError{Field: field, Index: i, Reason: fmt.Sprintf(format, args...)}
}

// Validate reports the first mistake in c that New would refuse, as a
// *ConfigError; nil means New accepts c's values. It makes no network
// calls and opens no files, so New can still fail where only opening them
// tells (RevocationFile, the default store).
func (c Config) Validate() error {
	_, err := c.withDefaults()
	return err
}

// withDefaults returns a copy of c with defaults filled in, or a
// *ConfigError naming the first invalid field. It runs every check New
// relies on.
func (c Config) withDefaults() (Config, error) {
	c, _, err := c.prepare()
	return c, err
}

// parts is what New makes from a Config's values. Making them is how
// those values are checked, so Validate and New cannot disagree.
type parts struct {
	public  publicPaths
	crypter *wechat.Crypter // nil when pushes are plaintext
	page    *loginpage.Renderer
}

// prepare returns a copy of c with defaults filled in and the parts New
// needs, or a *ConfigError naming the first invalid field.
func (c Config) prepare() (Config, parts, error) {
	var p parts
	if err := c.handoffOptions(); err != nil {
		return c, p, err
	}
	// A site with a LoginHost has no WeChat app: handoffOptions made sure.
	if c.LoginHost == "" {
		if err := c.oauthDefaults(); err != nil {
			return c, p, err
		}
		if err := c.accountDefaults(); err != nil {
			return c, p, err
		}
	}
	var err error
	if p.crypter, err = c.crypter(); err != nil {
		return c, p, err
	}
	if err := c.checkSessionKeys(); err != nil {
		return c, p, err
	}
	if c.Prefix == "" {
		c.Prefix = defaultPrefix
	}
	if !strings.HasPrefix(c.Prefix, "/") || strings.HasSuffix(c.Prefix, "/") || strings.ContainsAny(c.Prefix, "?#*") {
		return c, p, fieldError("Prefix", "%q must start with / and not end with /", c.Prefix)
	}
	if c.SessionTTL, err = positiveOr("SessionTTL", c.SessionTTL, defaultSessionTTL); err != nil {
		return c, p, err
	}
	if err := c.sessionLifetime(); err != nil {
		return c, p, err
	}
	switch c.UserID {
	case "":
		c.UserID = "openid"
	case "openid", "unionid":
	default:
		return c, p, fieldError("UserID", "must be openid or unionid, not %q", c.UserID)
	}
	if c.SceneTTL, err = positiveOr("SceneTTL", c.SceneTTL, defaultSceneTTL); err != nil {
		return c, p, err
	}
	if c.SceneTTL < 30*time.Second || c.SceneTTL > maxSceneTTL {
		return c, p, fieldError("SceneTTL", "%v must be between 30s and %v", c.SceneTTL, maxSceneTTL)
	}
	if c.LongPollTimeout, err = positiveOr("LongPollTimeout", c.LongPollTimeout, defaultLongPollTimeout); err != nil {
		return c, p, err
	}
	if c.PushMaxAge, err = positiveOr("PushMaxAge", c.PushMaxAge, defaultPushMaxAge); err != nil {
		return c, p, err
	}
	if c.SiteName == "" {
		c.SiteName = defaultSiteName
	}
	if c.LoginReply == "" {
		c.LoginReply = defaultLoginReply
	}
	if c.ConfirmReply == "" {
		c.ConfirmReply = defaultConfirmReply
	}
	if c.ExpiredReply == "" {
		c.ExpiredReply = defaultExpiredReply
	}
	if c.WelcomeReply == "" && c.enabled(MethodCode) && !c.PassThroughPushes {
		c.WelcomeReply = defaultCodeWelcome
	}
	if c.QRRateLimit < 0 {
		return c, p, fieldError("QRRateLimit", "must not be negative")
	}
	if c.QRRateLimit == 0 {
		c.QRRateLimit = 10
	}
	for _, n := range []struct {
		field string
		v     *int
		def   int
	}{
		{"QRRateBurst", &c.QRRateBurst, 5},
		{"QRCeiling", &c.QRCeiling, 60},
		{"MaxWaiting", &c.MaxWaiting, defaultMaxWaiters},
	} {
		if *n.v < 0 {
			return c, p, fieldError(n.field, "must not be negative")
		}
		if *n.v == 0 {
			*n.v = n.def
		}
	}
	if err := c.openDisplay(); err != nil {
		return c, p, err
	}
	if p.public, err = c.publicPaths(); err != nil {
		return c, p, err
	}
	if p.page, err = c.loginPage(); err != nil {
		return c, p, err
	}
	if c.ClientIP == nil {
		c.ClientIP = remoteHost
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Metrics == nil {
		c.Metrics = nopMetrics{}
	}
	return c, p, nil
}

// sessionLifetime checks SessionRefresh and SessionMaxAge against
// SessionTTL, which is already defaulted, and defaults SessionMaxAge. The
// reasons speak of the session's lifetime rather than of SessionTTL, so that
// they read right under the names a caller gives these settings.
func (c *Config) sessionLifetime() error {
	switch {
	case c.SessionRefresh < 0:
		return fieldError("SessionRefresh", "must not be negative")
	case c.SessionRefresh >= c.SessionTTL:
		return fieldError("SessionRefresh", "%v must be shorter than the session lifetime (%v)", c.SessionRefresh, c.SessionTTL)
	case c.SessionMaxAge < 0:
		return fieldError("SessionMaxAge", "must not be negative")
	case c.SessionMaxAge == 0 && c.SessionRefresh > 0:
		return fieldError("SessionMaxAge", "is required with session refresh: it is the longest a refreshed session lasts from its login")
	case c.SessionMaxAge == 0:
		c.SessionMaxAge = c.SessionTTL
		return nil
	case c.SessionMaxAge < c.SessionTTL:
		return fieldError("SessionMaxAge", "%v must not be shorter than the session lifetime (%v)", c.SessionMaxAge, c.SessionTTL)
	case c.SessionMaxAge == c.SessionTTL && c.SessionRefresh > 0:
		return fieldError("SessionMaxAge", "%v must be longer than the session lifetime (%v), or no refresh can extend a session", c.SessionMaxAge, c.SessionTTL)
	case c.SessionMaxAge > c.SessionTTL && c.SessionRefresh == 0:
		return fieldError("SessionMaxAge", "%v is longer than the session lifetime (%v), which only session refresh extends", c.SessionMaxAge, c.SessionTTL)
	}
	return nil
}

// crypter checks the message keys and makes the crypter for encrypted
// pushes, or nil when there is no EncodingAESKey. Each key is tried alone
// first, so that the error names the one at fault.
func (c *Config) crypter() (*wechat.Crypter, error) {
	if c.EncodingAESKey == "" {
		if len(c.PreviousEncodingAESKeys) > 0 {
			return nil, fieldError("PreviousEncodingAESKeys", "given without EncodingAESKey")
		}
		return nil, nil
	}
	if reason := c.aesKeyProblem(c.EncodingAESKey); reason != "" {
		return nil, fieldError("EncodingAESKey", "%s", reason)
	}
	for i, k := range c.PreviousEncodingAESKeys {
		if reason := c.aesKeyProblem(k); reason != "" {
			return nil, elementError("PreviousEncodingAESKeys", i, "%s", reason)
		}
	}
	cr, err := wechat.NewCrypter(c.PushToken, c.EncodingAESKey, c.AppID, c.PreviousEncodingAESKeys...)
	if err != nil {
		return nil, fieldError("EncodingAESKey", "is not usable (%v)", err)
	}
	return cr, nil
}

// aesKeyProblem says what is wrong with one message key, or "". The
// wording never includes the key.
func (c *Config) aesKeyProblem(key string) string {
	if len(key) != encodingAESKeyLen {
		return fmt.Sprintf("must be %d characters, got %d", encodingAESKeyLen, len(key))
	}
	if _, err := wechat.NewCrypter(c.PushToken, key, c.AppID); err != nil {
		return fmt.Sprintf("is not a valid key (%v)", err)
	}
	return ""
}

// checkSessionKeys checks SessionKeys, ending with the constructor New's
// session cookies use, so that New cannot refuse keys that pass here.
func (c *Config) checkSessionKeys() error {
	if len(c.SessionKeys) == 0 {
		return fieldError("SessionKeys", "needs at least one key")
	}
	for i, k := range c.SessionKeys {
		if len(k) < minSessionKeyLen {
			return elementError("SessionKeys", i, "is %d bytes, need at least %d", len(k), minSessionKeyLen)
		}
		// A repeated key adds nothing, and is most likely a rotation that
		// forgot to change the new key.
		if slices.ContainsFunc(c.SessionKeys[:i], func(o []byte) bool { return bytes.Equal(o, k) }) {
			return elementError("SessionKeys", i, "repeats an earlier key")
		}
	}
	if _, err := session.NewCookies(c.SessionKeys, nil, nil); err != nil {
		return fieldError("SessionKeys", "cannot seal cookies (%v)", err)
	}
	return nil
}

// publicPaths checks PublicPaths one by one, so that the error names the
// element at fault.
func (c *Config) publicPaths() (publicPaths, error) {
	out := make(publicPaths, 0, len(c.PublicPaths))
	for i, prefix := range c.PublicPaths {
		pp, err := newPublicPaths([]string{prefix})
		if err != nil {
			return nil, elementError("PublicPaths", i, "%q must be an absolute path without dot segments, empty segments, backslashes or escapes", prefix)
		}
		out = append(out, pp...)
	}
	return out, nil
}

// loginPage checks LoginTemplate and makes the page renderer.
func (c *Config) loginPage() (*loginpage.Renderer, error) {
	if c.LoginTemplate != "" {
		if _, err := template.New("login").Parse(c.LoginTemplate); err != nil {
			return nil, fieldError("LoginTemplate", "does not parse (%v)", err)
		}
	}
	return newLoginPage(*c)
}

// accountDefaults checks the apps against the methods they serve. The
// Official Account (AppID, AppSecret) is needed by QR and in-WeChat logins,
// and its push token by QR logins, whose scans WeChat pushes; a site that
// offers website login only needs the website app and none of these, and
// then makes no Official Account call at all.
func (c *Config) accountDefaults() error {
	official := c.enabled(MethodQR) || c.enabled(MethodCode) || c.enabled(MethodOAuth)
	pushes := c.enabled(MethodQR) || c.enabled(MethodCode)
	if !official {
		for _, f := range []struct{ name, v string }{{"AppID", c.AppID}, {"AppSecret", c.AppSecret}, {"PushToken", c.PushToken}, {"EncodingAESKey", c.EncodingAESKey}, {"AccountName", c.AccountName}, {"FollowQR", c.FollowQR}, {"WelcomeReply", c.WelcomeReply}} {
			if f.v != "" {
				return fieldError(f.name, "is set but no login method uses the Official Account (Methods has none of qr, code and oauth)")
			}
		}
		return nil
	}
	if err := c.followQR(); err != nil {
		return err
	}
	if c.AppID == "" {
		return fieldError("AppID", "is required")
	}
	if c.AppSecret == "" && c.TokenSource == nil {
		return fieldError("AppSecret", "is required (or a TokenSource)")
	}
	if c.PushToken == "" && pushes {
		return fieldError("PushToken", "is required (the push token from the Official Account's server settings)")
	}
	if c.PushToken != "" && !validPushToken(c.PushToken) {
		return fieldError("PushToken", "must be 3 to 32 letters and digits, as WeChat's server settings page requires")
	}
	if c.PushToken == "" && c.EncodingAESKey != "" {
		return fieldError("EncodingAESKey", "is set without PushToken: pushes need both")
	}
	return nil
}

// followQR checks FollowQR: a path on this site or an http(s) URL, which
// the login page shows as an image.
func (c *Config) followQR() error {
	if c.FollowQR == "" {
		return nil
	}
	u, err := url.Parse(c.FollowQR)
	switch {
	case err != nil || len(c.FollowQR) > 2048 || strings.ContainsAny(c.FollowQR, " \t\n\"'<>"):
		return fieldError("FollowQR", "must be a URL")
	case u.Scheme == "" && u.Host == "" && strings.HasPrefix(u.Path, "/") && !strings.HasPrefix(c.FollowQR, "//"):
		return nil
	case (u.Scheme == "https" || u.Scheme == "http") && u.Host != "" && u.User == nil:
		return nil
	}
	return fieldError("FollowQR", "must be an absolute path on this site or an http(s) URL, not %q", c.FollowQR)
}

// oauthDefaults fills in and checks Methods, OAuthScope and the website app.
func (c *Config) oauthDefaults() error {
	if c.OAuthScope == "" {
		c.OAuthScope = "snsapi_base"
	}
	if c.OAuthScope != "snsapi_base" && c.OAuthScope != "snsapi_userinfo" {
		return fieldError("OAuthScope", "must be snsapi_base or snsapi_userinfo, not %q", c.OAuthScope)
	}
	switch {
	case c.OpenAppID != "" && c.OpenAppSecret == "":
		return fieldError("OpenAppSecret", "is missing: a website app needs its id and its secret")
	case c.OpenAppID == "" && c.OpenAppSecret != "":
		return fieldError("OpenAppID", "is missing: a website app needs its id and its secret")
	}
	if len(c.Methods) == 0 && c.AppID == "" && c.OpenAppID != "" {
		// Only a website app: a site with website login alone.
		c.Methods = []string{MethodOpen}
	}
	if len(c.Methods) == 0 {
		c.Methods = []string{MethodQR, MethodOAuth}
		if c.OpenAppID != "" {
			c.Methods = append(c.Methods, MethodOpen)
		}
	}
	for i, m := range c.Methods {
		switch m {
		case MethodQR, MethodOAuth, MethodCode:
		case MethodOpen:
			if c.OpenAppID == "" {
				return elementError("Methods", i, "%q needs a website app: its id and secret", m)
			}
		default:
			return elementError("Methods", i, "%q must be qr, code, oauth or open", m)
		}
		if slices.Contains(c.Methods[:i], m) {
			return elementError("Methods", i, "%q is listed twice", m)
		}
	}
	return nil
}

// openDisplay checks and defaults OpenDisplay and the frame's style. They
// are refused without website login, which they would silently not
// affect.
func (c *Config) openDisplay() error {
	if !c.enabled(MethodOpen) {
		for _, f := range []struct{ name, v string }{{"OpenDisplay", c.OpenDisplay}, {"OpenFrameStyle", c.OpenFrameStyle}, {"OpenFrameCSS", c.OpenFrameCSS}} {
			if f.v != "" {
				return fieldError(f.name, "is set but website login (open) is not enabled")
			}
		}
		return nil
	}
	switch c.OpenDisplay {
	case "":
		c.OpenDisplay = OpenDisplayEmbedded
	case OpenDisplayEmbedded, OpenDisplayPopup, OpenDisplayPage:
	default:
		return fieldError("OpenDisplay", "must be embedded, popup or page, not %q", c.OpenDisplay)
	}
	if c.OpenDisplay != OpenDisplayEmbedded {
		if c.OpenFrameStyle != "" {
			return fieldError("OpenFrameStyle", "only applies to the embedded display, not %s", c.OpenDisplay)
		}
		if c.OpenFrameCSS != "" {
			return fieldError("OpenFrameCSS", "only applies to the embedded display, not %s", c.OpenDisplay)
		}
	}
	if c.OpenFrameStyle != "" && c.OpenFrameStyle != "black" && c.OpenFrameStyle != "white" {
		return fieldError("OpenFrameStyle", "must be black or white, not %q", c.OpenFrameStyle)
	}
	if c.OpenFrameCSS != "" && !wechat.ValidFrameCSS(c.OpenFrameCSS) {
		return fieldError("OpenFrameCSS", "must be an https URL or a data:text/css;base64 URL of at most 2048 bytes")
	}
	return nil
}

// enabled reports whether a login method is on.
func (c *Config) enabled(method string) bool {
	return slices.Contains(c.Methods, method)
}

func validPushToken(s string) bool {
	if len(s) < 3 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func positiveOr(field string, v, def time.Duration) (time.Duration, error) {
	switch {
	case v < 0:
		return 0, fieldError(field, "must not be negative")
	case v == 0:
		return def, nil
	}
	return v, nil
}
