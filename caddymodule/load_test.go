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
		var lat, scan []time.Duration
		stop := time.Now().Add(*loadTest)
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) {
					start := time.Now()
					if ok, toBrowser := timedLogin(t, create, fake); ok {
						logins.Add(1)
						latMu.Lock()
						lat = append(lat, time.Since(start))
						scan = append(scan, toBrowser)
						latMu.Unlock()
					} else {
						failures.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		p50, p99 := percentile(lat, 50), percentile(lat, 99)
		t.Logf("%-40s %7.1f logins/s  (%d logins, %d failed, %d workers, login p50 %v p99 %v, scan-to-browser p50 %v p99 %v)",
			name, float64(logins.Load())/loadTest.Seconds(), logins.Load(), failures.Load(), workers, p50, p99,
			percentile(scan, 50), percentile(scan, 99))
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

		// Round trips to Redis per login, counted by a relay in front of
		// it (a separate run: the relay adds a hop to every trip), and the
		// commands Redis ran.
		relay := startTripCounter(t, redis.Addr())
		renv := append(itEnv, "IT_REDIS_URL=redis://"+relay.addr())
		ra := startCaddy(t, siteWithFake(fake.URL, "127.0.0.1:9", "Load", extra...), renv...)
		rb := startCaddy(t, siteWithFake(fake.URL, "127.0.0.1:9", "Load", extra...), renv...)
		addFakeApp(t, fake, rb.BaseURL)
		for range workers { // warm-up: connections, script cache, subscriptions
			loginOnce(t, ra, fake)
		}
		rc := persistRedisClient(t, redis)
		ctx := context.Background()
		before, err := commandCalls(ctx, rc)
		if err != nil {
			t.Fatal(err)
		}
		trips := relay.trips.Load()
		const counted = 400
		var done, ok atomic.Int64
		deadline := time.Now().Add(2 * time.Minute)
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for done.Add(1) <= counted && time.Now().Before(deadline) {
					if loginOnce(t, ra, fake) {
						ok.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		trips = relay.trips.Load() - trips
		after, err := commandCalls(ctx, rc)
		if err != nil {
			t.Fatal(err)
		}
		if ok.Load() == 0 {
			t.Fatal("no login completed through the relay")
		}
		t.Logf("ROUNDTRIPS logins=%d trips=%d per-login=%.2f", ok.Load(), trips, float64(trips)/float64(ok.Load()))
		t.Logf("COMMANDS per login: %s", callsPerLogin(before, after, ok.Load()))
	}
}

// loginOnce does one complete QR login in a fresh browser.
func loginOnce(t *testing.T, c *caddyProc, fake *wechattest.Server) bool {
	ok, _ := timedLogin(t, c, fake)
	return ok
}

// timedLogin is loginOnce that also returns the time from WeChat's push
// being acknowledged (the fake's Scan returns) to the waiting poll's
// answer; zero when the browser was answered first, as it may be: the
// push wakes it before its own answer is written.
func timedLogin(t *testing.T, c *caddyProc, fake *wechattest.Server) (bool, time.Duration) {
	b := newClient(t, c.BaseURL)
	req, _ := http.NewRequest(http.MethodPost, c.BaseURL+"/wechat/qr", strings.NewReader("next=%2F"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", c.BaseURL)
	resp, err := b.hc.Do(req)
	if err != nil {
		return false, 0
	}
	var qr struct{ Scene, QRContent string }
	body := readAll(resp)
	if resp.StatusCode != http.StatusOK {
		return false, 0
	}
	qr.Scene = jsonField(body, "scene")
	qr.QRContent = jsonField(body, "qr_content")
	type answer struct {
		ok bool
		at time.Time
	}
	done := make(chan answer, 1)
	go func() {
		resp, err := b.hc.Get(c.BaseURL + "/wechat/poll?scene=" + qr.Scene + "&wait=10")
		if err != nil {
			done <- answer{}
			return
		}
		ok := strings.Contains(readAll(resp), `"confirmed"`)
		done <- answer{ok, time.Now()}
	}()
	if _, err := fake.Scan(context.Background(), itAppID, qr.QRContent, "alice"); err != nil {
		return false, 0
	}
	acked := time.Now()
	a := <-done
	ok, lat := a.ok, max(a.at.Sub(acked), 0)
	if !ok {
		// The poll may have been answered "pending" just before the scan
		// landed: ask once more, as the page would.
		resp, err := b.hc.Get(c.BaseURL + "/wechat/poll?scene=" + qr.Scene)
		ok = err == nil && strings.Contains(readAll(resp), `"confirmed"`)
		lat = max(time.Since(acked), 0)
	}
	return ok, lat
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
