package caddymodule

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// Gateway mode, end to end: an application that knows nothing of WeChat
// sits behind a stock proxy (Caddy's forward_auth here, nginx's
// auth_request in nginx_test.go) that asks a separate wechat_login service
// about every request. The login routes are proxied under the
// application's own host name, since the session cookie is host-only.

const (
	gwDeep = "/a/b?x=1&y=2"
	gwHTML = "text/html,application/xhtml+xml,*/*;q=0.8"
)

// gwAuthGlobals trust the gateway in front of the auth service (both on
// loopback in the tests), so that it sees the browser's address and scheme.
const gwAuthGlobals = "\tservers {\n\t\ttrusted_proxies static 127.0.0.1/32\n\t}"

// gwAuthSite is the auth service's site: wechat_login against the fake
// WeChat and nothing else to serve.
func gwAuthSite(fakeURL string) string {
	return `	wechat_login {
		app_id ` + itAppID + `
		app_secret {env.IT_WECHAT_SECRET}
		token ` + itToken + `
		encoding_aes_key {env.IT_WECHAT_AES_KEY}
		session_key {env.IT_SESSION_KEY}
		site_name "Gateway"
		api_base ` + fakeURL + `
		oauth_base ` + fakeURL + `
		mp_base ` + fakeURL + `
		public_paths /public /static/
	}
	respond "auth service" 404`
}

// gwCaddyAppSite is the recipe of docs/gateway.md: /wechat/* goes to the
// auth service, everything else through forward_auth to the application,
// with every client-sent spelling of the identity headers removed first.
func gwCaddyAppSite(authAddr, appAddr string) string {
	return `	handle /wechat/* {
		reverse_proxy ` + authAddr + `
	}
	handle {
		route {
			request_header -*wechat*
			forward_auth ` + authAddr + ` {
				uri /wechat/auth
				copy_headers X-WeChat-OpenID X-WeChat-UnionID X-WeChat-AppID X-WeChat-Login-Method
			}
			reverse_proxy ` + appAddr + `
		}
	}`
}

// gwApp is the protected application: it records what reaches it.
type gwApp struct {
	srv  *httptest.Server
	hits chan gwHit
}

type gwHit struct {
	uri    string
	header http.Header
}

func startGWApp(t *testing.T) *gwApp {
	t.Helper()
	a := &gwApp{hits: make(chan gwHit, 64)}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.hits <- gwHit{uri: r.RequestURI, header: r.Header.Clone()}
		_, _ = w.Write([]byte("app: " + r.RequestURI))
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *gwApp) addr() string { return strings.TrimPrefix(a.srv.URL, "http://") }

// hit returns the request the application received last; the application
// records it before answering, so it is there once the client has its
// answer.
func (a *gwApp) hit(t *testing.T, what string) gwHit {
	t.Helper()
	select {
	case h := <-a.hits:
		return h
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: the application received nothing", what)
		return gwHit{}
	}
}

// none fails if anything reached the application.
func (a *gwApp) none(t *testing.T, what string) {
	t.Helper()
	for {
		select {
		case h := <-a.hits:
			t.Errorf("%s: the application received %s", what, h.uri)
		default:
			return
		}
	}
}

// noForgery fails if a header value the test forged reached the
// application, under any name.
func (h gwHit) noForgery(t *testing.T, what string) {
	t.Helper()
	for k, v := range h.header {
		if strings.Contains(strings.Join(v, ","), "forged") {
			t.Errorf("%s: the application received %s: %v", what, k, v)
		}
	}
}

// forgedIdentity are identity headers a client sends hoping to pass as
// somebody, in the spellings CGI-style readers take for the real ones.
var forgedIdentity = []string{
	"X-WeChat-OpenID", "oforged1", "X-WeChat-UnionID", "uforged2", "X-WeChat-Login-Method", "forged3",
	"X_WeChat_OpenID", "oforged4", "X-WeChat_AppID", "forged5",
}

// forgedLines are forgedIdentity as raw header lines, plus one name Go's
// client would refuse to send.
func forgedLines() []string {
	var out []string
	for i := 0; i+1 < len(forgedIdentity); i += 2 {
		out = append(out, forgedIdentity[i]+": "+forgedIdentity[i+1])
	}
	return append(out, "X.WeChat.OpenID: oforged6")
}

// pageNext reads the return address the login page's script will use.
func pageNext(t *testing.T, page string) string {
	t.Helper()
	const open = `<script type="application/json" id="wl-data">`
	_, rest, ok := strings.Cut(page, open)
	data, _, ok2 := strings.Cut(rest, "</script>")
	if !ok || !ok2 {
		t.Fatalf("no login page data in %.300q", page)
	}
	var cfg struct {
		Next string `json:"next"`
	}
	if err := json.Unmarshal([]byte(data), &cfg); err != nil {
		t.Fatalf("login page data %q: %v", data, err)
	}
	return cfg.Next
}

