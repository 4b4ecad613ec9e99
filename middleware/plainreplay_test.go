package middleware

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
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

// postRaw posts body to a full callback URL, as an attacker replaying a
// logged push URL would.
func postRaw(t *testing.T, target string, body []byte) response {
	t.Helper()
	resp, err := http.Post(target, "text/xml", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return response{resp, data}
}

// TestPlaintextPushURLReuseRefused: in plaintext mode the URL signature does
// not cover the body. An attacker who saw the URL of the victim's real scan
// push (in a log) posts, under it, a forged scan of the attacker's own login
// code in the victim's name: refused, every time, with nothing changed.
func TestPlaintextPushURLReuseRefused(t *testing.T) {
	metrics := &countingMetrics{}
	env := newEnv(t, wechattest.Plaintext, withMetrics(metrics))
	victim := env.fake.OpenID(testAppID, "alice")

	// The victim logs in; the push URL ends up in somebody's log.
	_, _, reply := scanned(t, env, "alice")
	if !strings.Contains(reply, "logged in to Example") {
		t.Fatalf("victim's scan: %q", reply)
	}
	logged := env.fake.Deliveries()
	leaked := logged[len(logged)-1]

	attacker, scene, ticket := pendingScene(t, env)
	forged := wechat.MarshalEvent(scanEvent(victim, scene, ticket, false, time.Now()))
	for i := range 2 {
		resp := postRaw(t, leaked.URL, forged)
		if resp.StatusCode != http.StatusForbidden || len(resp.body) > 100 {
			t.Fatalf("forged body %d under a used URL: %d %q, want a short 403", i+1, resp.StatusCode, resp.body)
		}
	}
	if s := env.sceneState(scene); s != StatePending {
		t.Fatalf("the attacker's login code became %s", s)
	}
	if got := attacker.poll(scene, 0).json(t); got["status"] != StatePending || attacker.cookie(sessionCookie) != nil {
		t.Fatalf("attacker's poll %v", got)
	}
	assertNoLogin(t, attacker)
	if n := metrics.get("reject:replay"); n != 2 {
		t.Fatalf("reject:replay counted %d times, want 2", n)
	}

	// A chat message forged under the URL is refused too (it could be a
	// confirmation or "not me" code).
	msg := wechat.MarshalEvent(&wechat.Event{ToUserName: testGhID, FromUserName: victim, CreateTime: time.Now().Unix(), MsgType: "text", Content: "123456", MsgID: 9})
	if resp := postRaw(t, leaked.URL, msg); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("forged message under a used URL: %d %q", resp.StatusCode, resp.body)
	}
}

// TestPlaintextPushRetrySameAnswer: WeChat's byte-identical retry of a
// plaintext push (same URL, same body) is accepted and answered as the
// first delivery was, with one transition only.
func TestPlaintextPushRetrySameAnswer(t *testing.T) {
	metrics := &countingMetrics{}
	env := newEnv(t, wechattest.Plaintext, withMetrics(metrics))
	b, scene, reply := scanned(t, env, "alice")
	logged := env.fake.Deliveries()
	first := logged[len(logged)-1]

	content := func(resp response) string {
		t.Helper()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("retry: %d %q", resp.StatusCode, resp.body)
		}
		ev, err := wechat.ParseEvent(resp.body)
		if err != nil {
			t.Fatalf("retry answer %q: %v", resp.body, err)
		}
		return ev.Content
	}
	if got := content(postRaw(t, first.URL, first.Body)); got != reply {
		t.Fatalf("retry answered %q, first delivery %q", got, reply)
	}
	if got := b.poll(scene, 0).json(t); got["status"] != StateConfirmed {
		t.Fatalf("poll: %v", got)
	}
	// After the browser redeemed the login, still the same answer.
	if got := content(postRaw(t, first.URL, first.Body)); got != reply {
		t.Fatalf("late retry answered %q, first delivery %q", got, reply)
	}
	if n := metrics.get("scan:confirmed"); n != 1 {
		t.Fatalf("%d transitions, want 1", n)
	}
	if n := metrics.get("reject:replay"); n != 0 {
		t.Fatalf("a retry was counted as a replay")
	}

	// The same holds for a chat message: the retried "not me" is answered
	// the same, and ends the login once.
	env.say("alice", notMeCode(t, reply))
	logged = env.fake.Deliveries()
	notMe := logged[len(logged)-1]
	if got := content(postRaw(t, notMe.URL, notMe.Body)); got != replyText(&notMe) {
		t.Fatalf("retried not me answered %q, first %q", got, replyText(&notMe))
	}
	assertNoLogin(t, b)
}

// failingURLStore fails every write of a plaintext push URL record.
type failingURLStore struct{ store.Store }

func (s failingURLStore) Create(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if strings.HasPrefix(key, "pushurl:") {
		return errors.New("store down")
	}
	return s.Store.Create(ctx, key, value, ttl)
}

// TestPlaintextPushURLStoreFailure: when the URL cannot be recorded, the push
// is answered 503 (so WeChat retries) and changes nothing.
func TestPlaintextPushURLStoreFailure(t *testing.T) {
	inner, err := bigcachestore.New(bigcachestore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inner.Close() })
	env := newEnv(t, wechattest.Plaintext, func(c *Config) { c.Store = failingURLStore{inner} })
	_, scene, ticket := pendingScene(t, env)
	now := time.Now()
	resp := env.sendPush(plainPush(scanEvent(env.fake.OpenID(testAppID, "alice"), scene, ticket, false, now), now.Unix(), "f1"))
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("got %d %q, want 503", resp.StatusCode, resp.body)
	}
	if s := env.sceneState(scene); s != StatePending {
		t.Fatalf("scene became %s", s)
	}
}

// TestPlaintextPushesWarnAtStart: accepting plaintext pushes is said loudly
// at start; safe mode says nothing.
func TestPlaintextPushesWarnAtStart(t *testing.T) {
	for name, tc := range map[string]struct {
		aesKey     string
		allowPlain bool
		warn       bool
	}{
		"no EncodingAESKey":    {"", false, true},
		"AllowPlaintextPushes": {testAESKey, true, true},
		"safe mode":            {testAESKey, false, false},
	} {
		t.Run(name, func(t *testing.T) {
			core, logs := observer.New(zapcore.WarnLevel)
			m, err := New(Config{
				AppID: testAppID, AppSecret: testSecret, PushToken: testToken, SessionKeys: [][]byte{testSessionKey},
				EncodingAESKey: tc.aesKey, AllowPlaintextPushes: tc.allowPlain, Logger: zap.New(core),
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = m.Close() })
			warned := false
			for _, e := range logs.All() {
				if strings.Contains(e.Message, "plaintext") && strings.Contains(e.Message, "test accounts") && strings.Contains(e.Message, "production") {
					warned = true
				}
			}
			if warned != tc.warn {
				t.Fatalf("warned %v, want %v: %v", warned, tc.warn, logs.All())
			}
		})
	}
}
