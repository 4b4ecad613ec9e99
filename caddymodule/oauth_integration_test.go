package caddymodule

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

const (
	itOpenAppID  = "wx00000000000000bb"
	itOpenSecret = "integration-website-secret-0123456789"
	itWeChatUA   = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.49(0x18003128) NetType/WIFI Language/zh_CN"
)

// startCaddyOAuth runs Caddy with every login method on, in front of a fake
// WeChat that approves authorizations as bob.
func startCaddyOAuth(t *testing.T) (*wechattest.Server, *caddyProc) {
	t.Helper()
	fake := wechattest.NewServer(wechattest.Config{OAuthUser: "bob"})
	t.Cleanup(fake.Close)
	site := `	wechat_login {
		app_id ` + itAppID + `
		app_secret {env.IT_WECHAT_SECRET}
		token ` + itToken + `
		encoding_aes_key {env.IT_WECHAT_AES_KEY}
		session_key {env.IT_SESSION_KEY}
		methods qr oauth open
		scope snsapi_userinfo
		open_app_id ` + itOpenAppID + `
		open_app_secret {env.IT_OPEN_SECRET}
		api_base ` + fake.URL + `
		oauth_base ` + fake.URL + `
		mp_base ` + fake.URL + `
	}
	respond "id={http.auth.user.id} method={http.auth.user.login_method} app={http.auth.user.app_id}"`
	c := startCaddy(t, site, append(itEnv, "IT_OPEN_SECRET="+itOpenSecret)...)
	for _, app := range []wechattest.App{
		{AppID: itAppID, AppSecret: itSecret, Token: itToken, EncodingAESKey: itAESKey, OriginalID: "gh_00000000aaaa", Mode: wechattest.Safe},
		{AppID: itOpenAppID, AppSecret: itOpenSecret, Kind: wechattest.WebsiteApp},
	} {
		if err := fake.AddApp(app); err != nil {
			t.Fatal(err)
		}
	}
	return fake, c
}

// getAbs GETs an absolute URL with the client's cookies, not following
// redirects.
func (c *client) getAbs(u string, hdr ...string) (*http.Response, string) {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// expectRedirect checks for a redirect whose target starts with prefix and
// returns the target.
func expectRedirect(t *testing.T, what string, resp *http.Response, body, prefix string) string {
	t.Helper()
	loc := resp.Header.Get("Location")
	if resp.StatusCode/100 != 3 || !strings.HasPrefix(loc, prefix) {
		t.Fatalf("%s: %d to %q, want a redirect to %s…: %s", what, resp.StatusCode, loc, prefix, body)
	}
	return loc
}

// TestCaddyOAuthInWeChat: inside WeChat's browser, a protected page leads
// through WeChat's authorization (consent approved by the fake) straight
// back to the page with a session.
func TestCaddyOAuthInWeChat(t *testing.T) {
	fake, c := startCaddyOAuth(t)
	b := newClient(t, c.BaseURL)
	ua := []string{"User-Agent", itWeChatUA, "Accept", "text/html"}

	resp, body := b.do(http.MethodGet, "/some/page?x=1", nil, ua...)
	auth := expectRedirect(t, "protected page", resp, body, fake.URL+"/connect/oauth2/authorize?appid="+itAppID+"&")
	if !strings.Contains(auth, "scope=snsapi_userinfo") {
		t.Fatalf("authorize URL %s", auth)
	}
	resp, body = b.getAbs(auth, ua...)
	callback := expectRedirect(t, "WeChat's consent", resp, body, c.BaseURL+"/wechat/oauth/callback?code=")
	resp, body = b.getAbs(callback, ua...)
	expectRedirect(t, "callback", resp, body, "/some/page?x=1")
	if resp.Header.Get("Referrer-Policy") != "no-referrer" {
		t.Fatalf("callback headers %v", resp.Header)
	}

	_, body = b.do(http.MethodGet, "/some/page?x=1", nil, ua...)
	openid := fake.OpenID(itAppID, "bob")
	if want := "id=" + openid + " method=oauth app=" + itAppID; body != want {
		t.Fatalf("after login:\n got %q\nwant %q", body, want)
	}
	// A refresh of the callback URL goes on to the page again.
	resp, body = b.getAbs(callback, ua...)
	expectRedirect(t, "callback refresh", resp, body, "/some/page?x=1")
	if n := fake.Calls("/sns/oauth2/access_token"); n != 1 {
		t.Fatalf("%d code exchanges", n)
	}
}

// TestCaddyWebsiteLoginPopup: website login in a popup, through Caddy, ends
// on the page that posts the result to the opener at the site's origin.
func TestCaddyWebsiteLoginPopup(t *testing.T) {
	fake, c := startCaddyOAuth(t)
	b := newClient(t, c.BaseURL)

	resp, body := b.do(http.MethodGet, "/wechat/oauth/start?method=open&popup=1&next=%2Fdone", nil)
	auth := expectRedirect(t, "start", resp, body, fake.URL+"/connect/qrconnect?appid="+itOpenAppID+"&")
	resp, body = b.getAbs(auth)
	callback := expectRedirect(t, "WeChat's QR page", resp, body, c.BaseURL+"/wechat/oauth/callback?code=")
	resp, body = b.getAbs(callback)
	result := expectRedirect(t, "callback", resp, body, "/wechat/oauth/callback?state=")
	resp, body = b.do(http.MethodGet, result, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'nonce-") {
		t.Fatalf("popup page: %d %v", resp.StatusCode, resp.Header)
	}
	msg := regexp.MustCompile(`var message = (\{.*?\});`).FindStringSubmatch(body)
	origin := regexp.MustCompile(`var origin = ("[^"]*");`).FindStringSubmatch(body)
	if msg == nil || origin == nil {
		t.Fatalf("popup page without its script: %s", body)
	}
	var m map[string]string
	var o string
	if json.Unmarshal([]byte(msg[1]), &m) != nil || json.Unmarshal([]byte(origin[1]), &o) != nil {
		t.Fatalf("popup script: %s %s", msg[1], origin[1])
	}
	if m["type"] != "wechat_login" || m["status"] != "confirmed" || m["redirect"] != "/done" || o != c.BaseURL {
		t.Fatalf("popup posts %v to %q", m, o)
	}

	_, body = b.do(http.MethodGet, "/done", nil)
	if want := "id=" + fake.OpenID(itOpenAppID, "bob") + " method=open app=" + itOpenAppID; body != want {
		t.Fatalf("after login:\n got %q\nwant %q", body, want)
	}
}
