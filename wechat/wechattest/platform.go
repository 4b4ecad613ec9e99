package wechattest

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat"
)

// Defaults applied by [New] to zero [Config] fields.
const (
	DefaultPushTimeout     = 5 * time.Second // how long WeChat waits for a callback
	DefaultPushAttempts    = 3               // attempts per push, the first included
	DefaultTokenDailyQuota = 2000            // cgi-bin/token calls per app per day
	DefaultQRDailyQuota    = 100000          // qrcode/create calls per app per day
)

// Lifetimes WeChat uses.
const (
	accessTokenTTL    = 7200 * time.Second
	tokenGrace        = 5 * time.Minute
	refreshTokenTTL   = 30 * 24 * time.Hour
	oaCodeTTL         = 5 * time.Minute
	websiteCodeTTL    = 10 * time.Minute
	defaultQRTTL      = 60
	maxQRTTL          = 2592000
	maxDeliveriesKept = 1000
	maxChatText       = 2048 // bytes of a message sent from the sandbox's phone page
	forceRefreshLimit = 20
	forceRefreshGap   = 30 * time.Second
)

// PushMode is an app's message encryption mode, as chosen in the WeChat
// admin console.
type PushMode int

// The three modes. Compatible pushes carry the plaintext fields and an
// Encrypt element; safe pushes carry only ToUserName and Encrypt.
const (
	Plaintext PushMode = iota
	Compatible
	Safe
)

// String returns the mode's name.
func (m PushMode) String() string {
	switch m {
	case Plaintext:
		return "plaintext"
	case Compatible:
		return "compatible"
	case Safe:
		return "safe"
	}
	return fmt.Sprintf("PushMode(%d)", int(m))
}

// AppKind says what sort of WeChat application an [App] is.
type AppKind int

// Official Accounts get basic access tokens, QR codes, pushes and
// /connect/oauth2/authorize, as far as their [AccountType] allows; website
// apps (Open Platform) get /connect/qrconnect.
const (
	OfficialAccount AppKind = iota
	WebsiteApp
)

// App is an application registered on the platform.
type App struct {
	AppID     string
	AppSecret string
	Kind      AppKind

	// Account is the sort of Official Account, which decides what it may
	// call (see AccountType). The zero value is a verified service
	// account, which may call everything. Website apps must leave it zero.
	Account AccountType

	// Token, EncodingAESKey, OriginalID ("gh_..."), CallbackURL and Mode
	// configure pushes to an Official Account's server. EncodingAESKey is
	// needed unless Mode is Plaintext. A TestAccount has no EncodingAESKey
	// on WeChat and must use Plaintext.
	Token          string
	EncodingAESKey string
	OriginalID     string
	CallbackURL    string
	Mode           PushMode

	// RedirectDomains are the domains registered for OAuth: an Official
	// Account's web authorization domains (网页授权域名) for
	// /connect/oauth2/authorize, a website app's authorization callback
	// domain (授权回调域) for /connect/qrconnect. Each is a bare host, such
	// as "www.example.com", or a host and port, such as "127.0.0.1:8080" or
	// "[::1]:8080"; no scheme and no path. As on WeChat, a redirect_uri must
	// be an http or https URL whose host equals one of them exactly:
	// "www.example.com" accepts every path of www.example.com but neither
	// example.com nor login.www.example.com, which must be registered
	// themselves. A domain without a port accepts only the scheme's default
	// port (80 for http, 443 for https); one with a port accepts only that
	// port. Anything else gets WeChat's error page (10003 on authorize,
	// "redirect_uri 参数错误" on qrconnect) and no redirect.
	//
	// WeChat refuses every redirect_uri until a domain is registered. As a
	// convenience for tests, this fake does not: an app with neither
	// RedirectDomains nor RedirectSameHost accepts the host of its
	// CallbackURL (its own server, normally the same site), and, without a
	// CallbackURL either, any http or https host. Register domains for any
	// platform that untrusted people can reach, or its authorization pages
	// redirect anywhere.
	RedirectDomains []string

	// RedirectSameHost also accepts a redirect_uri on the host (and port)
	// that served the authorization page, taken from the request's Host.
	// It suits a fake mounted inside the very site it logs in to, such as a
	// sandbox whose host is only known per request: a browser is only sent
	// back to the host it is already visiting, never to another one.
	RedirectSameHost bool

	// Unbound apps are not bound to the platform's Open Platform account and
	// never see unionids. Apps that are bound share them.
	Unbound bool
}

