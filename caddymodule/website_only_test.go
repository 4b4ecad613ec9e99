package caddymodule

import (
	"net/http"
	"strings"
	"testing"

	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// TestCaddyWebsiteOnlySite: a Caddy site configured with a website app and
// a session key alone logs users in by website login and never calls the
// Official Account APIs: no access token, no QR code, no push endpoint.
func TestCaddyWebsiteOnlySite(t *testing.T) {
	fake := wechattest.NewServer(wechattest.Config{OAuthUser: "bob"})
	t.Cleanup(fake.Close)
	if err := fake.AddApp(wechattest.App{AppID: itOpenAppID, AppSecret: itOpenSecret, Kind: wechattest.WebsiteApp}); err != nil {
		t.Fatal(err)
	}
	c := startCaddy(t, `	wechat_login {
		open_app_id `+itOpenAppID+`
		open_app_secret {env.IT_OPEN_SECRET}
		session_key {env.IT_SESSION_KEY}
		api_base `+fake.URL+`
		oauth_base `+fake.URL+`
	}
	respond "id={http.auth.user.id} method={http.auth.user.login_method} app={http.auth.user.app_id}"`,
		append(itEnv, "IT_OPEN_SECRET="+itOpenSecret)...)
	b := newClient(t, c.BaseURL)

	resp, body := b.do(http.MethodGet, "/wechat/login?next=%2Fshop", nil, "Accept", "text/html")
	// Website login alone, embedded (the default): the page shows WeChat's
	// QR frame at once, and may frame only the fake's origin (from
	// oauth_base) and the site's callback.
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `id="wl-frame"`) || strings.Contains(body, `id="wl-qr"`) {
		t.Fatalf("login page %d: website login frame %v, QR area %v", resp.StatusCode, strings.Contains(body, `id="wl-frame"`), strings.Contains(body, `id="wl-qr"`))
	}
	if csp, want := resp.Header.Get("Content-Security-Policy"), "frame-src "+fake.URL+" "+c.BaseURL+"/wechat/oauth/callback;"; !strings.Contains(csp, want) {
		t.Fatalf("login page CSP %q, want %q", csp, want)
	}
	if resp, _ := b.do(http.MethodPost, "/wechat/qr", strings.NewReader("next=/"), "Origin", c.BaseURL, "Content-Type", "application/x-www-form-urlencoded"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("POST /wechat/qr: %d, want 404", resp.StatusCode)
	}

	resp, body = b.do(http.MethodGet, "/wechat/oauth/start?method=open&next=%2Fshop", nil, "Accept", "text/html")
	auth := expectRedirect(t, "start", resp, body, fake.URL+"/connect/qrconnect?appid="+itOpenAppID+"&")
	resp, body = b.getAbs(auth)
	callback := expectRedirect(t, "WeChat's website login", resp, body, c.BaseURL+"/wechat/oauth/callback?code=")
	resp, body = b.getAbs(callback)
	expectRedirect(t, "callback", resp, body, "/shop")
	_, body = b.do(http.MethodGet, "/shop", nil)
	if want := "id=" + fake.OpenID(itOpenAppID, "bob") + " method=open app=" + itOpenAppID; body != want {
		t.Fatalf("after login:\n got %q\nwant %q", body, want)
	}
	for _, p := range []string{"/cgi-bin/stable_token", "/cgi-bin/token", "/cgi-bin/qrcode/create", "/cgi-bin/user/info"} {
		if n := fake.Calls(p); n != 0 {
			t.Errorf("a website-only site called %s %d times", p, n)
		}
	}
	if n := fake.Calls("/sns/oauth2/access_token"); n != 1 {
		t.Errorf("%d code exchanges, want 1", n)
	}
}
