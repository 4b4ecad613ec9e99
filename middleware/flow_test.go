package middleware

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wechat-login/caddy-wechat-login/middleware/bigcachestore"
	"github.com/wechat-login/caddy-wechat-login/middleware/store"
	"github.com/wechat-login/caddy-wechat-login/wechat"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// TestEventsStream: the SSE route reports the current state at once and the
// confirmation the moment the push lands, then ends; poll then redeems.
func TestEventsStream(t *testing.T) {
	env := newEnv(t, wechattest.Safe)
	b := env.browser()
	qr := b.createQR("/x")
	scene := qr["scene"].(string)

	resp, events := b.events(qr["events_url"].(string))
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	if got := <-events; got != StatePending {
		t.Fatalf("first event %q, want pending", got)
	}
	if _, err := env.fake.Scan(context.Background(), testAppID, qr["qr_content"].(string), "bob"); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-events:
		if got != StateConfirmed {
			t.Fatalf("second event %q, want confirmed", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event after the scan")
	}
	if _, open := <-events; open {
		t.Fatal("stream went on after a final state")
	}
	if got := b.poll(scene, 0).json(t); got["status"] != StateConfirmed || got["redirect"] != "/x" {
		t.Fatalf("redeem after SSE: %v", got)
	}
}

// TestCloseEndsWaiters: shutting the middleware down answers waiting
// long-polls at once instead of holding them for their full wait.
func TestCloseEndsWaiters(t *testing.T) {
	env := newEnv(t, wechattest.Safe)
	b, scene, _ := pendingScene(t, env)
	done := make(chan map[string]any, 1)
	go func() { done <- b.poll(scene, 20).json(t) }()
	env.waitForWaiters(1)
	start := time.Now()
	if err := env.mw.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-done:
		if got["status"] != StatePending {
			t.Fatalf("waiter ended with %v", got)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("waiter ended %v after Close", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiter still waiting after Close")
	}
}

// TestFetchUnionID: with FetchUnionID the scanner's unionid comes from
// cgi-bin/user/info and reaches the upstream.
func TestFetchUnionID(t *testing.T) {
	env := newEnv(t, wechattest.Safe, func(c *Config) { c.FetchUnionID = true })
	b := env.browser()
	id := loginByScan(t, env, b, "alice", "/", "subscribe")
	if want := env.fake.UnionID("alice"); id["unionid"] != want || want == "" {
		t.Fatalf("unionid %v, want %q", id["unionid"], want)
	}
	if n := env.fake.Calls("/cgi-bin/user/info"); n != 1 {
		t.Fatalf("%d user/info calls, want 1", n)
	}
}

// TestPassThroughPushes: pushes that are not login scans reach the wrapped
// handler with their body intact when configured, and are answered
// "success" otherwise.
func TestPassThroughPushes(t *testing.T) {
	for _, pass := range []bool{false, true} {
		env := newEnv(t, wechattest.Plaintext, func(c *Config) { c.PassThroughPushes = pass })
		now := time.Now()
		ev := &wechat.Event{ToUserName: testGhID, FromUserName: env.fake.OpenID(testAppID, "alice"), CreateTime: now.Unix(), MsgType: "text", Content: "你好 <b>", MsgID: 42}
		p := plainPush(ev, now.Unix(), "pt")
		resp := env.sendPush(p)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("pass=%v: %d %s", pass, resp.StatusCode, resp.body)
		}
		if !pass {
			if string(resp.body) != "success" {
				t.Fatalf("not passed through, answer %q", resp.body)
			}
			continue
		}
		got := resp.json(t)
		if got["path"] != "/wechat/callback" || got["body"] != string(p.body) {
			t.Fatalf("wrapped handler saw %v", got)
		}
	}
}

// TestExpiredSceneReply: scanning a code whose scene is gone gets a helpful
// chat reply and changes nothing.
func TestExpiredSceneReply(t *testing.T) {
	env := newEnv(t, wechattest.Safe)
	b := env.browser()
	qr := b.createQR("/")
	if err := env.mw.store.Delete(context.Background(), sceneKey(qr["scene"].(string))); err != nil {
		t.Fatal(err)
	}
	d, err := env.fake.Scan(context.Background(), testAppID, qr["qr_content"].(string), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != wechattest.StatusReplied || d.Reply.Content != env.cfg.ExpiredReply {
		t.Fatalf("reply %+v", d.Reply)
	}
	if got := b.poll(qr["scene"].(string), 0).json(t); got["status"] != StateExpired {
		t.Fatalf("poll: %v", got)
	}
}

// TestLogsHoldNoSecrets runs logins, bad pushes and logouts with debug
// logging on and checks that no log line carries a secret, a token, a raw
// openid, a ticket or a cookie.
func TestLogsHoldNoSecrets(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	env := newEnv(t, wechattest.Safe, func(c *Config) { c.Logger = zap.New(core); c.FetchUnionID = true })
	b := env.browser()
	loginByScan(t, env, b, "alice", "/", "subscribe")
	b.do(http.MethodPost, "/wechat/logout", nil, map[string]string{"Origin": env.srv.URL})
	_, scene, ticket := pendingScene(t, env)
	env.sendPush(plainPush(scanEvent(env.fake.OpenID(testAppID, "bob"), scene, ticket, false, time.Now()), time.Now().Unix(), "x"))
	env.fake.FailNext("/cgi-bin/qrcode/create", 1, wechattest.Fault{Errcode: 40164})
	env.browser().do(http.MethodPost, "/wechat/qr", nil, map[string]string{"Origin": env.srv.URL})

	secrets := []string{testSecret, testAESKey, testToken, string(testSessionKey),
		env.fake.OpenID(testAppID, "alice"), env.fake.OpenID(testAppID, "bob"), env.fake.UnionID("alice"), ticket, scene}
	if logs.Len() == 0 {
		t.Fatal("nothing was logged; the check would prove nothing")
	}
	for _, e := range logs.All() {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += " " + k + "=" + toString(v)
		}
		for _, s := range secrets {
			if s != "" && strings.Contains(line, s) {
				t.Errorf("log line leaks %q: %s", s[:min(6, len(s))]+"…", line)
			}
		}
	}
}

func toString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// BenchmarkSessionVerify measures checking a session cookie: open the AEAD
// cookie, decode it, and ask the store whether it was revoked.
func BenchmarkSessionVerify(b *testing.B) {
	m, err := New(validConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	value := issueTestSession(b, m, "oAlice0000000000000000000001")
	r := cookieRequest(value)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := m.sessions.Get(r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkProtectedRequest measures a whole authenticated request through
// the middleware to a no-op handler.
func BenchmarkProtectedRequest(b *testing.B) {
	m, err := New(validConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	value := issueTestSession(b, m, "oAlice0000000000000000000001")
	h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	w := &recorder{header: http.Header{}}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		r := cookieRequest(value)
		r.Header.Set(HeaderOpenID, "forged")
		h.ServeHTTP(w, r)
		if r.Header.Get(HeaderOpenID) != "oAlice0000000000000000000001" {
			b.Fatal("identity not set")
		}
	}
}

// TestWeChatFailuresAndRecovery: WeChat errors become a clear 503 for the
// browser (with Retry-After), or a 502 without one when only a change of
// setup cures them (see check_test.go), a metric for the operator, and the
// next request works again once WeChat does.
func TestWeChatFailuresAndRecovery(t *testing.T) {
	metrics := &countingMetrics{}
	env := newEnv(t, wechattest.Safe, func(c *Config) { c.QRRateBurst = 100 }, withMetrics(metrics))
	env.browser().createQR("/")
	if metrics.get("call:cgi-bin/stable_token:ok") != 1 || metrics.get("call:cgi-bin/qrcode/create:ok") != 1 {
		t.Fatalf("calls not observed: %v", metrics.counts)
	}
	for _, tc := range []struct {
		fault   wechattest.Fault
		outcome string
		reason  string
	}{
		{wechattest.Fault{Errcode: -1}, "errcode_-1", "WeChat is unavailable"},
		{wechattest.Fault{Errcode: 45009}, "errcode_45009", "refusing more login codes"},
		{wechattest.Fault{Errcode: 40164}, "errcode_40164", "misconfigured"},
		{wechattest.Fault{HTTPStatus: http.StatusBadGateway}, "http_502", "WeChat is unavailable"},
		{wechattest.Fault{Drop: true}, "transport_error", "WeChat is unavailable"},
	} {
		env.fake.FailNext("/cgi-bin/qrcode/create", 1, tc.fault)
		resp := env.browser().do(http.MethodPost, "/wechat/qr", nil, map[string]string{"Origin": env.srv.URL})
		want := http.StatusServiceUnavailable
		if tc.outcome == "errcode_40164" {
			want = http.StatusBadGateway
		}
		if resp.StatusCode != want || !strings.Contains(string(resp.body), tc.reason) {
			t.Errorf("%s: got %d %s", tc.outcome, resp.StatusCode, resp.body)
		}
		if resp.Header.Get("Retry-After") == "" && tc.outcome != "errcode_40164" {
			t.Errorf("%s: no Retry-After", tc.outcome)
		}
		if metrics.get("call:cgi-bin/qrcode/create:"+tc.outcome) != 1 {
			t.Errorf("%s: not observed: %v", tc.outcome, metrics.counts)
		}
		// WeChat is back: the next login code works.
		env.browser().createQR("/")
	}
	if n := metrics.get("wechat:create QR ticket"); n != 5 {
		t.Fatalf("%d failures reported to the operator, want 5", n)
	}
}

// countingStore adds a shared counter to a store, standing in for Redis's
// INCR in unit tests (the real one is tested in redisstore).
type countingStore struct {
	store.Store
	mu     sync.Mutex
	counts map[string]int64
}

func (c *countingStore) Incr(_ context.Context, key string, _ time.Duration) (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts == nil {
		c.counts = map[string]int64{}
	}
	c.counts[key]++
	return c.counts[key], nil
}

// TestClusterQRRateLimit: with a store that counts across instances, the
// per-minute limit holds for all instances together.
func TestClusterQRRateLimit(t *testing.T) {
	inner, err := bigcachestore.New(bigcachestore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inner.Close() })
	shared := &countingStore{Store: inner}
	opts := func(c *Config) { c.Store = shared; c.QRRateLimit = 4; c.QRRateBurst = 3 }
	a := newEnv(t, wechattest.Safe, opts)
	b := newEnv(t, wechattest.Safe, opts)
	created := 0
	for _, env := range []*testEnv{a, a, b, b, a, b} {
		resp := env.browser().do(http.MethodPost, "/wechat/qr", nil, map[string]string{"Origin": env.srv.URL})
		switch resp.StatusCode {
		case http.StatusOK:
			created++
		case http.StatusTooManyRequests:
			if resp.Header.Get("Retry-After") == "" {
				t.Fatal("429 without Retry-After")
			}
		default:
			t.Fatalf("unexpected %d %s", resp.StatusCode, resp.body)
		}
	}
	if created != 4 {
		t.Fatalf("%d QR codes created across two instances, want the cluster limit of 4", created)
	}
}

// TestConfirmInChat: with the confirmation step, a scan only makes the
// login "scanned", the chat reply names the asking browser and carries a
// code, nobody but the scanner can confirm, an everyday "1" confirms
// nothing, and the scanner's reply of the code completes the login.
func TestConfirmInChat(t *testing.T) {
	env := newEnv(t, wechattest.Safe, func(c *Config) { c.ConfirmInChat = true })
	b := env.browser()
	resp := b.do(http.MethodPost, "/wechat/qr", strings.NewReader("next=%2Fin"), map[string]string{
		"Origin":     env.srv.URL,
		"User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0 Safari/537.36",
	})
	qr := resp.json(t)
	scene := qr["scene"].(string)

	waiting := make(chan map[string]any, 1)
	go func() { waiting <- b.poll(scene, 20).json(t) }()
	env.waitForWaiters(1)
	d, err := env.fake.Scan(context.Background(), testAppID, qr["qr_content"].(string), "alice")
	if err != nil {
		t.Fatal(err)
	}
	code := promptCode(t, d.Reply.Content)
	if !strings.Contains(d.Reply.Content, "reply with the code "+code) || !strings.Contains(d.Reply.Content, "Chrome on Windows, 127.0.0.1") {
		t.Fatalf("confirmation prompt %q", d.Reply.Content)
	}
	select {
	case got := <-waiting:
		if got["status"] != StateScanned {
			t.Fatalf("the waiting poll got %v, want scanned", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting poll did not hear of the scan")
	}
	if got := b.poll(scene, 0).json(t); got["status"] != StateScanned || b.cookie(sessionCookie) != nil {
		t.Fatalf("a scanned login was redeemed before confirmation: %v", got)
	}

	reply := func(user, text string) *wechattest.Delivery {
		t.Helper()
		d, err := env.fake.Push(context.Background(), testAppID, &wechat.Event{
			ToUserName: testGhID, FromUserName: env.fake.OpenID(testAppID, user),
			CreateTime: time.Now().Unix(), MsgType: "text", Content: text, MsgID: time.Now().UnixNano(),
		})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	// Someone else's copy of the code, and the scanner's unrelated
	// messages ("1" included), change nothing.
	if d := reply("bob", code); d.Status != wechattest.StatusAcknowledged {
		t.Fatalf("bob's reply: %+v", d)
	}
	reply("alice", "hello")
	if d := reply("alice", "1"); d.Status != wechattest.StatusAcknowledged {
		t.Fatalf("the scanner's 1: %+v", d)
	}
	if env.sceneState(scene) != StateScanned {
		t.Fatalf("scene became %s without the scanner's confirmation", env.sceneState(scene))
	}
	// The scanner confirms.
	d = reply("alice", " "+code+" ")
	if d.Reply == nil || !strings.Contains(d.Reply.Content, "logged in to Example") {
		t.Fatalf("confirmation reply %+v", d.Reply)
	}
	got := b.poll(scene, 0).json(t)
	if got["status"] != StateConfirmed || got["redirect"] != "/in" {
		t.Fatalf("after confirmation: %v", got)
	}
	if id := b.get("/in", nil).json(t); id["openid"] != env.fake.OpenID(testAppID, "alice") {
		t.Fatalf("upstream saw %v", id)
	}
	// The code is spent: sent again, it is an ordinary message.
	if d := reply("alice", code); d.Status != wechattest.StatusAcknowledged {
		t.Fatalf("the code sent again: %+v", d)
	}
}

// TestOAuthStartRateLimit: one address cannot start OAuth flows without end
// (each start stores a state); the auto-redirect inside WeChat then falls
// back to the login page instead of answering 429.
func TestOAuthStartRateLimit(t *testing.T) {
	env := newEnv(t, wechattest.Safe)
	started := 0
	var last response
	for range oauthStartBurst + 1 {
		last = env.browser().get("/wechat/oauth/start?next=%2F", nil)
		if last.StatusCode == http.StatusFound {
			started++
		}
	}
	if started != oauthStartBurst || last.StatusCode != http.StatusTooManyRequests || last.Header.Get("Retry-After") == "" {
		t.Fatalf("%d starts, last %d (Retry-After %q), want %d then 429", started, last.StatusCode, last.Header.Get("Retry-After"), oauthStartBurst)
	}
	wechatUA := "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148 MicroMessenger/8.0.49"
	resp := env.browser().get("/private", map[string]string{"Accept": "text/html", "User-Agent": wechatUA})
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), "/wechat/login") {
		t.Fatalf("limited WeChat browser: %d → %q, want the login page", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// TestAESKeyRotation: after the site switches to a new EncodingAESKey
// (keeping the old one as previous) while WeChat still pushes under the old
// key, logins work and WeChat can read the encrypted replies.
func TestAESKeyRotation(t *testing.T) {
	env := newEnv(t, wechattest.Safe, func(c *Config) {
		c.EncodingAESKey = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
		c.PreviousEncodingAESKeys = []string{testAESKey} // what the fake still uses
	})
	id := loginByScan(t, env, env.browser(), "alice", "/", "subscribe")
	if id["openid"] != env.fake.OpenID(testAppID, "alice") {
		t.Fatalf("login under the previous key: %v", id)
	}
}
