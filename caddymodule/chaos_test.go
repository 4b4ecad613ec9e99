package caddymodule

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/internal/redistest"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

var chaosTest = flag.Duration("chaostest", 0, "run the Redis kill-and-restart chaos test for this long (e.g. 60s; make chaos)")

// Bounds of the chaos test. Nothing in it waits longer than these.
const (
	chaosWorkers = 16
	// chaosRequestTimeout bounds every HTTP request of a simulated browser.
	chaosRequestTimeout = 15 * time.Second
	// chaosPollWait is the long-poll's wait parameter, in seconds.
	chaosPollWait = 5
	// chaosRedeemBound is how long after the QR code was created the
	// browser keeps polling for the outcome of a successful scan.
	chaosRedeemBound = 25 * time.Second
	// chaosRecoveryBound is how long one login (all its retries) may take.
	chaosRecoveryBound = 40 * time.Second
	// chaosCheckBound is how long the after-login checks may retry a 503.
	chaosCheckBound = 20 * time.Second
	// chaosRetryPause is the pause before retrying after a 503.
	chaosRetryPause = 300 * time.Millisecond
	// chaosEvery and chaosDown shape the outages: Redis is SIGKILLed about
	// every chaosEvery and stays down for chaosDown plus up to chaosDown.
	chaosEvery = 10 * time.Second
	chaosDown  = time.Second
)

// The steps of a login, for counting 503s.
const (
	stepQR     = "qr"     // POST /wechat/qr
	stepScan   = "scan"   // WeChat's push to the callback
	stepPoll   = "poll"   // long-poll and redeem
	stepVerify = "verify" // the session on a protected path
	stepReplay = "replay" // the redeemed scene asked for again
)

var chaosSteps = []string{stepQR, stepScan, stepPoll, stepVerify, stepReplay}

// TestChaosRedisRestart runs complete QR logins from many simulated browsers
// through two Caddy instances sharing one Redis (append-only file on), while
// Redis is SIGKILLed and restarted every ~10 s. The QR code is created on
// one instance, WeChat's push lands on B, and the browser long-polls and
// redeems on the other instance while a second tab races it on the first.
//
// Every login must end in exactly one of: one session (which works on both
// instances, and whose scene cannot be redeemed again), or a clear 503 (a
// JSON error with Retry-After, or a push answered 503 so WeChat retries)
// after which the browser's retry of the whole login succeeds. A 500, two
// sessions from one scene, a scan that WeChat was told succeeded but that
// never becomes redeemable, a request beyond its bound or a panic in
// Caddy's log fails the test.
func TestChaosRedisRestart(t *testing.T) {
	if *chaosTest <= 0 {
		t.Skip("chaos test: kills and restarts Redis under login load; run with -chaostest=60s (make chaos)")
	}
	duration := *chaosTest

	redis := redistest.Start(t, redistest.WithAppendOnly("always"))
	fake := wechattest.NewServer(wechattest.Config{})
	defer fake.Close()
	// The QR limits are lifted so that only Redis can refuse a login.
	extra := []string{"qr_rate_limit 100000000 100000000", "qr_ceiling 100000000", "store redis {env.IT_REDIS_URL}"}
	env := append(slices.Clone(itEnv), "IT_REDIS_URL="+redis.URL())
	a := startCaddy(t, siteWithFake(fake.URL, "127.0.0.1:9", "Chaos", extra...), env...)
	b := startCaddy(t, siteWithFake(fake.URL, "127.0.0.1:9", "Chaos", extra...), env...)
	addFakeApp(t, fake, b.BaseURL) // WeChat pushes to B
	for i := range chaosWorkers {
		if err := fake.AddUser(wechattest.User{Name: chaosUser(i), Nickname: chaosUser(i)}); err != nil {
			t.Fatal(err)
		}
	}
	before := [2]int{caddyGoroutines(t, a), caddyGoroutines(t, b)}

	transport := &http.Transport{MaxIdleConnsPerHost: 4 * chaosWorkers, IdleConnTimeout: 30 * time.Second}
	defer transport.CloseIdleConnections()
	hc := &http.Client{
		Transport:     transport,
		Timeout:       chaosRequestTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	st := &chaosStats{start: time.Now(), step503: map[string]int{}, reasons: map[string]int{}, retries: map[int]int{}}

	stop := time.Now().Add(duration)
	chaosStop := make(chan struct{})
	chaosDone := make(chan struct{})
	go st.chaos(redis, chaosStop, chaosDone)

	var wg sync.WaitGroup
	for w := range chaosWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Even workers create their QR codes on A, odd ones on B; each
			// polls and redeems on the other instance.
			create, redeem := a, b
			if w%2 == 1 {
				create, redeem = b, a
			}
			cw := &chaosWorker{
				st: st, hc: hc, fake: fake, create: create, redeem: redeem,
				user: chaosUser(w), openid: fake.OpenID(itAppID, chaosUser(w)),
			}
			for time.Now().Before(stop) {
				cw.login()
			}
		}()
	}

	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	// Every login started before stop ends within its recovery bound plus
	// the checks' bound; a worker still busy after that is a hang.
	hangBound := duration + chaosRecoveryBound + 2*chaosCheckBound + 3*chaosRequestTimeout
	select {
	case <-allDone:
		close(chaosStop)
		<-chaosDone
	case <-time.After(hangBound):
		close(chaosStop)
		<-chaosDone // it must not touch t once the test has ended
		buf := make([]byte, 1<<20)
		t.Fatalf("simulated browsers still busy %v after the start (bound %v); goroutines:\n%s",
			time.Since(st.start), hangBound, buf[:runtime.Stack(buf, true)])
	}

	// Caddy must have issued exactly the sessions the browsers received:
	// more means a session was issued from a scene that was also redeemed
	// elsewhere, or a response carrying one was lost.
	issued := chaosLogins(t, a) + chaosLogins(t, b)
	if issued != st.sessions {
		st.failf("Caddy counted %d QR logins, the browsers received %d sessions", issued, st.sessions)
	}
	for _, c := range []*caddyProc{a, b} {
		if logs := c.logs.String(); regexp.MustCompile(`(?i)panic`).MatchString(logs) {
			st.failf("panic in the log of the Caddy at %s", c.BaseURL)
		}
	}
	transport.CloseIdleConnections()
	time.Sleep(500 * time.Millisecond) // Caddy notices the closed connections
	after := [2]int{caddyGoroutines(t, a), caddyGoroutines(t, b)}
	for i := range after {
		if after[i] > before[i]+20 {
			st.failf("goroutines of Caddy %c piled up: %d before, %d after", 'A'+i, before[i], after[i])
		}
	}

	st.report(t, duration, before, after, []*caddyProc{a, b})
	if len(st.failures) > 0 {
		t.Fatalf("%d failures under chaos", len(st.failures))
	}
}

