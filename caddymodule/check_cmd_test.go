package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/middleware"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// Caddy's metrics count misconfigurations.
var _ middleware.MisconfigurationMetrics = promMetrics{}

// checkCaddyfile is a config with one wechat_login site against the fake
// WeChat at fakeURL, on a port nothing listens on: the check starts no
// server.
func checkCaddyfile(t *testing.T, fakeURL string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "Caddyfile")
	caddyfile := `{
	admin off
}
http://check.example.test:8 {
	wechat_login {
		app_id ` + itAppID + `
		app_secret {env.IT_WECHAT_SECRET}
		token ` + itToken + `
		encoding_aes_key {env.IT_WECHAT_AES_KEY}
		session_key {env.IT_SESSION_KEY}
		api_base ` + fakeURL + `
		oauth_base ` + fakeURL + `
		mp_base ` + fakeURL + `
	}
	respond "hello"
}
`
	if err := os.WriteFile(path, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCheckCommand runs `caddy wechat-login check` of the real binary
// against the fake WeChat: a verified service account passes (exit 0), a
// subscription account, which WeChat refuses QR codes, fails (exit 1) with
// a report that names code login.
func TestCheckCommand(t *testing.T) {
	for _, tc := range []struct {
		name    string
		account wechattest.AccountType
		status  int
		want    []string
	}{
		{"verified service account", wechattest.VerifiedServiceAccount, 0, []string{
			"== check.example.test  (Official Account " + itAppID + ")",
			"  ok       access token: WeChat issued an access token",
			"  ok       QR login: WeChat created a login QR code",
			"  note     in-WeChat login: ",
			"-- ok: nothing stops logins",
			"wechat_login check: all 1 checked, nothing stops logins",
		}},
		{"subscription account", wechattest.SubscriptionAccount, 1, []string{
			"  ok       access token: ",
			"  PROBLEM  QR login: WeChat did not create a login QR code: this Official Account may not create parametric QR codes",
			"           fix: offer code login instead of QR login (methods code",
			"  PROBLEM  in-WeChat login: ",
			"-- 2 problems stop logins",
			"wechat_login check: 1 of 1 cannot log users in",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := wechattest.NewServer(wechattest.Config{})
			t.Cleanup(fake.Close)
			if err := fake.AddApp(wechattest.App{
				AppID: itAppID, AppSecret: itSecret, Token: itToken, EncodingAESKey: itAESKey,
				OriginalID: "gh_00000000aaaa", Mode: wechattest.Safe, Account: tc.account,
			}); err != nil {
				t.Fatal(err)
			}
			out, err := runCaddy(t, itEnv, "wechat-login", "check", "--config", checkCaddyfile(t, fake.URL))
			t.Logf("caddy wechat-login check:\n%s", out)
			status := 0
			if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
				status = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if status != tc.status {
				t.Fatalf("exit status %d, want %d:\n%s", status, tc.status, out)
			}
			for _, s := range tc.want {
				if !strings.Contains(out, s) {
					t.Errorf("output lacks %q:\n%s", s, out)
				}
			}
			for _, secret := range []string{itSecret, itAESKey, "integration-session-key"} {
				if strings.Contains(out, secret) {
					t.Fatal("the output holds a secret")
				}
			}
		})
	}
}

// TestCheckConfigFindsHandlers: every wechat_login handler is found, in
// subroutes too, named by its hosts or its server, and the same settings
// on two sites are checked once; a sandbox needs no WeChat; a handler
// whose options are wrong is a problem that names the option.
func TestCheckConfigFindsHandlers(t *testing.T) {
	config := `{"apps":{"http":{"servers":{
		"srv0":{"listen":[":443"],"routes":[
			{"match":[{"host":["a.example.com","b.example.com"]}],"handle":[{"handler":"subroute","routes":[
				{"handle":[{"handler":"wechat_login","sandbox":true}]}]}]},
			{"match":[{"host":["c.example.com"]}],"handle":[{"handler":"subroute","routes":[
				{"handle":[{"handler":"wechat_login","sandbox":true}]}]}]}
		]},
		"srv1":{"listen":[":8080"],"routes":[
			{"handle":[{"handler":"wechat_login","app_id":"wx0123456789abcdef","app_secret":"s","token":"bad token","session_keys":["0123456789abcdef0123456789abcdef"]}]}
		]}
	}}}}`
	var out bytes.Buffer
	bad, total, err := checkConfig(context.Background(), &out, []byte(config), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", out.String())
	if bad != 1 || total != 2 {
		t.Fatalf("bad %d of %d, want 1 of 2", bad, total)
	}
	for _, s := range []string{
		"== a.example.com, b.example.com, c.example.com  (sandbox)",
		"-- ok: the sandbox is a built-in fake WeChat",
		"== server srv1 (:8080)",
		"  PROBLEM  configuration: token must be 3 to 32 letters and digits",
		"-- 1 problem stops logins",
	} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("report lacks %q", s)
		}
	}
	if _, _, err := checkConfig(context.Background(), &out, []byte(`{"apps":{}}`), time.Second); err == nil {
		t.Fatal("a config without wechat_login passed")
	}
}

// TestMisconfigQRAnswer: in a running Caddy, a subscription account's
// refused QR code (48001) gives the login page the misconfiguration answer
// (502, reason misconfigured, no Retry-After), the log one Error line with
// the fix, and the metrics its reason.
func TestMisconfigQRAnswer(t *testing.T) {
	fake := wechattest.NewServer(wechattest.Config{})
	t.Cleanup(fake.Close)
	c := startCaddy(t, siteWithFake(fake.URL, "127.0.0.1:9", "Misconfigured Site"), itEnv...)
	if err := fake.AddApp(wechattest.App{
		AppID: itAppID, AppSecret: itSecret, Token: itToken, EncodingAESKey: itAESKey,
		OriginalID: "gh_00000000aaaa", CallbackURL: c.BaseURL + "/wechat/callback", Mode: wechattest.Safe,
		Account: wechattest.SubscriptionAccount,
	}); err != nil {
		t.Fatal(err)
	}
	resp, body := newClient(t, c.BaseURL).do(http.MethodPost, "/wechat/qr", strings.NewReader("next=%2F"), "Origin", c.BaseURL)
	var answer map[string]string
	_ = json.Unmarshal([]byte(body), &answer)
	if resp.StatusCode != http.StatusBadGateway || answer["reason"] != middleware.ReasonMisconfigured || resp.Header.Get("Retry-After") != "" {
		t.Fatalf("POST /wechat/qr: %d %q Retry-After %q", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	waitFor(t, 10*time.Second, "the misconfiguration log line", func() bool { return strings.Contains(c.logs.String(), "WeChat login is misconfigured") })
	logs := c.logs.String()
	for _, s := range []string{`"level":"error"`, `"reason":"qr_not_allowed"`, "methods code"} {
		if !strings.Contains(logs, s) {
			t.Errorf("log lacks %q", s)
		}
	}
	if strings.Contains(logs, itSecret) || strings.Contains(logs, itAESKey) {
		t.Fatal("the log holds a secret")
	}
	mresp, err := http.Get("http://" + c.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if metrics := readAll(mresp); !strings.Contains(metrics, `caddy_wechat_login_misconfigured_total{reason="qr_not_allowed"} 1`) {
		t.Errorf("metrics lack the misconfiguration")
	}
}
