package middleware

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/internal/session"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// The handoff tests give every server a name of its own under .test, as
// browsers see sites on unrelated domains: cookies are kept per host name,
// whatever the port. The test clients resolve every such name to the
// loopback address.

// namedClient is a browser-like client for named test hosts: it keeps
// cookies, resolves every host to 127.0.0.1 and never follows redirects.
type namedClient struct {
	t  *testing.T
	hc *http.Client
}

func newNamedClient(t *testing.T) *namedClient {
	jar, _ := cookiejar.New(nil)
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			return dialer.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &namedClient{t: t, hc: &http.Client{
		Jar:           jar,
		Transport:     tr,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// do sends a request; hdr holds header names and values in turn.
func (c *namedClient) do(method, target string, body io.Reader, hdr ...string) response {
	c.t.Helper()
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return response{resp, data}
}

func (c *namedClient) page(target string) response {
	c.t.Helper()
	return c.do(http.MethodGet, target, nil, "Accept", "text/html")
}

// cookie returns the client's cookie called name for target, or nil.
func (c *namedClient) cookie(target, name string) *http.Cookie {
	u, _ := url.Parse(target)
	for _, ck := range c.hc.Jar.Cookies(u) {
		if ck.Name == name {
			return ck
		}
	}
	return nil
}

// location is where a redirect goes, resolved against the request.
func location(t *testing.T, r response) string {
	t.Helper()
	loc, err := r.Location()
	if err != nil {
		t.Fatalf("%d without a Location: %s", r.StatusCode, r.body)
	}
	return loc.String()
}

// namedServer is an unstarted test server and the name browsers use for it.
type namedServer struct {
	srv    *httptest.Server
	origin string
}

func newNamedServer(t *testing.T, name string) *namedServer {
	srv := httptest.NewUnstartedServer(nil)
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	return &namedServer{srv: srv, origin: "http://" + name + ":" + port}
}

func (s *namedServer) start(t *testing.T, mw *Middleware) {
	t.Helper()
	t.Cleanup(func() { _ = mw.Close() })
	s.srv.Config.Handler = mw.Handler(http.HandlerFunc(echoIdentity))
	s.srv.Start()
}

// handoffWorld is a login host (with the fake WeChat) and the sites it may
// hand logins to, each on a host name of its own.
type handoffWorld struct {
	t     *testing.T
	fake  *wechattest.Server
	host  *namedServer
	sites map[string]*namedServer
	mws   map[string]*Middleware
}

// newHandoffWorld starts a login host that hands logins to the sites named
// in allowed, and a site for each name in sites (allowed or not), all
// sharing one session key. siteOpt adjusts every site's Config.
func newHandoffWorld(t *testing.T, allowed, sites []string, siteOpt func(*Config)) *handoffWorld {
	t.Helper()
	w := &handoffWorld{t: t, sites: map[string]*namedServer{}, mws: map[string]*Middleware{}}
	w.fake = wechattest.NewServer(wechattest.Config{})
	t.Cleanup(w.fake.Close)
	w.host = newNamedServer(t, "login.example.test")
	for _, name := range sites {
		w.sites[name] = newNamedServer(t, name)
	}
	var to []string
	for _, name := range allowed {
		to = append(to, w.sites[name].origin)
	}
	host, err := New(Config{
		AppID: testAppID, AppSecret: testSecret, PushToken: testToken, EncodingAESKey: testAESKey,
		SessionKeys: [][]byte{testSessionKey}, Endpoint: w.fake.Endpoint(), SiteName: "Login host",
		HandoffTo: to, PublicOrigin: w.host.origin,
	})
	if err != nil {
		t.Fatalf("login host: %v", err)
	}
	w.host.start(t, host)
	w.mws["login"] = host
	if err := w.fake.AddApp(wechattest.App{
		AppID: testAppID, AppSecret: testSecret, Token: testToken, EncodingAESKey: testAESKey,
		OriginalID: testGhID, CallbackURL: w.host.srv.URL + "/wechat/callback", Mode: wechattest.Safe,
		// The one web authorization domain: the login host's.
		RedirectDomains: []string{strings.TrimPrefix(w.host.origin, "http://")},
	}); err != nil {
		t.Fatal(err)
	}
	for _, name := range sites {
		cfg := Config{SessionKeys: [][]byte{testSessionKey}, LoginHost: w.host.origin, SiteName: name}
		if siteOpt != nil {
			siteOpt(&cfg)
		}
		mw, err := New(cfg)
		if err != nil {
			t.Fatalf("site %s: %v", name, err)
		}
		w.sites[name].start(t, mw)
		w.mws[name] = mw
	}
	return w
}

// loginOnHost logs b in on the login host by QR code, from the login page
// at loginPage, and returns where the poll sends the browser on to.
func (w *handoffWorld) loginOnHost(b *namedClient, loginPage, user string) string {
	w.t.Helper()
	u, err := url.Parse(loginPage)
	if err != nil || u.Host != strings.TrimPrefix(w.host.origin, "http://") || u.Path != "/wechat/login" {
		w.t.Fatalf("sent to %q, want the login host's login page", loginPage)
	}
	if r := b.page(loginPage); r.StatusCode != http.StatusOK {
		w.t.Fatalf("login page: %d", r.StatusCode)
	}
	next := u.Query().Get("next")
	r := b.do(http.MethodPost, w.host.origin+"/wechat/qr", strings.NewReader(url.Values{"next": {next}}.Encode()),
		"Origin", w.host.origin, "Sec-Fetch-Site", "same-origin")
	if r.StatusCode != http.StatusOK {
		w.t.Fatalf("create QR: %d %s", r.StatusCode, r.body)
	}
	qr := r.json(w.t)
	if _, err := w.fake.Scan(context.Background(), testAppID, qr["qr_content"].(string), user); err != nil {
		w.t.Fatal(err)
	}
	poll := b.do(http.MethodGet, w.host.origin+"/wechat/poll?scene="+qr["scene"].(string)+"&wait=5", nil).json(w.t)
	if poll["status"] != StateConfirmed {
		w.t.Fatalf("poll: %v", poll)
	}
	return w.host.origin + poll["redirect"].(string)
}

// follow follows redirects from target for at most n hops, and returns the
// last response and the URL it came from.
func follow(t *testing.T, b *namedClient, target string, n int) (response, string) {
	t.Helper()
	for range n {
		r := b.page(target)
		if r.StatusCode < 300 || r.StatusCode > 399 {
			return r, target
		}
		target = location(t, r)
	}
	t.Fatalf("more than %d redirects, last to %s", n, target)
	return response{}, ""
}

// TestHandoffRoundTrip: a browser without a session on a site is sent to
// the login host's login page; after a QR login there it comes back through
// a handoff to the page it first asked for, logged in to the site; a second
// site then needs no login at all; and the handoff, which carries the
// site's origin and the browser's state, works once.
func TestHandoffRoundTrip(t *testing.T) {
	w := newHandoffWorld(t, []string{"shop.test", "blog.test"}, []string{"shop.test", "blog.test"}, nil)
	shop, blog := w.sites["shop.test"].origin, w.sites["blog.test"].origin
	b := newNamedClient(t)

	r := b.page(shop + "/cart?item=42")
	if r.StatusCode != http.StatusFound {
		t.Fatalf("protected page without a session: %d", r.StatusCode)
	}
	if b.cookie(shop, handoffCookie) == nil {
		t.Fatal("no handoff binding cookie on the site")
	}
	start := w.loginOnHost(b, location(t, r), "alice")
	su, _ := url.Parse(start)
	if su.Path != "/wechat/handoff/start" || su.Query().Get("to") != shop || su.Query().Get("next") != "/cart?item=42" {
		t.Fatalf("after the login, on to %q", start)
	}
	r = b.page(start)
	handoff := location(t, r)
	if r.StatusCode != http.StatusFound || !strings.HasPrefix(handoff, shop+"/wechat/handoff?token=") {
		t.Fatalf("handoff start: %d to %q", r.StatusCode, handoff)
	}
	if r.Header.Get("Referrer-Policy") != "no-referrer" || r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("handoff start headers: %v", r.Header)
	}
	binding := b.cookie(shop, handoffCookie)
	r = b.page(handoff)
	if r.StatusCode != http.StatusSeeOther || location(t, r) != shop+"/cart?item=42" {
		t.Fatalf("handoff: %d to %q: %s", r.StatusCode, r.Header.Get("Location"), r.body)
	}
	if b.cookie(shop, handoffCookie) != nil {
		t.Fatal("the used handoff stayed in the binding")
	}
	got := b.do(http.MethodGet, shop+"/cart?item=42", nil).json(t)
	alice := w.fake.OpenID(testAppID, "alice")
	if got["openid"] != alice || got["appid"] != testAppID || got["method"] != MethodQR {
		t.Fatalf("site saw %v", got)
	}

	// Replayed with the binding cookie it had: the mark in the site's
	// store refuses it.
	thief := newNamedClient(t)
	u, _ := url.Parse(shop)
	thief.hc.Jar.SetCookies(u, []*http.Cookie{binding})
	r = thief.page(handoff)
	if r.StatusCode != http.StatusBadRequest || hasSession(r) {
		t.Fatalf("replayed handoff: %d, cookies %v", r.StatusCode, r.Cookies())
	}

	// The blog needs no second login: the login host knows the browser.
	r, at := follow(t, b, blog+"/posts/1", 6)
	if r.StatusCode != http.StatusOK || at != blog+"/posts/1" {
		t.Fatalf("blog: %d at %q", r.StatusCode, at)
	}
	if got := r.json(t); got["openid"] != alice {
		t.Fatalf("blog saw %v", got)
	}
}

func hasSession(r response) bool {
	for _, c := range r.Cookies() {
		if strings.HasSuffix(c.Name, sessionCookie) && c.MaxAge >= 0 {
			return true
		}
	}
	return false
}

// handoffFor runs a site's redirect to the already logged-in login host and
// returns the handoff URL the login host made, without following it.
func (w *handoffWorld) handoffFor(b *namedClient, site, path string) string {
	w.t.Helper()
	r := b.page(site + path)
	login, err := url.Parse(location(w.t, r))
	if err != nil {
		w.t.Fatal(err)
	}
	start := w.host.origin + login.Query().Get("next")
	r = b.page(start)
	if r.StatusCode != http.StatusFound {
		w.t.Fatalf("handoff start: %d %s", r.StatusCode, r.body)
	}
	return location(w.t, r)
}

// TestHandoffRefusals: handoffs that must log nobody in.
func TestHandoffRefusals(t *testing.T) {
	w := newHandoffWorld(t, []string{"shop.test", "blog.test"}, []string{"shop.test", "blog.test", "rogue.test"}, nil)
	shop, blog, rogue := w.sites["shop.test"].origin, w.sites["blog.test"].origin, w.sites["rogue.test"].origin
	b := newNamedClient(t)
	r := b.page(shop + "/")
	w.loginOnHost(b, location(t, r), "alice")

	t.Run("site not in HandoffTo", func(t *testing.T) {
		r := b.page(rogue + "/x")
		login, _ := url.Parse(location(t, r))
		r = b.page(w.host.origin + login.Query().Get("next"))
		if r.StatusCode != http.StatusForbidden || r.Header.Get("Location") != "" || strings.Contains(string(r.body), "token=") {
			t.Fatalf("handoff to a site not listed: %d %q", r.StatusCode, r.Header.Get("Location"))
		}
		// Nor by any spelling of another origin.
		for _, to := range []string{shop + "/", strings.Replace(shop, "shop", "SHOP", 1), shop + "@rogue.test", strings.Replace(shop, "http:", "https:", 1), shop + ".evil", "http://shop.test", strings.ToUpper(rogue)} {
			q := url.Values{"to": {to}, "state": {strings.Repeat("a", 32)}, "next": {"/"}}
			r := b.page(w.host.origin + "/wechat/handoff/start?" + q.Encode())
			if r.StatusCode != http.StatusForbidden {
				t.Errorf("to=%q: %d %q", to, r.StatusCode, r.Header.Get("Location"))
			}
		}
	})

	t.Run("target is another site", func(t *testing.T) {
		handoff := w.handoffFor(b, shop, "/a")
		// The blog shares the key, and a binding cookie sealed by the shop
		// opens there too: only the target in the handoff stops it.
		u, _ := url.Parse(blog)
		b.hc.Jar.SetCookies(u, []*http.Cookie{b.cookie(shop, handoffCookie)})
		r := b.page(strings.Replace(handoff, shop, blog, 1))
		if r.StatusCode != http.StatusBadRequest || hasSession(r) {
			t.Fatalf("handoff for the shop at the blog: %d %v", r.StatusCode, r.Cookies())
		}
		// Still good at the shop, once.
		if r := b.page(handoff); r.StatusCode != http.StatusSeeOther || !hasSession(r) {
			t.Fatalf("the handoff at its own site: %d", r.StatusCode)
		}
	})

	t.Run("another browser", func(t *testing.T) {
		handoff := w.handoffFor(b, blog, "/b")
		other := newNamedClient(t)
		other.page(blog + "/") // a binding of its own
		if r := other.page(handoff); r.StatusCode != http.StatusForbidden || hasSession(r) {
			t.Fatalf("handoff in another browser: %d", r.StatusCode)
		}
	})

	t.Run("tampered", func(t *testing.T) {
		handoff := w.handoffFor(b, blog, "/c")
		i := strings.Index(handoff, "token=") + len("token=") + 20
		c := byte('A')
		if handoff[i] == 'A' {
			c = 'B'
		}
		bad := handoff[:i] + string(c) + handoff[i+1:]
		for _, h := range []string{bad, blog + "/wechat/handoff", blog + "/wechat/handoff?token=x", handoff + "&token=y"} {
			if r := b.page(h); r.StatusCode != http.StatusBadRequest || hasSession(r) {
				t.Errorf("%.80s: %d", h, r.StatusCode)
			}
		}
	})
}

// TestHandoffExpires: a handoff not redeemed within a minute logs nobody
// in.
func TestHandoffExpires(t *testing.T) {
	var mu sync.Mutex
	skew := time.Duration(0)
	siteNow := func() time.Time { mu.Lock(); defer mu.Unlock(); return time.Now().Add(skew) }
	w := newHandoffWorld(t, []string{"shop.test"}, []string{"shop.test"}, func(c *Config) { c.Now = siteNow })
	shop := w.sites["shop.test"].origin
	b := newNamedClient(t)
	w.loginOnHost(b, location(t, b.page(shop+"/")), "bob")
	handoff := w.handoffFor(b, shop, "/late")
	mu.Lock()
	skew = session.HandoffTTL + time.Second
	mu.Unlock()
	if r := b.page(handoff); r.StatusCode != http.StatusBadRequest || hasSession(r) {
		t.Fatalf("expired handoff: %d", r.StatusCode)
	}
}

// TestHandoffInWeChat: a browser inside WeChat that comes to a site is sent
// through the login host's in-WeChat authorization, whose redirect_uri is
// the login host's public origin (the only domain registered), and back.
func TestHandoffInWeChat(t *testing.T) {
	w := newHandoffWorld(t, []string{"shop.test"}, []string{"shop.test"}, nil)
	shop := w.sites["shop.test"].origin
	w.fake.SetOAuthUser("bob")
	b := newNamedClient(t)
	var hosts []string
	target := shop + "/wechat-only"
	var r response
	for range 10 {
		req, _ := http.NewRequest(http.MethodGet, target, nil)
		req.Header.Set("Accept", "text/html")
		req.Header.Set("User-Agent", "Mozilla/5.0 (iPhone) MicroMessenger/8.0.50")
		resp, err := b.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		r = response{resp, body}
		u, _ := url.Parse(target)
		hosts = append(hosts, u.Host)
		if resp.StatusCode < 300 || resp.StatusCode > 399 {
			break
		}
		target = location(t, r)
		if strings.Contains(target, "redirect_uri=") {
			ru, _ := url.Parse(target)
			if got := ru.Query().Get("redirect_uri"); got != w.host.origin+"/wechat/oauth/callback" {
				t.Fatalf("redirect_uri %q", got)
			}
		}
	}
	if r.StatusCode != http.StatusOK || target != shop+"/wechat-only" {
		t.Fatalf("ended with %d at %q via %v: %.300s", r.StatusCode, target, hosts, r.body)
	}
	if got := r.json(t); got["openid"] != w.fake.OpenID(testAppID, "bob") || got["method"] != MethodOAuth {
		t.Fatalf("site saw %v", got)
	}
}

// TestHandoffLogout: a logout on a site ends that site's session only; a
// logout everywhere goes on to the login host's logout, which asks to
// confirm and then ends the login host's session too, and comes back.
func TestHandoffLogout(t *testing.T) {
	w := newHandoffWorld(t, []string{"shop.test", "blog.test"}, []string{"shop.test", "blog.test"}, nil)
	shop, blog := w.sites["shop.test"].origin, w.sites["blog.test"].origin
	b := newNamedClient(t)
	w.loginOnHost(b, location(t, b.page(shop+"/")), "alice")
	for _, site := range []string{shop, blog} {
		if r, at := follow(t, b, site+"/", 6); r.StatusCode != http.StatusOK || at != site+"/" {
			t.Fatalf("%s: %d at %s", site, r.StatusCode, at)
		}
	}

	r := b.do(http.MethodPost, shop+"/wechat/logout", strings.NewReader("next=%2Fbye"), "Origin", shop, "Sec-Fetch-Site", "same-origin")
	if r.StatusCode != http.StatusSeeOther || location(t, r) != shop+"/bye" {
		t.Fatalf("logout: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	if r := b.do(http.MethodGet, blog+"/", nil); r.StatusCode != http.StatusOK {
		t.Fatalf("the blog after a logout on the shop: %d", r.StatusCode)
	}
	if r := b.do(http.MethodGet, w.host.origin+"/wechat/userinfo", nil); r.StatusCode != http.StatusOK {
		t.Fatalf("the login host after a logout on the shop: %d", r.StatusCode)
	}

	r = b.do(http.MethodGet, blog+"/wechat/logout?everywhere=1&next=%2Fhome", nil,
		"Sec-Fetch-Site", "same-origin", "Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "document")
	want := w.host.origin + "/wechat/logout?next=" + url.QueryEscape(blog+"/home")
	if r.StatusCode != http.StatusSeeOther || location(t, r) != want {
		t.Fatalf("logout everywhere: %d %q, want %q", r.StatusCode, r.Header.Get("Location"), want)
	}
	if r := b.do(http.MethodGet, blog+"/", nil); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the blog after its logout: %d", r.StatusCode)
	}
	// Coming from the blog, the login host asks first.
	r = b.do(http.MethodGet, want, nil, "Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "document")
	if r.StatusCode != http.StatusOK || !strings.Contains(string(r.body), `name="next" value="`+blog+`/home"`) {
		t.Fatalf("confirmation: %d %s", r.StatusCode, r.body)
	}
	if csp := r.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "form-action 'self' "+blog) {
		t.Fatalf("confirmation CSP %q", csp)
	}
	r = b.do(http.MethodPost, w.host.origin+"/wechat/logout", strings.NewReader(url.Values{"next": {blog + "/home"}}.Encode()),
		"Origin", w.host.origin, "Sec-Fetch-Site", "same-origin")
	if r.StatusCode != http.StatusSeeOther || location(t, r) != blog+"/home" {
		t.Fatalf("confirmed logout: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	if r := b.do(http.MethodGet, w.host.origin+"/wechat/userinfo", nil); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the login host after logging out everywhere: %d", r.StatusCode)
	}
	// A logout everywhere from elsewhere is confirmed, and the form keeps it.
	r = b.do(http.MethodGet, blog+"/wechat/logout?everywhere=1", nil, "Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "document")
	if !strings.Contains(string(r.body), `name="everywhere" value="1"`) || !strings.Contains(r.Header.Get("Content-Security-Policy"), w.host.origin) {
		t.Fatalf("confirmation of a logout everywhere: %s %q", r.body, r.Header.Get("Content-Security-Policy"))
	}
}

// TestHandoffSiteRoutes: a site with a login host serves no login method of
// its own, and sends its login page to the login host's.
func TestHandoffSiteRoutes(t *testing.T) {
	w := newHandoffWorld(t, []string{"shop.test"}, []string{"shop.test"}, nil)
	shop := w.sites["shop.test"].origin
	b := newNamedClient(t)
	for _, p := range []string{"/wechat/qr", "/wechat/poll?scene=x", "/wechat/callback", "/wechat/oauth/start", "/wechat/oauth/callback?state=x", "/wechat/handoff/start?to=x"} {
		if r := b.do(http.MethodGet, shop+p, nil); r.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %d", p, r.StatusCode)
		}
	}
	r := b.page(shop + "/wechat/login?next=%2Fdeep%2Fpage")
	if r.StatusCode != http.StatusFound || !strings.HasPrefix(location(t, r), w.host.origin+"/wechat/login?next=") {
		t.Fatalf("site login page: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	// API clients get 401 with the site's own login URL.
	r = b.do(http.MethodGet, shop+"/api", nil, "Accept", "application/json")
	if r.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(r.json(t)["login_url"].(string), "/wechat/login?next=") {
		t.Fatalf("API without a session: %d %s", r.StatusCode, r.body)
	}
	// The login host takes no handoffs, and a site hands none out.
	if r := b.do(http.MethodGet, w.host.origin+"/wechat/handoff?token=x", nil); r.StatusCode != http.StatusNotFound {
		t.Fatalf("handoff at the login host: %d", r.StatusCode)
	}
	// A very long next still fits through the login page.
	long := "/p?q=" + strings.Repeat("x", 1000)
	r = b.page(shop + long)
	login, _ := url.Parse(location(t, r))
	next := login.Query().Get("next")
	if len(next) > 1024 || !strings.Contains(next, "next=%2Fp&") {
		t.Fatalf("long next became %d bytes: %.200s", len(next), next)
	}
}

// TestCookieDomain: with CookieDomain, a login on one subdomain serves
// another, over HTTPS under the __Secure- prefix with the Domain set; a
// host outside the domain gets a host-only cookie; and a logout on any
// subdomain ends the session on all.
func TestCookieDomain(t *testing.T) {
	env := newEnv(t, wechattest.Safe, func(c *Config) { c.CookieDomain = "example.test" })
	srv := env.srv
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	a, b2, other := "http://a.example.test:"+port, "http://b.example.test:"+port, "http://other.test:"+port
	br := newNamedClient(t)
	qr := br.do(http.MethodPost, a+"/wechat/qr", strings.NewReader("next=%2F"), "Origin", a, "Sec-Fetch-Site", "same-origin").json(t)
	if _, err := env.fake.Scan(context.Background(), testAppID, qr["qr_content"].(string), "bob"); err != nil {
		t.Fatal(err)
	}
	r := br.do(http.MethodGet, a+"/wechat/poll?scene="+qr["scene"].(string)+"&wait=5", nil)
	var set *http.Cookie
	for _, c := range r.Cookies() {
		if c.Name == sessionCookie {
			set = c
		}
	}
	if set == nil || set.Domain != "example.test" || set.Secure || !set.HttpOnly {
		t.Fatalf("session cookie over HTTP: %+v", set)
	}
	if c := br.cookie(a, bindingCookie); c != nil {
		t.Fatalf("binding cookie kept after the login: %+v", c)
	}
	if got := br.do(http.MethodGet, b2+"/x", nil).json(t); got["openid"] != env.fake.OpenID(testAppID, "bob") {
		t.Fatalf("b.example.test saw %v", got)
	}
	// Logging out on b ends it on a.
	r = br.do(http.MethodPost, b2+"/wechat/logout", nil, "Origin", b2, "Sec-Fetch-Site", "same-origin")
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout on b: %d", r.StatusCode)
	}
	stolen := &http.Cookie{Name: sessionCookie, Value: set.Value}
	req := httptest.NewRequest(http.MethodGet, a+"/x", nil)
	req.AddCookie(stolen)
	if _, err := env.mw.sessions.Get(req); !errors.Is(err, session.ErrNone) {
		t.Fatalf("the session logged out on b still opens on a: %v", err)
	}

	// A host not under the domain: a host-only cookie.
	br2 := newNamedClient(t)
	qr = br2.do(http.MethodPost, other+"/wechat/qr", strings.NewReader("next=%2F"), "Origin", other, "Sec-Fetch-Site", "same-origin").json(t)
	if _, err := env.fake.Scan(context.Background(), testAppID, qr["qr_content"].(string), "bob"); err != nil {
		t.Fatal(err)
	}
	r = br2.do(http.MethodGet, other+"/wechat/poll?scene="+qr["scene"].(string)+"&wait=5", nil)
	for _, c := range r.Cookies() {
		if c.Name == sessionCookie && c.Domain != "" {
			t.Fatalf("cookie for a foreign domain: %+v", c)
		}
	}

	// Over HTTPS: __Secure-, Secure, Domain.
	w := httptest.NewRecorder()
	req = httptest.NewRequest(http.MethodGet, "https://a.example.test/", nil)
	if err := env.mw.startSession(w, req, Identity{AppID: testAppID, OpenID: "o1", Method: MethodQR}, ""); err != nil {
		t.Fatal(err)
	}
	c := w.Result().Cookies()
	if len(c) != 1 || c[0].Name != "__Secure-"+sessionCookie || !c[0].Secure || c[0].Domain != "example.test" || c[0].Path != "/" {
		t.Fatalf("session cookie over HTTPS: %+v", c)
	}
	w = httptest.NewRecorder()
	req = httptest.NewRequest(http.MethodGet, "https://example.org/", nil)
	if err := env.mw.startSession(w, req, Identity{AppID: testAppID, OpenID: "o1", Method: MethodQR}, ""); err != nil {
		t.Fatal(err)
	}
	if c := w.Result().Cookies(); len(c) != 1 || c[0].Name != "__Host-"+sessionCookie || c[0].Domain != "" {
		t.Fatalf("session cookie over HTTPS outside the domain: %+v", c)
	}
}

// TestPublicOrigin: with PublicOrigin, the redirect_uri and the cookies
// follow it, whatever Host the proxy in front passed.
func TestPublicOrigin(t *testing.T) {
	env := newEnv(t, wechattest.Safe, func(c *Config) { c.PublicOrigin = "https://login.example.com" })
	r := env.browser().get("/wechat/oauth/start?next=%2F", map[string]string{"Host": "internal:8080"})
	loc := r.Header.Get("Location")
	u, err := url.Parse(loc)
	if err != nil || u.Query().Get("redirect_uri") != "https://login.example.com/wechat/oauth/callback" {
		t.Fatalf("authorize URL %q", loc)
	}
	for _, c := range r.Cookies() {
		if !strings.HasPrefix(c.Name, "__Host-") || !c.Secure {
			t.Fatalf("cookie behind an HTTPS public origin: %+v", c)
		}
	}
}

// TestHandoffConfig: what New refuses, by field.
func TestHandoffConfig(t *testing.T) {
	site := func(c *Config) {
		*c = Config{SessionKeys: [][]byte{testSessionKey}, LoginHost: "https://login.example.com"}
	}
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		field  string
		index  int
		want   string
	}{
		{"site", site, "", -1, ""},
		{"site with app", func(c *Config) { site(c); c.AppID = testAppID }, "AppID", -1, "AppID is set on a site with a login host"},
		{"site with website app", func(c *Config) { site(c); c.OpenAppSecret = "x" }, "OpenAppSecret", -1, "OpenAppSecret is set on a site with a login host"},
		{"site with methods", func(c *Config) { site(c); c.Methods = []string{MethodQR} }, "Methods", -1, "Methods are set on a site with a login host"},
		{"site handing off", func(c *Config) { site(c); c.HandoffTo = []string{"https://a.example"} }, "HandoffTo", -1, "HandoffTo is for a login host"},
		{"site without keys", func(c *Config) { site(c); c.SessionKeys = nil }, "SessionKeys", -1, "SessionKeys needs at least one key"},
		{"login host with a path", func(c *Config) { site(c); c.LoginHost = "https://login.example.com/wechat" }, "LoginHost", -1, "with no path"},
		{"login host ftp", func(c *Config) { site(c); c.LoginHost = "ftp://login.example.com" }, "LoginHost", -1, "must start with https://"},
		{"login host is me", func(c *Config) { site(c); c.PublicOrigin = "https://LOGIN.example.com:443" }, "LoginHost", -1, "is this site's own public origin"},
		{"handoff targets", func(c *Config) {
			c.HandoffTo = []string{"https://shop.example.net", "http://127.0.0.1:8080", "https://[::1]:8443"}
		}, "", -1, ""},
		{"handoff target with query", func(c *Config) { c.HandoffTo = []string{"https://shop.example.net", "https://a.example?x"} }, "HandoffTo", 1, "HandoffTo[1]"},
		{"handoff target twice", func(c *Config) { c.HandoffTo = []string{"https://shop.example.net", "https://SHOP.example.net:443/"} }, "HandoffTo", 1, "listed twice"},
		{"handoff target bad port", func(c *Config) { c.HandoffTo = []string{"https://shop.example.net:99999"} }, "HandoffTo", 0, "invalid port"},
		{"handoff target user", func(c *Config) { c.HandoffTo = []string{"https://u@shop.example.net"} }, "HandoffTo", 0, "no path, query or user"},
		{"handoff to myself", func(c *Config) {
			c.PublicOrigin, c.HandoffTo = "https://login.example.com", []string{"https://login.example.com"}
		}, "HandoffTo", 0, "own public origin"},
		{"public origin with path", func(c *Config) { c.PublicOrigin = "https://login.example.com/x" }, "PublicOrigin", -1, "PublicOrigin"},
		{"cookie domain", func(c *Config) { c.CookieDomain = ".Example.COM" }, "", -1, ""},
		{"cookie domain tld", func(c *Config) { c.CookieDomain = "com" }, "CookieDomain", -1, "at least two labels"},
		{"cookie domain ip", func(c *Config) { c.CookieDomain = "10.0.0.1" }, "CookieDomain", -1, "IP address"},
		{"cookie domain url", func(c *Config) { c.CookieDomain = "https://example.com" }, "CookieDomain", -1, "must be a domain name"},
		{"cookie domain with port", func(c *Config) { c.CookieDomain = "example.com:443" }, "CookieDomain", -1, "must be a domain name"},
		{"cookie domain not the public origin's", func(c *Config) {
			c.CookieDomain, c.PublicOrigin = "example.com", "https://login.example.net"
		}, "CookieDomain", -1, "does not contain the host of this site's public origin"},
		{"cookie domain the public origin's", func(c *Config) {
			c.CookieDomain, c.PublicOrigin = "example.com", "https://a.example.com"
		}, "", -1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := validConfig()
			tc.mutate(&cfg)
			err := cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				mw, err := New(cfg)
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				_ = mw.Close()
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field || ce.Index != tc.index || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v; want field %s[%d] saying %q", err, tc.field, tc.index, tc.want)
			}
			if _, err2 := New(cfg); err2 == nil || err2.Error() != err.Error() {
				t.Fatalf("New = %v; Validate = %v", err2, err)
			}
		})
	}
	// The origins are kept in their canonical spelling.
	cfg := validConfig()
	cfg.HandoffTo = []string{"HTTPS://Shop.Example.NET:443/"}
	in := cfg.HandoffTo
	c, err := cfg.withDefaults()
	if err != nil || c.HandoffTo[0] != "https://shop.example.net" || in[0] != "HTTPS://Shop.Example.NET:443/" {
		t.Fatalf("HandoffTo %v (given %v): %v", c.HandoffTo, in, err)
	}
}

// TestHandoffToken: the token opens only as a handoff, for its whole
// content, and never as a session cookie.
func TestHandoffToken(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	hs, err := session.NewHandoffs([][]byte{testSessionKey}, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	in := session.Handoff{Target: "https://shop.example.net", Next: "/x?y=1", State: strings.Repeat("ab", 16),
		Identity: session.Record{AppID: testAppID, OpenID: "oPlainOpenIDThatMustNotShow", UnionID: "u1", Method: MethodOpen, Nickname: "昵称", LoginAt: now.Add(-time.Hour).UTC()}}
	token, sealed, err := hs.Seal(in)
	if err != nil || len(sealed.ID) != 32 || !sealed.ExpiresAt.Equal(now.Add(session.HandoffTTL)) {
		t.Fatalf("Seal: %+v, %v", sealed, err)
	}
	out, err := hs.Open(token)
	if err != nil || out != sealed {
		t.Fatalf("Open = %+v, %v; want %+v", out, err, sealed)
	}
	raw, _ := json.Marshal(out)
	// Random-looking text may hold any short string by chance; a long one
	// in the clear would mean the content is not sealed.
	if strings.Contains(token, "oPlainOpenIDThatMustNotShow") || strings.Contains(token, string(raw[:10])) {
		t.Fatal("the token shows its content")
	}
	cookies, _ := session.NewCookies([][]byte{testSessionKey}, func(*http.Request) bool { return false }, func() time.Time { return now })
	req := httptest.NewRequest(http.MethodGet, "http://shop.example.net/", nil)
	req.AddCookie(&http.Cookie{Name: sessionCookie, Value: token})
	if cookies.Open(req, sessionCookie) != nil {
		t.Fatal("a handoff token opened as a session cookie")
	}
	other, _ := session.NewHandoffs([][]byte{[]byte(strings.Repeat("z", 40))}, func() time.Time { return now })
	if _, err := other.Open(token); !errors.Is(err, session.ErrHandoffInvalid) {
		t.Fatalf("opened under another key: %v", err)
	}
	now = now.Add(session.HandoffTTL)
	if _, err := hs.Open(token); !errors.Is(err, session.ErrHandoffExpired) {
		t.Fatalf("after %v: %v", session.HandoffTTL, err)
	}
}
