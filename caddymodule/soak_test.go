package caddymodule

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/internal/redistest"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

var (
	soakTest  = flag.Duration("soaktest", 0, "run TestSoak for this long per setup (make soak DURATION=30m); 0 skips it")
	soakRate  = flag.Float64("soakrate", 210, "logins per second TestSoak offers")
	soakFloor = flag.Float64("soakfloor", 200, "logins per second TestSoak must complete")
)

// Soak settings. A sample of each Caddy's resident memory and goroutines is
// taken every soakSample; the first soakWarmup fraction of the run (at most
// two minutes) is warm-up. After it, the series is flat when the median of
// its last third exceeds the median of its first third by no more than the
// tolerances below.
//
// What a login leaves in the store counts. With the embedded store, each
// login's "not me" record (kept for the session's lifetime) and push dedupe
// marker (15 minutes) stay in Caddy's memory until the store's cleaner frees
// them, which for the markers' class of time to live is 32 minutes after
// they were written; and the store's queues, partly reserved at start,
// grow by doubling and become resident page by page as they are first
// written through. Caddy's resident memory therefore grows for longer than
// a soak of half an hour, up to the store's bounded size, and is reported
// but not judged. What is judged instead is the Go heap outside the store:
// the heap live at the last garbage collection (go_memstats_next_gc_bytes
// less the GOGC share) less caddy_wechat_login_store_allocated_bytes, which
// a leak anywhere else would make grow. It still holds the store's index,
// about 30 bytes an entry (BenchmarkPendingSceneMemory, index-bytes/scene),
// which grows with the entries the logins leave: some 15 MB for the half a
// million a 30-minute soak leaves, within the slack below. With Redis,
// Caddy's resident memory is judged itself.
const (
	soakWorkers      = 32
	soakSample       = 10 * time.Second
	soakWarmup       = 0.2
	soakRSSTolerance = 0.05     // relative…
	soakRSSSlackKB   = 16 << 10 // …or absolute, whichever is larger
	soakGoTolerance  = 0.10
	soakGoSlack      = 40 // goroutines: a waiting poll and its connection are two
)

// TestSoak runs complete QR logins at a steady rate (-soakrate) for
// -soaktest against one Caddy with the embedded store, then against two
// sharing Redis (browsers alternate between them, WeChat pushes to the
// second). It fails if any login is lost (a browser did not get its
// session), any is doubled (a redeemed login redeemed again, or Caddy
// counting more logins than browsers got), the rate falls short of
// -soakfloor, or a Caddy's resident memory or goroutines grow after
// warm-up (see the constants above). It prints the series it judged.
// A measurement of minutes, not a unit test: make soak DURATION=30m.
func TestSoak(t *testing.T) {
	if *soakTest <= 0 {
		t.Skip("soak; run with -soaktest=30m (make soak DURATION=30m)")
	}
	// Every login comes from one address: lift its limit. The site-wide
	// ceiling is what a site of this rate would set (12,600 a minute).
	rate := "qr_rate_limit 100000000 100000000\n\t\tqr_ceiling 20000"
	t.Run("one instance, embedded store", func(t *testing.T) {
		fake := wechattest.NewServer(soakWeChat())
		defer fake.Close()
		c := startCaddy(t, siteWithFake(fake.URL, "127.0.0.1:9", "Soak", rate), itEnv...)
		defer c.stop()
		addFakeApp(t, fake, c.BaseURL)
		soak(t, fake, []*caddyProc{c}, true)
	})
	t.Run("two instances, Redis", func(t *testing.T) {
		redis := redistest.Start(t)
		fake := wechattest.NewServer(soakWeChat())
		defer fake.Close()
		extra := []string{rate, "store redis {env.IT_REDIS_URL}"}
		env := append(itEnv, "IT_REDIS_URL="+redis.URL())
		a := startCaddy(t, siteWithFake(fake.URL, "127.0.0.1:9", "Soak", extra...), env...)
		defer a.stop()
		b := startCaddy(t, siteWithFake(fake.URL, "127.0.0.1:9", "Soak", extra...), env...)
		defer b.stop()
		addFakeApp(t, fake, b.BaseURL)
		soak(t, fake, []*caddyProc{a, b}, false)
	})
}

