package caddymodule

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

const (
	itAppID  = "wx00000000000000aa"
	itSecret = "integration-secret-0123456789"
	itToken  = "integrationtoken"
	itAESKey = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
)

// siteWithFake is a site protected by wechat_login against the fake WeChat
// at fakeURL. Its root answers with the identity placeholders; /upstream/
// is proxied to upstreamAddr.
func siteWithFake(fakeURL, upstreamAddr, siteName string, extra ...string) string {
	return `	wechat_login {
		` + strings.Join(extra, "\n\t\t") + `
		app_id ` + itAppID + `
		app_secret {env.IT_WECHAT_SECRET}
		token ` + itToken + `
		encoding_aes_key {env.IT_WECHAT_AES_KEY}
		session_key {env.IT_SESSION_KEY}
		site_name "` + siteName + `"
		api_base ` + fakeURL + `
		oauth_base ` + fakeURL + `
		mp_base ` + fakeURL + `
	}
	handle /upstream/* {
		reverse_proxy ` + upstreamAddr + `
	}
	respond "id={http.auth.user.id} openid={http.auth.user.openid} method={http.auth.user.login_method} app={http.auth.user.app_id} hdr={http.request.header.X-WeChat-OpenID}"`
}

var itEnv = []string{
	"IT_WECHAT_SECRET=" + itSecret,
	"IT_WECHAT_AES_KEY=" + itAESKey,
	"IT_SESSION_KEY=integration-session-key-0123456789abcdef",
}

type caddyLogin struct {
	t        *testing.T
	fake     *wechattest.Server
	caddy    *caddyProc
	upstream *httptest.Server
	seen     chan http.Header
}

func startCaddyLogin(t *testing.T) *caddyLogin {
	t.Helper()
	fake := wechattest.NewServer(wechattest.Config{})
	t.Cleanup(fake.Close)
	seen := make(chan http.Header, 10)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		_, _ = w.Write([]byte("upstream ok"))
	}))
	t.Cleanup(upstream.Close)
	c := startCaddy(t, siteWithFake(fake.URL, strings.TrimPrefix(upstream.URL, "http://"), "Caddy Site"), itEnv...)
	if err := fake.AddApp(wechattest.App{
		AppID: itAppID, AppSecret: itSecret, Token: itToken, EncodingAESKey: itAESKey,
		OriginalID: "gh_00000000aaaa", CallbackURL: c.BaseURL + "/wechat/callback", Mode: wechattest.Safe,
	}); err != nil {
		t.Fatal(err)
	}
	return &caddyLogin{t: t, fake: fake, caddy: c, upstream: upstream, seen: seen}
}

func (l *caddyLogin) createQR(b *client) map[string]any {
	l.t.Helper()
	resp, body := b.do(http.MethodPost, "/wechat/qr", strings.NewReader("next=%2Fdone"), "Origin", l.caddy.BaseURL)
	if resp.StatusCode != http.StatusOK {
		l.t.Fatalf("create QR: %d %s", resp.StatusCode, body)
	}
	var qr map[string]any
	if err := json.Unmarshal([]byte(body), &qr); err != nil {
		l.t.Fatal(err)
	}
	return qr
}

