package middleware

import (
	"net/http"
	"strings"
	"sync"
	"testing"
)

// pathRecorder is a transport that notes the path of every call to WeChat.
type pathRecorder struct {
	mu    sync.Mutex
	paths []string
}

func (p *pathRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	p.mu.Lock()
	p.paths = append(p.paths, r.URL.Path)
	p.mu.Unlock()
	return http.DefaultTransport.RoundTrip(r)
}

// TestWebsiteOnlySite: a site configured with a website app alone offers
// website login, logs users in with it, and makes no Official Account call:
// no QR code, no push endpoint, no access token.
func TestWebsiteOnlySite(t *testing.T) {
	calls := &pathRecorder{}
	env := newOAuthEnv(t, "alice", func(c *Config) {
		c.AppID, c.AppSecret, c.PushToken, c.EncodingAESKey = "", "", "", ""
		c.HTTPClient = &http.Client{Transport: calls}
	})
	if got := env.mw.cfg.Methods; len(got) != 1 || got[0] != MethodOpen {
		t.Fatalf("methods %v, want open alone", got)
	}
	b := env.browser()
	page := b.get("/wechat/login?next=/dash", nil)
	body := string(page.body)
	// Website login alone: its embedded QR is shown at once, nothing else.
	if page.StatusCode != http.StatusOK || !strings.Contains(body, `id="wl-frame" data-state="idle" tabindex="-1">`) || strings.Contains(body, `id="wl-qr"`) {
		t.Fatalf("login page %d, website login frame %v, QR area %v", page.StatusCode,
			strings.Contains(body, `id="wl-frame"`), strings.Contains(body, `id="wl-qr"`))
	}
	if resp := b.do(http.MethodPost, "/wechat/qr", strings.NewReader("next=/"), map[string]string{"Origin": env.srv.URL, "Content-Type": "application/x-www-form-urlencoded"}); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("POST /wechat/qr: %d, want 404", resp.StatusCode)
	}
	if resp := b.get("/wechat/callback?signature=x&timestamp=1&nonce=1&echostr=e", nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("push endpoint: %d, want 404", resp.StatusCode)
	}

	_, resp := b.loginOAuth("/wechat/oauth/start?method=open&next=%2Fdash", nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/dash" {
		t.Fatalf("website login: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if id := b.whoami(); id == nil || id["app_id"] != testOpenAppID || id["login_method"] != MethodOpen {
		t.Fatalf("identity %v", id)
	}
	calls.mu.Lock()
	defer calls.mu.Unlock()
	if len(calls.paths) == 0 {
		t.Fatal("no call to WeChat recorded: the recorder is not in the path")
	}
	for _, p := range calls.paths {
		if !strings.HasPrefix(p, "/sns/") {
			t.Errorf("a website-only site called %s", p)
		}
	}
}

// TestAccountsMatchMethods: which app settings each set of methods needs,
// and that settings no method uses are refused rather than ignored.
func TestAccountsMatchMethods(t *testing.T) {
	website := func(c *Config) { c.OpenAppID, c.OpenAppSecret = testOpenAppID, testOpenSecret }
	for _, tc := range []struct {
		name    string
		edit    func(*Config)
		wantErr string
	}{
		{"website app alone", func(c *Config) {
			website(c)
			c.AppID, c.AppSecret, c.PushToken = "", "", ""
		}, ""},
		{"in-WeChat login needs no push token", func(c *Config) { c.Methods, c.PushToken = []string{MethodOAuth}, "" }, ""},
		{"QR login needs the push token", func(c *Config) { c.Methods, c.PushToken = []string{MethodQR}, "" }, "PushToken is required"},
		{"an Official Account no method uses", func(c *Config) { website(c); c.Methods = []string{MethodOpen} }, "AppID is set but no login method uses"},
		{"a message key without a push token", func(c *Config) {
			c.Methods, c.PushToken, c.EncodingAESKey = []string{MethodOAuth}, "", testAESKey
		}, "EncodingAESKey is set without PushToken"},
		{"nothing at all", func(c *Config) { c.AppID, c.AppSecret, c.PushToken = "", "", "" }, "AppID is required"},
	} {
		c := validConfig()
		tc.edit(&c)
		err := c.Validate()
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.wantErr)
		}
	}
}