func chaosUser(i int) string { return fmt.Sprintf("chaos%02d", i) }

// chaosStats collects what the workers and the chaos loop saw.
type chaosStats struct {
	start time.Time

	mu         sync.Mutex
	logins     int // logins begun (each retried until it succeeds)
	attempts   int // tries, retries included
	successes  int // logins that ended with a working session
	sessions   int // session cookies received
	step503    map[string]int
	reasons    map[string]int // step and error message of each 503 → count
	retries    map[int]int    // retries needed → logins
	scan503Won int            // push answered 503, yet the browser got its session
	// After a 503 from the poll of a confirmed scene, the page polled the
	// same code again: pollRetryWon got a session, lostRedeems found the
	// scene taken by a redeem whose answer was lost.
	pollRetryWon, lostRedeems int
	maxLatency                time.Duration
	maxTry                    time.Duration
	failures, notes           []string

	kills    int
	downtime []time.Duration
}

func (s *chaosStats) failf(format string, args ...any) {
	msg := fmt.Sprintf("%6.1fs ", time.Since(s.start).Seconds()) + fmt.Sprintf(format, args...)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, msg)
}

// notef records something the report shows that is not a failure.
func (s *chaosStats) notef(format string, args ...any) {
	msg := fmt.Sprintf("%6.1fs ", time.Since(s.start).Seconds()) + fmt.Sprintf(format, args...)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notes = append(s.notes, msg)
}