// AllApps, used as a key of [User.Follows], makes a user follow every
// Official Account.
const AllApps = "*"

// User is a test WeChat user.
type User struct {
	// Name identifies the user in this package's API and in the sandbox.
	Name string
	// Nickname and HeadImgURL are what sns/userinfo reports.
	Nickname   string
	HeadImgURL string
	// Follows lists the Official Accounts (by AppID, or AllApps) the user
	// follows initially. Scanning a QR code makes the user follow it.
	Follows map[string]bool
	// Snapshot makes snsapi_userinfo authorizations end on WeChat's
	// snapshot page: virtual openid and unionid, is_snapshotuser 1.
	Snapshot bool
}

// DefaultUsers returns the users a [Platform] starts with when
// [Config.Users] is nil: "alice" follows nothing, "bob" follows every
// Official Account, and "snapshot" is a snapshot-page user.
func DefaultUsers() []User {
	return []User{
		{Name: "alice", Nickname: "Alice"},
		{Name: "bob", Nickname: "Bob", Follows: map[string]bool{AllApps: true}},
		{Name: "snapshot", Nickname: "Snapshot", Snapshot: true},
	}
}

// Config configures a [Platform]. The zero value is usable.
type Config struct {
	// BaseURL is the public URL of the platform's root, including any
	// prefix it is mounted under, such as "http://127.0.0.1:8080/sandbox".
	// It is used for links between pages and by Endpoint. When empty, it is
	// derived from each request's scheme and Host, which is only right when
	// the platform is mounted at "/". A path alone, such as
	// "/wechat/sandbox", takes the scheme and host from each request and
	// appends the path: right for a platform mounted under that prefix on
	// whatever host serves it.
	BaseURL string

	// Now is the clock that drives token, code and ticket expiry and push
	// timestamps. Nil means time.Now. See also [Platform.SetNow].
	Now func() time.Time

	// PushTimeout is how long a push waits for the callback to answer
	// (DefaultPushTimeout when zero). PushAttempts is the number of attempts
	// per push (DefaultPushAttempts when zero).
	PushTimeout  time.Duration
	PushAttempts int

	// HTTPClient sends pushes. Nil means a client of the platform's own
	// that does not follow redirects.
	HTTPClient *http.Client

	// TokenDailyQuota is the number of cgi-bin/token calls an app may make
	// per day. Zero means WeChat's: DefaultTokenDailyQuota, or 200 for a
	// TestAccount. QRDailyQuota is the same for cgi-bin/qrcode/create:
	// DefaultQRDailyQuota, or 10,000 for a TestAccount. Beyond them calls
	// get 45009. Days begin at midnight China Standard Time, as on WeChat.
	TokenDailyQuota int
	QRDailyQuota    int

	// Users are the initial test users; nil means DefaultUsers().
	Users []User

	// OAuthUser, when set, approves every authorization page at once as
	// this user instead of showing a page to choose one. See also
	// [Platform.SetOAuthUser].
	OAuthUser string
}

