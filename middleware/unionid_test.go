package middleware

import (
	"net/http"
	"strings"
	"testing"

	"github.com/wechat-login/caddy-wechat-login/internal/loginpage"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// TestUnionIDModeNeverFallsBack: a site that knows people by unionid logs
// them in when WeChat gives one, and otherwise refuses, saying why, rather
// than take the openid for a unionid.
func TestUnionIDModeNeverFallsBack(t *testing.T) {
	for _, tc := range []struct {
		name    string
		unbound bool
	}{
		{"website app bound to an Open Platform account", false},
		{"website app that is not", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newEnv(t, wechattest.Safe, func(c *Config) {
				c.AppID, c.AppSecret, c.PushToken, c.EncodingAESKey = "", "", "", ""
				c.OpenAppID, c.OpenAppSecret, c.UserID = testOpenAppID, testOpenSecret, "unionid"
			})
			fake := env.fake
			if err := fake.AddApp(wechattest.App{AppID: testOpenAppID, AppSecret: testOpenSecret, Kind: wechattest.WebsiteApp, Unbound: tc.unbound}); err != nil {
				t.Fatal(err)
			}
			fake.SetOAuthUser("alice")
			b := env.browser()
			_, resp := b.loginOAuth("/wechat/oauth/start?method=open&next=%2Fdash", nil)
			id := b.whoami()
			if !tc.unbound {
				if resp.StatusCode != http.StatusSeeOther || id == nil || id["unionid"] != fake.UnionID("alice") {
					t.Fatalf("login: %d, identity %v", resp.StatusCode, id)
				}
				return
			}
			if resp.StatusCode != http.StatusForbidden || id != nil {
				t.Fatalf("login without a unionid: %d, identity %v", resp.StatusCode, id)
			}
			if body := string(resp.body); !strings.Contains(body, "UnionID") || strings.Contains(body, fake.OpenID(testOpenAppID, "alice")) {
				t.Fatalf("refusal page does not say why, or shows the openid: %s", body)
			}
			if loginpage.MsgNoUnionID.In("zh") == "" {
				t.Fatal("no Chinese wording for the refusal")
			}
		})
	}
}
