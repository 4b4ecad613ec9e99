package caddymodule

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/internal/redistest"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// startRedisCaddy starts a Caddy whose wechat_login keeps its state in the
// Redis at redisURL.
func startRedisCaddy(t *testing.T, fake *wechattest.Server, redisURL string) *caddyProc {
	t.Helper()
	return startCaddy(t, siteWithFake(fake.URL, "127.0.0.1:9", "Cluster", "store redis {env.IT_REDIS_URL}"),
		append(itEnv, "IT_REDIS_URL="+redisURL)...)
}

func addFakeApp(t *testing.T, fake *wechattest.Server, callbackBase string) {
	t.Helper()
	if err := fake.AddApp(wechattest.App{
		AppID: itAppID, AppSecret: itSecret, Token: itToken, EncodingAESKey: itAESKey,
		OriginalID: "gh_00000000aaaa", CallbackURL: callbackBase + "/wechat/callback", Mode: wechattest.Safe,
	}); err != nil {
		t.Fatal(err)
	}
}

// TestCaddyTwoInstancesShareRedis: the QR code is created on instance A,
// WeChat's push lands on instance B, and the browser waiting on A hears of it
// within 100 ms of B acknowledging the push, as does a browser whose scan
// B took before its first wait on A. Logging out on B ends the session on
// A.
func TestCaddyTwoInstancesShareRedis(t *testing.T) {
	redis := redistest.Start(t)
	fake := wechattest.NewServer(wechattest.Config{})
	t.Cleanup(fake.Close)
	a := startRedisCaddy(t, fake, redis.URL())
	b := startRedisCaddy(t, fake, redis.URL())
	addFakeApp(t, fake, b.BaseURL) // WeChat pushes to B only

	onA := newClient(t, a.BaseURL)
	l := &caddyLogin{t: t, fake: fake, caddy: a}
	qr := l.createQR(onA)
	scene := qr["scene"].(string)

	type polled struct {
		status map[string]any
		at     time.Time
	}
	done := make(chan polled, 1)
	go func() {
		s := pollStatus(t, onA, scene, 20)
		done <- polled{s, time.Now()}
	}()
	time.Sleep(300 * time.Millisecond) // the long-poll is waiting on A
	d, err := fake.Scan(context.Background(), itAppID, qr["qr_content"].(string), "alice")
	if err != nil || d.Status != wechattest.StatusReplied {
		t.Fatalf("scan pushed to B: %v %+v", err, d)
	}
	acked := time.Now()
	p := <-done
	lag := p.at.Sub(acked)
	t.Logf("browser on A answered %v after B acknowledged the push", lag)
	if lag > 100*time.Millisecond {
		t.Fatalf("A answered %v after B's acknowledgement, want ≤ 100ms", lag)
	}
	if p.status["status"] != "confirmed" {
		t.Fatalf("poll on A: %v", p.status)
	}

	// A scan that B takes between A's answer and the browser's first wait
	// on A (which starts without reading Redis: A has watched the scene
	// since it made it) is answered at once, not after the wait.
	other := newClient(t, a.BaseURL)
	qr2 := l.createQR(other)
	if d, err := fake.Scan(context.Background(), itAppID, qr2["qr_content"].(string), "bob"); err != nil || d.Status != wechattest.StatusReplied {
		t.Fatalf("second scan pushed to B: %v %+v", err, d)
	}
	start := time.Now()
	if s := pollStatus(t, other, qr2["scene"].(string), 20); s["status"] != "confirmed" {
		t.Fatalf("first wait on A after B's scan: %v", s)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("first wait on A after B's scan answered after %v", d)
	}

	// The session works on both instances (the cookie jar sends it to
	// both: cookies do not care about ports).
	openid := fake.OpenID(itAppID, "alice")
	for _, c := range []*caddyProc{a, b} {
		if _, body := newClientWithJar(onA, c.BaseURL).do(http.MethodGet, "/", nil); !strings.Contains(body, "openid="+openid) {
			t.Fatalf("%s: %q", c.BaseURL, body)
		}
	}
	// Logout on B revokes the session on A too, even for a kept copy of
	// the cookie.
	kept := sessionCookieOf(t, onA)
	onB := newClientWithJar(onA, b.BaseURL)
	if resp, _ := onB.do(http.MethodPost, "/wechat/logout", nil, "Origin", b.BaseURL); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout on B: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodGet, a.BaseURL+"/", nil)
	req.Header.Set("Cookie", kept)
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("A accepted a session revoked on B: %d", resp.StatusCode)
	}
}

