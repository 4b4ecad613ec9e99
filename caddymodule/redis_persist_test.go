package caddymodule

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/wechat-login/caddy-wechat-login/internal/redistest"
	"github.com/wechat-login/caddy-wechat-login/middleware/redisstore"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// TestRevocationSurvivesRedisRestart: a logout is a write to Redis (the
// session's revocation marker). If Redis crashes and comes back without it,
// a copy of the logged-out cookie works again. With the append-only file
// on, the marker survives a SIGKILL of Redis; while Redis is down, the copy
// is refused with 503, never let through.
//
// The test uses appendfsync always: Redis writes and fsyncs the marker
// before it answers the logout, so even SIGKILL the moment the logout
// returned loses nothing, which makes the kill below the harshest case.
// Production deployments of `store redis` need the same guarantee for
// logouts to be final: appendonly yes with appendfsync always. With
// everysec (Redis's default when AOF is on) a crash can drop up to about a
// second of acknowledged writes, so a logout in that last second is undone
// and a kept cookie works again until it expires; RDB snapshots alone
// (save) lose minutes, and no persistence loses every logout.
func TestRevocationSurvivesRedisRestart(t *testing.T) {
	redis := redistest.Start(t, redistest.WithAppendOnly("always"))
	fake := wechattest.NewServer(wechattest.Config{})
	t.Cleanup(fake.Close)
	c := startRedisCaddy(t, fake, redis.URL())
	addFakeApp(t, fake, c.BaseURL)

	// Log in through the QR flow and keep a copy of the session cookie.
	b := persistLogin(t, fake, c, "alice")
	kept := sessionCookieOf(t, b)
	if code, body := persistGet(t, c, kept, "application/json"); code != http.StatusOK ||
		!strings.Contains(body, "openid="+fake.OpenID(itAppID, "alice")) {
		t.Fatalf("session before logout: %d %q", code, body)
	}

	resp, _ := b.do(http.MethodPost, "/wechat/logout", nil, "Origin", c.BaseURL)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	if code, body := persistGet(t, c, kept, "application/json"); code != http.StatusUnauthorized {
		t.Fatalf("kept cookie right after logout: %d %q", code, body)
	}
	// The revocation is in Redis, with a time to live.
	rc := persistRedisClient(t, redis)
	revoked := persistRevocations(t, rc)
	if len(revoked) != 1 {
		t.Fatalf("revocation markers in Redis after logout: %v", revoked)
	}

	// Crash Redis right after the logout was answered.
	redis.Stop()
	if _, err := os.Stat(filepath.Join(redis.Dir(), "appendonlydir")); err != nil {
		t.Fatalf("no append-only file after the logout: %v", err)
	}
	// Fail closed while Redis is down: revocation cannot be checked, so
	// the request is refused with 503, for API clients and browsers alike.
	for i := range 5 {
		for _, accept := range []string{"application/json", "text/html"} {
			req := persistRequest(t, c, kept, accept)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("request %d (%s) with the kept cookie while Redis is down: %d %q, want 503",
					i, accept, resp.StatusCode, body)
			}
			if resp.Header.Get("Retry-After") == "" {
				t.Errorf("503 without Retry-After: %v", resp.Header)
			}
			var e struct{ Error string }
			if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
				t.Errorf("503 body is not a JSON error: %q", body)
			}
		}
	}

	redis.Restart()
	if got := persistRevocations(t, rc); len(got) != 1 || got[0] != revoked[0] {
		t.Fatalf("revocation markers after the restart: %v, want %v", got, revoked)
	}
	if ttl, err := rc.PTTL(context.Background(), revoked[0]).Result(); err != nil || ttl <= 0 {
		t.Fatalf("revocation marker lost its time to live: %v %v", ttl, err)
	}
	// Caddy's pooled connections died with Redis; the first requests may
	// still answer 503 until the client has reconnected, but the kept
	// cookie must never be let through.
	var code int
	waitFor(t, 10*time.Second, "Caddy to reach Redis again", func() bool {
		var body string
		code, body = persistGet(t, c, kept, "application/json")
		if code == http.StatusOK {
			t.Fatalf("the logged-out cookie works again after the Redis restart: %q", body)
		}
		return code != http.StatusServiceUnavailable
	})
	if code != http.StatusUnauthorized {
		t.Fatalf("kept cookie after the Redis restart: %d, want 401", code)
	}
	req := persistRequest(t, c, kept, "text/html")
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), "/wechat/login") {
		t.Fatalf("browser with the kept cookie after the restart: %d %q, want a redirect to the login page",
			resp.StatusCode, resp.Header.Get("Location"))
	}

	// A fresh login works against the restarted Redis.
	b2 := persistLogin(t, fake, c, "bob")
	if _, body := b2.do(http.MethodGet, "/", nil, "Accept", "application/json"); !strings.Contains(body, "openid="+fake.OpenID(itAppID, "bob")) {
		t.Fatalf("fresh login after the restart: %q", body)
	}
}

// persistLogin logs user in through a QR code created on c and returns the
// browser holding the session.
func persistLogin(t *testing.T, fake *wechattest.Server, c *caddyProc, user string) *client {
	t.Helper()
	b := newClient(t, c.BaseURL)
	b.hc.Timeout = 10 * time.Second
	qr := (&caddyLogin{t: t, fake: fake, caddy: c}).createQR(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := fake.Scan(ctx, itAppID, qr["qr_content"].(string), user)
	if err != nil || d.Status != wechattest.StatusReplied {
		t.Fatalf("scan as %s: %v %+v", user, err, d)
	}
	if got := pollStatus(t, b, qr["scene"].(string), 5); got["status"] != "confirmed" {
		t.Fatalf("poll after the scan as %s: %v", user, got)
	}
	return b
}

// persistRequest is a GET of the protected root carrying only cookie.
func persistRequest(t *testing.T, c *caddyProc, cookie, accept string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, c.BaseURL+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Cookie", cookie)
	req.Header.Set("Accept", accept)
	return req
}

func persistGet(t *testing.T, c *caddyProc, cookie, accept string) (int, string) {
	t.Helper()
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Do(persistRequest(t, c, cookie, accept))
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, readAll(resp)
}

// persistRedisClient is a client of the test's own, to look at the keys.
func persistRedisClient(t *testing.T, s *redistest.Server) *goredis.Client {
	t.Helper()
	rc, err := redisstore.NewClient(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rc.Close() })
	return rc
}

// persistRevocations lists the revocation markers in Redis, retrying
// briefly while a restarted server is still loading.
func persistRevocations(t *testing.T, rc *goredis.Client) []string {
	t.Helper()
	var keys []string
	var err error
	for range 20 {
		keys, err = rc.Keys(context.Background(), redisstore.DefaultPrefix+"revoked:*").Result()
		if err == nil {
			return keys
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("list revocation markers: %v", err)
	return nil
}
