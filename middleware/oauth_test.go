package middleware

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wechat-login/caddy-wechat-login/internal/loginpage"
	"github.com/wechat-login/caddy-wechat-login/internal/oauthflow"
	"github.com/wechat-login/caddy-wechat-login/wechat"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

const exchangePath = "/sns/oauth2/access_token"

var wechatUA = map[string]string{"User-Agent": uaIOSWeChat, "Accept": "text/html"}

// TestOAuthInWeChat: a WeChat browser opening a protected page goes to
// WeChat's authorization, comes back with a code, and lands on the page
// with a session; the state has the documented shape and is spent.
func TestOAuthInWeChat(t *testing.T) {
	env := newOAuthEnv(t, "alice")
	b := env.browser()
	auth := b.startOAuth("/protected?x=1", wechatUA)

	u, _ := url.Parse(auth)
	q := u.Query()
	if u.Path != "/connect/oauth2/authorize" || q.Get("appid") != testAppID || q.Get("scope") != wechat.ScopeBase ||
		q.Get("redirect_uri") != env.srv.URL+"/wechat/oauth/callback" {
		t.Fatalf("authorize URL %s", auth)
	}
	state := q.Get("state")
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(state) || !env.storedOAuth(state) {
		t.Fatalf("state %q (stored %v)", state, env.storedOAuth(state))
	}
	if c := b.cookie(oauthflow.Cookie); c == nil || strings.Contains(c.Value, state) {
		t.Fatalf("binding cookie %v must exist and be sealed", c)
	}

	callback := b.approve(auth)
	resp := b.fetch(callback, wechatUA)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/protected?x=1" {
		t.Fatalf("callback: %d to %q: %s", resp.StatusCode, resp.Header.Get("Location"), resp.body)
	}
	if resp.Header.Get("Referrer-Policy") != "no-referrer" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("callback headers %v", resp.Header)
	}
	if env.storedOAuth(state) {
		t.Fatal("state still pending after the callback")
	}
	page := b.get("/protected?x=1", wechatUA).json(t)
	if page["method"] != MethodOAuth || page["appid"] != testAppID || page["openid"] != env.fake.OpenID(testAppID, "alice") {
		t.Fatalf("protected page saw %v", page)
	}
	if n := env.fake.Calls("/sns/userinfo"); n != 0 {
		t.Fatalf("snsapi_base called sns/userinfo %d times", n)
	}
}

// TestOAuthUserInfoScope: with snsapi_userinfo the profile and unionid come
// from sns/userinfo.
func TestOAuthUserInfoScope(t *testing.T) {
	env := newOAuthEnv(t, "bob", func(c *Config) { c.OAuthScope = wechat.ScopeUserInfo })
	b := env.browser()
	auth := b.startOAuth("/wechat/oauth/start?next=/p", nil)
	if !strings.Contains(auth, "scope=snsapi_userinfo") {
		t.Fatalf("authorize URL %s", auth)
	}
	if resp := b.fetch(b.approve(auth), nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("callback %d %s", resp.StatusCode, resp.body)
	}
	id := b.whoami()
	if id["nickname"] != "Bob" || id["unionid"] != env.fake.UnionID("bob") || id["login_method"] != MethodOAuth ||
		id["openid"] != env.fake.OpenID(testAppID, "bob") {
		t.Fatalf("identity %v", id)
	}
	if env.fake.Calls("/sns/userinfo") != 1 {
		t.Fatal("sns/userinfo not called")
	}
}

// TestOAuthUserInfoFailure: a failing sns/userinfo does not stop the login.
func TestOAuthUserInfoFailure(t *testing.T) {
	env := newOAuthEnv(t, "bob", func(c *Config) { c.OAuthScope = wechat.ScopeUserInfo })
	env.fake.FailNext("/sns/userinfo", 1, wechattest.Fault{Errcode: -1})
	b := env.browser()
	if _, resp := b.loginOAuth("/wechat/oauth/start?next=/p", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("callback %d %s", resp.StatusCode, resp.body)
	}
	if id := b.whoami(); id["openid"] != env.fake.OpenID(testAppID, "bob") || id["nickname"] != nil {
		t.Fatalf("identity %v", id)
	}
}

