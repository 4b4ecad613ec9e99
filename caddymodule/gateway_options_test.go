package caddymodule

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/internal/redistest"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// TestCaddyGatewayOptions runs the gateway options through a real Caddy
// with its state in a real Redis: the readiness probe, the user headers and
// the stripped session cookie at a reverse-proxied upstream (and a client's
// forged copies of those headers dropped), a session refreshed while in use,
// a logout link from another site that only asks, the same link from this
// site that logs out (every copy of the refreshed cookie), and the probe
// failing once Redis is gone.
func TestCaddyGatewayOptions(t *testing.T) {
	redis := redistest.Start(t)
	fake := wechattest.NewServer(wechattest.Config{})
	t.Cleanup(fake.Close)
	seen := make(chan http.Header, 20)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		_, _ = w.Write([]byte("upstream ok"))
	}))
	t.Cleanup(upstream.Close)

	site := siteWithFake(fake.URL, strings.TrimPrefix(upstream.URL, "http://"), "Gateway",
		"store redis {env.IT_REDIS_URL}",
		"session_ttl 10s",
		"session_refresh 2s",
		"session_max_age 1m",
		"forward_user_headers",
		"strip_session_cookie",
	)
	c := startCaddy(t, site, append(itEnv, "IT_REDIS_URL="+redis.URL())...)
	addFakeApp(t, fake, c.BaseURL)
	b := newClient(t, c.BaseURL)

	// Ready, with no login, and never cached.
	resp, body := b.do(http.MethodGet, "/wechat/ready", nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Cache-Control") != "no-store" || !strings.Contains(body, `"status":"ready"`) {
		t.Fatalf("/wechat/ready with Redis up: %d %q %s", resp.StatusCode, resp.Header.Get("Cache-Control"), body)
	}

	l := &caddyLogin{t: t, fake: fake, caddy: c}
	original := qrLoginAs(t, l, b, "alice")
	openid := fake.OpenID(itAppID, "alice")

	// The upstream gets the user in the headers apps already read, never
	// a client's forged copy in any spelling, and the site's own cookie
	// without the module's.
	req, _ := http.NewRequest(http.MethodGet, c.BaseURL+"/upstream/page", nil)
	req.Header["X-Forwarded-User"] = []string{"mallory"}
	req.Header["X_Forwarded_User"] = []string{"mallory"}
	req.Header["Remote_User"] = []string{"mallory"}
	req.Header["X-Auth-Request-User"] = []string{"mallory"}
	req.Header.Set("Cookie", "theme=dark")
	resp, err := b.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(resp)
	if resp.StatusCode != http.StatusOK || got != "upstream ok" {
		t.Fatalf("upstream: %d %q", resp.StatusCode, got)
	}
	h := <-seen
	for _, k := range []string{"X-Forwarded-User", "X-Auth-Request-User", "Remote-User"} {
		if v := h.Values(k); len(v) != 1 || v[0] != openid {
			t.Errorf("upstream's %s: %q, want [%s]", k, v, openid)
		}
	}
	for k, v := range h {
		if strings.Contains(strings.Join(v, ","), "mallory") {
			t.Errorf("a forged %s: %q reached the upstream", k, v)
		}
	}
	if v := h.Values("Cookie"); len(v) != 1 || v[0] != "theme=dark" {
		t.Errorf("upstream's Cookie: %q, want the site's cookie alone", v)
	}

	// Used two seconds after it was issued, the session's cookie is issued
	// again, for session_ttl from then.
	var refreshed *http.Cookie
	waitFor(t, 8*time.Second, "the session to be refreshed", func() bool {
		resp, _ := b.do(http.MethodGet, "/upstream/again", nil, "Accept", "application/json")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("protected request with the session: %d", resp.StatusCode)
		}
		<-seen
		for _, ck := range resp.Cookies() {
			if ck.Name == "wechat_session" {
				refreshed = ck
			}
		}
		return refreshed != nil
	})
	if refreshed.MaxAge < 9 || refreshed.MaxAge > 10 || !refreshed.HttpOnly || refreshed.Value == strings.TrimPrefix(original, "wechat_session=") {
		t.Fatalf("refreshed cookie %+v", refreshed)
	}
	resp, body = b.do(http.MethodGet, "/wechat/userinfo", nil)
	var id struct {
		OpenID    string    `json:"openid"`
		LoginAt   time.Time `json:"login_at"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal([]byte(body), &id); err != nil || resp.StatusCode != http.StatusOK || id.OpenID != openid {
		t.Fatalf("userinfo with the refreshed cookie: %d %s", resp.StatusCode, body)
	}
	if life := id.ExpiresAt.Sub(id.LoginAt); life <= 10*time.Second {
		t.Fatalf("the refreshed session lasts %v from its login, want more than session_ttl", life)
	}

	// A logout link followed from another site only asks.
	resp, body = b.do(http.MethodGet, "/wechat/logout?next=%2Fbye", nil,
		"Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "document", "Accept", "text/html")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `<form method="post" action="/wechat/logout">`) ||
		!strings.Contains(resp.Header.Get("Content-Security-Policy"), "form-action 'self'") {
		t.Fatalf("cross-site logout link: %d %q\n%s", resp.StatusCode, resp.Header.Get("Content-Security-Policy"), body)
	}
	if resp, _ := b.do(http.MethodGet, "/upstream/still", nil, "Accept", "application/json"); resp.StatusCode != http.StatusOK {
		t.Fatalf("a cross-site logout link ended the session: %d", resp.StatusCode)
	}
	<-seen

	// The same link on this site logs out, and ends the session for the
	// cookie as it was before the refresh too.
	resp, _ = b.do(http.MethodGet, "/wechat/logout?next=%2Fbye", nil,
		"Sec-Fetch-Site", "same-origin", "Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "document", "Accept", "text/html")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/bye" {
		t.Fatalf("same-origin logout link: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	for _, ck := range []string{original, "wechat_session=" + refreshed.Value} {
		if code := statusWithCookie(t, c.BaseURL, "/upstream/after", ck); code != http.StatusUnauthorized {
			t.Fatalf("a cookie of the logged-out session: %d", code)
		}
	}
	select {
	case h := <-seen:
		t.Fatalf("a logged-out request reached the upstream: %v", h)
	default:
	}

	// Redis gone: not ready, with a short reason, at once.
	redis.Stop()
	start := time.Now()
	resp, body = b.do(http.MethodGet, "/wechat/ready", nil)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "store unavailable") || strings.Contains(body, "127.0.0.1") {
		t.Fatalf("/wechat/ready with Redis down: %d %s", resp.StatusCode, body)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the probe took %v to fail", took)
	}
	redis.Restart()
	waitFor(t, 10*time.Second, "ready again once Redis is back", func() bool {
		resp, _ := b.do(http.MethodGet, "/wechat/ready", nil)
		return resp.StatusCode == http.StatusOK
	})
}