// gwPublicPaths: behind the gateway at base, a public path reaches the
// application without a session (and with b's), never with an identity,
// whatever the client forged, also when asked in a raw request.
func gwPublicPaths(t *testing.T, base string, app *gwApp, b *client) {
	t.Helper()
	for _, who := range []*client{newClient(t, base), b} {
		resp, body := who.do(http.MethodGet, "/public/x?y=1", nil, forgedIdentity...)
		if resp.StatusCode != http.StatusOK || body != "app: /public/x?y=1" {
			t.Fatalf("public path: %d %q", resp.StatusCode, body)
		}
		h := app.hit(t, "public path")
		h.noForgery(t, "public path")
		if v := h.header.Get("X-WeChat-OpenID"); v != "" {
			t.Errorf("public path carried identity %q", v)
		}
	}
	status, body := rawRequest(t, strings.TrimPrefix(base, "http://"), "/static/a.css", forgedLines()...)
	if status != http.StatusOK {
		t.Fatalf("raw public path: %d %q", status, body)
	}
	app.hit(t, "raw public path").noForgery(t, "raw public path")
}

// gwOddTargetsRefused: request targets that only look like public paths
// (gwOddTargets) reach nothing without a session through the gateway at
// addr.
func gwOddTargetsRefused(t *testing.T, addr string, app *gwApp) {
	t.Helper()
	for _, raw := range gwOddTargets {
		status, body := rawRequest(t, addr, raw, forgedLines()...)
		if status == http.StatusOK || strings.HasPrefix(body, "app:") {
			t.Errorf("GET %s without a session: %d %q", raw, status, body)
		}
		app.none(t, "GET "+raw)
	}
}

// gwLoginRoundTrip is a browser behind the gateway at base: it asks for a
// deep URL, is sent to the login page, logs in as alice by scanning the QR
// code, and comes back to exactly that URL, which the application then
// serves with alice's identity and none of the client's forged copies. It
// returns the logged-in browser.
func gwLoginRoundTrip(t *testing.T, base string, fake *wechattest.Server, app *gwApp) *client {
	t.Helper()
	b := newClient(t, base)
	resp, _ := b.do(http.MethodGet, gwDeep, nil, "Accept", gwHTML)
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("GET %s without a session: %d, want 302", gwDeep, resp.StatusCode)
	}
	app.none(t, "browser without a session")
	baseURL, _ := url.Parse(base)
	loc, err := baseURL.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Host != baseURL.Host || loc.Path != "/wechat/login" || loc.RawQuery != "next="+url.QueryEscape(gwDeep) {
		t.Fatalf("sent to %q, want /wechat/login?next=%s on %s", resp.Header.Get("Location"), url.QueryEscape(gwDeep), baseURL.Host)
	}

	resp, page := b.do(http.MethodGet, loc.RequestURI(), nil, "Accept", gwHTML)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login page: %d", resp.StatusCode)
	}
	next := pageNext(t, page)
	if next != gwDeep {
		t.Fatalf("login page returns to %q, want %q", next, gwDeep)
	}
	resp, body := b.do(http.MethodPost, "/wechat/qr", strings.NewReader(url.Values{"next": {next}}.Encode()), "Origin", base)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("create QR: %d %s", resp.StatusCode, body)
	}
	var qr map[string]any
	if err := json.Unmarshal([]byte(body), &qr); err != nil {
		t.Fatal(err)
	}
	if d, err := fake.Scan(context.Background(), itAppID, qr["qr_content"].(string), "alice"); err != nil || d.Status != wechattest.StatusReplied {
		t.Fatalf("scan: %v %+v", err, d)
	}
	got := pollStatus(t, b, qr["scene"].(string), 5)
	if got["status"] != "confirmed" || got["redirect"] != gwDeep {
		t.Fatalf("poll: %v, want confirmed with redirect %q", got, gwDeep)
	}

	resp, body = b.do(http.MethodGet, got["redirect"].(string), nil, append([]string{"Accept", gwHTML}, forgedIdentity...)...)
	if resp.StatusCode != http.StatusOK || body != "app: "+gwDeep {
		t.Fatalf("back at %s: %d %q", gwDeep, resp.StatusCode, body)
	}
	h := app.hit(t, "logged-in browser")
	openid := fake.OpenID(itAppID, "alice")
	if h.uri != gwDeep || h.header.Get("X-WeChat-OpenID") != openid || h.header.Get("X-WeChat-AppID") != itAppID ||
		h.header.Get("X-WeChat-Login-Method") != "qr" || len(h.header.Values("X-WeChat-OpenID")) != 1 {
		t.Fatalf("the application got %s with %v, want %s as %s", h.uri, h.header, gwDeep, openid)
	}
	h.noForgery(t, "logged-in browser")
	return b
}