// TestOAuthSameOpenIDAsQR: one person, one Official Account, two ways in,
// one openid.
func TestOAuthSameOpenIDAsQR(t *testing.T) {
	env := newOAuthEnv(t, "alice")
	qrBrowser := env.browser()
	qr := qrBrowser.createQR("/")
	if _, err := env.fake.Scan(context.Background(), testAppID, qr["qr_content"].(string), "alice"); err != nil {
		t.Fatal(err)
	}
	if got := qrBrowser.poll(qr["scene"].(string), 0).json(t); got["status"] != StateConfirmed {
		t.Fatalf("poll %v", got)
	}
	wx := env.browser()
	wx.loginOAuth("/", wechatUA)
	a, o := qrBrowser.whoami(), wx.whoami()
	if a["openid"] == nil || a["openid"] != o["openid"] || a["login_method"] != MethodQR || o["login_method"] != MethodOAuth {
		t.Fatalf("qr identity %v, oauth identity %v", a, o)
	}
}

// TestOAuthAutoRedirect: only WeChat's own browser, navigating, with oauth
// enabled, is sent straight to authorization.
func TestOAuthAutoRedirect(t *testing.T) {
	const (
		android = "Mozilla/5.0 (Linux; Android 14; 22081212C Build/UKQ1.230917.001; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/116.0.0.0 Mobile Safari/537.36 XWEB/1160175 MMWEBSDK/20240404 MMWEBID/7962 MicroMessenger/8.0.49.2600(0x2800313D) WeChat/arm64 Weixin NetType/WIFI Language/zh_CN ABI/arm64"
		windows = "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/39.0.2171.95 Safari/537.36 MicroMessenger/6.5.2.501 NetType/WIFI WindowsWechat"
		wecom   = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 wxwork/4.0.20 MicroMessenger/7.0.1 Language/zh"
	)
	tests := []struct {
		name, path, ua, accept string
		qrOnly                 bool
		wantWeChat             bool
		wantStatus             int
	}{
		{"iOS WeChat, protected page", "/p", uaIOSWeChat, "text/html", false, true, http.StatusFound},
		{"Android WeChat", "/p", android, "text/html", false, true, http.StatusFound},
		{"Windows WeChat", "/p", windows, "text/html", false, true, http.StatusFound},
		{"lower-case UA", "/p", strings.ToLower(uaIOSWeChat), "text/html", false, true, http.StatusFound},
		{"login page in WeChat", "/wechat/login?next=/p", uaIOSWeChat, "text/html", false, true, http.StatusFound},
		{"WeCom", "/p", wecom, "text/html", false, false, http.StatusFound},
		{"Chrome", "/p", uaChrome, "text/html", false, false, http.StatusFound},
		{"Chrome login page", "/wechat/login?next=/p", uaChrome, "text/html", false, false, http.StatusOK},
		{"WeChat, oauth disabled", "/p", uaIOSWeChat, "text/html", true, false, http.StatusFound},
		{"WeChat API call", "/p", uaIOSWeChat, "application/json", false, false, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newOAuthEnv(t, "alice", func(c *Config) {
				if tt.qrOnly {
					c.Methods = []string{MethodQR}
				}
			})
			resp := env.browser().get(tt.path, map[string]string{"User-Agent": tt.ua, "Accept": tt.accept})
			loc := resp.Header.Get("Location")
			toWeChat := strings.HasPrefix(loc, env.fake.URL+"/connect/oauth2/authorize?")
			if resp.StatusCode != tt.wantStatus || toWeChat != tt.wantWeChat {
				t.Fatalf("%d to %q; want %d, to WeChat %v", resp.StatusCode, loc, tt.wantStatus, tt.wantWeChat)
			}
			if tt.wantWeChat {
				state := stateOf(t, loc)
				rec, err := env.mw.store.Get(context.Background(), oauthflow.StateKey(state))
				if err != nil || !strings.Contains(string(rec), `"next":"/p"`) {
					t.Fatalf("state record %s %v", rec, err)
				}
			} else if tt.wantStatus == http.StatusFound && !strings.HasPrefix(loc, "/wechat/login?next=") {
				t.Fatalf("sent to %q, want the login page", loc)
			}
		})
	}
}

