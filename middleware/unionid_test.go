package middleware

import (
	"context"
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

// TestUnionIDModeQR: in unionid mode a QR login looks the unionid up
// (without FetchUnionID) and logs in with it; an Official Account not bound
// to an Open Platform account gives none, and the login is denied with the
// reason the page shows, never completed with the openid.
func TestUnionIDModeQR(t *testing.T) {
	for _, tc := range []struct {
		name    string
		unbound bool
	}{
		{"bound account", false},
		{"unbound account", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newEnvApp(t, func(c *Config) { c.UserID = "unionid" }, func(a *wechattest.App) { a.Unbound = tc.unbound })
			b := env.browser()
			qr := b.createQR("/")
			if _, err := env.fake.Scan(context.Background(), testAppID, qr["qr_content"].(string), "alice"); err != nil {
				t.Fatal(err)
			}
			got := b.poll(qr["scene"].(string), 5).json(t)
			if !tc.unbound {
				if got["status"] != StateConfirmed || b.whoami()["unionid"] != env.fake.UnionID("alice") {
					t.Fatalf("poll %v, identity %v", got, b.whoami())
				}
				return
			}
			if got["status"] != StateDenied || got["reason"] != ReasonNoUnionID || b.cookie(sessionCookie) != nil {
				t.Fatalf("poll %v, session cookie %v", got, b.cookie(sessionCookie))
			}
		})
	}
}

// newEnvApp is newEnv (safe mode) with the fake's Official Account edited
// by app before it is added.
func newEnvApp(t *testing.T, cfg func(*Config), app func(*wechattest.App)) *testEnv {
	t.Helper()
	return newEnvWithApp(t, wechattest.Safe, app, cfg)
}

// TestUnionIDModeCode: a code login in unionid mode looks the unionid up
// like a QR login; an account WeChat gives none for (unbound, or not
// allowed cgi-bin/user/info: an unverified subscription account) has its
// logins denied with the reason, never completed with the openid.
func TestUnionIDModeCode(t *testing.T) {
	for _, tc := range []struct {
		name string
		app  func(*wechattest.App)
		ok   bool
	}{
		{"verified subscription account, bound", func(a *wechattest.App) { a.Account = wechattest.VerifiedSubscriptionAccount }, true},
		{"verified subscription account, unbound", func(a *wechattest.App) { a.Account, a.Unbound = wechattest.VerifiedSubscriptionAccount, true }, false},
		{"subscription account", subscriptionAccount, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newEnvWithApp(t, wechattest.Safe, tc.app, withMethods(MethodCode), func(c *Config) { c.UserID = "unionid" })
			b := env.browser()
			scene, code := b.newCode()
			if reply := env.send("bob", code); !strings.Contains(reply, "logged in") {
				t.Fatalf("code: %q", reply)
			}
			got := b.poll(scene, 0).json(t)
			if tc.ok {
				if got["status"] != StateConfirmed || b.whoami()["unionid"] != env.fake.UnionID("bob") {
					t.Fatalf("poll %v, identity %v", got, b.whoami())
				}
				return
			}
			if got["status"] != StateDenied || got["reason"] != ReasonNoUnionID || b.cookie(sessionCookie) != nil {
				t.Fatalf("poll %v, session cookie %v", got, b.cookie(sessionCookie))
			}
		})
	}
}
