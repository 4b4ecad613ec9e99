package middleware

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/wechat-login/caddy-wechat-login/middleware/store"
	"github.com/wechat-login/caddy-wechat-login/wechat"
)

// Config configures the login middleware. The zero value of every optional
// field selects a secure default; New reports the first field that is wrong.
type Config struct {
	// AppID and AppSecret identify the WeChat Official Account whose
	// parametric QR codes users scan. Required.
	AppID     string
	AppSecret string

	// Token is the push token configured on the Official Account's server
	// settings page; WeChat signs every push with it. Required.
	Token string

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
	// on desktop browsers), MethodOAuth (web authorization inside WeChat's
	// own browser, with the same Official Account) and MethodOpen (Open
	// Platform website login, needs OpenAppID). Default: qr and oauth, plus
	// open when OpenAppID is set.
	Methods []string

	// OAuthScope is the scope of in-WeChat authorization: "snsapi_base"
	// (silent, openid only; the default) or "snsapi_userinfo" (asks for
	// consent, adds nickname and avatar).
	OAuthScope string

	// OpenAppID and OpenAppSecret identify an Open Platform website app,
	// for website login (qrconnect) in a popup.
	OpenAppID     string
	OpenAppSecret string

	// SessionKeys seal the session and browser-binding cookies. Each key is
	// at least 32 bytes of secret randomness. The first key seals; all keys
	// open, so a new key can be put first while old cookies stay valid.
	// Required.
	SessionKeys [][]byte

	// Prefix is the path under which the middleware serves its own routes.
	// Default "/wechat".
	Prefix string

	// SessionTTL is how long a login lasts. Default 24h.
	SessionTTL time.Duration

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

	// RedirectHosts are hosts (exact "host[:port]", or "*.example.com" for
	// subdomains) that `next` may point to besides same-origin paths.
	RedirectHosts []string

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

	// SandboxScanURL, when set, adds a "Simulate scan" control to the login
	// page that POSTs the QR code's content URL and one of SandboxUsers to
	// this URL. Only the sandbox (a fake WeChat) sets it.
	SandboxScanURL string
	SandboxUsers   []string

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
	minSessionKeyLen       = 32
)

// withDefaults returns a copy of c with defaults filled in, or an error that
// names the first invalid field.
func (c Config) withDefaults() (Config, error) {
	if c.AppID == "" {
		return c, errors.New("middleware: AppID is required")
	}
	if c.AppSecret == "" && c.TokenSource == nil {
		return c, errors.New("middleware: AppSecret is required (or a TokenSource)")
	}
	if c.Token == "" {
		return c, errors.New("middleware: Token is required (the push token from the Official Account's server settings)")
	}
	if !validPushToken(c.Token) {
		return c, errors.New("middleware: Token must be 3 to 32 letters and digits, as WeChat's server settings page requires")
	}
	if len(c.SessionKeys) == 0 {
		return c, errors.New("middleware: SessionKeys needs at least one key")
	}
	for i, k := range c.SessionKeys {
		if len(k) < minSessionKeyLen {
			return c, fmt.Errorf("middleware: SessionKeys[%d] is %d bytes, need at least %d", i, len(k), minSessionKeyLen)
		}
	}
	if c.Prefix == "" {
		c.Prefix = defaultPrefix
	}
	if !strings.HasPrefix(c.Prefix, "/") || strings.HasSuffix(c.Prefix, "/") || strings.ContainsAny(c.Prefix, "?#*") {
		return c, fmt.Errorf("middleware: Prefix %q must start with / and not end with /", c.Prefix)
	}
	var err error
	if c.SessionTTL, err = positiveOr("SessionTTL", c.SessionTTL, defaultSessionTTL); err != nil {
		return c, err
	}
	if c.SceneTTL, err = positiveOr("SceneTTL", c.SceneTTL, defaultSceneTTL); err != nil {
		return c, err
	}
	if c.SceneTTL < 30*time.Second || c.SceneTTL > maxSceneTTL {
		return c, fmt.Errorf("middleware: SceneTTL %v must be between 30s and %v", c.SceneTTL, maxSceneTTL)
	}
	if c.LongPollTimeout, err = positiveOr("LongPollTimeout", c.LongPollTimeout, defaultLongPollTimeout); err != nil {
		return c, err
	}
	if c.PushMaxAge, err = positiveOr("PushMaxAge", c.PushMaxAge, defaultPushMaxAge); err != nil {
		return c, err
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
	if c.QRRateLimit < 0 || c.QRRateBurst < 0 {
		return c, errors.New("middleware: QRRateLimit and QRRateBurst must not be negative")
	}
	if c.QRRateLimit == 0 {
		c.QRRateLimit = 10
	}
	if c.QRRateBurst == 0 {
		c.QRRateBurst = 5
	}
	if c.QRCeiling < 0 || c.MaxWaiting < 0 {
		return c, errors.New("middleware: QRCeiling and MaxWaiting must not be negative")
	}
	if c.QRCeiling == 0 {
		c.QRCeiling = 60
	}
	if c.MaxWaiting == 0 {
		c.MaxWaiting = defaultMaxWaiters
	}
	if err := c.oauthDefaults(); err != nil {
		return c, err
	}
	if _, err := newPublicPaths(c.PublicPaths); err != nil {
		return c, err
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
	return c, nil
}

// oauthDefaults fills in and checks Methods, OAuthScope and the website app.
func (c *Config) oauthDefaults() error {
	if c.OAuthScope == "" {
		c.OAuthScope = "snsapi_base"
	}
	if c.OAuthScope != "snsapi_base" && c.OAuthScope != "snsapi_userinfo" {
		return fmt.Errorf("middleware: OAuthScope %q must be snsapi_base or snsapi_userinfo", c.OAuthScope)
	}
	if (c.OpenAppID == "") != (c.OpenAppSecret == "") {
		return errors.New("middleware: OpenAppID and OpenAppSecret go together")
	}
	if len(c.Methods) == 0 {
		c.Methods = []string{MethodQR, MethodOAuth}
		if c.OpenAppID != "" {
			c.Methods = append(c.Methods, MethodOpen)
		}
	}
	seen := map[string]bool{}
	for i, m := range c.Methods {
		switch m {
		case MethodQR, MethodOAuth:
		case MethodOpen:
			if c.OpenAppID == "" {
				return errors.New("middleware: method open needs OpenAppID and OpenAppSecret")
			}
		default:
			return fmt.Errorf("middleware: Methods[%d] %q must be qr, oauth or open", i, m)
		}
		if seen[m] {
			return fmt.Errorf("middleware: Methods[%d] %q is listed twice", i, m)
		}
		seen[m] = true
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

func positiveOr(name string, v, def time.Duration) (time.Duration, error) {
	switch {
	case v < 0:
		return 0, fmt.Errorf("middleware: %s must not be negative", name)
	case v == 0:
		return def, nil
	}
	return v, nil
}