// Errors returned by the phone methods, wrapped with context.
var (
	ErrUnknownApp     = errors.New("wechattest: unknown app")
	ErrUnknownUser    = errors.New("wechattest: unknown user")
	ErrUnknownTicket  = errors.New("wechattest: unknown QR ticket")
	ErrTicketExpired  = errors.New("wechattest: QR ticket expired")
	ErrNoCallback     = errors.New("wechattest: app has no callback URL")
	ErrNotOA          = errors.New("wechattest: app is not an Official Account")
	ErrCallbackFailed = errors.New("wechattest: callback verification failed")
	// ErrAlreadyFollowing and ErrNotFollowing are the phone's buttons that
	// do not exist in that state: WeChat shows "follow" only to
	// non-followers, and the chat and "unfollow" only to followers.
	ErrAlreadyFollowing = errors.New("wechattest: user already follows the account")
	ErrNotFollowing     = errors.New("wechattest: user does not follow the account")
)

// Platform is a fake WeChat platform. Create one with [New]; it is an
// [http.Handler] and all its methods are safe for concurrent use.
type Platform struct {
	base         string // trimmed Config.BaseURL, may be empty
	pushTimeout  time.Duration
	pushAttempts int
	client       *http.Client
	ownTransport *http.Transport // non-nil when client is ours
	tokenQuota   int             // 0: WeChat's per account type
	qrQuota      int             // 0: WeChat's per account type
	mux          *http.ServeMux

	clockMu sync.Mutex
	nowFn   func() time.Time
	offset  time.Duration

	knobMu    sync.Mutex
	faults    map[string][]Fault
	latency   map[string]time.Duration
	calls     map[string]int
	ip        ipState
	oauthUser string

	logMu sync.Mutex
	log   deliveryLog

	mu         sync.Mutex // guards everything below
	seq        int
	lastPrune  time.Time
	apps       map[string]*app
	users      map[string]*User
	order      []string // user names in the order added
	openids    map[string]subject
	follows    map[subject]*follow
	tokens     map[string]*token
	classic    map[string]*classicState
	stable     map[string]*stableState
	tickets    map[string]*ticket // by ticket
	qrIDs      map[string]*ticket // by the id in the QR url
	qrCalls    map[string]*dailyCount
	msgSeq     int64
	sandboxApp string // the Official Account of NewSandbox, for the phone page
	codes      map[string]*authCode
	refreshs   map[string]*refreshToken
}

type app struct {
	App
	crypter *wechat.Crypter // nil in plaintext mode
	domains []hostPort      // where redirect_uri may point, parsed
	anyHost bool            // no domain registered and no default: any host
}

// subject is a user as seen by one app.
type subject struct {
	appID string
	user  string
}

// follow is the follow state of a user for an Official Account.
type follow struct {
	subscribed bool
	since      time.Time
	scene      string // subscribe_scene
	qrScene    int64
	qrSceneStr string

	// page is the parametric QR code whose account page a non-follower
	// has open after scanning it without following: following from there
	// pushes subscribe with its scene and ticket.
	page *ticket
}

// dailyCount counts calls per day (China Standard Time).
type dailyCount struct {
	day   string
	count int
}

// take counts a call at now and reports whether it is within limit.
func (c *dailyCount) take(now time.Time, limit int) bool {
	if d := dayOf(now); c.day != d {
		c.day, c.count = d, 0
	}
	if c.count >= limit {
		return false
	}
	c.count++
	return true
}

