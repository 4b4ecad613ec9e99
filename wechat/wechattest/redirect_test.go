package wechattest

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// redirectDomains are the domains the apps of the redirect tests register.
var redirectDomains = []string{"example.com", "login.example.org", "127.0.0.1:8080", "[::1]:9443"}

// newRedirectPlatform returns a platform that approves as alice, with an
// Official Account and a website app that both register redirectDomains.
func newRedirectPlatform(t *testing.T) *Platform {
	t.Helper()
	p, err := New(Config{OAuthUser: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []App{
		{AppID: oaID, AppSecret: oaSecret, RedirectDomains: redirectDomains},
		{AppID: webID, AppSecret: webSecret, Kind: WebsiteApp, RedirectDomains: redirectDomains},
	} {
		if err := p.AddApp(a); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// authPage requests an authorization page of p for redirect_uri ru: the
// OA's authorize page, or the website app's qrconnect page when web is set.
// A POST is the choice page's deny button.
func authPage(p http.Handler, method, host string, web bool, ru string) *httptest.ResponseRecorder {
	target := "/connect/oauth2/authorize?appid=" + oaID + "&redirect_uri=" + url.QueryEscape(ru) + "&response_type=code&scope=snsapi_userinfo&state=s1"
	if web {
		target = "/connect/qrconnect?appid=" + webID + "&redirect_uri=" + url.QueryEscape(ru) + "&response_type=code&scope=snsapi_login&state=s1"
	}
	var req *http.Request
	if method == http.MethodPost {
		req = httptest.NewRequest(method, target, strings.NewReader("decision=deny"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		req = httptest.NewRequest(method, target, nil)
	}
	if host != "" {
		req.Host = host
	}
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, req)
	return rec
}

// wantRefused checks that rec is WeChat's error page for a bad redirect_uri
// and that nothing in it sends the browser anywhere.
func wantRefused(t *testing.T, rec *httptest.ResponseRecorder, web bool) {
	t.Helper()
	want := "10003"
	if web {
		want = "redirect_uri"
	}
	body := rec.Body.String()
	if rec.Code != http.StatusOK || rec.Header().Get("Location") != "" || rec.Header().Get("Refresh") != "" {
		t.Fatalf("status %d, Location %q, Refresh %q; want the error page without a redirect",
			rec.Code, rec.Header().Get("Location"), rec.Header().Get("Refresh"))
	}
	if m := errcodeAttr.FindStringSubmatch(body); m == nil || m[1] != want {
		t.Fatalf("page error %v, want %s:\n%s", m, want, body)
	}
	if strings.Contains(body, "http-equiv") || strings.Contains(body, "<script") {
		t.Fatalf("error page can navigate:\n%s", body)
	}
}

// wantRedirect checks that rec redirects to ru with a query added.
func wantRedirect(t *testing.T, rec *httptest.ResponseRecorder, ru string) {
	t.Helper()
	loc := rec.Header().Get("Location")
	if rec.Code != http.StatusFound || loc == "" {
		t.Fatalf("status %d, Location %q; want a redirect:\n%s", rec.Code, loc, rec.Body)
	}
	got, err := url.Parse(loc)
	want, _ := url.Parse(ru)
	if err != nil || !strings.EqualFold(got.Host, want.Host) || got.Scheme != want.Scheme || got.Path != want.Path || got.Query().Get("state") != "s1" {
		t.Fatalf("Location %q, want %q plus code and state", loc, ru)
	}
}

func TestRedirectURIRefused(t *testing.T) {
	p := newRedirectPlatform(t)
	for _, ru := range []string{
		// Other hosts, and hosts that only look like a registered one.
		"https://evil.test/cb",
		"https://example.com.evil.test/cb",
		"https://evilexample.com/cb",
		"https://example.com./cb",
		"https://example.co/cb",
		"https://exämple.com/cb",
		"https://example%2ecom/cb",
		"https://xn--exmple-cua.com/cb",
		// Registered hosts do not cover their subdomains, parents or siblings.
		"https://www.example.com/cb",
		"https://a.login.example.org/cb",
		"https://example.org/cb",
		"https://other.example.org/cb",
		// User information, in both directions.
		"https://example.com@evil.test/",
		"https://evil.test@example.com/",
		"https://example.com:443@evil.test/",
		"https://user:pass@example.com/cb",
		// Backslashes, which browsers read as slashes.
		"https://evil.test\\@example.com/",
		"https://example.com\\@evil.test/",
		"https:\\\\evil.test/cb",
		"https://example.com\\.evil.test/cb",
		// No scheme, or one that is not http(s).
		"//evil.test/cb",
		"//example.com/cb",
		"/cb",
		"example.com/cb",
		"javascript:alert(document.domain)//example.com",
		"JavaScript://example.com/%0aalert(1)",
		"data:text/html,<script>alert(1)</script>",
		"ftp://example.com/cb",
		"wss://example.com/cb",
		"https:example.com/cb",
		"https:/evil.test/cb",
		// White space and control characters, which browsers may drop.
		" https://example.com/cb",
		"https://exa\tmple.com/cb",
		"https://evil.test\n.example.com/cb",
		// Ports: a domain without a port is the scheme's default port only;
		// one with a port is that port only.
		"https://example.com:8443/cb",
		"https://example.com:80/cb",
		"http://example.com:443/cb",
		"http://example.com:8080/cb",
		"https://example.com:0443/cb",
		"https://example.com:99999/cb",
		"http://127.0.0.1/cb",
		"http://127.0.0.1:8081/cb",
		"https://127.0.0.1:80/cb",
		"http://127.1:8080/cb",
		"http://[::1]:9444/cb",
		"http://[::1]/cb",
		"http://[::2]:9443/cb",
		"http://::1:9443/cb",
		"http://[fe80::1%25eth0]:9443/cb",
	} {
		for _, web := range []bool{false, true} {
			for _, method := range []string{http.MethodGet, http.MethodPost} {
				name := map[bool]string{false: "authorize", true: "qrconnect"}[web] + " " + method + " " + ru
				t.Run(name, func(t *testing.T) {
					wantRefused(t, authPage(p, method, "", web, ru), web)
				})
			}
		}
	}
}

func TestRedirectURIAccepted(t *testing.T) {
	p := newRedirectPlatform(t)
	for _, ru := range []string{
		"https://example.com/cb",
		"http://example.com/wechat/oauth/callback?next=%2F",
		"https://EXAMPLE.com/cb",
		"https://example.com:443/cb",
		"http://example.com:80/cb",
		"https://example.com/",
		"https://example.com",
		"https://example.com/a/b?c=d#frag",
		"https://login.example.org/wechat/oauth/callback",
		"http://127.0.0.1:8080/cb",
		"http://[::1]:9443/cb",
		"https://[0:0:0:0:0:0:0:1]:9443/cb",
	} {
		for _, web := range []bool{false, true} {
			t.Run(map[bool]string{false: "authorize ", true: "qrconnect "}[web]+ru, func(t *testing.T) {
				wantRedirect(t, authPage(p, http.MethodGet, "", web, ru), ru)
				// The deny button goes back to the same place, without a code.
				rec := authPage(p, http.MethodPost, "", web, ru)
				wantRedirect(t, rec, ru)
				if u, _ := url.Parse(rec.Header().Get("Location")); u.Query().Has("code") {
					t.Fatalf("deny carried a code: %s", u)
				}
			})
		}
	}
}

func TestRedirectSameHost(t *testing.T) {
	p, err := New(Config{OAuthUser: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []App{
		{AppID: oaID, AppSecret: oaSecret, RedirectSameHost: true},
		{AppID: webID, AppSecret: webSecret, Kind: WebsiteApp, RedirectSameHost: true},
	} {
		if err := p.AddApp(a); err != nil {
			t.Fatal(err)
		}
	}
	for _, web := range []bool{false, true} {
		wantRedirect(t, authPage(p, http.MethodGet, "demo.example:8080", web, "http://demo.example:8080/wechat/oauth/callback"),
			"http://demo.example:8080/wechat/oauth/callback")
		wantRedirect(t, authPage(p, http.MethodGet, "Demo.Example", web, "https://demo.example/cb"), "https://demo.example/cb")
		for _, tc := range []struct{ host, ru string }{
			{"demo.example:8080", "https://evil.test/cb"},
			{"demo.example:8080", "http://demo.example/cb"},
			{"demo.example:8080", "http://demo.example:8080@evil.test/cb"},
			{"demo.example", "https://demo.example.evil.test/cb"},
			{"demo.example", "https://www.demo.example/cb"},
			{"demo.example/evil.test", "https://evil.test/cb"},
			{"evil.test@demo.example", "https://evil.test/cb"},
		} {
			t.Run(tc.host+" "+tc.ru, func(t *testing.T) {
				wantRefused(t, authPage(p, http.MethodGet, tc.host, web, tc.ru), web)
			})
		}
	}
}

func TestRedirectDefaults(t *testing.T) {
	p, err := New(Config{OAuthUser: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	// With no domain, an app's CallbackURL stands in for one.
	if err := p.AddApp(App{AppID: oaID, AppSecret: oaSecret, Token: oaToken, CallbackURL: "http://127.0.0.1:8080/wechat/callback"}); err != nil {
		t.Fatal(err)
	}
	wantRedirect(t, authPage(p, http.MethodGet, "", false, "http://127.0.0.1:8080/wechat/oauth/callback"), "http://127.0.0.1:8080/wechat/oauth/callback")
	for _, ru := range []string{"https://evil.test/cb", "http://127.0.0.1:9090/cb", "http://localhost:8080/cb"} {
		wantRefused(t, authPage(p, http.MethodGet, "", false, ru), false)
	}
	// Registered domains replace the CallbackURL's host.
	if err := p.AddApp(App{AppID: oaID, AppSecret: oaSecret, Token: oaToken, CallbackURL: "http://127.0.0.1:8080/wechat/callback",
		RedirectDomains: []string{"example.com"}}); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, authPage(p, http.MethodGet, "", false, "http://127.0.0.1:8080/cb"), false)
	wantRedirect(t, authPage(p, http.MethodGet, "", false, "https://example.com/cb"), "https://example.com/cb")

	// With neither, any http(s) host is accepted, but never a URL that is
	// not plainly one.
	if err := p.AddApp(App{AppID: webID, AppSecret: webSecret, Kind: WebsiteApp}); err != nil {
		t.Fatal(err)
	}
	wantRedirect(t, authPage(p, http.MethodGet, "", true, "https://anywhere.example/cb"), "https://anywhere.example/cb")
	for _, ru := range []string{"javascript:alert(1)", "//evil.test/", "https://a@evil.test/", "https:\\\\evil.test", "/cb"} {
		wantRefused(t, authPage(p, http.MethodGet, "", true, ru), true)
	}
}

func TestAddAppRejectsBadRedirectDomains(t *testing.T) {
	p, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{
		"", "https://example.com", "example.com/", "example.com/cb", "*.example.com", "user@example.com",
		"example.com:", "example.com:0", "example.com:70000", "example.com:http", "::1", "[::1", "example..com",
		".example.com", "exa mple.com", "example.com?x", "example.com#x", "-example.com", "ex%41mple.com",
	} {
		if err := p.AddApp(App{AppID: oaID, AppSecret: oaSecret, RedirectDomains: []string{"example.com", d}}); err == nil {
			t.Errorf("domain %q accepted", d)
		}
	}
	for _, d := range []string{"example.com", "WWW.Example.com", "127.0.0.1:8080", "[::1]", "[::1]:8443", "a_b.example.com"} {
		if err := p.AddApp(App{AppID: oaID, AppSecret: oaSecret, RedirectDomains: []string{d}}); err != nil {
			t.Errorf("domain %q: %v", d, err)
		}
	}
}
