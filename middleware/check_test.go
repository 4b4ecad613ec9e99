package middleware

import (
	"context"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wechat-login/caddy-wechat-login/wechat"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// misconfigMetrics counts like countingMetrics, and counts
// misconfigurations too.
type misconfigMetrics struct{ countingMetrics }

func (c *misconfigMetrics) Misconfigured(reason string) { c.inc("misconfigured:" + reason) }

// all returns a copy of the counts.
func (c *misconfigMetrics) all() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.counts)
}

// setupEnv is a site in front of the fake WeChat whose account and
// middleware configuration a test chooses, with its logs and metrics.
type setupEnv struct {
	*testEnv
	logs    *observer.ObservedLogs
	metrics *misconfigMetrics
}

func newSetupEnv(t *testing.T, app func(*wechattest.App), opts ...envOption) *setupEnv {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	metrics := &misconfigMetrics{}
	observed := func(c *Config) { c.Logger, c.Metrics, c.QRRateBurst = zap.New(core), metrics, 100 }
	env := newEnvWithApp(t, wechattest.Safe, app, append([]envOption{observed}, opts...)...)
	return &setupEnv{testEnv: env, logs: logs, metrics: metrics}
}

// check runs the package-level Check on the env's configuration, the way
// a deployment step would, before any request.
func (e *setupEnv) check() CheckReport {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := e.cfg
	cfg.Logger, cfg.Metrics = nil, nil
	r := Check(ctx, cfg)
	e.t.Logf("report:\n%s", r)
	return r
}

// finding returns the report's finding on topic.
func finding(t *testing.T, r CheckReport, topic string) Finding {
	t.Helper()
	for _, f := range r.Findings {
		if f.Topic == topic {
			return f
		}
	}
	t.Fatalf("no finding on %q in:\n%s", topic, r)
	return Finding{}
}

// assertMisconfiguredAnswer asks for a login QR code and expects the
// misconfiguration answer: 502, reason "misconfigured", no Retry-After,
// wording that does not ask to try again; one Error line for the operator
// with the fix, and the metric with reason.
func (e *setupEnv) assertMisconfiguredAnswer(reason string, fixHas ...string) {
	e.t.Helper()
	resp := e.browser().do(http.MethodPost, "/wechat/qr", nil, map[string]string{"Origin": e.srv.URL})
	body := resp.json(e.t)
	if resp.StatusCode != http.StatusBadGateway || body["reason"] != ReasonMisconfigured {
		e.t.Fatalf("POST /wechat/qr: %d %v, want 502 with reason misconfigured", resp.StatusCode, body)
	}
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		e.t.Errorf("Retry-After %q on a failure no retry cures", ra)
	}
	if msg, _ := body["error"].(string); !strings.Contains(msg, "tell the site's owner") || strings.Contains(strings.ToLower(msg), "try again") {
		e.t.Errorf("error %q", msg)
	}
	lines := e.logs.FilterLevelExact(zap.ErrorLevel).FilterMessageSnippet("WeChat login is misconfigured").All()
	if len(lines) != 1 {
		e.t.Fatalf("%d misconfiguration lines, want 1: %v", len(lines), e.logs.All())
	}
	ctx := lines[0].ContextMap()
	fix, _ := ctx["fix"].(string)
	if ctx["reason"] != reason || ctx["call"] != "create QR ticket" {
		e.t.Errorf("log fields %v", ctx)
	}
	for _, s := range fixHas {
		if !strings.Contains(fix, s) {
			e.t.Errorf("fix %q does not say %q", fix, s)
		}
	}
	for _, secret := range []string{testSecret, testAESKey, testToken} {
		if strings.Contains(lines[0].Message+" "+fix, secret) || strings.Contains(toString(ctx), secret) {
			e.t.Errorf("log line leaks a secret: %s %v", lines[0].Message, ctx)
		}
	}
	if n := e.metrics.get("misconfigured:" + reason); n != 1 {
		e.t.Errorf("misconfigured:%s counted %d times: %v", reason, n, e.metrics.all())
	}
	if n := e.metrics.get("wechat:create QR ticket"); n != 1 {
		e.t.Errorf("WeChat failure counted %d times", n)
	}
}

