package caddymodule

import (
	"context"
	"flag"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/internal/redistest"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

var loadTest = flag.Duration("loadtest", 0, "run the login throughput comparison for this long per setup (e.g. 10s)")

// TestLoginThroughput compares complete QR logins per second through one
// Caddy with the embedded store and through two Caddy instances sharing
// Redis (QR created and waited on at A, WeChat's push delivered to B). It
// is a measurement, not a check: run it with -loadtest=10s (make load-logins).
func TestLoginThroughput(t *testing.T) {
	if *loadTest <= 0 {
		t.Skip("measurement; run with -loadtest=10s")
	}
	const workers = 16
	// Every login here comes from one address, and the load is far above
	// the site-wide QR ceiling a real account needs: lift both.
	rate := "qr_rate_limit 100000000 100000000\n\t\tqr_ceiling 100000000"

	run := func(name string, create, callback *caddyProc, fake *wechattest.Server) {
		addFakeApp(t, fake, callback.BaseURL)
		var logins, failures atomic.Int64
		var latMu sync.Mutex
		var lat []time.Duration
		stop := time.Now().Add(*loadTest)
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) {
					start := time.Now()
					if loginOnce(t, create, fake) {
						logins.Add(1)
						latMu.Lock()
						lat = append(lat, time.Since(start))
						latMu.Unlock()
					} else {
						failures.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		p50, p99 := percentile(lat, 50), percentile(lat, 99)
		t.Logf("%-40s %7.1f logins/s  (%d logins, %d failed, %d workers, login p50 %v p99 %v)",
			name, float64(logins.Load())/loadTest.Seconds(), logins.Load(), failures.Load(), workers, p50, p99)
	}

	{
		fake := wechattest.NewServer(wechattest.Config{})
		c := startCaddy(t, siteWithFake(fake.URL, "127.0.0.1:9", "Load", rate), itEnv...)
		run("one instance, embedded store", c, c, fake)
		fake.Close()
		c.stop()
	}
	{
		redis := redistest.Start(t)
		fake := wechattest.NewServer(wechattest.Config{})
		defer fake.Close()
		extra := []string{rate, "store redis {env.IT_REDIS_URL}"}
		env := append(itEnv, "IT_REDIS_URL="+redis.URL())
		a := startCaddy(t, siteWithFake(fake.URL, "127.0.0.1:9", "Load", extra...), env...)
		b := startCaddy(t, siteWithFake(fake.URL, "127.0.0.1:9", "Load", extra...), env...)
		run("two instances, Redis, push on the other", a, b, fake)
	}
}

// loginOnce does one complete QR login in a fresh browser.
func loginOnce(t *testing.T, c *caddyProc, fake *wechattest.Server) bool {
	b := newClient(t, c.BaseURL)
	req, _ := http.NewRequest(http.MethodPost, c.BaseURL+"/wechat/qr", strings.NewReader("next=%2F"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", c.BaseURL)
	resp, err := b.hc.Do(req)
	if err != nil {
		return false
	}
	var qr struct{ Scene, QRContent string }
	body := readAll(resp)
	if resp.StatusCode != http.StatusOK {
		return false
	}
	qr.Scene = jsonField(body, "scene")
	qr.QRContent = jsonField(body, "qr_content")
	done := make(chan bool, 1)
	go func() {
		resp, err := b.hc.Get(c.BaseURL + "/wechat/poll?scene=" + qr.Scene + "&wait=10")
		if err != nil {
			done <- false
			return
		}
		done <- strings.Contains(readAll(resp), `"confirmed"`)
	}()
	if _, err := fake.Scan(context.Background(), itAppID, qr.QRContent, "alice"); err != nil {
		return false
	}
	ok := <-done
	if !ok {
		// The poll may have been answered "pending" just before the scan
		// landed: ask once more, as the page would.
		resp, err := b.hc.Get(c.BaseURL + "/wechat/poll?scene=" + qr.Scene)
		ok = err == nil && strings.Contains(readAll(resp), `"confirmed"`)
	}
	return ok
}

func readAll(resp *http.Response) string {
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func jsonField(body, name string) string {
	i := strings.Index(body, `"`+name+`":"`)
	if i < 0 {
		return ""
	}
	rest := body[i+len(name)+4:]
	return rest[:strings.IndexByte(rest, '"')]
}

func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}