// soakWeChat is the fake WeChat of a soak: its users, and a daily
// qrcode/create quota for the whole run. WeChat's own, 100,000 a day, runs
// out after eight minutes at 210 logins a second (a site of that rate would
// have it raised); the fake enforces it as WeChat does, with 45009.
func soakWeChat() wechattest.Config {
	return wechattest.Config{Users: soakUsers(), QRDailyQuota: 100_000_000}
}

// soakUsers are the fake WeChat's users, one per worker.
func soakUsers() []wechattest.User {
	users := make([]wechattest.User, soakWorkers)
	for w := range users {
		users[w] = wechattest.User{Name: fmt.Sprintf("soak%02d", w)}
	}
	return users
}

type soakSeries struct {
	at        []time.Duration
	rssKB     [][]int // per Caddy
	goroutine [][]int
	// The Go heap live at the last collection and the embedded store's
	// allocation, per Caddy.
	heapKB, storeKB [][]int
}

// soak runs the logins against caddies and judges them. embedded says the
// store is in Caddy's memory (see the soak settings).
func soak(t *testing.T, fake *wechattest.Server, caddies []*caddyProc, embedded bool) {
	duration := *soakTest
	tr := &http.Transport{MaxIdleConnsPerHost: 2 * soakWorkers, IdleConnTimeout: 30 * time.Second}
	defer tr.CloseIdleConnections()
	before := 0
	for _, c := range caddies {
		before += chaosLogins(t, c)
	}

	// The pacer hands out one token per login to offer; tokens the
	// workers are too slow to take are dropped, so a shortfall shows.
	tokens := make(chan struct{}, soakWorkers)
	start := time.Now()
	stop := start.Add(duration)
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		owed := 0.0
		last := time.Now()
		for now := range tick.C {
			if now.After(stop) {
				close(tokens)
				return
			}
			owed += now.Sub(last).Seconds() * *soakRate
			last = now
			for ; owed >= 1; owed-- {
				select {
				case tokens <- struct{}{}:
				default:
				}
			}
		}
	}()

	var ok, lost, doubled atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var failures []string
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	var wg sync.WaitGroup
	for w := range soakWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := fmt.Sprintf("soak%02d", w)
			n := 0
			for range tokens {
				c := caddies[n%len(caddies)]
				n++
				t0 := time.Now()
				switch err := soakLogin(c, fake, tr, user); {
				case err == nil:
					ok.Add(1)
					mu.Lock()
					lat = append(lat, time.Since(t0))
					mu.Unlock()
				case strings.HasPrefix(err.Error(), "doubled"):
					doubled.Add(1)
					fail("%s on %s: %v", user, c.BaseURL, err)
				default:
					lost.Add(1)
					fail("%s on %s: %v", user, c.BaseURL, err)
				}
			}
		}()
	}

	// Samples, until the workers are done.
	n := len(caddies)
	series := soakSeries{rssKB: make([][]int, n), goroutine: make([][]int, n), heapKB: make([][]int, n), storeKB: make([][]int, n)}
	sample := func() {
		series.at = append(series.at, time.Since(start).Round(time.Second))
		for i, c := range caddies {
			series.rssKB[i] = append(series.rssKB[i], rssKB(t, c.Pid()))
			series.goroutine[i] = append(series.goroutine[i], caddyGoroutines(t, c))
			// The heap live at the last collection: the next one is due
			// when it has grown by GOGC percent.
			m := caddyMetrics(c, "go_memstats_next_gc_bytes", "go_gc_gogc_percent", "caddy_wechat_login_store_allocated_bytes")
			live := m[0]
			if m[1] > 0 {
				live = m[0] * 100 / (100 + m[1])
			}
			series.heapKB[i] = append(series.heapKB[i], int(live/1024))
			series.storeKB[i] = append(series.storeKB[i], int(m[2]/1024))
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(soakSample)
	for waiting := true; waiting; {
		select {
		case <-tick.C:
			sample()
		case <-done:
			waiting = false
		case <-time.After(duration + 2*time.Minute):
			t.Fatal("soak workers still busy two minutes after the end")
		}
	}
	tick.Stop()
	elapsed := time.Since(start)

	after := 0
	for _, c := range caddies {
		after += chaosLogins(t, c)
	}
	rateDone := float64(ok.Load()) / elapsed.Seconds()
	t.Logf("SOAK %v, %d workers, offered %.0f/s: %d logins (%.1f/s), %d lost, %d doubled; Caddy counted %d logins; login p50 %v p99 %v",
		elapsed.Round(time.Second), soakWorkers, *soakRate, ok.Load(), rateDone, lost.Load(), doubled.Load(),
		after-before, percentile(lat, 50).Round(time.Microsecond), percentile(lat, 99).Round(time.Microsecond))
	for _, f := range failures {
		t.Logf("SOAK failure: %s", f)
	}
	if lost.Load() != 0 || doubled.Load() != 0 {
		t.Errorf("%d logins lost, %d doubled", lost.Load(), doubled.Load())
	}
	if after-before != int(ok.Load()) {
		t.Errorf("Caddy counted %d logins, browsers got %d sessions", after-before, ok.Load())
	}
	if rateDone < *soakFloor {
		t.Errorf("%.1f logins/s, short of %.0f", rateDone, *soakFloor)
	}

	warm := min(time.Duration(float64(duration)*soakWarmup), 2*time.Minute)
	sampleAfter := func(w time.Duration) int {
		i := 0
		for i < len(series.at) && series.at[i] < w {
			i++
		}
		return i
	}
	memory := "resident"
	if embedded {
		memory = "Go heap outside the store"
	}
	t.Logf("SOAK samples every %v; warm-up until %v; flat: median of the last third ≤ median of the first third + max(%.0f%%, %d MB) %s memory, + max(%.0f%%, %d) goroutines",
		soakSample, warm, soakRSSTolerance*100, soakRSSSlackKB>>10, memory, soakGoTolerance*100, soakGoSlack)
	for i := range caddies {
		name := string(rune('A' + i))
		t.Logf("SOAK Caddy %s resident MB: %s", name, mbSeries(series.rssKB[i]))
		t.Logf("SOAK Caddy %s goroutines:  %s", name, intSeries(series.goroutine[i]))
		outside := make([]int, len(series.heapKB[i]))
		for j := range outside {
			outside[j] = series.heapKB[i][j] - series.storeKB[i][j]
		}
		if embedded {
			t.Logf("SOAK Caddy %s store allocated MB: %s", name, mbSeries(series.storeKB[i]))
			t.Logf("SOAK Caddy %s Go heap outside the store MB: %s", name, mbSeries(outside))
		}
		check := func(what string, s []int, rel float64, slack int) {
			first := sampleAfter(warm)
			post := len(s) - first
			if post < 3 {
				t.Errorf("%s: only %d samples after warm-up; run longer", what, post)
				return
			}
			third := post / 3
			s = s[first:]
			a, b := median(s[:third]), median(s[len(s)-third:])
			limit := a + max(int(float64(a)*rel), slack)
			verdict := "flat"
			if b > limit {
				verdict = "GROWING"
				t.Errorf("Caddy %s %s grew after warm-up: median %d → %d (limit %d)", name, what, a, b, limit)
			}
			t.Logf("SOAK Caddy %s %s after warm-up: first third median %d, last third median %d, limit %d: %s", name, what, a, b, limit, verdict)
		}
		if embedded {
			check("Go heap outside the store, KB", outside, soakRSSTolerance, soakRSSSlackKB)
		} else {
			check("resident KB", series.rssKB[i], soakRSSTolerance, soakRSSSlackKB)
		}
		check("goroutines", series.goroutine[i], soakGoTolerance, soakGoSlack)
	}
}

// soakLogin does one complete QR login in a fresh browser on c, checks the
// session it gets, then asks for the redeemed login again with the old
// binding cookie: a second session there is a doubled login.
func soakLogin(c *caddyProc, fake *wechattest.Server, tr http.RoundTripper, user string) error {
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Transport: tr, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest(http.MethodPost, c.BaseURL+"/wechat/qr", strings.NewReader("next=%2F"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", c.BaseURL)
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("qr: %w", err)
	}
	body := readAll(resp)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("qr: %d %.100s", resp.StatusCode, body)
	}
	scene, content := jsonField(body, "scene"), jsonField(body, "qr_content")
	var binding []*http.Cookie
	for _, ck := range resp.Cookies() {
		binding = append(binding, &http.Cookie{Name: ck.Name, Value: ck.Value})
	}
	type answer struct {
		body string
		err  error
	}
	polled := make(chan answer, 1)
	go func() {
		resp, err := hc.Get(c.BaseURL + "/wechat/poll?scene=" + scene + "&wait=10")
		if err != nil {
			polled <- answer{err: err}
			return
		}
		polled <- answer{body: readAll(resp)}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := fake.Scan(ctx, itAppID, content, user); err != nil {
		<-polled
		return fmt.Errorf("scan: %w", err)
	}
	a := <-polled
	if a.err != nil {
		return fmt.Errorf("poll: %w", a.err)
	}
	if !strings.Contains(a.body, `"confirmed"`) {
		// Answered "pending" just before the scan landed: ask again, as
		// the page would.
		resp, err := hc.Get(c.BaseURL + "/wechat/poll?scene=" + scene)
		if err != nil {
			return fmt.Errorf("poll again: %w", err)
		}
		if a.body = readAll(resp); !strings.Contains(a.body, `"confirmed"`) {
			return fmt.Errorf("poll: %.100s", a.body)
		}
	}
	resp, err = hc.Get(c.BaseURL + "/")
	if err != nil {
		return fmt.Errorf("protected page: %w", err)
	}
	if page := readAll(resp); resp.StatusCode != http.StatusOK || !strings.Contains(page, "openid=") || strings.Contains(page, "openid= ") {
		return fmt.Errorf("protected page: %d %.100s", resp.StatusCode, page)
	}
	// The same login asked for again by the browser that redeemed it.
	again, _ := http.NewRequest(http.MethodGet, c.BaseURL+"/wechat/poll?scene="+scene, nil)
	for _, ck := range binding {
		again.AddCookie(ck)
	}
	resp, err = (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Do(again)
	if err != nil {
		return fmt.Errorf("replay poll: %w", err)
	}
	replay := readAll(resp)
	if len(resp.Header.Values("Set-Cookie")) > 0 && strings.Contains(replay, `"confirmed"`) {
		return fmt.Errorf("doubled: scene %.8s redeemed twice: %.100s", scene, replay)
	}
	if jsonField(replay, "status") != "expired" {
		return fmt.Errorf("replay poll: %d %.100s", resp.StatusCode, replay)
	}
	return nil
}

func median(s []int) int {
	c := slices.Clone(s)
	slices.Sort(c)
	return c[len(c)/2]
}

func mbSeries(kb []int) string {
	parts := make([]string, len(kb))
	for i, v := range kb {
		parts[i] = fmt.Sprintf("%.1f", float64(v)/1024)
	}
	return strings.Join(parts, " ")
}

func intSeries(s []int) string {
	parts := make([]string, len(s))
	for i, v := range s {
		parts[i] = fmt.Sprint(v)
	}
	return strings.Join(parts, " ")
}

// caddyMetrics reads the named metrics (unlabelled) from c's admin
// /metrics, -1 for any it cannot read.
func caddyMetrics(c *caddyProc, names ...string) []float64 {
	out := make([]float64, len(names))
	for i := range out {
		out[i] = -1
	}
	resp, err := http.Get("http://" + c.Admin + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return out
	}
	for line := range strings.Lines(string(body)) {
		for i, name := range names {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
					out[i] = f
				}
			}
		}
	}
	return out
}
