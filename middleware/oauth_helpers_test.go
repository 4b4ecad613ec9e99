package middleware

import (
	"context"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/wechat-login/caddy-wechat-login/internal/loginpage"
	"github.com/wechat-login/caddy-wechat-login/internal/oauthflow"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

const (
	testOpenAppID  = "wxfedcba98765432100"
	testOpenSecret = "test-website-secret-0123456789"

	uaIOSWeChat = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.49(0x18003128) NetType/WIFI Language/zh_CN"
	uaChrome    = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)

// newOAuthEnv is newEnv with a website app configured on both sides and the
// fake approving every authorization as user (empty: show the choice page).
func newOAuthEnv(t *testing.T, user string, opts ...envOption) *testEnv {
	t.Helper()
	opts = append([]envOption{func(c *Config) {
		c.OpenAppID, c.OpenAppSecret = testOpenAppID, testOpenSecret
	}}, opts...)
	env := newEnv(t, wechattest.Safe, opts...)
	if err := env.fake.AddApp(wechattest.App{AppID: testOpenAppID, AppSecret: testOpenSecret, Kind: wechattest.WebsiteApp}); err != nil {
		t.Fatal(err)
	}
	env.fake.SetOAuthUser(user)
	return env
}

// fetch GETs an absolute URL (the fake WeChat's pages, or a callback URL
// taken from a Location header).
func (b *browser) fetch(u string, hdr map[string]string) response {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return response{resp, data}
}

// startOAuth loads a start URL (or protected page) and returns WeChat's
// authorization URL it redirected to.
func (b *browser) startOAuth(path string, hdr map[string]string) string {
	b.t.Helper()
	resp := b.get(path, hdr)
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, b.env.fake.URL+"/connect/") {
		b.t.Fatalf("GET %s: %d to %q, want a redirect to WeChat: %s", path, resp.StatusCode, loc, resp.body)
	}
	return loc
}

// approve passes through WeChat's authorization page (the fake approves at
// once) and returns the callback URL WeChat sends the browser back to.
func (b *browser) approve(authURL string) string {
	b.t.Helper()
	resp := b.fetch(authURL, nil)
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, b.env.srv.URL+"/wechat/oauth/callback?") {
		b.t.Fatalf("WeChat's page: %d to %q: %s", resp.StatusCode, loc, resp.body)
	}
	return loc
}

// loginOAuth runs a whole flow from path and returns the callback's answer.
func (b *browser) loginOAuth(path string, hdr map[string]string) (callback string, resp response) {
	b.t.Helper()
	callback = b.approve(b.startOAuth(path, hdr))
	return callback, b.fetch(callback, hdr)
}

// whoami returns the session's identity, or nil without one.
func (b *browser) whoami() map[string]any {
	b.t.Helper()
	resp := b.get("/wechat/userinfo", nil)
	if resp.StatusCode == http.StatusUnauthorized {
		return nil
	}
	return resp.json(b.t)
}

func stateOf(t *testing.T, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query().Get("state")
}

// withQuery returns the callback URL with its query replaced.
func withRawQuery(t *testing.T, rawURL, rawQuery string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	u.RawQuery = rawQuery
	return u.String()
}

var (
	popupScriptRe = regexp.MustCompile(`(?s)<script nonce="([^"]+)">(.*?)</script>`)
	popupMsgRe    = regexp.MustCompile(`var message = (\{.*?\});`)
	popupOriginRe = regexp.MustCompile(`var origin = ("[^"]*");`)
)

// popupPage is what a popup result page will post to its opener.
type popupPage struct {
	Message loginpage.PopupMessage
	Origin  string
}

// parsePopupPage extracts the posted message and target origin, and checks
// that the script is the one the page's CSP allows.
func parsePopupPage(t *testing.T, resp response) popupPage {
	t.Helper()
	body := string(resp.body)
	m := popupScriptRe.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no popup script in %s", body)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'nonce-"+html.UnescapeString(m[1])+"'") {
		t.Fatalf("script nonce %q not allowed by CSP %q", m[1], csp)
	}
	script := m[2]
	var p popupPage
	mm := popupMsgRe.FindStringSubmatch(script)
	om := popupOriginRe.FindStringSubmatch(script)
	if mm == nil || om == nil {
		t.Fatalf("popup script lacks message or origin: %s", script)
	}
	if err := json.Unmarshal([]byte(mm[1]), &p.Message); err != nil {
		t.Fatalf("popup message %s: %v", mm[1], err)
	}
	// html/template writes JS strings with escaped slashes, which JSON
	// reads the same way.
	if err := json.Unmarshal([]byte(om[1]), &p.Origin); err != nil {
		t.Fatalf("popup origin %s: %v", om[1], err)
	}
	for _, want := range []string{"window.opener", "opener.postMessage(message, origin)", "window.close()"} {
		if !strings.Contains(script, want) {
			t.Fatalf("popup script lacks %q", want)
		}
	}
	return p
}

// storedOAuth reports whether a pending state is in the store.
func (e *testEnv) storedOAuth(state string) bool {
	_, err := e.mw.store.Get(context.Background(), oauthflow.StateKey(state))
	return err == nil
}
