package caddymodule

import (
	"flag"
	"net/http"
	"regexp"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/internal/redistest"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

var failoverTest = flag.Duration("failovertest", 0,
	"run the Sentinel failover and Cluster restart tests for this long, with a fault about every 15 s; "+
		"by default each injects one fault and stops a few seconds after recovery")

// Bounds of the failover tests, besides the chaos test's.
const (
	failoverWorkers = chaosWorkers // the chaos report counts these
	// failoverFirst is when, after the logins start, the first fault
	// comes; failoverEvery how long after a recovery the next one does.
	failoverFirst = 3 * time.Second
	failoverEvery = 15 * time.Second
	// failoverAfter is how long logins go on after the last recovery.
	failoverAfter = 4 * time.Second
	// failoverBound bounds one fault and its recovery.
	failoverBound = 40 * time.Second
)

// TestCaddySentinelFailover runs complete QR logins from simulated
// browsers through two Caddy instances whose store is Redis behind three
// Sentinels (store redis redis-sentinel://...), while the primary is
// SIGKILLed and the Sentinels promote the replica. The browsers, their
// checks and the report are the chaos test's: every login ends with one
// session, or with clear 503s after which a retry succeeds; no scene is
// redeemed twice, no session is issued that no browser received.
func TestCaddySentinelFailover(t *testing.T) {
	g := redistest.StartSentinel(t, 3)
	runCaddyFailover(t, "Sentinel failover", g.URL(), func(st *chaosStats) error {
		old, err := g.Primary()
		if err != nil {
			return err
		}
		down := time.Now()
		old.Stop()
		st.count(func(s *chaosStats) { s.kills++ })
		st.notef("primary %s SIGKILLed", old.Addr())
		promoted, err := g.WaitFailover(old, failoverBound)
		if err != nil {
			return err
		}
		st.notef("Sentinels promoted %s", promoted.Addr())
		if err := g.Rejoin(old); err != nil {
			return err
		}
		// Until a replica is back, writes wait for one in vain (the
		// store's WAIT) and answer 503: the outage lasts until here.
		st.count(func(s *chaosStats) { s.downtime = append(s.downtime, time.Since(down)) })
		if err := g.Ready(failoverBound); err != nil {
			return err
		}
		st.notef("old primary %s back as a replica", old.Addr())
		return nil
	})
}

// TestCaddyClusterRestart is TestCaddySentinelFailover with a three-node
// Redis Cluster (store redis redis-cluster://...), one of whose nodes, the
// one holding the notification channel's slot, is SIGKILLed and restarted
// from its append-only file a second later.
func TestCaddyClusterRestart(t *testing.T) {
	c := redistest.StartCluster(t, redistest.WithAppendOnly("always"))
	node, err := c.NodeFor("wechat_login:notify")
	if err != nil {
		t.Fatal(err)
	}
	runCaddyFailover(t, "Cluster node restart", c.URL(), func(st *chaosStats) error {
		down := time.Now()
		node.Stop()
		st.count(func(s *chaosStats) { s.kills++ })
		st.notef("node %s SIGKILLed", node.Addr())
		time.Sleep(time.Second)
		if err := node.TryRestart(); err != nil {
			return err
		}
		if err := c.Healthy(failoverBound); err != nil {
			return err
		}
		st.count(func(s *chaosStats) { s.downtime = append(s.downtime, time.Since(down)) })
		st.notef("node %s restarted, cluster ok", node.Addr())
		return nil
	})
}

// runCaddyFailover starts two Caddy instances on the Redis at redisURL and
// runs logins through them while fault strikes (once, or about every
// failoverEvery for -failovertest), then checks and reports as the chaos
// test does.
func runCaddyFailover(t *testing.T, what, redisURL string, fault func(*chaosStats) error) {
	setup := time.Now()
	fake := wechattest.NewServer(wechattest.Config{})
	defer fake.Close()
	extra := []string{"qr_rate_limit 100000000 100000000", "qr_ceiling 100000000", "store redis {env.IT_REDIS_URL}"}
	env := append(slices.Clone(itEnv), "IT_REDIS_URL="+redisURL)
	a := startCaddy(t, siteWithFake(fake.URL, "127.0.0.1:9", "Failover", extra...), env...)
	b := startCaddy(t, siteWithFake(fake.URL, "127.0.0.1:9", "Failover", extra...), env...)
	addFakeApp(t, fake, b.BaseURL) // WeChat pushes to B
	for i := range failoverWorkers {
		if err := fake.AddUser(wechattest.User{Name: chaosUser(i), Nickname: chaosUser(i)}); err != nil {
			t.Fatal(err)
		}
	}
	transport := &http.Transport{MaxIdleConnsPerHost: 4 * failoverWorkers, IdleConnTimeout: 30 * time.Second}
	defer transport.CloseIdleConnections()
	hc := &http.Client{
		Transport:     transport,
		Timeout:       chaosRequestTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	st := &chaosStats{start: time.Now(), step503: map[string]int{}, reasons: map[string]int{}, retries: map[int]int{}}
	worker := func(w int) *chaosWorker {
		create, redeem := a, b
		if w%2 == 1 {
			create, redeem = b, a
		}
		return &chaosWorker{
			st: st, hc: hc, fake: fake, create: create, redeem: redeem,
			user: chaosUser(w), openid: fake.OpenID(itAppID, chaosUser(w)),
		}
	}
	// One login each way first: the Redis clients, with their Sentinel
	// or cluster connections and the notification subscription, start
	// on first use, and the goroutine count to compare with is theirs.
	worker(0).login()
	worker(1).login()
	transport.CloseIdleConnections()
	time.Sleep(500 * time.Millisecond)
	before := [2]int{caddyGoroutines(t, a), caddyGoroutines(t, b)}
	st.start = time.Now()
	t.Logf("Caddy build and start, warm-up: %v", st.start.Sub(setup).Round(100*time.Millisecond))

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range failoverWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cw := worker(w)
			for {
				select {
				case <-stop:
					return
				default:
				}
				cw.login()
			}
		}()
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()

	end := st.start.Add(*failoverTest)
	next := st.start.Add(failoverFirst)
	for {
		select {
		case <-allDone:
			st.failf("the browsers stopped before the fault")
		case <-time.After(time.Until(next)):
		}
		if err := fault(st); err != nil {
			st.failf("fault: %v", err)
			break
		}
		if time.Now().Add(failoverEvery).After(end) {
			break
		}
		next = time.Now().Add(failoverEvery)
	}
	time.Sleep(failoverAfter)
	close(stop)
	// Every login started before the stop ends within its recovery bound
	// plus the checks' bound; a browser still busy after that is a hang.
	hangBound := chaosRecoveryBound + 2*chaosCheckBound + 3*chaosRequestTimeout
	select {
	case <-allDone:
	case <-time.After(hangBound):
		buf := make([]byte, 1<<20)
		t.Fatalf("simulated browsers still busy %v after the stop; goroutines:\n%s", hangBound, buf[:runtime.Stack(buf, true)])
	}
	duration := time.Since(st.start)

	issued := chaosLogins(t, a) + chaosLogins(t, b)
	if issued != st.sessions {
		st.failf("Caddy counted %d QR logins, the browsers received %d sessions", issued, st.sessions)
	}
	for _, c := range []*caddyProc{a, b} {
		if regexp.MustCompile(`(?i)panic`).MatchString(c.logs.String()) {
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
	t.Logf("%s, %d browsers:", what, failoverWorkers)
	st.report(t, duration, before, after, []*caddyProc{a, b})
	if len(st.failures) > 0 {
		t.Fatalf("%d failures during the %s", len(st.failures), what)
	}
	if st.successes == 0 {
		t.Fatal("no login succeeded")
	}
}
