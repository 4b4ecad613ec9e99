package caddymodule

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// qrLoginAs logs browser b in through the QR flow as the fake WeChat user
// and returns the session cookie ("name=value").
func qrLoginAs(t *testing.T, l *caddyLogin, b *client, user string) string {
	t.Helper()
	qr := l.createQR(b)
	if _, err := l.fake.Scan(context.Background(), itAppID, qr["qr_content"].(string), user); err != nil {
		t.Fatalf("scan as %s: %v", user, err)
	}
	if got := pollStatus(t, b, qr["scene"].(string), 5); got["status"] != "confirmed" {
		t.Fatalf("login as %s: %v", user, got)
	}
	return sessionCookieOf(t, b)
}

// statusWithCookie requests path on base with only the given cookie, as an
// API client would.
func statusWithCookie(t *testing.T, base, path, cookie string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+path, nil)
	req.Header.Set("Cookie", cookie)
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestCaddyLogoutSurvivesRestart: with the embedded store, a logout holds
// across a restart of Caddy, and the restart logs nobody else out.
func TestCaddyLogoutSurvivesRestart(t *testing.T) {
	l := startCaddyLogin(t)
	alice, bob := newClient(t, l.caddy.BaseURL), newClient(t, l.caddy.BaseURL)
	aliceCookie := qrLoginAs(t, l, alice, "alice")
	bobCookie := qrLoginAs(t, l, bob, "bob")
	if resp, _ := alice.do(http.MethodPost, "/wechat/logout", nil, "Origin", l.caddy.BaseURL); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	if got := statusWithCookie(t, l.caddy.BaseURL, "/", aliceCookie); got != http.StatusUnauthorized {
		t.Fatalf("logged-out cookie before the restart: %d", got)
	}

	l.caddy.restart()

	if got := statusWithCookie(t, l.caddy.BaseURL, "/", aliceCookie); got != http.StatusUnauthorized {
		t.Errorf("logged-out cookie after the restart: %d, want 401", got)
	}
	if got := statusWithCookie(t, l.caddy.BaseURL, "/", bobCookie); got != http.StatusOK {
		t.Errorf("another user's session after the restart: %d, want 200", got)
	}
}

// TestCaddySessionBoundToApp: two sites of different apps that share a
// session key (and, on one host, the browser's cookies) do not accept each
// other's sessions.
func TestCaddySessionBoundToApp(t *testing.T) {
	l := startCaddyLogin(t)
	other := startCaddy(t, strings.Replace(siteWithFake(l.fake.URL, "127.0.0.1:9", "Other"), "app_id "+itAppID, "app_id wx00000000000000bb", 1), itEnv...)
	b := newClient(t, l.caddy.BaseURL)
	cookie := qrLoginAs(t, l, b, "alice")
	if got := statusWithCookie(t, l.caddy.BaseURL, "/", cookie); got != http.StatusOK {
		t.Fatalf("own site: %d", got)
	}
	if got := statusWithCookie(t, other.BaseURL, "/", cookie); got != http.StatusUnauthorized {
		t.Fatalf("site of another app accepted the session: %d", got)
	}
}