// TestCaddyRedisOutage: Caddy starts while Redis is down and logins answer
// 503; when Redis comes up they work without a restart; Redis lost
// mid-flight gives 503s (no panics, no pile-up of goroutines) and recovery
// again.
func TestCaddyRedisOutage(t *testing.T) {
	redis := redistest.Start(t)
	redis.Stop()
	fake := wechattest.NewServer(wechattest.Config{})
	t.Cleanup(fake.Close)
	c := startRedisCaddy(t, fake, redis.URL())
	addFakeApp(t, fake, c.BaseURL)
	b := newClient(t, c.BaseURL)

	resp, body := b.do(http.MethodPost, "/wechat/qr", nil, "Origin", c.BaseURL)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "temporarily unavailable") {
		t.Fatalf("login with Redis down at start-up: %d %s", resp.StatusCode, body)
	}
	// Caddy's log reaches us through a pipe, a moment after the response.
	waitFor(t, 5*time.Second, "the operator to be told about the store failure", func() bool {
		return strings.Contains(c.logs.String(), "store failure")
	})

	redis.Restart()
	waitFor(t, 10*time.Second, "logins to work once Redis is up", func() bool {
		resp, _ := newClient(t, c.BaseURL).do(http.MethodPost, "/wechat/qr", nil, "Origin", c.BaseURL)
		return resp.StatusCode == http.StatusOK
	})
	l := &caddyLogin{t: t, fake: fake, caddy: c}
	qr := l.createQR(b)
	if _, err := fake.Scan(context.Background(), itAppID, qr["qr_content"].(string), "bob"); err != nil {
		t.Fatal(err)
	}
	if got := pollStatus(t, b, qr["scene"].(string), 5); got["status"] != "confirmed" {
		t.Fatalf("login after Redis came back: %v", got)
	}

	before := caddyGoroutines(t, c)
	redis.Stop()
	for i := range 30 {
		resp, body := b.do(http.MethodGet, "/", nil, "Accept", "application/json")
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("request %d with Redis lost: %d %s", i, resp.StatusCode, body)
		}
	}
	after := caddyGoroutines(t, c)
	t.Logf("Caddy goroutines: %d before the outage, %d after 30 failed requests", before, after)
	if after > before+10 {
		t.Fatalf("goroutines piled up during the outage: %d → %d", before, after)
	}

	// Back again: the existing session works again (it was never revoked).
	redis.Restart()
	waitFor(t, 10*time.Second, "the session to work once Redis is back", func() bool {
		resp, _ := b.do(http.MethodGet, "/", nil, "Accept", "application/json")
		return resp.StatusCode == http.StatusOK
	})
}

func waitFor(t *testing.T, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// caddyGoroutines reads the goroutine count from Caddy's admin endpoint.
func caddyGoroutines(t *testing.T, c *caddyProc) int {
	t.Helper()
	resp, err := http.Get("http://" + c.admin + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`goroutine profile: total (\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no goroutine count in %.200s", b)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// newClientWithJar is a client for base sharing c's cookies.
func newClientWithJar(c *client, base string) *client {
	return &client{t: c.t, base: base, hc: &http.Client{Jar: c.hc.Jar, Timeout: c.hc.Timeout, CheckRedirect: c.hc.CheckRedirect}}
}

func sessionCookieOf(t *testing.T, c *client) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, c.base, nil)
	for _, ck := range c.hc.Jar.Cookies(req.URL) {
		if ck.Name == "wechat_session" {
			return ck.Name + "=" + ck.Value
		}
	}
	t.Fatal("no session cookie")
	return ""
}
