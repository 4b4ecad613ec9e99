package redisstore

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/internal/redistest"
	"github.com/wechat-login/caddy-wechat-login/middleware/store"
)

var failoverTest = flag.Duration("failovertest", 0,
	"run the Sentinel failover and Cluster restart login tests for this long, with a fault about every 10 s (make failover); "+
		"by default each injects one fault and stops a few seconds after recovery")

// Bounds of the login runs. Nothing in them waits longer than these.
const (
	loginWorkers = 4
	// firstFault is when, after the logins start, the first fault comes;
	// faultEvery how long after the last recovery the next one does
	// (with -failovertest).
	firstFault = 2 * time.Second
	faultEvery = 10 * time.Second
	// afterRecovery is how long logins go on after the last recovery.
	afterRecovery = 3 * time.Second
	// loginBound is how long one login, all its retries included, may take.
	loginBound = 25 * time.Second
	// opTimeout bounds each store call.
	opTimeout = 2 * time.Second
	// retryPause is the pause before retrying after a backend error.
	retryPause = 100 * time.Millisecond
	// pushAttempts is how often WeChat delivers a push that is answered
	// with an error.
	pushAttempts = 5
	// wakeWait is how long the waiting browser waits for a notification
	// before it reads the scene anyway.
	wakeWait = time.Second
	// faultBound bounds one fault and its recovery.
	faultBound = 40 * time.Second
)

// The steps of a login, for counting backend errors (a 503 in the
// middleware).
const (
	stepCreate  = "create"  // the QR code: Create on instance A
	stepPush    = "push"    // WeChat's push: Update on instance B
	stepPublish = "publish" // B tells A's waiting browser
	stepRedeem  = "redeem"  // the browser's poll: Take on A
	stepReplay  = "replay"  // the scene asked for again, on both
)

var loginSteps = []string{stepCreate, stepPush, stepPublish, stepRedeem, stepReplay}

// loginRun is a run of logins through two Stores on their own clients, as
// two instances of the middleware behind a load balancer, while faults
// hit Redis.
type loginRun struct {
	t     *testing.T
	a, b  *Store
	start time.Time
	stop  chan struct{} // closed when no new login may start

	mu          sync.Mutex
	logins      int // logins begun, each retried until it succeeds
	attempts    int // tries, retries included
	successes   int
	duringFault int            // successes that ended while a fault was unrecovered
	unavailable map[string]int // backend errors per step
	retries     map[int]int    // retries needed → logins
	// Outcomes that only a write whose answer was lost explains: the push
	// retried after an error found its own write done; a redeem retried
	// after an error found the scene gone (the login is then retried, as
	// a browser shown "expired" would).
	pushAnswerLost, redeemAnswerLost int
	missedWakes                      int
	maxLatency                       time.Duration
	faulty                           bool // a fault is unrecovered
	faults, failures                 []string
}

func newLoginRun(t *testing.T, rawURL string) *loginRun {
	t.Helper()
	prefix := uniquePrefix()
	open := func() *Store {
		s, err := Open(rawURL, prefix)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	return &loginRun{t: t, a: open(), b: open(), stop: make(chan struct{}),
		unavailable: map[string]int{}, retries: map[int]int{}}
}

func (r *loginRun) since() string {
	return fmt.Sprintf("%6.2fs", time.Since(r.start).Seconds())
}

func (r *loginRun) failf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures = append(r.failures, r.since()+" "+fmt.Sprintf(format, args...))
}

func (r *loginRun) notef(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faults = append(r.faults, r.since()+" "+fmt.Sprintf(format, args...))
}

func (r *loginRun) count(f func(r *loginRun)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(r)
}

func (r *loginRun) setFaulty(v bool) { r.count(func(r *loginRun) { r.faulty = v }) }

// backend reports whether err is a backend failure: what the middleware
// answers 503 for.
func backend(err error) bool {
	return err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrExists) && !errors.Is(err, store.ErrChanged)
}

// run starts the workers and calls fault after firstFault, and again
// faultEvery after each recovery while -failovertest lasts; fault returns
// once Redis has recovered. Then the logins go on for afterRecovery.
func (r *loginRun) run(fault func() error) {
	t := r.t
	r.start = time.Now()
	end := r.start.Add(*failoverTest)
	var wg sync.WaitGroup
	for w := range loginWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lw := &loginWorker{r: r, id: w}
			for {
				select {
				case <-r.stop:
					return
				default:
				}
				lw.login()
			}
		}()
	}
	workersDone := make(chan struct{})
	go func() { wg.Wait(); close(workersDone) }()

	faultErr := func() error {
		next := r.start.Add(firstFault)
		for {
			select {
			case <-workersDone:
				return errors.New("the workers stopped before the fault")
			case <-time.After(time.Until(next)):
			}
			r.setFaulty(true)
			err := fault()
			r.setFaulty(false)
			if err != nil {
				return err
			}
			if time.Now().Add(faultEvery).After(end) {
				return nil
			}
			next = time.Now().Add(faultEvery)
		}
	}()
	if faultErr == nil {
		time.Sleep(afterRecovery)
	}
	close(r.stop)
	select {
	case <-workersDone:
	case <-time.After(loginBound + 4*opTimeout):
		buf := make([]byte, 1<<20)
		t.Fatalf("logins still running %s after the stop; goroutines:\n%s", loginBound+4*opTimeout, buf[:runtime.Stack(buf, true)])
	}
	if faultErr != nil {
		r.failf("fault: %v", faultErr)
	}
}

