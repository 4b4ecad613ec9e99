package middleware

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/wechat-login/caddy-wechat-login/internal/redirect"
	"github.com/wechat-login/caddy-wechat-login/middleware/bigcachestore"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// loginAs logs b in through the QR flow as a fake WeChat user and returns
// the session cookie's name and value.
func (e *testEnv) loginAs(b *browser, user string) (string, string) {
	e.t.Helper()
	qr := b.createQR("/")
	if _, err := e.fake.Scan(context.Background(), testAppID, qr["qr_content"].(string), user); err != nil {
		e.t.Fatalf("scan: %v", err)
	}
	if got := b.poll(qr["scene"].(string), 5).json(e.t); got["status"] != StateConfirmed {
		e.t.Fatalf("login: %v", got)
	}
	c := b.cookie(sessionCookie)
	if c == nil {
		e.t.Fatal("no session cookie")
	}
	return c.Name, c.Value
}

func statusOf(t *testing.T, base, name, value string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/", nil)
	req.AddCookie(&http.Cookie{Name: name, Value: value})
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestLogoutHoldsUnderFlood fills a deliberately small embedded store with
// anonymous OAuth starts from thousands of addresses, each storing the
// longest return address allowed. The store evicts, and the logged-out
// cookie still opens nothing: revocations are not kept where entries can be
// evicted.
func TestLogoutHoldsUnderFlood(t *testing.T) {
	small, err := bigcachestore.New(bigcachestore.Config{MaxEntries: 200})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = small.Close() })
	env := newEnv(t, wechattest.Safe, func(c *Config) {
		c.Store = small
		c.ClientIP = func(r *http.Request) string { return r.Header.Get("X-Test-Client") }
	})
	b := env.browser()
	name, value := env.loginAs(b, "alice")
	if out := b.do(http.MethodPost, "/wechat/logout", nil, map[string]string{"Origin": env.srv.URL}); out.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d", out.StatusCode)
	}
	if got := statusOf(t, env.srv.URL, name, value); got != http.StatusUnauthorized {
		t.Fatalf("after logout: %d", got)
	}

	next := "/" + strings.Repeat("a", redirect.MaxNext-1)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			for i := range 500 {
				req, _ := http.NewRequest(http.MethodGet, env.srv.URL+"/wechat/oauth/start?next="+next, nil)
				req.Header.Set("X-Test-Client", fmt.Sprintf("198.51.%d.%d", w, i%250))
				req.Header.Set("User-Agent", "Mozilla/5.0 MicroMessenger/8.0")
				resp, err := hc.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	if small.Stats().Evictions == 0 {
		t.Fatal("the flood evicted nothing; the test proves nothing")
	}
	if got := statusOf(t, env.srv.URL, name, value); got != http.StatusUnauthorized {
		t.Fatalf("logged-out cookie after %d evictions: %d, want 401", small.Stats().Evictions, got)
	}

	// A return address longer than a login may store is refused with a
	// reason, and stores nothing.
	long := b.do(http.MethodPost, "/wechat/qr", strings.NewReader("next=/"+strings.Repeat("b", redirect.MaxNext)),
		map[string]string{"Origin": env.srv.URL})
	if long.StatusCode != http.StatusBadRequest || !strings.Contains(string(long.body), "1024") {
		t.Fatalf("over-long next: %d %s", long.StatusCode, long.body)
	}
}

// TestRevocationFileSurvivesRestart: with the embedded store and a
// RevocationFile, a new middleware (a restarted process) still refuses the
// logged-out cookie and keeps everyone else logged in.
func TestRevocationFileSurvivesRestart(t *testing.T) {
	file := filepath.Join(t.TempDir(), "revocations")
	env := newEnv(t, wechattest.Safe, func(c *Config) { c.RevocationFile = file })
	alice, bob := env.browser(), env.browser()
	an, av := env.loginAs(alice, "alice")
	bn, bv := env.loginAs(bob, "bob")
	if out := alice.do(http.MethodPost, "/wechat/logout", nil, map[string]string{"Origin": env.srv.URL}); out.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d", out.StatusCode)
	}
	_ = env.mw.Close()

	restarted, err := New(env.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = restarted.Close() })
	env.srv.Config.Handler = restarted.Handler(http.HandlerFunc(echoIdentity))
	if got := statusOf(t, env.srv.URL, an, av); got != http.StatusUnauthorized {
		t.Errorf("logged-out cookie after restart: %d", got)
	}
	if got := statusOf(t, env.srv.URL, bn, bv); got != http.StatusOK {
		t.Errorf("other session after restart: %d", got)
	}
}