// TestForwardAuthCaddy: two Caddy processes, the application's site using
// stock forward_auth and the auth service running wechat_login.
func TestForwardAuthCaddy(t *testing.T) {
	fake := wechattest.NewServer(wechattest.Config{})
	t.Cleanup(fake.Close)
	app := startGWApp(t)
	auth := startCaddyGlobals(t, gwAuthGlobals, gwAuthSite(fake.URL), itEnv...)
	authAddr := strings.TrimPrefix(auth.BaseURL, "http://")
	front := startCaddy(t, gwCaddyAppSite(authAddr, app.addr()))
	frontAddr := strings.TrimPrefix(front.BaseURL, "http://")
	// WeChat pushes to the public host name too, as it would in production.
	addFakeApp(t, fake, front.BaseURL)

	b := gwLoginRoundTrip(t, front.BaseURL, fake, app)

	t.Run("API client gets 401", func(t *testing.T) {
		api := newClient(t, front.BaseURL)
		resp, body := api.do(http.MethodGet, "/a/b?c=d", nil, "Accept", "application/json")
		var got map[string]string
		_ = json.Unmarshal([]byte(body), &got)
		if resp.StatusCode != http.StatusUnauthorized || got["error"] != "login required" || got["login_url"] != "/wechat/login?next="+url.QueryEscape("/a/b?c=d") {
			t.Fatalf("API client: %d %q", resp.StatusCode, body)
		}
		resp, _ = api.do(http.MethodPost, gwDeep, strings.NewReader("x=1"), "Accept", gwHTML)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("form post without a session: %d, want 401", resp.StatusCode)
		}
		app.none(t, "API client without a session")
	})

	t.Run("public path passes without a session and without identity", func(t *testing.T) {
		gwPublicPaths(t, front.BaseURL, app, b)
	})

	t.Run("non-canonical targets are not public", func(t *testing.T) {
		gwOddTargetsRefused(t, frontAddr, app)
	})

	t.Run("forged forwarded headers open nothing", func(t *testing.T) {
		status, body := rawRequest(t, frontAddr, "/secret",
			"X-Forwarded-Uri: /public/x", "X-Original-URI: /public/x", "X-Forwarded-Method: GET")
		if status != http.StatusUnauthorized {
			t.Fatalf("forged X-Forwarded-Uri through the gateway: %d %q", status, body)
		}
		app.none(t, "forged X-Forwarded-Uri")

		// Asked directly, the auth service tells whether a path is public,
		// and never gives out an identity without a session.
		direct := func(hdr ...string) *http.Response {
			t.Helper()
			req, _ := http.NewRequest(http.MethodGet, auth.BaseURL+"/wechat/auth", nil)
			for i := 0; i+1 < len(hdr); i += 2 {
				req.Header.Set(hdr[i], hdr[i+1])
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp
		}
		for _, resp := range []*http.Response{
			direct(append([]string{"X-Forwarded-Uri", "/public/x"}, forgedIdentity...)...),
			direct(append([]string{"X-Forwarded-Uri", "/secret"}, forgedIdentity...)...),
			direct(append([]string{"X-Original-URI", "/public/x"}, forgedIdentity...)...),
		} {
			for k, v := range resp.Header {
				if strings.HasPrefix(strings.ToLower(k), "x-wechat-") && k != "X-Wechat-Login-Redirect" {
					t.Errorf("direct call answered %d with %s: %v", resp.StatusCode, k, v)
				}
			}
		}
		if resp := direct("X-Forwarded-Uri", "/public/x"); resp.StatusCode != http.StatusOK {
			t.Errorf("direct call about a public path: %d", resp.StatusCode)
		}
		if resp := direct("X-Forwarded-Uri", "/secret"); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("direct call about a protected path: %d", resp.StatusCode)
		}
	})

	t.Run("logout ends access through the gateway", func(t *testing.T) {
		resp, _ := b.do(http.MethodPost, "/wechat/logout", nil, "Origin", front.BaseURL)
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("logout: %d", resp.StatusCode)
		}
		if resp, _ := b.do(http.MethodGet, gwDeep, nil, "Accept", gwHTML); resp.StatusCode != http.StatusFound {
			t.Fatalf("after logout: %d, want 302", resp.StatusCode)
		}
		app.none(t, "after logout")
	})
}

// gwOddTargets are raw request targets under the public prefixes that
// name, or can be read as, protected paths.
var gwOddTargets = []string{
	"/public/../secret",
	"/public/%2e%2e/secret",
	"/public/%2E%2E/secret",
	"/public/..%2fsecret",
	"/public%2f..%2fsecret",
	"/public/./../secret",
	"/public//../secret",
	"/public/..%5csecret",
	"/public/%252e%252e/secret",
	"/public/..;/secret",
	"/static/../secret",
	"/static/%2e%2e/admin.php",
	"/static/x.php/../../admin.php",
	"/public/%ef%bc%8f..%ef%bc%8fsecret",
	"/publicx",
	"/secret",
}