// TestCheckAllGood: a verified service account in safe mode passes, and
// the report says what it could not check.
func TestCheckAllGood(t *testing.T) {
	env := newSetupEnv(t, nil)
	r := env.check()
	if !r.OK() || r.AppID != testAppID {
		t.Fatalf("not OK:\n%s", r)
	}
	if f := finding(t, r, "access token"); f.Severity != SeverityOK || !strings.Contains(f.Message, "stable_token") {
		t.Errorf("access token: %+v", f)
	}
	if f := finding(t, r, "QR login"); f.Severity != SeverityOK {
		t.Errorf("QR login: %+v", f)
	}
	if f := finding(t, r, "in-WeChat login"); f.Severity != SeverityNote || !strings.Contains(f.Fix, "网页授权域名") {
		t.Errorf("in-WeChat login: %+v", f)
	}
	if f := finding(t, r, "pushes"); f.Severity != SeverityNote || !strings.Contains(f.Fix, "/wechat/callback") {
		t.Errorf("pushes: %+v", f)
	}
	for _, s := range []string{testSecret, testAESKey, testToken} {
		if strings.Contains(r.String(), s) {
			t.Fatal("the report holds a secret")
		}
	}
	// Nothing a site relies on changed: logins work, with the token the
	// check was given (stable_token hands every caller the same one).
	loginByScan(t, env.testEnv, env.browser(), "alice", "/", "subscribe")
}

// TestMisconfigSubscriptionAccount: a subscription account may not create
// parametric QR codes (48001). The check names code login, the login page
// gets the misconfiguration answer.
func TestMisconfigSubscriptionAccount(t *testing.T) {
	env := newSetupEnv(t, func(a *wechattest.App) { a.Account = wechattest.SubscriptionAccount })
	r := env.check()
	if r.OK() || r.Problems() != 2 {
		t.Fatalf("want 2 problems:\n%s", r)
	}
	f := finding(t, r, "QR login")
	if f.Severity != SeverityProblem || f.Errcode != 48001 || !strings.Contains(f.Fix, "methods code") || !strings.Contains(f.Message, "verified service account") {
		t.Errorf("QR login: %+v", f)
	}
	if f := finding(t, r, "in-WeChat login"); f.Severity != SeverityProblem {
		t.Errorf("in-WeChat login: %+v", f)
	}
	if f := finding(t, r, "access token"); f.Severity != SeverityOK {
		t.Errorf("access token: %+v", f)
	}
	env.assertMisconfiguredAnswer("qr_not_allowed", "methods code", "verified service account")
}

// TestCheckSubscriptionAccountWithCodeLogin: with code login on, a 48001
// for QR codes is a warning (the page falls back by itself), code login is
// reported working, and the check passes.
func TestCheckSubscriptionAccountWithCodeLogin(t *testing.T) {
	for _, methods := range [][]string{{MethodQR, MethodCode}, {MethodCode}} {
		env := newSetupEnv(t, func(a *wechattest.App) { a.Account = wechattest.SubscriptionAccount }, withMethods(methods...))
		r := env.check()
		if !r.OK() {
			t.Fatalf("%v: not OK:\n%s", methods, r)
		}
		if f := finding(t, r, "code login"); f.Severity != SeverityOK {
			t.Errorf("%v: code login: %+v", methods, f)
		}
		if len(methods) == 2 {
			if f := finding(t, r, "QR login"); f.Severity != SeverityWarning || f.Errcode != 48001 || !strings.Contains(f.Message, "falls back to code login") {
				t.Errorf("QR login: %+v", f)
			}
		} else if n := env.fake.Calls("/cgi-bin/qrcode/create"); n != 0 {
			t.Errorf("code login only, and the check asked WeChat for %d QR codes", n)
		}
	}
}

// TestMisconfigIPNotWhitelisted: 40164 names the address WeChat saw and
// where to add it.
func TestMisconfigIPNotWhitelisted(t *testing.T) {
	env := newSetupEnv(t, nil)
	env.fake.SetIPStatus(wechattest.IPNotWhitelisted)
	r := env.check()
	f := finding(t, r, "access token")
	if r.OK() || f.Severity != SeverityProblem || f.Errcode != 40164 || !strings.Contains(f.Fix, "127.0.0.1") || !strings.Contains(f.Fix, "IP白名单") {
		t.Fatalf("access token: %+v", f)
	}
	if f := finding(t, r, "QR login"); f.Severity != SeverityNote {
		t.Errorf("QR login: %+v", f)
	}
	env.assertMisconfiguredAnswer("ip_not_whitelisted", "127.0.0.1", "IP whitelist")

	// Whitelisted: the next login code works, with no restart.
	env.fake.SetIPStatus(wechattest.IPWhitelisted)
	env.browser().createQR("/")
	if r := env.check(); !r.OK() {
		t.Fatalf("still failing once whitelisted:\n%s", r)
	}
}

