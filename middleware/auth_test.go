package middleware

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strings"
	"testing"

	"github.com/wechat-login/caddy-wechat-login/internal/redirect"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// loginFor is the login URL /wechat/auth should send a browser to, for a
// return address next.
func loginFor(next string) string { return "/wechat/login?next=" + url.QueryEscape(next) }

func TestAuthReadForwarded(t *testing.T) {
	tests := []struct {
		name   string
		method string // the subrequest's own
		hdr    http.Header
		want   forwarded
	}{
		{"nothing forwarded", http.MethodGet, http.Header{},
			forwarded{method: http.MethodGet}},
		{"caddy forward_auth", http.MethodGet, http.Header{
			"X-Forwarded-Method": {"POST"}, "X-Forwarded-Uri": {"/a/b?x=1&y=2"},
			"X-Forwarded-Host": {"app.example.com"}, "X-Forwarded-Proto": {"https"}},
			forwarded{uri: "/a/b?x=1&y=2", agreed: true, method: "POST", host: "app.example.com", proto: "https"}},
		{"nginx auth_request", http.MethodGet, http.Header{
			"X-Original-Uri": {"/a?b"}, "X-Original-Method": {"HEAD"}},
			forwarded{uri: "/a?b", agreed: true, method: "HEAD", noRedirect: true}},
		{"nginx setting both conventions alike", http.MethodGet, http.Header{
			"X-Original-Uri": {"/a"}, "X-Forwarded-Uri": {"/a"}, "X-Original-Method": {"GET"}, "X-Forwarded-Method": {"GET"}},
			forwarded{uri: "/a", agreed: true, method: "GET", noRedirect: true}},
		{"client X-Forwarded-Uri passed on by nginx", http.MethodGet, http.Header{
			"X-Original-Uri": {"/secret"}, "X-Forwarded-Uri": {"/public/x"}},
			forwarded{uri: "/secret", method: http.MethodGet, noRedirect: true}},
		{"client X-Original-URI passed on by caddy", http.MethodGet, http.Header{
			"X-Original-Uri": {"/public/x"}, "X-Forwarded-Uri": {"/secret"}},
			forwarded{uri: "/public/x", method: http.MethodGet, noRedirect: true}},
		{"target sent twice", http.MethodGet, http.Header{"X-Forwarded-Uri": {"/public/x", "/public/x"}},
			forwarded{method: http.MethodGet}},
		{"nginx target sent twice", http.MethodGet, http.Header{"X-Original-Uri": {"/a", "/b"}, "X-Forwarded-Uri": {"/a"}},
			forwarded{method: http.MethodGet, noRedirect: true}},
		{"methods disagree", http.MethodGet, http.Header{"X-Original-Method": {"GET"}, "X-Forwarded-Method": {"POST"}},
			forwarded{}},
		{"method sent twice alike", http.MethodPost, http.Header{"X-Forwarded-Method": {"GET", "GET"}},
			forwarded{method: "GET"}},
		{"host list and odd proto ignored", http.MethodGet, http.Header{
			"X-Forwarded-Host": {"a.example, b.example"}, "X-Forwarded-Proto": {"https, http"}},
			forwarded{method: http.MethodGet}},
		{"host sent twice ignored", http.MethodGet, http.Header{
			"X-Forwarded-Host": {"a.example", "b.example"}, "X-Forwarded-Proto": {"HTTPS"}},
			forwarded{method: http.MethodGet, proto: "https"}},
		{"host with a path ignored", http.MethodGet, http.Header{"X-Forwarded-Host": {"app.example.com/evil"}},
			forwarded{method: http.MethodGet}},
		{"host with userinfo ignored", http.MethodGet, http.Header{"X-Forwarded-Host": {"me@app.example.com"}},
			forwarded{method: http.MethodGet}},
		{"host with port kept", http.MethodGet, http.Header{"X-Forwarded-Host": {"[::1]:8443"}},
			forwarded{method: http.MethodGet, host: "[::1]:8443"}},
		{"empty host ignored", http.MethodGet, http.Header{"X-Forwarded-Host": {""}, "X-Forwarded-Proto": {"ftp"}},
			forwarded{method: http.MethodGet}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, "/wechat/auth", nil)
			for k, v := range tt.hdr {
				r.Header[http.CanonicalHeaderKey(k)] = v
			}
			if got := readForwarded(r); got != tt.want {
				t.Fatalf("readForwarded:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// oddTargets are forwarded targets under a public prefix that must not be
// public: each can be read as another path by some handler, or is not what
// a browser sends at all.
var oddTargets = []string{
	"/public/../secret",
	"/public/./x",
	"/public//x",
	"/public/%2e%2e/secret",
	"/public/%2E%2E/secret",
	"/public/.%2e/secret",
	"/public%2f..%2fsecret",
	"/public/..%2fsecret",
	"/public/..%5csecret",
	"/public/%252e%252e/secret",
	"/public/..;/secret",
	"/public/..%3b/secret",
	"/public/%00",
	"/public/x%0a",
	"/public\\..\\secret",
	"/public/%5c",
	"/public/x y",
	"/public/x\ty",
	"/public/\xe4\xb8\xad", // raw UTF-8: browsers escape it
	"/public/%c0%ae%c0%ae/secret",
	"/public/%ef%bc%8f..%ef%bc%8fsecret", // fullwidth solidus
	"/public/%ef%bc%8e%ef%bc%8e/secret",  // fullwidth full stop
	"/public/%e2%80%a5/secret",           // two dot leader
	"/public/%e2%80%8b",                  // zero width space
	"/public/%c2%a0",                     // no-break space
	"/public/%zz",
	"/public/%",
	"/public/x#frag",
	"/public/x\"",
	"/public/x<y>",
	"/public/[x]",
	"/public/x|y",
	"/public/x`",
	"/public/x{y}",
	"/public/x^",
	"/publicx",
	"/public%2fx",
	"public/x",
	"//public/x",
	"http://example.com/public/x",
	"*",
	"",
	"/public/" + strings.Repeat("a", maxForwardedURI),
}

func TestAuthPublicTarget(t *testing.T) {
	pp, err := newPublicPaths([]string{"/public", "/static/"})
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range oddTargets {
		if pp.matchTarget(target) {
			t.Errorf("%q is public", target)
		}
	}
	for _, target := range []string{
		"/public", "/public/", "/public/x", "/public/x?y=../../secret", "/public?x",
		"/static/a.css", "/static/", "/static/img/%E5%9B%BE.png", "/public/my%20file.pdf",
		"/public/a;b=c", "/public/~user/(1)!$&'*+,=:@", "/public/%41",
	} {
		if !pp.matchTarget(target) {
			t.Errorf("%q is not public", target)
		}
	}
	var none publicPaths
	if none.matchTarget("/public/x") {
		t.Error("public without public paths")
	}
}

func TestAuthReturnTo(t *testing.T) {
	m := &Middleware{redirects: redirect.Policy{AllowedHosts: []string{"app.example.com", "*.example.org"}}}
	long := "/long?" + strings.Repeat("q", redirect.MaxNext)
	tests := []struct {
		name string
		f    forwarded
		want string
	}{
		{"deep URL", forwarded{uri: "/a/b?x=1&y=2"}, "/a/b?x=1&y=2"},
		{"escapes kept as sent", forwarded{uri: "/a%20b/c?q=%E4%B8%AD&r=a%26b"}, "/a%20b/c?q=%E4%B8%AD&r=a%26b"},
		{"unknown", forwarded{}, "/"},
		{"not origin form", forwarded{uri: "http://evil.example/"}, "/"},
		{"protocol-relative", forwarded{uri: "//evil.example/"}, "/"},
		{"dot segments", forwarded{uri: "/a/../b?x"}, "/"},
		{"backslash", forwarded{uri: "/\\evil.example"}, "/"},
		{"too long: path only", forwarded{uri: long}, "/long"},
		{"same host", forwarded{uri: "/a?b=1", host: "auth.internal:9091"}, "/a?b=1"},
		{"allowed other host", forwarded{uri: "/a?b=1", host: "app.example.com", proto: "https"}, "https://app.example.com/a?b=1"},
		{"allowed other host, scheme of the subrequest", forwarded{uri: "/a", host: "x.example.org"}, "http://x.example.org/a"},
		{"host not allowed: path and query", forwarded{uri: "/a?b=1", host: "evil.example", proto: "https"}, "/a?b=1"},
		{"host with userinfo", forwarded{uri: "/a", host: "app.example.com@evil.example"}, "/a"},
		{"allowed host, too long", forwarded{uri: long, host: "app.example.com", proto: "https"}, "https://app.example.com/long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "http://auth.internal:9091/wechat/auth", nil)
			if got := m.returnTo(r, tt.f); got != tt.want {
				t.Fatalf("returnTo = %q, want %q", got, tt.want)
			}
		})
	}
}

// testOpenID is a fake WeChat user's openid for the test app (the fake
// derives it from the app and the user name alone).
func testOpenID(user string) string {
	fake := wechattest.NewServer(wechattest.Config{})
	defer fake.Close()
	return fake.OpenID(testAppID, user)
}

// TestAuthEndpoint asks /wechat/auth what a gateway would, as an anonymous
// client, as an allowed user and as a user the allowlist refuses.
func TestAuthEndpoint(t *testing.T) {
	alice := testOpenID("alice")
	env := newEnv(t, wechattest.Safe, func(c *Config) {
		c.PublicPaths = []string{"/public", "/static/"}
		c.AllowedOpenIDs = []string{alice}
		c.RedirectHosts = []string{"app.example.com"}
	})
	anon, aliceB := env.browser(), env.browser()
	env.loginAs(aliceB, "alice")
	browsers := map[string]*browser{"": anon, "alice": aliceB, "bob": env.browser()}
	// A user the allowlist does not (or no longer) name still holds a
	// valid session: one issued before the allowlist changed.
	bobCookie := issueTestSession(t, env.mw, testOpenID("bob"))

	html := "text/html,application/xhtml+xml,*/*;q=0.8"
	deep := "/a/b?x=1&y=2"
	type want struct {
		status   int
		location string // Location
		redirect string // X-WeChat-Login-Redirect
		login    string // login_url in a 401's JSON
		identity bool
	}
	tests := []struct {
		name string
		user string
		hdr  http.Header
		want want
	}{
		{"caddy: browser to login, back to the deep URL", "", http.Header{
			"X-Forwarded-Method": {"GET"}, "X-Forwarded-Uri": {deep}, "Accept": {html}},
			want{status: 302, location: loginFor(deep)}},
		{"caddy: HEAD navigates too", "", http.Header{
			"X-Forwarded-Method": {"HEAD"}, "X-Forwarded-Uri": {deep}, "Accept": {html}},
			want{status: 302, location: loginFor(deep)}},
		{"caddy: a form post is not sent away", "", http.Header{
			"X-Forwarded-Method": {"POST"}, "X-Forwarded-Uri": {deep}, "Accept": {html}},
			want{status: 401, login: loginFor(deep)}},
		{"caddy: API client", "", http.Header{
			"X-Forwarded-Method": {"GET"}, "X-Forwarded-Uri": {deep}, "Accept": {"application/json"}},
			want{status: 401, login: loginFor(deep)}},
		{"nginx: browser gets the redirect in a header", "", http.Header{
			"X-Original-Method": {"GET"}, "X-Original-Uri": {deep}, "Accept": {html}},
			want{status: 401, redirect: loginFor(deep), login: loginFor(deep)}},
		{"nginx: API client gets no redirect", "", http.Header{
			"X-Original-Method": {"GET"}, "X-Original-Uri": {deep}},
			want{status: 401, login: loginFor(deep)}},
		{"no forwarded headers: browser", "", http.Header{"Accept": {html}},
			want{status: 302, location: loginFor("/")}},
		{"no forwarded headers: API client", "", nil,
			want{status: 401, login: loginFor("/")}},
		{"allowed other host: absolute next", "", http.Header{
			"X-Forwarded-Method": {"GET"}, "X-Forwarded-Uri": {"/x?y=1"}, "X-Forwarded-Host": {"app.example.com"},
			"X-Forwarded-Proto": {"https"}, "Accept": {html}},
			want{status: 302, location: loginFor("https://app.example.com/x?y=1")}},
		{"unknown other host: path and query", "", http.Header{
			"X-Forwarded-Method": {"GET"}, "X-Forwarded-Uri": {"/x?y=1"}, "X-Forwarded-Host": {"evil.example"}, "Accept": {html}},
			want{status: 302, location: loginFor("/x?y=1")}},
		{"public path", "", http.Header{"X-Forwarded-Uri": {"/public/x"}},
			want{status: 200}},
		{"public path, nginx", "", http.Header{"X-Original-Uri": {"/static/a.css?v=1"}},
			want{status: 200}},
		{"public path with forged identity", "", http.Header{
			"X-Forwarded-Uri": {"/public/x"}, HeaderOpenID: {"oForged"}, "X_WeChat_OpenID": {"oForged"}},
			want{status: 200}},
		{"public path, logged in: still no identity", "alice", http.Header{"X-Forwarded-Uri": {"/public/x"}},
			want{status: 200}},
		{"nginx passes the client's X-Forwarded-Uri on", "", http.Header{
			"X-Original-Uri": {"/secret"}, "X-Forwarded-Uri": {"/public/x"}},
			want{status: 401, login: loginFor("/secret")}},
		{"caddy passes the client's X-Original-URI on", "", http.Header{
			"X-Original-Uri": {"/public/x"}, "X-Forwarded-Uri": {"/secret"}},
			want{status: 401, login: loginFor("/public/x")}},
		{"target sent twice", "", http.Header{"X-Forwarded-Uri": {"/public/x", "/public/x"}},
			want{status: 401, login: loginFor("/")}},
		{"dot segments are not public", "", http.Header{"X-Forwarded-Uri": {"/public/../secret"}},
			want{status: 401, login: loginFor("/")}},
		{"encoded dots are not public", "", http.Header{"X-Forwarded-Uri": {"/public/%2e%2e/secret?a=b"}},
			want{status: 401, login: loginFor("/")}},
		{"allowed user", "alice", http.Header{"X-Forwarded-Uri": {deep}, "X-Forwarded-Method": {"GET"}},
			want{status: 200, identity: true}},
		{"allowed user, forged identity", "alice", http.Header{
			"X-Forwarded-Uri": {deep}, HeaderOpenID: {"oForged"}, HeaderUnionID: {"uForged"}},
			want{status: 200, identity: true}},
		{"allowed user, no forwarded headers", "alice", nil,
			want{status: 200, identity: true}},
		{"refused user, API", "bob", http.Header{"X-Forwarded-Uri": {deep}},
			want{status: 403}},
		{"refused user, browser", "bob", http.Header{"X-Forwarded-Uri": {deep}, "X-Forwarded-Method": {"GET"}, "Accept": {html}},
			want{status: 403}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := browsers[tt.user]
			req, err := http.NewRequest(http.MethodGet, env.srv.URL+"/wechat/auth", nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.hdr {
				req.Header[k] = v
			}
			if tt.user == "bob" {
				req.AddCookie(&http.Cookie{Name: sessionCookie, Value: bobCookie})
			}
			resp, err := b.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			r := response{Response: resp}
			if resp.StatusCode != tt.want.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want.status)
			}
			if got := resp.Header.Get("Location"); got != tt.want.location {
				t.Errorf("Location %q, want %q", got, tt.want.location)
			}
			if got := resp.Header.Get(HeaderLoginRedirect); got != tt.want.redirect {
				t.Errorf("%s %q, want %q", HeaderLoginRedirect, got, tt.want.redirect)
			}
			if got := resp.Header.Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control %q", got)
			}
			if tt.want.status == http.StatusUnauthorized {
				r.body = readBody(t, resp)
				if got := r.json(t); got["login_url"] != tt.want.login || got["error"] != "login required" {
					t.Errorf("401 body %v, want login_url %q", got, tt.want.login)
				}
			}
			if tt.want.identity {
				if resp.Header.Get(HeaderOpenID) != alice || resp.Header.Get(HeaderAppID) != testAppID ||
					resp.Header.Get(HeaderLoginMethod) != MethodQR || len(resp.Header.Values(HeaderOpenID)) != 1 {
					t.Errorf("identity headers %v, want alice's", resp.Header)
				}
				if v := resp.Header.Get(HeaderUnionID); v != "" {
					t.Errorf("unionid %q", v)
				}
				return
			}
			for k := range resp.Header {
				if isIdentityHeaderName(k) && k != http.CanonicalHeaderKey(HeaderLoginRedirect) {
					t.Errorf("identity header %s without a session that passes: %v", k, resp.Header[k])
				}
			}
		})
	}
}