// New returns a platform with the given configuration and no apps.
func New(cfg Config) (*Platform, error) {
	base := strings.TrimRight(cfg.BaseURL, "/")
	if base != "" {
		u, err := url.Parse(base)
		relative := err == nil && strings.HasPrefix(base, "/") && !strings.HasPrefix(base, "//") && u.Host == "" && u.RawQuery == "" && u.Fragment == ""
		if !relative && (err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "") {
			return nil, fmt.Errorf("wechattest: BaseURL %q is neither an absolute http(s) URL nor a path", cfg.BaseURL)
		}
	}
	if cfg.PushTimeout < 0 || cfg.PushAttempts < 0 || cfg.TokenDailyQuota < 0 || cfg.QRDailyQuota < 0 {
		return nil, errors.New("wechattest: negative PushTimeout, PushAttempts, TokenDailyQuota or QRDailyQuota")
	}
	p := &Platform{
		base:         base,
		pushTimeout:  cmpOr(cfg.PushTimeout, DefaultPushTimeout),
		pushAttempts: cmpOr(cfg.PushAttempts, DefaultPushAttempts),
		tokenQuota:   cfg.TokenDailyQuota,
		qrQuota:      cfg.QRDailyQuota,
		client:       cfg.HTTPClient,
		nowFn:        cfg.Now,
		oauthUser:    cfg.OAuthUser,
		faults:       make(map[string][]Fault),
		latency:      make(map[string]time.Duration),
		calls:        make(map[string]int),
		apps:         make(map[string]*app),
		users:        make(map[string]*User),
		openids:      make(map[string]subject),
		follows:      make(map[subject]*follow),
		tokens:       make(map[string]*token),
		classic:      make(map[string]*classicState),
		stable:       make(map[string]*stableState),
		tickets:      make(map[string]*ticket),
		qrIDs:        make(map[string]*ticket),
		qrCalls:      make(map[string]*dailyCount),
		codes:        make(map[string]*authCode),
		refreshs:     make(map[string]*refreshToken),
	}
	if p.client == nil {
		// Each platform has its own transport so that closing a Server
		// closes the connections its pushes opened. WeChat does not follow
		// redirects from a callback.
		p.ownTransport = http.DefaultTransport.(*http.Transport).Clone()
		p.client = &http.Client{
			Transport:     p.ownTransport,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	users := cfg.Users
	if users == nil {
		users = DefaultUsers()
	}
	for _, u := range users {
		if err := p.AddUser(u); err != nil {
			return nil, err
		}
	}
	p.routes()
	return p, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func (p *Platform) routes() {
	m := http.NewServeMux()
	m.HandleFunc("/cgi-bin/token", p.handleToken)
	m.HandleFunc("/cgi-bin/stable_token", p.handleStableToken)
	m.HandleFunc("/cgi-bin/qrcode/create", p.handleQRCreate)
	m.HandleFunc("/cgi-bin/showqrcode", p.handleShowQR)
	m.HandleFunc("/cgi-bin/user/info", p.handleUserInfo)
	m.HandleFunc("/connect/oauth2/authorize", p.handleAuthorize)
	m.HandleFunc("/connect/qrconnect", p.handleQRConnect)
	m.HandleFunc("/sns/oauth2/access_token", p.handleSNSToken)
	m.HandleFunc("/sns/oauth2/refresh_token", p.handleSNSRefresh)
	m.HandleFunc("/sns/userinfo", p.handleSNSUserInfo)
	m.HandleFunc("/sns/auth", p.handleSNSAuth)
	m.HandleFunc("/q/{id}", p.handleQRPage)
	m.HandleFunc("/sandbox/users", p.handleSandboxUsers)
	m.HandleFunc("/sandbox/scan", p.handleSandboxScan)
	m.HandleFunc("/sandbox/deliveries", p.handleSandboxDeliveries)
	m.HandleFunc("/sandbox/phone", p.handleSandboxPhone)
	m.HandleFunc("/sandbox/follow", p.handleSandboxFollow)
	m.HandleFunc("/sandbox/message", p.handleSandboxMessage)
	p.mux = m
}

// ServeHTTP serves WeChat's and the sandbox's paths, after counting the
// call and applying any latency or fault configured for the path.
func (p *Platform) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	f, faulted := p.enter(path)
	if d := p.latencyFor(path); d > 0 && !sleep(r, d) {
		return
	}
	if faulted && p.applyFault(w, r, f) {
		return
	}
	p.mux.ServeHTTP(w, r)
}

// AddApp registers an app, or replaces the one with the same AppID.
func (p *Platform) AddApp(a App) error {
	if a.AppID == "" || a.AppSecret == "" {
		return errors.New("wechattest: app needs an AppID and an AppSecret")
	}
	if a.Kind != OfficialAccount && a.Kind != WebsiteApp {
		return fmt.Errorf("wechattest: app %s: unknown kind %d", a.AppID, a.Kind)
	}
	switch {
	case !a.Account.valid():
		return fmt.Errorf("wechattest: app %s: unknown account type %d", a.AppID, int(a.Account))
	case a.Kind == WebsiteApp && a.Account != VerifiedServiceAccount:
		return fmt.Errorf("wechattest: app %s: a website app has no Official Account type", a.AppID)
	case a.Account == TestAccount && a.Mode != Plaintext:
		// A test account's configuration has a URL and a Token, nothing
		// else: no EncodingAESKey, so no compatible or safe mode.
		return fmt.Errorf("wechattest: app %s: a test account pushes in plaintext only", a.AppID)
	}
	st := &app{App: a}
	st.RedirectDomains = make([]string, 0, len(a.RedirectDomains))
	for _, d := range a.RedirectDomains {
		hp, ok := parseDomain(d)
		if !ok {
			return fmt.Errorf("wechattest: app %s: redirect domain %q is not a host or host:port", a.AppID, d)
		}
		st.RedirectDomains = append(st.RedirectDomains, d)
		st.domains = append(st.domains, hp)
	}
	switch {
	case len(a.RedirectDomains) > 0 || a.RedirectSameHost:
	case a.CallbackURL != "":
		// The fake's convenience defaults (see App.RedirectDomains).
		if u, err := url.Parse(a.CallbackURL); err == nil {
			if hp, ok := parseDomain(u.Host); ok {
				st.domains = []hostPort{hp}
			}
		}
	default:
		st.anyHost = true
	}
	if a.Kind == OfficialAccount {
		switch a.Mode {
		case Plaintext:
		case Compatible, Safe:
			c, err := wechat.NewCrypter(a.Token, a.EncodingAESKey, a.AppID)
			if err != nil {
				return fmt.Errorf("wechattest: app %s: %w", a.AppID, err)
			}
			st.crypter = c
		default:
			return fmt.Errorf("wechattest: app %s: unknown push mode %d", a.AppID, int(a.Mode))
		}
		if a.CallbackURL != "" {
			if a.Token == "" {
				return fmt.Errorf("wechattest: app %s: a CallbackURL needs a Token to sign pushes", a.AppID)
			}
			if u, err := url.Parse(a.CallbackURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
				return fmt.Errorf("wechattest: app %s: CallbackURL is not an http(s) URL", a.AppID)
			}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if old := p.apps[a.AppID]; old != nil {
		for _, name := range p.order {
			delete(p.openids, openID(a.AppID, name))
		}
	}
	p.apps[a.AppID] = st
	for _, name := range p.order {
		p.openids[openID(a.AppID, name)] = subject{a.AppID, name}
	}
	return nil
}

// AddUser adds a test user, or replaces the one with the same Name. The
// follow state of a replaced user is reset to u.Follows.
func (p *Platform) AddUser(u User) error {
	if u.Name == "" {
		return errors.New("wechattest: user needs a Name")
	}
	c := u
	c.Follows = make(map[string]bool, len(u.Follows))
	for k, v := range u.Follows {
		c.Follows[k] = v
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.users[u.Name]; !ok {
		p.order = append(p.order, u.Name)
	}
	p.users[u.Name] = &c
	for s := range p.follows {
		if s.user == u.Name {
			delete(p.follows, s)
		}
	}
	for id := range p.apps {
		p.openids[openID(id, u.Name)] = subject{id, u.Name}
	}
	return nil
}

// Users returns the test users in the order they were added.
func (p *Platform) Users() []User {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]User, 0, len(p.order))
	for _, name := range p.order {
		out = append(out, *p.users[name])
	}
	return out
}

// OpenID returns the openid of a user for an app. It is deterministic: 28
// characters of [A-Za-z0-9_-] starting with "o".
func (p *Platform) OpenID(appID, userName string) string { return openID(appID, userName) }

// UnionID returns the unionid of a user, shared by all bound apps.
func (p *Platform) UnionID(userName string) string { return derive("unionid", userName) }

// Follows reports whether a user currently follows an Official Account.
func (p *Platform) Follows(appID, userName string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peekFollowLocked(subject{appID, userName}).subscribed
}

func openID(appID, user string) string { return derive("openid", appID, user) }

// derive hashes its parts into an id shaped like WeChat's openids.
func derive(parts ...string) string {
	h := sha256.New()
	for _, s := range parts {
		// Length-prefix each part so that ("ab","c") and ("a","bc") differ.
		fmt.Fprintf(h, "%d:%s;", len(s), s)
	}
	return "o" + base64.RawURLEncoding.EncodeToString(h.Sum(nil))[:27]
}

// followOf returns the follow state for changing it, creating it from the
// user's initial Follows. p.mu must be held.
func (p *Platform) followOf(s subject) *follow {
	if f := p.follows[s]; f != nil {
		return f
	}
	f := p.peekFollowLocked(s)
	p.follows[s] = &f
	return &f
}

// peekFollowLocked returns the follow state without recording anything, so
// that lookups of unknown users or apps leave no trace. p.mu must be held.
func (p *Platform) peekFollowLocked(s subject) follow {
	if f := p.follows[s]; f != nil {
		return *f
	}
	var f follow
	if u := p.users[s.user]; u != nil && (u.Follows[s.appID] || u.Follows[AllApps]) {
		// Initial followers have followed since before the platform started.
		f.subscribed = true
		f.since = p.now().Add(-24 * time.Hour)
		f.scene = "ADD_SCENE_SEARCH"
	}
	return f
}

// SetNow replaces the platform's clock; nil restores time.Now. It also
// clears any offset added by Advance.
func (p *Platform) SetNow(now func() time.Time) {
	p.clockMu.Lock()
	defer p.clockMu.Unlock()
	p.nowFn = now
	p.offset = 0
}

// Advance moves the platform's clock forward by d.
func (p *Platform) Advance(d time.Duration) {
	p.clockMu.Lock()
	defer p.clockMu.Unlock()
	p.offset += d
}

func (p *Platform) now() time.Time {
	p.clockMu.Lock()
	fn, off := p.nowFn, p.offset
	p.clockMu.Unlock()
	if fn == nil {
		fn = time.Now
	}
	return fn().Add(off)
}

// Endpoint returns the base URLs a WeChat client should use to talk to this
// platform. All three are Config.BaseURL; they are empty when it is.
func (p *Platform) Endpoint() wechat.Endpoint {
	return wechat.Endpoint{API: p.base, Authorize: p.base, MP: p.base}
}

// baseURL returns the public root URL for links in a response to r.
func (p *Platform) baseURL(r *http.Request) string {
	if p.base != "" && !strings.HasPrefix(p.base, "/") {
		return p.base
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + p.base
}

// pruneLocked forgets, at most once a minute, what expired long ago, so
// that a long-running sandbox does not grow without bound. Recently expired
// items are kept so that they still get their specific errors (42001 rather
// than 40014, "expired" rather than "unknown"). p.mu must be held.
func (p *Platform) pruneLocked(now time.Time) {
	if now.Sub(p.lastPrune) < time.Minute {
		return
	}
	p.lastPrune = now
	for k, t := range p.tokens {
		if now.Sub(t.expires) > 24*time.Hour {
			delete(p.tokens, k)
		}
	}
	for k, t := range p.tickets {
		if !t.permanent && now.Sub(t.expires) > time.Hour {
			delete(p.tickets, k)
			delete(p.qrIDs, t.id)
		}
	}
	for k, c := range p.codes {
		if now.Sub(c.expires) > time.Hour {
			delete(p.codes, k)
		}
	}
	for k, r := range p.refreshs {
		if now.Sub(r.expires) > 24*time.Hour {
			delete(p.refreshs, k)
		}
	}
}
