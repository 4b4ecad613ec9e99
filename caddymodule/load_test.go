package caddymodule

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/wechat-login/caddy-wechat-login/internal/redistest"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

var (
	loadTest    = flag.Duration("loadtest", 0, "run the login throughput comparison for this long per setup (e.g. 10s)")
	loadProfile = flag.String("loadprofile", "", "with -loadtest, write a CPU profile of each Caddy in each setup to this directory")
)

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

	run := func(name string, create, callback *caddyProc, fake *wechattest.Server, rc *goredis.Client) {
		addFakeApp(t, fake, callback.BaseURL)
		cpu := newCPUMeter(t, create, callback, rc)
		profiled := profileCaddies(t, name, *loadTest, create, callback)
		defer profiled()
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
		t.Logf("%-40s CPU per login: %s", name, cpu.perLogin(logins.Load()))
	}

	{
		fake := wechattest.NewServer(wechattest.Config{})
		c := startCaddy(t, siteWithFake(fake.URL, "127.0.0.1:9", "Load", rate), itEnv...)
		run("one instance, embedded store", c, c, fake, nil)
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
		run("two instances, Redis, push on the other", a, b, fake, persistRedisClient(t, redis))

		// Round trips to Redis per login, counted by a relay in front of
		// it (a separate run: the relay adds a hop to every trip), and the
		// commands Redis ran.
		relay := startTripCounter(t, redis.Addr())
		renv := append(itEnv, "IT_REDIS_URL=redis://"+relay.addr())
		ra := startCaddy(t, siteWithFake(fake.URL, "127.0.0.1:9", "Load", extra...), renv...)
		rb := startCaddy(t, siteWithFake(fake.URL, "127.0.0.1:9", "Load", extra...), renv...)
		addFakeApp(t, fake, rb.BaseURL)
		// Warm-up: as many logins at once as the counted run makes, twice,
		// so that both instances' connection pools have grown to the
		// run's concurrency (a new connection's handshake is not a login's
		// round trip), the scripts are cached and the subscriptions made.
		for range 2 {
			var wg sync.WaitGroup
			for range workers {
				wg.Add(1)
				go func() { defer wg.Done(); loginOnce(t, ra, fake) }()
			}
			wg.Wait()
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

// profileCaddies, with -loadprofile, starts a CPU profile of a and b (one
// when they are the same) over d, written to the directory as
// <setup>-<A|B>.pprof, followed by a heap profile (<setup>-<A|B>.heap.pprof);
// the returned func waits for them.
func profileCaddies(t *testing.T, setup string, d time.Duration, a, b *caddyProc) (wait func()) {
	if *loadProfile == "" {
		return func() {}
	}
	var wg sync.WaitGroup
	caddies := []*caddyProc{a}
	if b != a {
		caddies = append(caddies, b)
	}
	for i, c := range caddies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			secs := max(int(d.Seconds())-1, 1)
			resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", c.Admin, secs))
			if err != nil {
				t.Logf("profile: %v", err)
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			name := strings.NewReplacer(" ", "_", ",", "").Replace(setup) + "-" + string(rune('A'+i))
			if err := os.WriteFile(filepath.Join(*loadProfile, name+".pprof"), body, 0o644); err != nil {
				t.Logf("profile: %v", err)
			}
			// And the heap, as the run leaves it.
			resp, err = http.Get(fmt.Sprintf("http://%s/debug/pprof/heap", c.Admin))
			if err != nil {
				t.Logf("heap profile: %v", err)
				return
			}
			defer resp.Body.Close()
			body, _ = io.ReadAll(resp.Body)
			if err := os.WriteFile(filepath.Join(*loadProfile, name+".heap.pprof"), body, 0o644); err != nil {
				t.Logf("heap profile: %v", err)
			}
		}()
	}
	return wg.Wait
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

// cpuMeter measures the CPU time a run costs each process in it: each
// Caddy (process_cpu_seconds_total on its admin /metrics), Redis (INFO
// cpu, when rc is not nil), and this test process, which is the browsers'
// load and the fake WeChat.
type cpuMeter struct {
	t       *testing.T
	caddies []*caddyProc
	rc      *goredis.Client
	start   []float64
}

func newCPUMeter(t *testing.T, a, b *caddyProc, rc *goredis.Client) *cpuMeter {
	m := &cpuMeter{t: t, caddies: []*caddyProc{a}, rc: rc}
	if b != a {
		m.caddies = append(m.caddies, b)
	}
	m.start = m.read()
	return m
}

// read returns the CPU seconds used so far by each Caddy, Redis (0
// without rc) and this process, in that order; -1 where unknown.
func (m *cpuMeter) read() []float64 {
	var out []float64
	for _, c := range m.caddies {
		out = append(out, caddyCPU(c))
	}
	redis := 0.0
	if m.rc != nil {
		redis = -1
		if info, err := m.rc.Info(context.Background(), "cpu").Result(); err == nil {
			redis = 0
			for line := range strings.Lines(info) {
				name, v, ok := strings.Cut(strings.TrimSpace(line), ":")
				if ok && (name == "used_cpu_sys" || name == "used_cpu_user") {
					f, _ := strconv.ParseFloat(v, 64)
					redis += f
				}
			}
		}
	}
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	self := time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	return append(out, redis, self)
}

// perLogin is the CPU time per login of each process since the meter
// was made, and the sum.
func (m *cpuMeter) perLogin(logins int64) string {
	if logins == 0 {
		return "no logins"
	}
	end := m.read()
	names := []string{"Caddy A", "Caddy B"}[:len(m.caddies)]
	if len(m.caddies) == 1 {
		names = []string{"Caddy"}
	}
	names = append(names, "Redis", "load+fake WeChat")
	var parts []string
	var total float64
	for i, name := range names {
		if name == "Redis" && m.rc == nil {
			continue
		}
		if end[i] < 0 || m.start[i] < 0 {
			parts = append(parts, name+" ?")
			continue
		}
		d := (end[i] - m.start[i]) / float64(logins)
		total += d
		parts = append(parts, fmt.Sprintf("%s %.0fµs", name, d*1e6))
	}
	return fmt.Sprintf("%s; total %.0fµs", strings.Join(parts, ", "), total*1e6)
}

// caddyCPU is process_cpu_seconds_total from c's admin /metrics, or -1.
func caddyCPU(c *caddyProc) float64 {
	return caddyMetrics(c, "process_cpu_seconds_total")[0]
}
