package caddymodule

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// One login for many sites, through real Caddy processes, with real host
// names: the sites listen on loopback only, and the test clients (and the
// fake WeChat, pushing to the login host) resolve every name to 127.0.0.1.

// siteBlock is one Caddyfile site block: its addresses and its body.
type siteBlock struct{ addr, body string }

// startSites runs one Caddy serving the given site blocks, bound to the
// loopback address only, besides the helpers' own base site.
func startSites(t *testing.T, globals string, blocks []siteBlock, env ...string) *caddyProc {
	t.Helper()
	var b strings.Builder
	// The helpers write "<base> {\n<site>\n}": the first lines close the
	// base site and the last block is closed by the helpers.
	b.WriteString("\trespond \"no such site\" 404\n}\n")
	for i, s := range blocks {
		fmt.Fprintf(&b, "\n%s {\n%s", s.addr, s.body)
		if i < len(blocks)-1 {
			b.WriteString("\n}\n")
		}
	}
	return startCaddyGlobals(t, "default_bind 127.0.0.1\n"+globals, b.String(), env...)
}

// loopbackDialer dials every host name at 127.0.0.1, on the port asked for.
func loopbackDialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		return d.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
	}
}

// namedBrowser is one browser across named sites: one cookie jar, every
// name resolved to loopback, redirects not followed, and (for HTTPS) roots
// trusted.
type namedBrowser struct {
	t  *testing.T
	hc *http.Client
	ua string
}