// report logs the counts and fails the test on any failure.
func (r *loginRun) report(what string) {
	t := r.t
	r.mu.Lock()
	defer r.mu.Unlock()
	var steps []string
	total := 0
	for _, s := range loginSteps {
		steps = append(steps, fmt.Sprintf("%s=%d", s, r.unavailable[s]))
		total += r.unavailable[s]
	}
	var retries []string
	for _, k := range slices.Sorted(maps.Keys(r.retries)) {
		retries = append(retries, fmt.Sprintf("%d:%d", k, r.retries[k]))
	}
	t.Logf("%s: %v, %d workers", what, time.Since(r.start).Round(100*time.Millisecond), loginWorkers)
	for _, f := range r.faults {
		t.Logf("  %s", f)
	}
	t.Logf("logins %d, tries %d, successes %d (%d while the fault lasted), max latency %v",
		r.logins, r.attempts, r.successes, r.duringFault, r.maxLatency.Round(time.Millisecond))
	t.Logf("backend errors (503s) per step: %s (total %d)", strings.Join(steps, " "), total)
	t.Logf("retries needed (retries:logins): %s", strings.Join(retries, " "))
	t.Logf("answers lost with the write applied: push %d, redeem %d; waits not woken within %v: %d",
		r.pushAnswerLost, r.redeemAnswerLost, wakeWait, r.missedWakes)
	t.Logf("failures: %d", len(r.failures))
	for i, f := range r.failures {
		if i == 30 {
			t.Logf("  … and %d more", len(r.failures)-i)
			break
		}
		t.Logf("  %s", f)
	}
	if len(r.failures) > 0 {
		t.Fatalf("%d logins lost, doubled or unbounded", len(r.failures))
	}
	if r.successes == 0 {
		t.Fatal("no login succeeded")
	}
}

// loginWorker is one user logging in again and again.
type loginWorker struct {
	r   *loginRun
	id  int
	seq int
}

type outcome int

const (
	succeeded outcome = iota
	unavailable
	failed
)

// login runs one login to its end: tries, each with a new scene, until
// one succeeds, one fails, or the bound passes.
func (w *loginWorker) login() {
	r := w.r
	start := time.Now()
	r.count(func(r *loginRun) { r.logins++ })
	for n := 0; ; n++ {
		if time.Since(start) > loginBound {
			r.failf("worker %d: no login within %v (%d tries)", w.id, loginBound, n)
			return
		}
		r.count(func(r *loginRun) { r.attempts++ })
		switch w.try() {
		case succeeded:
			lat := time.Since(start)
			r.count(func(r *loginRun) {
				r.successes++
				r.retries[n]++
				r.maxLatency = max(r.maxLatency, lat)
				if r.faulty {
					r.duringFault++
				}
			})
			return
		case failed:
			return
		}
		time.Sleep(retryPause)
	}
}

func (w *loginWorker) errored(step string) outcome {
	w.r.count(func(r *loginRun) { r.unavailable[step]++ })
	return unavailable
}

func ctxOp() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), opTimeout)
}