// TestAuthLoginRoundTrip follows /wechat/auth's redirect through a whole
// QR login: the browser comes back to exactly the URL it asked for.
func TestAuthLoginRoundTrip(t *testing.T) {
	env := newEnv(t, wechattest.Safe)
	b := env.browser()
	deep := "/a/b?x=1&y=2&z=%2F%3F%26"
	resp := b.get("/wechat/auth", map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": deep, "Accept": "text/html"})
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil || loc.Path != "/wechat/login" {
		t.Fatalf("auth: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	next := loc.Query().Get("next")
	if next != deep {
		t.Fatalf("next %q, want %q", next, deep)
	}
	qr := b.createQR(next)
	if _, err := env.fake.Scan(t.Context(), testAppID, qr["qr_content"].(string), "alice"); err != nil {
		t.Fatal(err)
	}
	if got := b.poll(qr["scene"].(string), 5).json(t); got["status"] != StateConfirmed || got["redirect"] != deep {
		t.Fatalf("poll: %v, want redirect %q", got, deep)
	}
	if a := b.get("/wechat/auth", map[string]string{"X-Forwarded-Uri": deep}); a.StatusCode != http.StatusOK ||
		a.Header.Get(HeaderOpenID) != env.fake.OpenID(testAppID, "alice") {
		t.Fatalf("auth after login: %d %v", a.StatusCode, a.Header)
	}
}

func readBody(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readings are the ways a handler behind a gateway may read a request
// path: as sent, decoded once or more, with backslashes taken for slashes,
// with ";" parameters dropped, and then cleaned.
func readings(raw string) []string {
	p, _, _ := strings.Cut(raw, "?")
	forms := []string{p}
	for range 3 {
		d, err := url.PathUnescape(forms[len(forms)-1])
		if err != nil {
			break
		}
		forms = append(forms, d)
	}
	var out []string
	for _, f := range forms {
		slashed := strings.ReplaceAll(f, "\\", "/")
		segs := strings.Split(slashed, "/")
		for i, s := range segs {
			segs[i], _, _ = strings.Cut(s, ";")
		}
		for _, v := range []string{f, slashed, strings.Join(segs, "/")} {
			out = append(out, path.Clean("/"+v))
		}
	}
	return out
}

// FuzzForwardedURI checks what the gateway endpoint makes of any forwarded
// target: it is public only when every way of reading it lands under a
// public prefix, and the login's return address is always one the
// redirect policy accepts, the target itself or a safe fallback, and
// survives the trip through the login URL unchanged.
func FuzzForwardedURI(f *testing.F) {
	// Long targets only slow the fuzzer down: past MaxNext they all take the
	// same path, which TestAuthReturnTo covers, as TestAuthPublicTarget
	// covers maxForwardedURI.
	const maxLen = redirect.MaxNext + 64
	for _, s := range oddTargets {
		if len(s) <= maxLen {
			f.Add(s, "")
		}
	}
	for _, s := range bypassPaths {
		f.Add(s, "app.example.com")
	}
	f.Add("/a/b?x=1&y=2", "")
	f.Add("/public/x?y=%2F..", "evil.example")
	f.Add("/static/%E5%9B%BE.png", "app.example.com")
	pp, err := newPublicPaths([]string{"/public", "/static/"})
	if err != nil {
		f.Fatal(err)
	}
	m := &Middleware{public: pp, redirects: redirect.Policy{AllowedHosts: []string{"app.example.com"}}}
	m.cfg.Prefix = "/wechat"
	under := func(p string) bool {
		return p == "/public" || p == "/static" || strings.HasPrefix(p, "/public/") || strings.HasPrefix(p, "/static/")
	}
	r := httptest.NewRequest(http.MethodGet, "http://auth.internal/wechat/auth", nil)
	f.Fuzz(func(t *testing.T, uri, host string) {
		if len(uri) > maxLen || len(host) > 300 {
			return
		}
		if m.public.matchTarget(uri) {
			for _, p := range readings(uri) {
				if !under(p) {
					t.Fatalf("%q is public but reads as %q", uri, p)
				}
			}
		}
		next := m.returnTo(r, forwarded{uri: uri, host: host, proto: "https"})
		if _, ok := m.redirects.Clean(next); !ok || len(next) > redirect.MaxNext {
			t.Fatalf("return address %q for %q is refused by the redirect policy", next, uri)
		}
		rel := strings.TrimPrefix(next, "https://"+host)
		pathOnly, _, _ := strings.Cut(uri, "?")
		if next != "/" && rel != uri && rel != pathOnly {
			t.Fatalf("return address %q for %q (host %q) is neither it nor its path", next, uri, host)
		}
		if rel != next && (!strings.EqualFold(host, "app.example.com") || !strings.HasPrefix(next, "https://")) {
			t.Fatalf("absolute return address %q for host %q", next, host)
		}
		login, err := url.Parse(m.loginURL(next))
		if err != nil || login.Path != "/wechat/login" || login.Query().Get("next") != next || len(login.Query()["next"]) != 1 {
			t.Fatalf("login URL %q does not carry %q", m.loginURL(next), next)
		}
	})
}