// clientFrom is an HTTP client whose connections come from the loopback
// address src.
func clientFrom(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	jar, _ := cookiejar.New(nil)
	return &http.Client{
		Jar:           jar,
		Timeout:       10 * time.Second,
		Transport:     &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// TestCaddyTrustedProxyHTTPS: behind a TLS-terminating proxy listed in
// trusted_proxies, X-Forwarded-Proto: https gives __Host- Secure cookies
// and https redirect_uris; from any other peer the header changes nothing.
func TestCaddyTrustedProxyHTTPS(t *testing.T) {
	fake := wechattest.NewServer(wechattest.Config{})
	t.Cleanup(fake.Close)
	c := startCaddyGlobals(t, "\tservers {\n\t\ttrusted_proxies static 127.0.0.2/32\n\t}",
		siteWithFake(fake.URL, "127.0.0.1:9", "Proxied"), itEnv...)
	addFakeApp(t, fake, c.BaseURL)

	for _, tc := range []struct {
		src     string
		trusted bool
	}{{"127.0.0.2", true}, {"127.0.0.3", false}, {"127.0.0.1", false}} {
		hc := clientFrom(tc.src)
		req, _ := http.NewRequest(http.MethodPost, c.BaseURL+"/wechat/qr", strings.NewReader("next=%2F"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", c.BaseURL)
		req.Header.Set("X-Forwarded-Proto", "https")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		set := resp.Header.Get("Set-Cookie")
		secure := strings.HasPrefix(set, "__Host-wechat_scene=") && strings.Contains(set, "; Secure")
		if resp.StatusCode != http.StatusOK || secure != tc.trusted || !tc.trusted && !strings.HasPrefix(set, "wechat_scene=") {
			t.Errorf("from %s: %d Set-Cookie %q, want secure=%v", tc.src, resp.StatusCode, set, tc.trusted)
		}

		req, _ = http.NewRequest(http.MethodGet, c.BaseURL+"/wechat/oauth/start?next=%2F", nil)
		req.Header.Set("X-Forwarded-Proto", "https")
		req.Header.Set("User-Agent", "Mozilla/5.0 (iPhone) MicroMessenger/8.0.50")
		resp, err = hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, _ := url.Parse(resp.Header.Get("Location"))
		ru := loc.Query().Get("redirect_uri")
		if resp.StatusCode != http.StatusFound || strings.HasPrefix(ru, "https://") != tc.trusted {
			t.Errorf("from %s: OAuth start %d, redirect_uri %q, want https=%v", tc.src, resp.StatusCode, ru, tc.trusted)
		}
	}
}

// TestCaddyQRLimitsHoldAcrossAddresses: clients behind a trusted proxy
// that rotate through the addresses of one IPv6 /64 share one bucket, and
// no number of distinct IPv4 addresses gets past the site's QR ceiling.
func TestCaddyQRLimitsHoldAcrossAddresses(t *testing.T) {
	fake := wechattest.NewServer(wechattest.Config{})
	t.Cleanup(fake.Close)
	c := startCaddyGlobals(t, "\tservers {\n\t\ttrusted_proxies static 127.0.0.1/32\n\t}",
		siteWithFake(fake.URL, "127.0.0.1:9", "Limited", "qr_ceiling 12"), itEnv...)
	addFakeApp(t, fake, c.BaseURL)

	create := func(hc *http.Client, xff string) int {
		req, _ := http.NewRequest(http.MethodPost, c.BaseURL+"/wechat/qr", strings.NewReader("next=%2F"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", c.BaseURL)
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// Buckets refill while the test runs (10 codes a minute per client,
	// 12 for the site), so allow what refilled since each phase began.
	refilled := func(start time.Time, perMinute float64) int {
		return int(time.Since(start).Minutes()*perMinute) + 1
	}
	start := time.Now()
	created := 0
	for i := range 200 {
		// A fresh client each time: no binding cookie, so every request
		// would create a new code.
		if create(clientFrom("127.0.0.1"), fmt.Sprintf("2001:db8:1:2::%x", i+1)) == http.StatusOK {
			created++
		}
	}
	if created < 5 || created > 5+refilled(start, 10) {
		t.Errorf("200 addresses of one /64 created %d codes, want the burst of 5", created)
	}

	start = time.Now()
	statuses := map[int]int{}
	for i := range 60 {
		statuses[create(clientFrom(fmt.Sprintf("127.0.1.%d", i+1)), "")]++
	}
	// The ceiling's 12 minus what the first phase spent.
	want := 12 - created
	if ok := statuses[http.StatusOK]; ok < want || ok > want+refilled(start, 12) || ok+statuses[http.StatusServiceUnavailable] != 60 {
		t.Errorf("60 distinct addresses: %v, want %d created and the rest refused by the ceiling", statuses, want)
	}
	if n := fake.Calls("/cgi-bin/qrcode/create"); n != created+statuses[http.StatusOK] {
		t.Errorf("%d qrcode/create calls reached WeChat for %d codes", n, created+statuses[http.StatusOK])
	}
}

// TestCaddyWaitersBounded: one login code holds at most four waiting
// browsers (tabs), and the instance at most max_waiting.
func TestCaddyWaitersBounded(t *testing.T) {
	l := startCaddyLogin(t)
	l.caddy.reload(siteWithFake(l.fake.URL, "127.0.0.1:9", "Caddy Site", "max_waiting 6"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var open []*http.Response
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range open {
			r.Body.Close()
		}
	})
	stream := func(b *client, eventsURL string) int {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, l.caddy.BaseURL+eventsURL, nil)
		resp, err := b.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusOK {
			// Wait for the first event: the stream is established.
			if _, err := bufio.NewReader(resp.Body).ReadString('}'); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			open = append(open, resp)
			mu.Unlock()
		} else {
			resp.Body.Close()
		}
		return resp.StatusCode
	}
	a := newClient(t, l.caddy.BaseURL)
	qa := l.createQR(a)
	var got []int
	for range 6 {
		got = append(got, stream(a, qa["events_url"].(string)))
	}
	if fmt.Sprint(got) != "[200 200 200 200 429 429]" {
		t.Fatalf("six streams for one code: %v, want four then 429", got)
	}
	b := newClient(t, l.caddy.BaseURL)
	qb := l.createQR(b)
	got = nil
	for range 3 {
		got = append(got, stream(b, qb["events_url"].(string)))
	}
	if fmt.Sprint(got) != "[200 200 429]" {
		t.Fatalf("another code with 4 of 6 slots in use: %v, want two then 429", got)
	}
	if resp, body := b.do(http.MethodGet, qb["poll_url"].(string)+"&wait=5", nil); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("long-poll beyond the instance ceiling: %d %s", resp.StatusCode, body)
	}
	// A poll that does not wait holds nothing and is always answered.
	if got := pollStatus(t, b, qb["scene"].(string), 0); got["status"] != "pending" {
		t.Fatalf("plain poll: %v", got)
	}
	resp, err := http.Get("http://" + l.caddy.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m := readAll(resp)
	for _, want := range []string{`caddy_wechat_login_limited_total{limit="waiters_scene"} 2`, `caddy_wechat_login_limited_total{limit="waiters_instance"} 2`, "caddy_wechat_login_waiting_browsers 6"} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