// try is one login with a new scene: created and waited on through
// instance A, confirmed by a push to instance B, redeemed on A, and then
// asked for again on both.
func (w *loginWorker) try() outcome {
	r := w.r
	w.seq++
	key := fmt.Sprintf("scene:%d:%d", w.id, w.seq)
	a, b := r.a, r.b
	if w.seq%2 == 0 {
		a, b = b, a
	}
	pending, confirmed := []byte("pending "+key), []byte("confirmed "+key)

	ctx, cancel := ctxOp()
	err := a.Create(ctx, key, pending, time.Minute)
	cancel()
	switch {
	case backend(err):
		return w.errored(stepCreate)
	case err != nil:
		r.failf("%s: create: %v", key, err)
		return failed
	}
	woken, unsubscribe := a.Subscribe(key)
	defer unsubscribe()

	// WeChat's push reaches B, which confirms the scene; an error answer
	// makes WeChat deliver it again.
	pushed := false
	for i := 0; i < pushAttempts && !pushed; i++ {
		if i > 0 {
			time.Sleep(retryPause)
		}
		ctx, cancel := ctxOp()
		err := b.Update(ctx, key, pending, confirmed)
		var cur []byte
		if errors.Is(err, store.ErrChanged) && i > 0 {
			cur, err = b.Get(ctx, key)
			if err == nil && !bytes.Equal(cur, confirmed) {
				err = fmt.Errorf("scene reads %q", cur)
			}
			if err == nil {
				r.count(func(r *loginRun) { r.pushAnswerLost++ })
			}
		}
		cancel()
		switch {
		case err == nil:
			pushed = true
		case backend(err):
			w.errored(stepPush)
		default:
			// The scene A created, and Redis acknowledged, is gone or
			// changed: a lost write.
			r.failf("%s: push %d: %v", key, i+1, err)
			return failed
		}
	}
	if !pushed {
		return unavailable // the user scans a new code
	}
	ctx, cancel = ctxOp()
	if err := b.Publish(ctx, key); err != nil {
		w.errored(stepPublish)
	}
	cancel()

	select {
	case <-woken:
	case <-time.After(wakeWait):
		r.count(func(r *loginRun) { r.missedWakes++ })
	}

	// The browser redeems on A, and polls again after an error.
	deadline := time.Now().Add(loginBound)
	redeemErrored := false
	for {
		ctx, cancel := ctxOp()
		v, err := a.Take(ctx, key)
		cancel()
		switch {
		case err == nil && bytes.Equal(v, confirmed):
		case err == nil:
			r.failf("%s: redeemed %q", key, v)
			return failed
		case errors.Is(err, store.ErrNotFound) && redeemErrored:
			// The errored Take did take it; its answer was lost. The
			// browser is told "expired" and starts again.
			r.count(func(r *loginRun) { r.redeemAnswerLost++ })
			return unavailable
		case backend(err) && time.Now().Before(deadline):
			redeemErrored = true
			w.errored(stepRedeem)
			time.Sleep(retryPause)
			continue
		default:
			r.failf("%s: redeem of a confirmed scene: %v", key, err)
			return failed
		}
		break
	}

	// Nobody redeems it again, on either instance.
	for _, s := range []*Store{b, a} {
		for {
			ctx, cancel := ctxOp()
			v, err := s.Take(ctx, key)
			cancel()
			if backend(err) && time.Now().Before(deadline) {
				w.errored(stepReplay)
				time.Sleep(retryPause)
				continue
			}
			if !errors.Is(err, store.ErrNotFound) {
				r.failf("%s: redeemed again: %q, %v", key, v, err)
				return failed
			}
			break
		}
	}
	return succeeded
}

// TestSentinelFailoverLogins: logins run through two instances while the
// primary is SIGKILLed; the Sentinels promote the replica within a few
// seconds. Every store call answers or fails as a backend error (a 503),
// a retried login succeeds, no acknowledged write is lost and no scene is
// redeemed twice. The old primary then rejoins as a replica.
func TestSentinelFailoverLogins(t *testing.T) {
	g := redistest.StartSentinel(t, 3)
	r := newLoginRun(t, g.URL())
	r.run(func() error {
		old, err := g.Primary()
		if err != nil {
			return err
		}
		down := time.Now()
		old.Stop()
		r.notef("primary %s SIGKILLed", old.Addr())
		promoted, err := g.WaitFailover(old, faultBound)
		if err != nil {
			return err
		}
		r.notef("Sentinels promoted %s, %v after the kill", promoted.Addr(), time.Since(down).Round(time.Millisecond))
		if err := g.Rejoin(old); err != nil {
			return err
		}
		if err := g.Ready(faultBound); err != nil {
			return err
		}
		r.notef("old primary back as a replica, Sentinels ready, %v after the kill", time.Since(down).Round(time.Millisecond))
		return nil
	})
	r.report("Sentinel failover")
}

// TestClusterRestartLogins: logins run through two instances while one of
// three Cluster nodes (the one whose slot holds the notification channel)
// is SIGKILLed and restarted a second later from its append-only file.
// Logins whose scenes hash to the other nodes go on; those on the dead
// node's slots fail as backend errors until it is back; none is lost or
// doubled.
func TestClusterRestartLogins(t *testing.T) {
	c := redistest.StartCluster(t, redistest.WithAppendOnly("always"))
	r := newLoginRun(t, c.URL())
	node, err := c.NodeFor(r.a.prefix + notifyChannel)
	if err != nil {
		t.Fatal(err)
	}
	r.run(func() error {
		down := time.Now()
		node.Stop()
		r.notef("node %s SIGKILLed", node.Addr())
		time.Sleep(time.Second)
		if err := node.TryRestart(); err != nil {
			return err
		}
		if err := c.Healthy(faultBound); err != nil {
			return err
		}
		r.notef("node restarted, cluster ok, %v after the kill", time.Since(down).Round(time.Millisecond))
		return nil
	})
	r.report("Cluster node restart")
}