func pollStatus(t *testing.T, b *client, scene string, wait int) map[string]any {
	t.Helper()
	resp, body := b.do(http.MethodGet, "/wechat/poll?scene="+scene+"&wait="+strconv.Itoa(wait), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("poll: %d %s", resp.StatusCode, body)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestCaddyQRLogin runs the whole QR login through a real Caddy process
// against the fake WeChat: redirect, QR, scan, long-poll, session, then the
// identity in placeholders and in the headers a reverse-proxied upstream
// receives, never the client's forged copies.
func TestCaddyQRLogin(t *testing.T) {
	l := startCaddyLogin(t)
	b := newClient(t, l.caddy.BaseURL)

	resp, _ := b.do(http.MethodGet, "/some/page", nil, "Accept", "text/html")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), "/wechat/login?next=") {
		t.Fatalf("unauthenticated page: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := b.do(http.MethodGet, "/upstream/x", nil, "Accept", "application/json"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("unauthenticated API call: %d", resp.StatusCode)
	}
	select {
	case <-l.seen:
		t.Fatal("an unauthenticated request reached the upstream")
	default:
	}

	qr := l.createQR(b)
	scene := qr["scene"].(string)

	// The event stream works through Caddy's wrapped ResponseWriter: the
	// first status arrives at once, not when the stream ends.
	req, _ := http.NewRequest(http.MethodGet, l.caddy.BaseURL+qr["events_url"].(string), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	stream, err := b.hc.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	first, err := bufio.NewReader(stream.Body).ReadString('}')
	stream.Body.Close()
	if stream.StatusCode != http.StatusOK || err != nil || !strings.Contains(first, `data: {"status":"pending"}`) {
		t.Fatalf("event stream through Caddy: %d %q %v", stream.StatusCode, first, err)
	}

	done := make(chan map[string]any, 1)
	go func() { done <- pollStatus(t, b, scene, 20) }()
	time.Sleep(200 * time.Millisecond) // let the long-poll start waiting
	d, err := l.fake.Scan(context.Background(), itAppID, qr["qr_content"].(string), "alice")
	if err != nil || d.Status != wechattest.StatusReplied {
		t.Fatalf("scan: %v %+v", err, d)
	}
	got := <-done
	if got["status"] != "confirmed" || got["redirect"] != "/done" {
		t.Fatalf("poll: %v", got)
	}

	openid := l.fake.OpenID(itAppID, "alice")
	_, body := b.do(http.MethodGet, "/anything", nil, "X-WeChat-OpenID", "oForged")
	want := "id=" + openid + " openid=" + openid + " method=qr app=" + itAppID + " hdr=" + openid
	if body != want {
		t.Fatalf("placeholders:\n got %q\nwant %q", body, want)
	}

	resp, body = b.do(http.MethodGet, "/upstream/x", nil, "X-WeChat-OpenID", "oForged", "X-WeChat-UnionID", "uForged", "X-Wechat-Login-Method", "forged")
	if resp.StatusCode != http.StatusOK || body != "upstream ok" {
		t.Fatalf("upstream: %d %q", resp.StatusCode, body)
	}
	h := <-l.seen
	if h.Get("X-WeChat-OpenID") != openid || h.Get("X-WeChat-Login-Method") != "qr" || h.Get("X-WeChat-AppID") != itAppID {
		t.Fatalf("upstream saw identity headers %v", h)
	}
	if v := h.Values("X-WeChat-OpenID"); len(v) != 1 {
		t.Fatalf("upstream saw %d X-WeChat-OpenID values: %v", len(v), v)
	}
	if h.Get("X-WeChat-UnionID") != "" {
		t.Fatalf("forged unionid reached the upstream: %q", h.Get("X-WeChat-UnionID"))
	}

	// The login shows in Caddy's metrics.
	resp, err = http.Get("http://" + l.caddy.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics := readAll(resp)
	for _, want := range []string{
		"caddy_wechat_login_scenes_created_total 1",
		`caddy_wechat_login_scans_total{outcome="confirmed"} 1`,
		`caddy_wechat_login_logins_total{method="qr"} 1`,
		`caddy_wechat_login_wechat_api_duration_seconds_count{endpoint="cgi-bin/qrcode/create",outcome="ok"} 1`,
		`caddy_wechat_login_wechat_api_duration_seconds_count{endpoint="cgi-bin/stable_token",outcome="ok"} 1`,
		"caddy_wechat_login_waiting_browsers 0",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestCaddyReloadDuringLogin: `caddy reload` while a login is pending (and a
// browser is waiting on it) does not lose the login.
func TestCaddyReloadDuringLogin(t *testing.T) {
	l := startCaddyLogin(t)
	b := newClient(t, l.caddy.BaseURL)
	qr := l.createQR(b)
	scene := qr["scene"].(string)

	var wg sync.WaitGroup
	wg.Add(1)
	var during map[string]any
	go func() {
		defer wg.Done()
		during = pollStatus(t, b, scene, 20)
	}()
	time.Sleep(200 * time.Millisecond)

	l.caddy.reload(siteWithFake(l.fake.URL, strings.TrimPrefix(l.upstream.URL, "http://"), "Renamed Site"))
	wg.Wait()
	if during["status"] != "pending" {
		t.Fatalf("the long-poll open during the reload ended with %v, want pending", during)
	}

	// The reloaded config knows the pending scene.
	d, err := l.fake.Scan(context.Background(), itAppID, qr["qr_content"].(string), "bob")
	if err != nil || d.Status != wechattest.StatusReplied {
		t.Fatalf("scan after reload: %v %+v", err, d)
	}
	if !strings.Contains(d.Reply.Content, "Renamed Site") {
		t.Fatalf("reply %q comes from the old config", d.Reply.Content)
	}
	if got := pollStatus(t, b, scene, 0); got["status"] != "confirmed" {
		t.Fatalf("poll after reload: %v", got)
	}
	_, body := b.do(http.MethodGet, "/", nil)
	if !strings.Contains(body, "openid="+l.fake.OpenID(itAppID, "bob")) {
		t.Fatalf("after login: %q", body)
	}
}

func TestCaddyListModulesAndValidateExample(t *testing.T) {
	out, err := runCaddy(t, nil, "list-modules")
	if err != nil || !strings.Contains(out, "http.handlers.wechat_login") {
		t.Fatalf("list-modules: %v\n%s", err, out)
	}
	env := []string{
		"WECHAT_APP_ID=wx0123456789abcdef",
		"WECHAT_APP_SECRET=0123456789abcdef0123456789abcdef",
		"WECHAT_TOKEN=token123",
		"WECHAT_ENCODING_AES_KEY=" + itAESKey,
		"WECHAT_SESSION_KEY=" + strings.Repeat("k", 44),
	}
	out, err = runCaddy(t, env, "validate", "--config", "../Caddyfile.example", "--adapter", "caddyfile")
	if err != nil || !strings.Contains(out, "Valid configuration") {
		t.Fatalf("validate Caddyfile.example: %v\n%s", err, out)
	}
	// Without the secrets, validation fails and says which option.
	out, err = runCaddy(t, []string{"WECHAT_SESSION_KEY="}, "validate", "--config", "../Caddyfile.example", "--adapter", "caddyfile")
	if err == nil || !strings.Contains(out, "app_id: evaluated placeholder {env.WECHAT_APP_ID} is empty") {
		t.Fatalf("validate without env: %v\n%s", err, out)
	}
}