func newNamedBrowser(t *testing.T, roots *x509.CertPool) *namedBrowser {
	jar, _ := cookiejar.New(nil)
	tr := &http.Transport{DialContext: loopbackDialer(), TLSClientConfig: &tls.Config{RootCAs: roots}}
	t.Cleanup(tr.CloseIdleConnections)
	return &namedBrowser{t: t, hc: &http.Client{
		Jar:           jar,
		Transport:     tr,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// do sends a request to an absolute URL; hdr holds header names and values
// in turn. A page navigation says it accepts HTML.
func (b *namedBrowser) do(method, target string, body io.Reader, hdr ...string) (*http.Response, string) {
	b.t.Helper()
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if b.ua != "" {
		req.Header.Set("User-Agent", b.ua)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, string(data)
}

func (b *namedBrowser) page(target string) (*http.Response, string) {
	b.t.Helper()
	return b.do(http.MethodGet, target, nil, "Accept", "text/html")
}

// follow navigates to target and follows at most n redirects; it returns
// the last answer and its URL, and every URL on the way.
func (b *namedBrowser) follow(target string, n int) (*http.Response, string, []string) {
	b.t.Helper()
	var via []string
	for range n {
		via = append(via, target)
		resp, body := b.page(target)
		if resp.StatusCode/100 != 3 {
			return resp, body, via
		}
		loc, err := resp.Location()
		if err != nil {
			b.t.Fatal(err)
		}
		target = loc.String()
	}
	b.t.Fatalf("more than %d redirects: %v", n, via)
	return nil, "", nil
}

// cookies returns the browser's cookies for target, by name.
func (b *namedBrowser) cookies(target string) map[string]*http.Cookie {
	u, _ := url.Parse(target)
	out := map[string]*http.Cookie{}
	for _, c := range b.hc.Jar.Cookies(u) {
		out[c.Name] = c
	}
	return out
}

// setCookie named name in the response, or nil.
func setCookie(resp *http.Response, name string) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// namedFake is a fake WeChat whose pushes reach named hosts on loopback.
// Its pushes trust the roots put into the returned TLS configuration
// (Caddy's CA exists only once Caddy runs), before the first push.
func namedFake(t *testing.T, oauthUser string) (*wechattest.Server, *tls.Config) {
	t.Helper()
	tc := &tls.Config{}
	tr := &http.Transport{DialContext: loopbackDialer(), TLSClientConfig: tc}
	t.Cleanup(tr.CloseIdleConnections)
	fake := wechattest.NewServer(wechattest.Config{OAuthUser: oauthUser, HTTPClient: &http.Client{
		Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}})
	t.Cleanup(fake.Close)
	return fake, tc
}

// caddyRoots returns the root of Caddy's internal CA, from its admin API,
// for clients that verify the sites' certificates as browsers would.
func caddyRoots(t *testing.T, c *caddyProc) *x509.CertPool {
	t.Helper()
	resp, err := http.Get("http://" + c.admin + "/pki/ca/local")
	if err != nil {
		t.Fatal(err)
	}
	var ca struct {
		Root string `json:"root_certificate"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ca); err != nil || ca.Root == "" {
		t.Fatalf("internal CA: %v", err)
	}
	resp.Body.Close()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(ca.Root)) {
		t.Fatal("internal CA root does not parse")
	}
	return roots
}

// qrLoginAt logs b in by QR code on the site at base (whose login page
// goes on to next), as user, and returns the poll's answer.
func qrLoginAt(t *testing.T, fake *wechattest.Server, b *namedBrowser, base, next, user string) (*http.Response, map[string]any) {
	t.Helper()
	resp, body := b.do(http.MethodPost, base+"/wechat/qr", strings.NewReader(url.Values{"next": {next}}.Encode()), "Origin", base)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("create QR on %s: %d %s", base, resp.StatusCode, body)
	}
	var qr map[string]any
	if err := json.Unmarshal([]byte(body), &qr); err != nil {
		t.Fatal(err)
	}
	if _, err := fake.Scan(context.Background(), itAppID, qr["qr_content"].(string), user); err != nil {
		t.Fatalf("scan as %s: %v", user, err)
	}
	resp, body = b.do(http.MethodGet, base+"/wechat/poll?scene="+qr["scene"].(string)+"&wait=5", nil)
	var poll map[string]any
	if err := json.Unmarshal([]byte(body), &poll); err != nil || poll["status"] != "confirmed" {
		t.Fatalf("poll on %s: %d %s", base, resp.StatusCode, body)
	}
	return resp, poll
}

// TestCaddySubdomainsShareLogin: with cookie_domain, over HTTPS with
// certificates a browser would accept, a login on a.example.test serves
// b.example.test (another site block of the same Caddy and app), the cookie
// is a __Secure- one for the parent domain, a logout on b ends the session
// on a for every copy of the cookie, and a host outside the domain gets a
// host-only __Host- cookie.
func TestCaddySubdomainsShareLogin(t *testing.T) {
	port := freePort(t)
	a, b, other := fmt.Sprintf("https://a.example.test:%d", port), fmt.Sprintf("https://b.example.test:%d", port), fmt.Sprintf("https://other.test:%d", port)
	fake, fakeTLS := namedFake(t, "")
	body := "\ttls internal\n" + siteWithFake(fake.URL, "127.0.0.1:1", "Subdomains", "cookie_domain example.test")
	// Certificates from Caddy's own CA, which the helpers' "auto_https
	// off" would leave unmanaged: the later setting wins.
	globals := "auto_https disable_redirects\n\tskip_install_trust\n\thttps_port " + fmt.Sprint(port)
	c := startSites(t, globals, []siteBlock{{a, body}, {b, body}, {other, body}}, itEnv...)
	roots := caddyRoots(t, c)
	for _, site := range []string{a, b, other} {
		waitForCertificate(t, site, roots)
	}
	fakeTLS.RootCAs = roots // the fake pushes to a, over HTTPS
	addFakeApp(t, fake, a)

	br := newNamedBrowser(t, roots)
	resp, _ := qrLoginAt(t, fake, br, a, "/", "alice")
	ck := setCookie(resp, "__Secure-wechat_session")
	if ck == nil || ck.Domain != "example.test" || !ck.Secure || !ck.HttpOnly || ck.Path != "/" {
		t.Fatalf("session cookie on a: %v", resp.Header.Values("Set-Cookie"))
	}
	if setCookie(resp, "__Host-wechat_session") != nil {
		t.Fatal("a host-only session cookie was set too")
	}
	alice := fake.OpenID(itAppID, "alice")
	if _, body := br.do(http.MethodGet, b+"/x", nil); !strings.Contains(body, "openid="+alice) {
		t.Fatalf("b does not know the login: %q", body)
	}

	// Logging out on b ends the session on a, for a copy of the cookie
	// too.
	stolen := "__Secure-wechat_session=" + ck.Value
	resp, _ = br.do(http.MethodPost, b+"/wechat/logout", nil, "Origin", b)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout on b: %d", resp.StatusCode)
	}
	if cleared := setCookie(resp, "__Secure-wechat_session"); cleared == nil || cleared.MaxAge >= 0 || cleared.Domain != "example.test" {
		t.Fatalf("logout did not clear the shared cookie: %v", resp.Header.Values("Set-Cookie"))
	}
	thief := newNamedBrowser(t, roots)
	for _, site := range []string{a, b} {
		if resp, body := thief.do(http.MethodGet, site+"/x", nil, "Cookie", stolen, "Accept", "application/json"); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s after the logout on b: %d %s", site, resp.StatusCode, body)
		}
	}

	// other.test is not under example.test: its cookie stays its own. Its
	// QR login is confirmed by the push to a, another site block of the
	// same app: the blocks share the store.
	resp, _ = qrLoginAt(t, fake, br, other, "/", "bob")
	if ck := setCookie(resp, "__Host-wechat_session"); ck == nil || ck.Domain != "" || !ck.Secure {
		t.Fatalf("session cookie outside the domain: %v", resp.Header.Values("Set-Cookie"))
	}
	if setCookie(resp, "__Secure-wechat_session") != nil {
		t.Fatal("a cookie for a foreign domain was set")
	}
	if _, body := br.do(http.MethodGet, a+"/x", nil, "Accept", "application/json"); strings.Contains(body, "openid=") {
		t.Fatalf("a login on other.test reached a.example.test: %q", body)
	}
}

// waitForCertificate waits (at most 20 s) until the site at origin shows a
// certificate that roots vouch for: Caddy obtains its certificates in the
// background once it runs.
func waitForCertificate(t *testing.T, origin string, roots *x509.CertPool) {
	t.Helper()
	u, _ := url.Parse(origin)
	var err error
	for range 200 {
		var conn *tls.Conn
		conn, err = tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", net.JoinHostPort("127.0.0.1", u.Port()),
			&tls.Config{ServerName: u.Hostname(), RootCAs: roots})
		if err == nil {
			conn.Close()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no certificate for %s: %v", u.Hostname(), err)
}

// handoffCaddy is one Caddy serving a login host, which has the WeChat
// apps, and sites on unrelated domains that take their logins from it.
type handoffCaddy struct {
	fake              *wechattest.Server
	caddy             *caddyProc
	login, internal   string // the login host, and the name a proxy might pass for it
	shop, blog, rogue string
}

// startHandoffCaddy runs the login host (QR, in-WeChat and website login,
// public_origin set, handing logins to the shop and the blog) and three
// sites with login_host: the shop (with public_origin), the blog (without:
// its origin comes from the Host) and a rogue site the login host does not
// list. They share only the session key.
func startHandoffCaddy(t *testing.T) *handoffCaddy {
	t.Helper()
	port := freePort(t)
	at := func(host string) string { return fmt.Sprintf("http://%s:%d", host, port) }
	h := &handoffCaddy{login: at("login.example.test"), internal: at("login-internal.test"),
		shop: at("shop.test"), blog: at("blog.test"), rogue: at("rogue.test")}
	h.fake, _ = namedFake(t, "bob")
	loginHost := `	wechat_login {
		app_id ` + itAppID + `
		app_secret {env.IT_WECHAT_SECRET}
		token ` + itToken + `
		encoding_aes_key {env.IT_WECHAT_AES_KEY}
		session_key {env.IT_SESSION_KEY}
		open_app_id ` + itOpenAppID + `
		open_app_secret {env.IT_OPEN_SECRET}
		site_name "Login host"
		public_origin ` + h.login + `
		handoff_to ` + h.shop + ` ` + h.blog + `
		api_base ` + h.fake.URL + `
		oauth_base ` + h.fake.URL + `
		mp_base ` + h.fake.URL + `
	}
	respond "login host id={http.auth.user.id}"`
	site := func(name string, extra ...string) string {
		return `	wechat_login {
		login_host ` + h.login + `
		session_key {env.IT_SESSION_KEY}
		` + strings.Join(extra, "\n\t\t") + `
	}
	respond "` + name + ` id={http.auth.user.id} method={http.auth.user.login_method} app={http.auth.user.app_id}"`
	}
	h.caddy = startSites(t, "http_port "+fmt.Sprint(port), []siteBlock{
		{h.login + ", " + h.internal, loginHost},
		{h.shop, site("shop", "public_origin "+h.shop)},
		{h.blog, site("blog")},
		{h.rogue, site("rogue")},
	}, append(itEnv, "IT_OPEN_SECRET="+itOpenSecret)...)
	registered := []string{strings.TrimPrefix(h.login, "http://")}
	for _, app := range []wechattest.App{
		{AppID: itAppID, AppSecret: itSecret, Token: itToken, EncodingAESKey: itAESKey, OriginalID: "gh_00000000aaaa",
			CallbackURL: h.login + "/wechat/callback", Mode: wechattest.Safe, RedirectDomains: registered},
		{AppID: itOpenAppID, AppSecret: itOpenSecret, Kind: wechattest.WebsiteApp, RedirectDomains: registered},
	} {
		if err := h.fake.AddApp(app); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// toLoginHost checks that a site sent the browser to the login host's login
// page, and returns where that page goes on to once logged in.
func (h *handoffCaddy) toLoginHost(t *testing.T, resp *http.Response) string {
	t.Helper()
	loc, err := resp.Location()
	if err != nil || resp.StatusCode != http.StatusFound || loc.Scheme+"://"+loc.Host != h.login || loc.Path != "/wechat/login" {
		t.Fatalf("sent to %v (%d), want the login host's login page", loc, resp.StatusCode)
	}
	return h.login + loc.Query().Get("next")
}

// loginThroughHost has a browser without a session ask site for path, log
// in on the login host by QR code as user, and returns the handoff the
// login host then makes for site, without following it.
func (h *handoffCaddy) loginThroughHost(t *testing.T, b *namedBrowser, site, path, user string) string {
	t.Helper()
	resp, _ := b.page(site + path)
	next := h.toLoginHost(t, resp)
	if resp, _ := b.page(resp.Header.Get("Location")); resp.StatusCode != http.StatusOK {
		t.Fatalf("login host's login page: %d", resp.StatusCode)
	}
	_, poll := qrLoginAt(t, h.fake, b, h.login, strings.TrimPrefix(next, h.login), user)
	if poll["redirect"] != strings.TrimPrefix(next, h.login) {
		t.Fatalf("after the login, on to %v, want %s", poll["redirect"], next)
	}
	resp, body := b.page(next)
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), site+"/wechat/handoff?token=") {
		t.Fatalf("handoff for %s: %d %q %s", site, resp.StatusCode, resp.Header.Get("Location"), body)
	}
	return resp.Header.Get("Location")
}

// TestCaddyLoginHostHandsOff: through one real Caddy serving a login host
// and sites on unrelated domains, a QR login on the login host logs the
// browser in to the shop through a handoff and on to the page first asked
// for; the blog then needs no login; a replayed handoff, a handoff taken to
// another site, and one for a site the login host does not list log nobody
// in; and a logout on one site ends that site's session only, while a
// logout everywhere ends the login host's too.
func TestCaddyLoginHostHandsOff(t *testing.T) {
	h := startHandoffCaddy(t)
	b := newNamedBrowser(t, nil)

	handoff := h.loginThroughHost(t, b, h.shop, "/cart?item=42", "alice")
	binding := b.cookies(h.shop)["wechat_handoff"]
	resp, body := b.page(handoff)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/cart?item=42" {
		t.Fatalf("handoff at the shop: %d to %q: %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	alice := h.fake.OpenID(itAppID, "alice")
	want := "shop id=" + alice + " method=qr app=" + itAppID
	if _, body := b.do(http.MethodGet, h.shop+"/cart?item=42", nil); body != want {
		t.Fatalf("shop: %q, want %q", body, want)
	}

	// Replayed, even with the binding cookie it was made for: refused.
	thief := newNamedBrowser(t, nil)
	u, _ := url.Parse(h.shop)
	thief.hc.Jar.SetCookies(u, []*http.Cookie{binding})
	if resp, _ := thief.page(handoff); resp.StatusCode != http.StatusBadRequest || setCookie(resp, "wechat_session") != nil {
		t.Fatalf("replayed handoff: %d %v", resp.StatusCode, resp.Header.Values("Set-Cookie"))
	}

	// The blog: the login host knows the browser, no second login.
	scans := len(h.fake.Deliveries())
	resp, body, via := b.follow(h.blog+"/posts/1", 8)
	if resp.StatusCode != http.StatusOK || body != "blog id="+alice+" method=qr app="+itAppID || len(h.fake.Deliveries()) != scans {
		t.Fatalf("blog: %d %q via %v", resp.StatusCode, body, via)
	}

	// A handoff for the shop taken to the blog, with the shop's binding
	// cookie (the two share the key, so it opens there): the target in the
	// handoff refuses it. At the shop it still works.
	c2 := newNamedBrowser(t, nil)
	moved := h.loginThroughHost(t, c2, h.shop, "/moved", "bob")
	ub, _ := url.Parse(h.blog)
	c2.hc.Jar.SetCookies(ub, []*http.Cookie{c2.cookies(h.shop)["wechat_handoff"]})
	if resp, _ := c2.page(strings.Replace(moved, h.shop, h.blog, 1)); resp.StatusCode != http.StatusBadRequest || setCookie(resp, "wechat_session") != nil {
		t.Fatalf("handoff for the shop at the blog: %d", resp.StatusCode)
	}
	if resp, _ := c2.page(moved); resp.StatusCode != http.StatusSeeOther || setCookie(resp, "wechat_session") == nil {
		t.Fatalf("the handoff at its own site: %d", resp.StatusCode)
	}

	// The rogue site is not in handoff_to: no handoff, in any spelling.
	resp, _ = b.page(h.rogue + "/")
	start := h.toLoginHost(t, resp)
	if resp, body := b.page(start); resp.StatusCode != http.StatusForbidden || resp.Header.Get("Location") != "" || strings.Contains(body, "token=") {
		t.Fatalf("handoff to the rogue site: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	for _, to := range []string{h.shop + "/", strings.ToUpper(h.shop), h.shop + ".rogue.test", strings.Replace(h.shop, "http:", "https:", 1)} {
		q := url.Values{"to": {to}, "state": {strings.Repeat("0", 32)}, "next": {"/"}}
		if resp, _ := b.page(h.login + "/wechat/handoff/start?" + q.Encode()); resp.StatusCode != http.StatusForbidden {
			t.Errorf("handoff to %q: %d %q", to, resp.StatusCode, resp.Header.Get("Location"))
		}
	}

	// Logging out of the shop leaves the blog and the login host.
	resp, _ = b.do(http.MethodPost, h.shop+"/wechat/logout", strings.NewReader("next=%2Fbye"), "Origin", h.shop)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/bye" {
		t.Fatalf("logout on the shop: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	for site, want := range map[string]int{h.shop: http.StatusUnauthorized, h.blog: http.StatusOK, h.login: http.StatusOK} {
		if resp, _ := b.do(http.MethodGet, site+"/wechat/userinfo", nil); resp.StatusCode != want {
			t.Errorf("%s after logging out of the shop: %d, want %d", site, resp.StatusCode, want)
		}
	}
	// Logging out everywhere from the blog: the login host confirms, then
	// ends its session too, and sends the browser back.
	resp, _ = b.do(http.MethodGet, h.blog+"/wechat/logout?everywhere=1&next=%2Fhome", nil,
		"Sec-Fetch-Site", "same-origin", "Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "document")
	everywhere := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || everywhere != h.login+"/wechat/logout?next="+url.QueryEscape(h.blog+"/home") {
		t.Fatalf("logout everywhere on the blog: %d %q", resp.StatusCode, everywhere)
	}
	if resp, body := b.do(http.MethodGet, everywhere, nil, "Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "document"); resp.StatusCode != http.StatusOK || !strings.Contains(body, `action="/wechat/logout"`) {
		t.Fatalf("login host's confirmation: %d %s", resp.StatusCode, body)
	}
	resp, _ = b.do(http.MethodPost, h.login+"/wechat/logout", strings.NewReader(url.Values{"next": {h.blog + "/home"}}.Encode()), "Origin", h.login)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != h.blog+"/home" {
		t.Fatalf("confirmed logout on the login host: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	for _, site := range []string{h.blog, h.login} {
		if resp, _ := b.do(http.MethodGet, site+"/wechat/userinfo", nil); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s after logging out everywhere: %d", site, resp.StatusCode)
		}
	}
}

// TestCaddyLoginHostOAuth: the login host's other methods hand logins over
// too. Inside WeChat, a browser coming to a site goes through the login
// host's web authorization, whose redirect_uri is on the login host's
// public origin (the only domain registered with the fake WeChat, which
// refuses any other), even when the request reached the login host under
// another name; website login on the login host does the same.
func TestCaddyLoginHostOAuth(t *testing.T) {
	h := startHandoffCaddy(t)

	inWeChat := newNamedBrowser(t, nil)
	inWeChat.ua = itWeChatUA
	resp, body, via := inWeChat.follow(h.shop+"/orders", 10)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(body, "shop id="+h.fake.OpenID(itAppID, "bob")+" method=oauth") {
		t.Fatalf("in WeChat: %d %q via %v", resp.StatusCode, body, via)
	}
	hosts := make([]string, len(via))
	for i, v := range via {
		u, _ := url.Parse(v)
		hosts[i] = u.Scheme + "://" + u.Host
		if ru := u.Query().Get("redirect_uri"); ru != "" && ru != h.login+"/wechat/oauth/callback" {
			t.Fatalf("redirect_uri %q", ru)
		}
	}
	if hosts[0] != h.shop || hosts[len(hosts)-1] != h.shop || !strings.Contains(strings.Join(hosts, " "), h.fake.URL) {
		t.Fatalf("in WeChat, went %v", via)
	}

	// Reached under the name a proxy might pass, the login host still
	// names its public origin.
	resp, _ = inWeChat.do(http.MethodGet, h.internal+"/wechat/oauth/start?next=%2F", nil)
	loc, _ := resp.Location()
	if resp.StatusCode != http.StatusFound || loc == nil || loc.Query().Get("redirect_uri") != h.login+"/wechat/oauth/callback" {
		t.Fatalf("authorization under another Host: %d %v", resp.StatusCode, loc)
	}

	// Website login on the login host, then on to the blog.
	desk := newNamedBrowser(t, nil)
	resp, _ = desk.page(h.blog + "/desk")
	next := strings.TrimPrefix(h.toLoginHost(t, resp), h.login)
	resp, body, via = desk.follow(h.login+"/wechat/oauth/start?method=open&next="+url.QueryEscape(next), 10)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(body, "blog id=") || !strings.Contains(body, "method=open app="+itOpenAppID) {
		t.Fatalf("website login: %d %q via %v", resp.StatusCode, body, via)
	}
}

// TestCaddyManySitesExampleValidates: the runnable example of docs/sites.md
// loads.
func TestCaddyManySitesExampleValidates(t *testing.T) {
	out, err := runCaddy(t, nil, "validate", "--config", "../examples/many-sites/Caddyfile", "--adapter", "caddyfile")
	if err != nil || !strings.Contains(out, "Valid configuration") {
		t.Fatalf("validate examples/many-sites/Caddyfile: %v\n%s", err, out)
	}
}