// TestOAuthAutoRedirectLoopGuard: a WeChat browser that keeps returning
// without a session ends on the login page, not in endless authorizations.
func TestOAuthAutoRedirectLoopGuard(t *testing.T) {
	env := newOAuthEnv(t, "alice")
	b := env.browser()
	for i := range oauthflow.AutoStartLimit {
		if resp := b.get("/p", wechatUA); !strings.HasPrefix(resp.Header.Get("Location"), env.fake.URL) {
			t.Fatalf("start %d: %d %q", i, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	resp := b.get("/p", wechatUA)
	if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, "/wechat/login?next=") {
		t.Fatalf("after %d automatic starts: %d to %q", oauthflow.AutoStartLimit, resp.StatusCode, loc)
	}
	if page := b.get(resp.Header.Get("Location"), wechatUA); page.StatusCode != http.StatusOK {
		t.Fatalf("login page %d", page.StatusCode)
	}
	// An explicit start still works.
	b.startOAuth("/wechat/oauth/start?next=/p", wechatUA)
}

// TestOAuthCallbackBadInput: malformed, tampered, duplicated, oversized or
// missing parameters get 400 without a call to WeChat and without spending
// the real state, which still completes afterwards.
func TestOAuthCallbackBadInput(t *testing.T) {
	env := newOAuthEnv(t, "alice")
	b := env.browser()
	callback := b.approve(b.startOAuth("/wechat/oauth/start?next=/p", nil))
	u, _ := url.Parse(callback)
	state, code := u.Query().Get("state"), u.Query().Get("code")
	flip := func(s string) string {
		c := byte('0')
		if s[0] == '0' {
			c = '1'
		}
		return string(c) + s[1:]
	}
	queries := map[string]string{
		"no state":             "code=" + code,
		"empty state":          "code=" + code + "&state=",
		"state repeated":       "code=" + code + "&state=" + state + "&state=" + state,
		"code repeated":        "code=" + code + "&code=" + code + "&state=" + state,
		"empty code":           "code=&state=" + state,
		"junk after state":     "code=" + code + "&state=" + state + "http://maxthon.example/",
		"state too long":       "code=" + code + "&state=" + strings.Repeat("a", 129),
		"upper-case state":     "code=" + code + "&state=" + strings.ToUpper(state),
		"short state":          "code=" + code + "&state=" + state[:31],
		"NUL in state":         "code=" + code + "&state=" + state[:31] + "%00",
		"CRLF in code":         "code=" + code + "%0d%0a&state=" + state,
		"oversized code":       "code=" + strings.Repeat("A", 300) + "&state=" + state,
		"code with a quote":    "code=" + code + "%22&state=" + state,
		"bad percent encoding": "code=" + code + "&state=" + state + "&x=%zz",
	}
	for name, rq := range queries {
		resp := b.fetch(withRawQuery(t, callback, rq), nil)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", name, resp.StatusCode)
		}
		if resp.Header.Get("Referrer-Policy") != "no-referrer" || resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: headers %v", name, resp.Header)
		}
	}
	// A well-formed state nobody issued (a tampered one) is unknown.
	if resp := b.fetch(withRawQuery(t, callback, "code="+code+"&state="+flip(state)), nil); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("tampered state: %d, want 400", resp.StatusCode)
	}
	if n := env.fake.Calls(exchangePath); n != 0 {
		t.Fatalf("%d code exchanges for refused callbacks", n)
	}
	// Other parameters (including a next) are ignored.
	resp := b.fetch(callback+"&next=https://evil.example/", nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/p" {
		t.Fatalf("real callback after the attempts: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// TestOAuthCrossBrowser: a callback URL carried to another browser (login
// CSRF) is refused without spending the code; the owner still completes.
func TestOAuthCrossBrowser(t *testing.T) {
	for _, method := range []string{MethodOAuth, MethodOpen} {
		t.Run(method, func(t *testing.T) {
			env := newOAuthEnv(t, "alice")
			owner := env.browser()
			callback := owner.approve(owner.startOAuth("/wechat/oauth/start?next=/p&method="+method, nil))

			victim := env.browser()
			victim.startOAuth("/wechat/oauth/start?next=/mine&method="+method, nil) // has a binding of its own
			resp := victim.fetch(callback, nil)
			if resp.StatusCode != http.StatusForbidden || victim.whoami() != nil {
				t.Fatalf("victim with a binding: %d, identity %v", resp.StatusCode, victim.whoami())
			}
			if method == MethodOpen {
				// A desktop browser without any binding is refused too.
				if resp := env.browser().fetch(callback, nil); resp.StatusCode != http.StatusForbidden {
					t.Fatalf("browser without a binding: %d", resp.StatusCode)
				}
			}
			if n := env.fake.Calls(exchangePath); n != 0 {
				t.Fatalf("%d code exchanges", n)
			}
			if resp := owner.fetch(callback, nil); resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("owner: %d %s", resp.StatusCode, resp.body)
			}
		})
	}
}

// TestOAuthRefreshCallback: loading the callback URL again (refresh, back)
// goes on to next for the browser that completed it, without spending the
// code again; anyone else gets an "expired" page, never a 500.
func TestOAuthRefreshCallback(t *testing.T) {
	env := newOAuthEnv(t, "alice")
	b := env.browser()
	callback, first := b.loginOAuth("/wechat/oauth/start?next=/p", nil)
	if first.StatusCode != http.StatusSeeOther {
		t.Fatalf("first load %d", first.StatusCode)
	}
	for i := range 3 {
		resp := b.fetch(callback, nil)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/p" {
			t.Fatalf("reload %d: %d to %q: %s", i, resp.StatusCode, resp.Header.Get("Location"), resp.body)
		}
	}
	// Logged in but the binding cookie gone (aged out): still on to next.
	b.client.Jar.SetCookies(mustURL(t, env.srv.URL), []*http.Cookie{{Name: oauthflow.Cookie, Value: "", Path: "/", MaxAge: -1}})
	if resp := b.fetch(callback, nil); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/p" {
		t.Fatalf("reload without binding: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	other := env.browser()
	if resp := other.fetch(callback, nil); resp.StatusCode != http.StatusBadRequest || other.whoami() != nil {
		t.Fatalf("other browser: %d", resp.StatusCode)
	}
	if n := env.fake.Calls(exchangePath); n != 1 {
		t.Fatalf("%d code exchanges, want 1", n)
	}
}

// TestOAuthReusedCode: a code WeChat has already seen (40163) or never
// issued (40029) ends on a page with a retry link, not an error 500.
func TestOAuthReusedCode(t *testing.T) {
	env := newOAuthEnv(t, "alice")
	b := env.browser()
	callback := b.approve(b.startOAuth("/wechat/oauth/start?next=/p", nil))
	code := mustURL(t, callback).Query().Get("code")
	app := &wechat.OAuthApp{AppID: testAppID, AppSecret: testSecret, Endpoint: env.fake.Endpoint()}
	if _, err := app.Exchange(context.Background(), code); err != nil {
		t.Fatal(err)
	}
	resp := b.fetch(callback, nil)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(resp.body), `href="/wechat/oauth/start?next=%2Fp"`) {
		t.Fatalf("reused code: %d %s", resp.StatusCode, resp.body)
	}
	if b.whoami() != nil {
		t.Fatal("logged in with a spent code")
	}
}