// TestMisconfigIPNeedsConfirmation: WeChat asks the admin to confirm the
// server's address (89503, then 89501 until answered).
func TestMisconfigIPNeedsConfirmation(t *testing.T) {
	env := newSetupEnv(t, nil)
	env.fake.SetIPStatus(wechattest.IPNeedsConfirmation)
	r := env.check()
	f := finding(t, r, "access token")
	if f.Severity != SeverityProblem || f.Errcode != wechat.CodeIPNeedsConfirmation || !strings.Contains(f.Fix, "admin must approve") {
		t.Fatalf("access token: %+v", f)
	}
	// The site's own call now gets 89501: the same answer.
	env.assertMisconfiguredAnswer("ip_needs_confirmation", "admin must approve")
	if code := finding(t, env.check(), "access token").Errcode; code != wechat.CodeIPAwaitingAdmin {
		t.Errorf("errcode %d while waiting, want 89501", code)
	}
	if err := env.fake.ConfirmIP(true); err != nil {
		t.Fatal(err)
	}
	env.browser().createQR("/")
}

// TestMisconfigBadSecret: WeChat refuses the AppSecret (40125).
func TestMisconfigBadSecret(t *testing.T) {
	env := newSetupEnv(t, func(a *wechattest.App) { a.AppSecret = "another-secret-0123456789" })
	r := env.check()
	f := finding(t, r, "access token")
	if f.Severity != SeverityProblem || f.Errcode != 40125 || !strings.Contains(f.Fix, "AppSecret") {
		t.Fatalf("access token: %+v", f)
	}
	if strings.Contains(r.String(), testSecret) {
		t.Fatal("the report holds the secret")
	}
	env.assertMisconfiguredAnswer("bad_app_secret", "app_secret")
}