func (s *chaosStats) count(f func(*chaosStats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

// chaos SIGKILLs Redis about every chaosEvery and restarts it, from its
// append-only file, on the same port after one to two seconds, until stop
// is closed. Redis is always running when it returns.
func (s *chaosStats) chaos(redis *redistest.Server, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	next := time.Now().Add(chaosEvery / 2)
	for {
		select {
		case <-stop:
			return
		case <-time.After(time.Until(next)):
		}
		down := time.Now()
		redis.Stop()
		s.count(func(s *chaosStats) { s.kills++ })
		s.notef("Redis SIGKILLed")
		time.Sleep(chaosDown + rand.N(chaosDown))
		if err := redis.TryRestart(); err != nil {
			s.failf("restart Redis: %v", err)
			return
		}
		s.count(func(s *chaosStats) { s.downtime = append(s.downtime, time.Since(down)) })
		next = time.Now().Add(chaosEvery - chaosEvery/10 + rand.N(chaosEvery/5))
	}
}

// chaosWorker is one simulated user, with a phone, and their browsers.
type chaosWorker struct {
	st             *chaosStats
	hc             *http.Client
	fake           *wechattest.Server
	create, redeem *caddyProc
	user, openid   string
}

// chaosBrowser is a browser's cookies, kept by hand so that a tab can be
// cloned and a cookie replayed.
type chaosBrowser map[string]string

func (b chaosBrowser) header() string {
	var parts []string
	for k, v := range b {
		parts = append(parts, k+"="+v)
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}

func (b chaosBrowser) update(resp *http.Response) {
	for _, c := range resp.Cookies() {
		if c.MaxAge < 0 || c.Value == "" {
			delete(b, c.Name)
		} else {
			b[c.Name] = c.Value
		}
	}
}

// chaosResult is one HTTP exchange.
type chaosResult struct {
	status  int
	body    string
	header  http.Header
	session string // the session cookie it set, if any
	err     error
	took    time.Duration
}

// do sends one request as browser br (which it updates) to c.
func (w *chaosWorker) do(br chaosBrowser, method string, c *caddyProc, path, form string) chaosResult {
	var body io.Reader
	if form != "" {
		body = strings.NewReader(form)
	}
	req, err := http.NewRequest(method, c.BaseURL+path, body)
	if err != nil {
		return chaosResult{err: err}
	}
	if form != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if method == http.MethodPost {
		req.Header.Set("Origin", c.BaseURL)
	}
	req.Header.Set("Accept", "application/json")
	if h := br.header(); h != "" {
		req.Header.Set("Cookie", h)
	}
	start := time.Now()
	resp, err := w.hc.Do(req)
	if err != nil {
		return chaosResult{err: err, took: time.Since(start)}
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	r := chaosResult{status: resp.StatusCode, body: string(b), header: resp.Header, err: err, took: time.Since(start)}
	for _, ck := range resp.Cookies() {
		if ck.Name == "wechat_session" && ck.Value != "" && ck.MaxAge >= 0 {
			r.session = ck.Value
		}
	}
	br.update(resp)
	return r
}

// unavailable reports whether r is a clear "temporarily unavailable": 503,
// a JSON error and a Retry-After.
func (r chaosResult) unavailable() bool {
	if r.err != nil || r.status != http.StatusServiceUnavailable {
		return false
	}
	var e struct{ Error string }
	secs, err := strconv.Atoi(r.header.Get("Retry-After"))
	return json.Unmarshal([]byte(r.body), &e) == nil && e.Error != "" && err == nil && secs > 0 &&
		strings.HasPrefix(r.header.Get("Content-Type"), "application/json")
}

func (r chaosResult) String() string {
	if r.err != nil {
		return fmt.Sprintf("error after %v: %v", r.took.Round(time.Millisecond), r.err)
	}
	return fmt.Sprintf("%d %.200q", r.status, strings.TrimSpace(r.body))
}

// outcome of one try.
type tryOutcome int

const (
	trySucceeded tryOutcome = iota
	tryUnavailable
	tryFailed
)

// login runs one login to its end: tries, each a complete QR login in the
// same browser, until one succeeds, a try fails, or the bound is reached.
func (w *chaosWorker) login() {
	start := time.Now()
	br := chaosBrowser{}
	w.st.count(func(s *chaosStats) { s.logins++ })
	for n := 0; ; n++ {
		if time.Since(start) > chaosRecoveryBound {
			w.st.failf("%s: no successful login within %v (%d tries)", w.user, chaosRecoveryBound, n)
			return
		}
		w.st.count(func(s *chaosStats) { s.attempts++ })
		tryStart := time.Now()
		out := w.try(br)
		took := time.Since(tryStart)
		w.st.count(func(s *chaosStats) { s.maxTry = max(s.maxTry, took) })
		switch out {
		case trySucceeded:
			lat := time.Since(start)
			w.st.count(func(s *chaosStats) {
				s.successes++
				s.retries[n]++
				s.maxLatency = max(s.maxLatency, lat)
			})
			return
		case tryFailed:
			return
		}
		time.Sleep(chaosRetryPause)
	}
}

// unavailable counts a 503 answer r at step.
func (w *chaosWorker) unavailable(step string, r chaosResult) tryOutcome {
	reason := jsonField(r.body, "error")
	w.st.count(func(s *chaosStats) {
		s.step503[step]++
		s.reasons[step+": "+reason]++
	})
	return tryUnavailable
}

// try is one complete QR login in browser br.
func (w *chaosWorker) try(br chaosBrowser) tryOutcome {
	tryStart := time.Now()
	r := w.do(br, http.MethodPost, w.create, "/wechat/qr", "next=%2F")
	switch {
	case r.unavailable():
		return w.unavailable(stepQR, r)
	case r.err != nil || r.status != http.StatusOK:
		w.st.failf("%s: create QR on %s: %v", w.user, w.create.BaseURL, r)
		return tryFailed
	}
	scene, content := jsonField(r.body, "scene"), jsonField(r.body, "qr_content")
	if scene == "" || content == "" {
		w.st.failf("%s: create QR: no scene or QR content in %.200q", w.user, r.body)
		return tryFailed
	}
	// Before the redeem, the binding cookie this browser holds; replayed
	// after it.
	binding := chaosCopy(br)

	// The page long-polls on the other instance until a final answer.
	stopped := make(chan struct{})
	pollDone := make(chan chaosResult, 1)
	go func() {
		pollDone <- w.pollUntilFinal(br, w.redeem, scene, tryStart.Add(chaosRedeemBound), stopped)
	}()
	// finishPoll tells the page to stop after its current poll, and
	// returns that poll's answer.
	finishPoll := func() chaosResult {
		close(stopped)
		p := <-pollDone
		if p.session != "" {
			w.st.count(func(s *chaosStats) { s.sessions++ })
		}
		return p
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*chaosRequestTimeout)
	d, err := w.fake.Scan(ctx, itAppID, content, w.user)
	cancel()
	if err != nil {
		finishPoll()
		w.st.failf("%s: scan of scene %.8s: %v", w.user, scene, err)
		return tryFailed
	}
	if d.Status != wechattest.StatusReplied {
		// WeChat was told to retry (and did, PushAttempts times). That is a
		// clear failure only if every answer was Caddy's 503.
		for i, at := range d.Attempts {
			if at.Err != nil || at.Status != http.StatusServiceUnavailable || strings.TrimSpace(string(at.Body)) != "temporarily unavailable" {
				w.st.failf("%s: push attempt %d for scene %.8s: status %d %.200q err %v (delivery: %s)",
					w.user, i+1, scene, at.Status, at.Body, at.Err, d.Problem)
				finishPoll()
				return tryFailed
			}
		}
		// The confirmation may have reached Redis with its answer lost; the
		// page, still polling, then logs in. Let its current poll finish.
		p := finishPoll()
		if p.session != "" {
			w.st.count(func(s *chaosStats) { s.scan503Won++ })
			return w.check(br, binding, scene, p.session)
		}
		if p.unavailable() {
			return w.unavailable(stepScan, chaosResult{body: `{"error":"push answered 503, then the poll too"}`})
		}
		// Nobody else holds this browser's binding: a pending scene is the
		// only answer that fits a push that did not get through.
		if p.err != nil || p.status != http.StatusOK || jsonField(p.body, "status") != "pending" {
			w.st.failf("%s: poll of scene %.8s after a failed push: %v", w.user, scene, p)
			return tryFailed
		}
		return w.unavailable(stepScan, chaosResult{body: `{"error":"push answered 503"}`})
	}
	if !strings.Contains(d.Reply.Content, "logged in") {
		finishPoll()
		w.st.failf("%s: WeChat's push for scene %.8s was answered %q, not a login", w.user, scene, d.Reply.Content)
		return tryFailed
	}

	// The scan is confirmed. A second tab of the same browser (a copy of
	// its cookies) tries to redeem the scene on the creating instance, at
	// the same time as the page's long-poll on the other.
	tab := chaosCopy(binding)
	race := w.do(tab, http.MethodGet, w.create, "/wechat/poll?scene="+scene, "")
	if race.session != "" {
		w.st.count(func(s *chaosStats) { s.sessions++ })
	}
	p := <-pollDone
	if p.session != "" {
		w.st.count(func(s *chaosStats) { s.sessions++ })
	}
	if race.session != "" {
		// The tab shares the browser's cookie jar.
		br["wechat_session"] = race.session
	}

	var sessions []string
	for _, x := range []chaosResult{p, race} {
		if x.session != "" {
			sessions = append(sessions, x.session)
		}
	}
	for _, x := range []chaosResult{p, race} {
		if x.err != nil || (x.status != http.StatusOK && !x.unavailable()) {
			w.st.failf("%s: redeem of scene %.8s: %v", w.user, scene, x)
			return tryFailed
		}
	}
	switch len(sessions) {
	case 1:
	case 0:
		switch {
		case p.unavailable():
			w.unavailable(stepPoll, p)
		case race.unavailable():
			w.unavailable(stepPoll, race)
		default:
			w.st.failf("%s: scene %.8s confirmed to WeChat but never redeemed: page %v, tab %v", w.user, scene, p, race)
			return tryFailed
		}
		return w.pollAgain(br, binding, scene)
	default:
		w.st.failf("%s: scene %.8s redeemed twice: page %v, tab %v", w.user, scene, p, race)
		return tryFailed
	}
	// The loser of the race must have been told the scene is gone.
	for _, x := range []chaosResult{p, race} {
		if x.session == "" && x.status == http.StatusOK && jsonField(x.body, "status") != "expired" {
			w.st.failf("%s: the tab that lost the redeem of scene %.8s was told %v", w.user, scene, x)
			return tryFailed
		}
	}
	return w.check(br, binding, scene, sessions[0])
}

// pollAgain is the page after a 503 from its poll of a scene WeChat was
// told is logged in: it polls the same code again, as login.js does, until
// Redis is back. The scene must then still be redeemable, unless a redeem
// took it from Redis and lost its answer; then only a new login helps.
func (w *chaosWorker) pollAgain(br, binding chaosBrowser, scene string) tryOutcome {
	deadline := time.Now().Add(chaosCheckBound)
	for {
		time.Sleep(chaosRetryPause)
		r := w.do(br, http.MethodGet, w.redeem, "/wechat/poll?scene="+scene, "")
		switch {
		case r.session != "":
			w.st.count(func(s *chaosStats) { s.sessions++; s.pollRetryWon++ })
			return w.check(br, binding, scene, r.session)
		case r.unavailable() && time.Now().Before(deadline):
			w.unavailable(stepPoll, r)
			continue
		case r.status == http.StatusOK && jsonField(r.body, "status") == "expired":
			w.st.count(func(s *chaosStats) { s.lostRedeems++ })
			w.st.notef("%s: scene %.8s: WeChat told the user they are logged in; the poll got 503, then \"expired\"", w.user, scene)
			return tryUnavailable
		}
		w.st.failf("%s: scene %.8s, confirmed to WeChat, polled again after a 503: %v", w.user, scene, r)
		return tryFailed
	}
}

// pollUntilFinal long-polls as the page does until an answer other than
// pending or scanned, a 503, an error, the deadline, or stop (checked
// between polls, so that a redeem in flight is never cut off).
func (w *chaosWorker) pollUntilFinal(br chaosBrowser, c *caddyProc, scene string, deadline time.Time, stop <-chan struct{}) chaosResult {
	for {
		r := w.do(br, http.MethodGet, c, "/wechat/poll?scene="+scene+"&wait="+strconv.Itoa(chaosPollWait), "")
		if r.err != nil || r.status != http.StatusOK || r.session != "" {
			return r
		}
		switch jsonField(r.body, "status") {
		case "pending", "scanned":
		default:
			return r
		}
		select {
		case <-stop:
			return r
		default:
		}
		if time.Now().After(deadline) {
			return r
		}
	}
}

// check verifies a new session: it works on both instances, for this
// user, and the scene it came from cannot be redeemed again with the
// browser's binding cookie from before the redeem. 503s are retried.
func (w *chaosWorker) check(br chaosBrowser, binding chaosBrowser, scene, session string) tryOutcome {
	if br["wechat_session"] != session {
		w.st.failf("%s: the browser does not hold the session it was given", w.user)
		return tryFailed
	}
	deadline := time.Now().Add(chaosCheckBound)
	for _, c := range []*caddyProc{w.create, w.redeem} {
		for {
			r := w.do(chaosBrowser{"wechat_session": session}, http.MethodGet, c, "/", "")
			if r.unavailable() && time.Now().Before(deadline) {
				w.unavailable(stepVerify, r)
				time.Sleep(chaosRetryPause)
				continue
			}
			if r.status != http.StatusOK || !strings.Contains(r.body, "openid="+w.openid+" ") {
				w.st.failf("%s: session from scene %.8s on %s: %v", w.user, scene, c.BaseURL, r)
				return tryFailed
			}
			break
		}
		for {
			r := w.do(chaosCopy(binding), http.MethodGet, c, "/wechat/poll?scene="+scene, "")
			if r.unavailable() && time.Now().Before(deadline) {
				w.unavailable(stepReplay, r)
				time.Sleep(chaosRetryPause)
				continue
			}
			if r.session != "" {
				w.st.count(func(s *chaosStats) { s.sessions++ })
				w.st.failf("%s: scene %.8s redeemed a second time on %s: %v", w.user, scene, c.BaseURL, r)
				return tryFailed
			}
			if r.status != http.StatusOK || jsonField(r.body, "status") != "expired" {
				w.st.failf("%s: redeemed scene %.8s asked for again on %s: %v", w.user, scene, c.BaseURL, r)
				return tryFailed
			}
			break
		}
	}
	return trySucceeded
}

// chaosCopy returns a copy of a browser's cookies.
func chaosCopy(b chaosBrowser) chaosBrowser {
	c := make(chaosBrowser, len(b))
	for k, v := range b {
		c[k] = v
	}
	return c
}

// chaosLogins reads the count of QR logins from a Caddy's metrics.
func chaosLogins(t *testing.T, c *caddyProc) int {
	t.Helper()
	resp, err := http.Get("http://" + c.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^caddy_wechat_login_logins_total\{method="qr"\} (\d+)$`).FindStringSubmatch(readAll(resp))
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func (s *chaosStats) report(t *testing.T, duration time.Duration, before, after [2]int, caddies []*caddyProc) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var retries []string
	keys := make([]int, 0, len(s.retries))
	for k := range s.retries {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		retries = append(retries, fmt.Sprintf("%d:%d", k, s.retries[k]))
	}
	var steps []string
	total503 := 0
	for _, st := range chaosSteps {
		steps = append(steps, fmt.Sprintf("%s=%d", st, s.step503[st]))
		total503 += s.step503[st]
	}
	var down []string
	for _, d := range s.downtime {
		down = append(down, d.Round(100*time.Millisecond).String())
	}
	storeFailures := 0
	for _, c := range caddies {
		storeFailures += strings.Count(c.logs.String(), "store failure")
	}
	t.Logf("chaos: %v, %d browsers, Redis SIGKILLed %d times (down %s)", duration, chaosWorkers, s.kills, strings.Join(down, ", "))
	t.Logf("chaos: logins %d, attempts %d, successes %d (%.1f/s), sessions received %d", s.logins, s.attempts, s.successes,
		float64(s.successes)/duration.Seconds(), s.sessions)
	t.Logf("chaos: 503s per step: %s (total %d); push 503 but logged in anyway: %d", strings.Join(steps, " "), total503, s.scan503Won)
	for _, r := range slices.Sorted(maps.Keys(s.reasons)) {
		t.Logf("chaos:   503 %s ×%d", r, s.reasons[r])
	}
	t.Logf("chaos: after a poll 503 the same code logged in %d times, was lost to a redeem whose answer was lost %d times",
		s.pollRetryWon, s.lostRedeems)
	t.Logf("chaos: retries needed (retries:logins): %s", strings.Join(retries, " "))
	t.Logf("chaos: max login latency (retries included) %v, max single try %v", s.maxLatency.Round(time.Millisecond), s.maxTry.Round(time.Millisecond))
	t.Logf("chaos: Caddy goroutines A %d→%d, B %d→%d; \"store failure\" log lines %d", before[0], after[0], before[1], after[1], storeFailures)
	for _, n := range s.notes {
		t.Logf("chaos: note %s", n)
	}
	// What Caddy said about redeems that failed, for lost redeems.
	for i, c := range caddies {
		for _, line := range strings.Split(c.logs.String(), "\n") {
			if strings.Contains(line, `"op":"redeem scene"`) {
				t.Logf("chaos: Caddy %c: %s", 'A'+i, line)
			}
		}
	}
	t.Logf("chaos: failures %d", len(s.failures))
	for i, f := range s.failures {
		if i == 30 {
			t.Logf("  … and %d more", len(s.failures)-i)
			break
		}
		t.Logf("  %s", f)
	}
}