// TestOAuthExchangeFailures: WeChat's errors become a page for the user
// (with a retry link) and one precise log line for the operator that holds
// no code, state, token or secret.
func TestOAuthExchangeFailures(t *testing.T) {
	tests := []struct {
		name   string
		fault  wechattest.Fault
		status int
		level  zapcore.Level
	}{
		{"busy", wechattest.Fault{Errcode: -1}, http.StatusServiceUnavailable, zapcore.ErrorLevel},
		{"invalid code", wechattest.Fault{Errcode: 40029}, http.StatusBadRequest, zapcore.InfoLevel},
		{"expired code", wechattest.Fault{Errcode: 42003}, http.StatusBadRequest, zapcore.InfoLevel},
		{"bad appid", wechattest.Fault{Errcode: 40013}, http.StatusBadGateway, zapcore.ErrorLevel},
		{"bad secret", wechattest.Fault{Errcode: 40125}, http.StatusBadGateway, zapcore.ErrorLevel},
		{"rate limited", wechattest.Fault{Errcode: 45011}, http.StatusServiceUnavailable, zapcore.ErrorLevel},
		{"HTTP 502", wechattest.Fault{HTTPStatus: http.StatusBadGateway}, http.StatusServiceUnavailable, zapcore.ErrorLevel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.DebugLevel)
			env := newOAuthEnv(t, "alice", func(c *Config) { c.Logger = zap.New(core) })
			env.fake.FailNext(exchangePath, 1, tt.fault)
			b := env.browser()
			callback, resp := b.loginOAuth("/wechat/oauth/start?next=/p", nil)
			if resp.StatusCode != tt.status || !strings.Contains(string(resp.body), `href="/wechat/oauth/start?next=%2Fp"`) {
				t.Fatalf("%d, want %d with a retry link: %s", resp.StatusCode, tt.status, resp.body)
			}
			if b.whoami() != nil {
				t.Fatal("logged in despite the failure")
			}
			var found bool
			for _, e := range logs.All() {
				line := e.Message
				for k, v := range e.ContextMap() {
					line += " " + k + "=" + stringify(v)
				}
				q := mustURL(t, callback).Query()
				for _, secret := range []string{q.Get("code"), q.Get("state"), testSecret, testOpenSecret} {
					if strings.Contains(line, secret) {
						t.Fatalf("log line leaks a secret: %s", line)
					}
				}
				if e.Level == tt.level && strings.Contains(line, "call=sns/oauth2/access_token") {
					found = true
				}
			}
			if !found {
				t.Fatalf("no %v log line for the exchange; got %v", tt.level, logs.All())
			}
			// Retrying works.
			if _, resp := b.loginOAuth("/wechat/oauth/start?next=/p", nil); resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("retry: %d", resp.StatusCode)
			}
		})
	}
}