// TestMisconfigTransientStillRetries: what a retry can cure keeps its 503
// and Retry-After, and is not counted as a misconfiguration.
func TestMisconfigTransientStillRetries(t *testing.T) {
	env := newSetupEnv(t, nil)
	env.fake.FailNext("/cgi-bin/qrcode/create", 1, wechattest.Fault{Errcode: -1})
	resp := env.browser().do(http.MethodPost, "/wechat/qr", nil, map[string]string{"Origin": env.srv.URL})
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "5" || resp.json(t)["reason"] != nil {
		t.Fatalf("%d %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), resp.body)
	}
	for k := range env.metrics.all() {
		if strings.HasPrefix(k, "misconfigured:") {
			t.Fatalf("counted as a misconfiguration: %s", k)
		}
	}
	if env.logs.FilterMessageSnippet("misconfigured").Len() != 0 {
		t.Fatal("logged as a misconfiguration")
	}
}

// TestMisconfigPushKey: pushes from WeChat encrypted with another
// EncodingAESKey are refused with one Error line naming the fix.
func TestMisconfigPushKey(t *testing.T) {
	env := newSetupEnv(t, func(a *wechattest.App) { a.EncodingAESKey = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefg" })
	qr := env.browser().createQR("/")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _ = env.fake.Scan(ctx, testAppID, qr["qr_content"].(string), "alice")
	lines := env.logs.FilterLevelExact(zap.ErrorLevel).FilterMessageSnippet("cannot be decrypted").All()
	if len(lines) == 0 {
		t.Fatalf("no misconfiguration line: %v", env.logs.All())
	}
	if fix, _ := lines[0].ContextMap()["fix"].(string); !strings.Contains(fix, "encoding_aes_key") {
		t.Errorf("fix %q", fix)
	}
	if env.metrics.get("misconfigured:push_key_mismatch") == 0 || env.metrics.get("reject:decrypt") == 0 {
		t.Errorf("metrics %v", env.metrics.all())
	}
}

// TestMisconfigPushPlaintext: a console still in plaintext mode while the
// site requires encryption.
func TestMisconfigPushPlaintext(t *testing.T) {
	env := newSetupEnv(t, func(a *wechattest.App) { a.Mode = wechattest.Plaintext })
	qr := env.browser().createQR("/")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _ = env.fake.Scan(ctx, testAppID, qr["qr_content"].(string), "alice")
	if env.metrics.get("misconfigured:push_plaintext") == 0 {
		t.Fatalf("metrics %v; logs %v", env.metrics.all(), env.logs.All())
	}
	// Forged pushes with a bad signature are counted, never logged as a
	// misconfiguration: anyone can send them.
	before := env.logs.FilterMessageSnippet("misconfigured").Len()
	resp, err := http.Post(env.srv.URL+"/wechat/callback?signature=0000000000000000000000000000000000000000&timestamp="+
		strconv.FormatInt(time.Now().Unix(), 10)+"&nonce=1", "text/xml", strings.NewReader("<xml></xml>"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if env.logs.FilterMessageSnippet("misconfigured").Len() != before {
		t.Fatal("a forged push was logged as a misconfiguration")
	}
}

// TestCheckPushModes: plaintext pushes are a warning, not a problem (a test
// account has nothing else), and the website app is reported as not
// checkable.
func TestCheckPushModes(t *testing.T) {
	env := newSetupEnv(t, func(a *wechattest.App) {
		a.Account = wechattest.TestAccount
		a.Mode = wechattest.Plaintext
		a.EncodingAESKey = ""
	},
		func(c *Config) {
			c.EncodingAESKey = ""
			c.OpenAppID, c.OpenAppSecret = "wxopen0123456789ab", "open-secret-0123456789"
		})
	r := env.check()
	if !r.OK() {
		t.Fatalf("not OK:\n%s", r)
	}
	if f := finding(t, r, "pushes"); f.Severity != SeverityWarning || !strings.Contains(f.Message, "test account") {
		t.Errorf("pushes: %+v", f)
	}
	if f := finding(t, r, "website login"); f.Severity != SeverityNote || !strings.Contains(f.Message, "cannot be checked") {
		t.Errorf("website login: %+v", f)
	}
}

// TestCheckBadConfig: a configuration New refuses is reported without a
// call to WeChat.
func TestCheckBadConfig(t *testing.T) {
	r := Check(context.Background(), Config{AppID: testAppID, AppSecret: testSecret, PushToken: testToken, EncodingAESKey: "short", SessionKeys: [][]byte{testSessionKey},
		Endpoint: wechat.Endpoint{API: "http://127.0.0.1:1"}})
	f := finding(t, r, "configuration")
	if r.OK() || f.Severity != SeverityProblem || !strings.Contains(f.Message, "EncodingAESKey") || len(r.Findings) != 1 {
		t.Fatalf("%+v", r)
	}
}

// TestCheckUnreachable: WeChat out of reach is a problem that says so.
func TestCheckUnreachable(t *testing.T) {
	r := Check(context.Background(), Config{AppID: testAppID, AppSecret: testSecret, PushToken: testToken, EncodingAESKey: testAESKey, SessionKeys: [][]byte{testSessionKey},
		Endpoint: wechat.Endpoint{API: "http://127.0.0.1:1"}})
	f := finding(t, r, "access token")
	if r.OK() || f.Severity != SeverityProblem || !strings.Contains(f.Message, "could not be reached") || !strings.Contains(f.Fix, "127.0.0.1:1") {
		t.Fatalf("%+v", f)
	}
}

// TestMiddlewareCheck: the method runs the same checks through the
// middleware's own client.
func TestMiddlewareCheck(t *testing.T) {
	env := newSetupEnv(t, func(a *wechattest.App) { a.Account = wechattest.UnverifiedServiceAccount })
	r := env.mw.Check(context.Background())
	if r.OK() || finding(t, r, "QR login").Errcode != 48001 {
		t.Fatalf("report:\n%s", r)
	}
	if !strings.Contains(r.String(), "PROBLEM  QR login: ") || !strings.Contains(r.String(), "         fix: offer code login") {
		t.Errorf("rendering:\n%s", r)
	}
}