// TestOAuthDeniedConsent: the user declines on WeChat's page; the callback
// has a state but no code and shows a friendly page with a retry link.
func TestOAuthDeniedConsent(t *testing.T) {
	cm := &countingMetrics{}
	env := newOAuthEnv(t, "", func(c *Config) { c.OAuthScope = wechat.ScopeUserInfo }, withMetrics(cm))
	b := env.browser()
	auth := b.startOAuth("/wechat/oauth/start?next=/p", nil)
	if page := b.fetch(auth, nil); page.StatusCode != http.StatusOK {
		t.Fatalf("consent page %d", page.StatusCode)
	}
	resp, err := b.client.PostForm(auth, url.Values{"decision": {"deny"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	callback := resp.Header.Get("Location")
	if q := mustURL(t, callback).Query(); q.Has("code") || q.Get("state") == "" {
		t.Fatalf("denial redirect %q", callback)
	}
	page := b.fetch(callback, nil)
	if page.StatusCode != http.StatusForbidden || !strings.Contains(string(page.body), loginpage.MsgDeclined.In("en")) ||
		!strings.Contains(string(page.body), `href="/wechat/oauth/start?next=%2Fp"`) {
		t.Fatalf("denied: %d %s", page.StatusCode, page.body)
	}
	if env.fake.Calls(exchangePath) != 0 || b.whoami() != nil || cm.get("denied:oauth") != 1 {
		t.Fatalf("exchange calls %d, denied metric %d", env.fake.Calls(exchangePath), cm.get("denied:oauth"))
	}
}

// TestOAuthSnapshotUser: WeChat's snapshot page yields a virtual user, who
// gets no session and a page asking to open the full page.
func TestOAuthSnapshotUser(t *testing.T) {
	env := newOAuthEnv(t, "snapshot", func(c *Config) { c.OAuthScope = wechat.ScopeUserInfo })
	b := env.browser()
	_, resp := b.loginOAuth("/p", wechatUA)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(resp.body), "使用完整服务") {
		t.Fatalf("snapshot: %d %s", resp.StatusCode, resp.body)
	}
	if b.cookie(sessionCookie) != nil || b.whoami() != nil {
		t.Fatal("a snapshot user got a session")
	}
	if env.fake.Calls("/sns/userinfo") != 0 {
		t.Fatal("fetched the virtual user's profile")
	}
}

// TestOAuthLostCookie: WeChat's browser comes back without the binding
// cookie. The code is never exchanged; the flow restarts once (silently
// with snsapi_base) and completes; losing the cookie again ends on a page
// instead of a loop.
func TestOAuthLostCookie(t *testing.T) {
	env := newOAuthEnv(t, "alice")
	b := env.browser()
	callback := b.approve(b.startOAuth("/p", wechatUA))
	forget := func() {
		b.client.Jar.SetCookies(mustURL(t, env.srv.URL), []*http.Cookie{{Name: oauthflow.Cookie, Value: "", Path: "/", MaxAge: -1}})
	}
	forget()
	resp := b.fetch(callback, wechatUA)
	again := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(again, env.fake.URL+"/connect/oauth2/authorize?") ||
		stateOf(t, again) == stateOf(t, callback) || b.cookie(oauthflow.Cookie) == nil {
		t.Fatalf("lost cookie: %d to %q", resp.StatusCode, again)
	}
	if n := env.fake.Calls(exchangePath); n != 0 {
		t.Fatalf("the code was exchanged without the binding (%d calls)", n)
	}
	// The first state is spent: its URL is now just expired.
	if resp := env.browser().fetch(callback, nil); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("old callback: %d", resp.StatusCode)
	}
	if resp := b.fetch(b.approve(again), wechatUA); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/p" {
		t.Fatalf("restarted flow: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if id := b.whoami(); id["openid"] != env.fake.OpenID(testAppID, "alice") {
		t.Fatalf("identity %v", id)
	}

	// A browser that drops the cookie every time.
	c := env.browser()
	cb := c.approve(c.startOAuth("/p", wechatUA))
	c.client.Jar.SetCookies(mustURL(t, env.srv.URL), []*http.Cookie{{Name: oauthflow.Cookie, Value: "", Path: "/", MaxAge: -1}})
	cb2 := c.approve(c.fetch(cb, wechatUA).Header.Get("Location"))
	c.client.Jar.SetCookies(mustURL(t, env.srv.URL), []*http.Cookie{{Name: oauthflow.Cookie, Value: "", Path: "/", MaxAge: -1}})
	page := c.fetch(cb2, wechatUA)
	if page.StatusCode != http.StatusBadRequest || !strings.Contains(string(page.body), "cookies") ||
		!strings.Contains(string(page.body), `href="/wechat/oauth/start?next=%2Fp"`) {
		t.Fatalf("second loss: %d %s", page.StatusCode, page.body)
	}
	if n := env.fake.Calls(exchangePath); n != 1 {
		t.Fatalf("%d exchanges, want only the good flow's", n)
	}
}

// TestOAuthSeveralTabs: flows started in several tabs of one browser each
// complete, in any order; beyond oauthflow.MaxFlows the oldest is forgotten.
func TestOAuthSeveralTabs(t *testing.T) {
	env := newOAuthEnv(t, "alice")
	b := env.browser()
	var callbacks []string
	for i := range oauthflow.MaxFlows + 1 {
		callbacks = append(callbacks, b.approve(b.startOAuth("/wechat/oauth/start?next=/t"+string(rune('0'+i)), nil)))
	}
	if resp := b.fetch(callbacks[0], nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("oldest flow: %d, want 403", resp.StatusCode)
	}
	for i := len(callbacks) - 1; i >= 1; i-- {
		resp := b.fetch(callbacks[i], nil)
		if want := "/t" + string(rune('0'+i)); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != want {
			t.Fatalf("tab %d: %d to %q", i, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
}

// TestOAuthWebsitePopup: website login in a popup. The callback redirects
// away from the code to a page that posts the result to its opener at this
// site's exact origin; the identity is the website app's.
func TestOAuthWebsitePopup(t *testing.T) {
	env := newOAuthEnv(t, "alice")
	b := env.browser()
	auth := b.startOAuth("/wechat/oauth/start?method=open&popup=1&next=%2Fdash%3Fa%3D1", nil)
	u := mustURL(t, auth)
	if u.Path != "/connect/qrconnect" || u.Query().Get("appid") != testOpenAppID || u.Query().Get("scope") != wechat.ScopeLogin {
		t.Fatalf("qrconnect URL %s", auth)
	}
	callback := b.approve(auth)
	resp := b.fetch(callback, nil)
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || strings.Contains(loc, "code=") || !strings.HasPrefix(loc, "/wechat/oauth/callback?state=") {
		t.Fatalf("popup callback: %d to %q", resp.StatusCode, loc)
	}
	for i := range 2 { // the result page, then a reload of it
		page := b.get(loc, nil)
		if page.StatusCode != http.StatusOK {
			t.Fatalf("popup page %d: %d", i, page.StatusCode)
		}
		p := parsePopupPage(t, page)
		if p.Origin != env.srv.URL {
			t.Fatalf("postMessage target origin %q, want exactly %q", p.Origin, env.srv.URL)
		}
		if p.Message != (loginpage.PopupMessage{Type: "wechat_login", Status: "confirmed", Redirect: "/dash?a=1"}) {
			t.Fatalf("popup message %+v", p.Message)
		}
		if regexp.MustCompile(`(src|href)="(https?:)?//`).Match(page.body) {
			t.Fatalf("popup page loads something from elsewhere: %s", page.body)
		}
	}
	// A refresh of the code URL in the popup lands on the same page.
	if again := b.fetch(callback, nil); again.StatusCode != http.StatusSeeOther || again.Header.Get("Location") != loc {
		t.Fatalf("refresh: %d to %q", again.StatusCode, again.Header.Get("Location"))
	}
	id := b.whoami()
	if id["login_method"] != MethodOpen || id["app_id"] != testOpenAppID || id["openid"] != env.fake.OpenID(testOpenAppID, "alice") ||
		id["unionid"] != env.fake.UnionID("alice") || id["nickname"] != "Alice" {
		t.Fatalf("identity %v", id)
	}
	if id["openid"] == env.fake.OpenID(testAppID, "alice") {
		t.Fatal("website login reported the Official Account's openid")
	}
	if n := env.fake.Calls(exchangePath); n != 1 {
		t.Fatalf("%d exchanges", n)
	}
}

// TestOAuthPopupError: a failure in the popup is posted to the opener as an
// error, and shown in the window for a popup that lost its opener.
func TestOAuthPopupError(t *testing.T) {
	env := newOAuthEnv(t, "alice")
	env.fake.FailNext(exchangePath, 1, wechattest.Fault{Errcode: -1})
	b := env.browser()
	_, resp := b.loginOAuth("/wechat/oauth/start?method=open&popup=1&next=/d", map[string]string{"Accept-Language": "zh-CN"})
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("%d %s", resp.StatusCode, resp.body)
	}
	p := parsePopupPage(t, resp)
	want := loginpage.PopupMessage{Type: "wechat_login", Status: "error", Message: loginpage.MsgBusy.In("zh")}
	if p.Message != want || p.Origin != env.srv.URL {
		t.Fatalf("popup error %+v to %q", p.Message, p.Origin)
	}
	if !strings.Contains(string(resp.body), want.Message) || !strings.Contains(string(resp.body), "popup=1") {
		t.Fatalf("page lacks the message or a popup retry link: %s", resp.body)
	}
}

// TestOAuthStartOpenRedirects: every open-redirect payload as next is
// refused with 400 before anything is stored or bound.
func TestOAuthStartOpenRedirects(t *testing.T) {
	env := newOAuthEnv(t, "alice", func(c *Config) { c.RedirectHosts = []string{"good.example"} })
	for _, method := range []string{"", "&method=open&popup=1"} {
		for _, p := range openRedirectPayloads {
			b := env.browser()
			resp := b.get("/wechat/oauth/start?next="+url.QueryEscape(p)+method, nil)
			if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
				t.Errorf("next=%q: %d to %q, want 400", p, resp.StatusCode, resp.Header.Get("Location"))
			}
			if b.cookie(oauthflow.Cookie) != nil {
				t.Errorf("next=%q: a state was bound", p)
			}
			if strings.Contains(string(resp.body), "evil") {
				t.Errorf("next=%q: the page repeats the payload", p)
			}
		}
	}
	// Allowed absolute targets survive the round trip.
	b := env.browser()
	if _, resp := b.loginOAuth("/wechat/oauth/start?next="+url.QueryEscape("https://good.example/x"), nil); resp.Header.Get("Location") != "https://good.example/x" {
		t.Fatalf("allowed host: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if a, q, x := env.fake.Calls("/connect/oauth2/authorize"), env.fake.Calls("/connect/qrconnect"), env.fake.Calls(exchangePath); a != 1 || q != 0 || x != 1 {
		t.Fatalf("WeChat saw %d authorizations, %d qrconnects, %d exchanges; want only the allowed flow's", a, q, x)
	}
}

// TestOAuthStartRequests: the start route's own input checks.
func TestOAuthStartRequests(t *testing.T) {
	env := newOAuthEnv(t, "alice")
	qrOnly := newOAuthEnv(t, "alice", func(c *Config) { c.Methods = []string{MethodQR, MethodOAuth} })
	tests := []struct {
		name   string
		env    *testEnv
		method string
		query  string
		status int
	}{
		{"unknown method", env, http.MethodGet, "method=evil", http.StatusBadRequest},
		{"method twice", env, http.MethodGet, "method=open&method=oauth", http.StatusBadRequest},
		{"popup twice", env, http.MethodGet, "popup=1&popup=1", http.StatusBadRequest},
		{"bad popup", env, http.MethodGet, "popup=yes", http.StatusBadRequest},
		{"next twice", env, http.MethodGet, "next=/a&next=/b", http.StatusBadRequest},
		{"bad encoding", env, http.MethodGet, "next=%zz", http.StatusBadRequest},
		{"POST", env, http.MethodPost, "next=/a", http.StatusMethodNotAllowed},
		{"open not enabled", qrOnly, http.MethodGet, "method=open", http.StatusNotFound},
		{"default next", env, http.MethodGet, "", http.StatusFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := tt.env.browser().do(tt.method, "/wechat/oauth/start?"+tt.query, nil, nil)
			if resp.StatusCode != tt.status {
				t.Fatalf("%d, want %d: %s", resp.StatusCode, tt.status, resp.body)
			}
		})
	}
	if resp := env.browser().do(http.MethodPost, "/wechat/oauth/callback?state=x", nil, nil); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST callback: %d", resp.StatusCode)
	}
}

// TestOAuthStartWhenLoggedIn: a browser with a session is not sent to
// WeChat again.
func TestOAuthStartWhenLoggedIn(t *testing.T) {
	env := newOAuthEnv(t, "alice")
	b := env.browser()
	b.loginOAuth("/wechat/oauth/start?next=/p", nil)
	if resp := b.get("/wechat/oauth/start?next=/q", nil); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/q" {
		t.Fatalf("%d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp := b.get("/wechat/oauth/start?method=open&popup=1&next=/q", nil)
	if p := parsePopupPage(t, resp); p.Message.Status != StateConfirmed || p.Message.Redirect != "/q" {
		t.Fatalf("popup when logged in: %+v", p.Message)
	}
}

// TestOAuthAllowlist: a user not on the allowlist gets no session.
func TestOAuthAllowlist(t *testing.T) {
	env := newOAuthEnv(t, "alice", func(c *Config) { c.AllowedOpenIDs = []string{"o-somebody-else"} })
	b := env.browser()
	if _, resp := b.loginOAuth("/wechat/oauth/start?next=/p", nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("%d %s", resp.StatusCode, resp.body)
	}
	if b.whoami() != nil {
		t.Fatal("session for a user not on the allowlist")
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func stringify(v any) string { return fmt.Sprint(v) }
