package redisstore

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wechat-login/caddy-wechat-login/internal/redistest"
	"github.com/wechat-login/caddy-wechat-login/middleware"
	"github.com/wechat-login/caddy-wechat-login/middleware/store"
)

var _ middleware.Notifier = (*notifier)(nil)

// newNotifier returns a Notifier on a client of its own, as a separate
// instance of the middleware would have, closed when the test ends.
func newNotifier(t testing.TB, srv *redistest.Server, prefix string) *notifier {
	t.Helper()
	n, err := subscribeNotifier(context.Background(), newClient(t, srv), prefix)
	if err != nil {
		t.Fatalf("NewNotifier: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("Notifier.Close: %v", err)
		}
	})
	return n
}

// wantWake waits up to limit for a value on ch and returns how long it
// took.
func wantWake(t testing.TB, ch <-chan struct{}, limit time.Duration, what string) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case <-ch:
		return 0
	default:
	}
	select {
	case <-ch:
		return time.Since(start)
	case <-time.After(limit):
		t.Fatalf("%s: no wake-up within %s", what, limit)
		return 0
	}
}

// wantNoWake fails if ch holds a value.
func wantNoWake(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
		t.Fatalf("%s: unexpected wake-up", what)
	default:
	}
}

func TestNotifierAcrossInstances(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	a, b := newNotifier(t, srv, ""), newNotifier(t, srv, "")

	onB, cancelB := b.Subscribe("scene:1")
	defer cancelB()
	otherB, cancelOther := b.Subscribe("scene:2")
	defer cancelOther()
	syncB, cancelSync := b.Subscribe("sync")
	defer cancelSync()
	onA, cancelA := a.Subscribe("scene:1")
	defer cancelA()
	if got := b.Waiting(); got != 3 {
		t.Fatalf("b.Waiting() = %d, want 3", got)
	}

	if err := a.Publish(ctx, "scene:1"); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	wantWake(t, onB, time.Second, "subscriber on the other instance")
	wantWake(t, onA, time.Second, "subscriber on the publishing instance")

	// Messages on one channel arrive in order, so once "sync" is in,
	// anything "scene:1" would have caused has happened.
	if err := a.Publish(ctx, "sync"); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	wantWake(t, syncB, time.Second, "sync")
	wantNoWake(t, otherB, "subscriber of another topic")
	wantNoWake(t, onB, "subscriber after its one publish")
}

func TestNotifierLatency(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	a, b := newNotifier(t, srv, ""), newNotifier(t, srv, "")

	const rounds = 200
	lat := make([]time.Duration, 0, rounds)
	for i := range rounds {
		// A fresh topic each round, published right after Subscribe
		// returns: the subscription must already be in effect.
		topic := fmt.Sprintf("scene:%d", i)
		ch, cancel := b.Subscribe(topic)
		start := time.Now()
		if err := a.Publish(ctx, topic); err != nil {
			t.Fatalf("Publish: %v", err)
		}
		wantWake(t, ch, time.Second, topic)
		lat = append(lat, time.Since(start))
		cancel()
	}
	slices.Sort(lat)
	t.Logf("publish on A to wake-up on B over %d rounds: p50 %s, p99 %s, max %s",
		rounds, lat[rounds/2], lat[rounds*99/100], lat[rounds-1])
	if b.Waiting() != 0 {
		t.Fatalf("Waiting() = %d after every cancel, want 0", b.Waiting())
	}
}

func TestNotifierCancelAndCoalesce(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	a, b := newNotifier(t, srv, ""), newNotifier(t, srv, "")

	ch, cancel := b.Subscribe("t")
	gone, cancelGone := b.Subscribe("t")
	cancelGone()
	cancelGone() // twice is harmless
	if got := b.Waiting(); got != 1 {
		t.Fatalf("Waiting() = %d, want 1", got)
	}
	syncB, cancelSync := b.Subscribe("sync")
	defer cancelSync()

	// Three publishes to a subscriber that does not read: the publisher
	// never blocks, and the subscriber sees at least one wake-up.
	for range 3 {
		if err := a.Publish(ctx, "t"); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	if err := a.Publish(ctx, "sync"); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	wantWake(t, syncB, time.Second, "sync")
	wantWake(t, ch, 0, "subscriber of three publishes")
	wantNoWake(t, ch, "coalesced subscriber")
	wantNoWake(t, gone, "cancelled subscriber")

	cancel()
	if got := b.Waiting(); got != 1 {
		t.Fatalf("Waiting() = %d, want 1", got)
	}
}

func TestNotifierPrefixes(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	a, b, other := newNotifier(t, srv, "one:"), newNotifier(t, srv, "one:"), newNotifier(t, srv, "two:")

	onB, cancelB := b.Subscribe("t")
	defer cancelB()
	onOther, cancelOther := other.Subscribe("t")
	defer cancelOther()
	syncOther, cancelSync := other.Subscribe("sync")
	defer cancelSync()

	if err := a.Publish(ctx, "t"); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	wantWake(t, onB, time.Second, "same prefix")
	// Redis handled a's PUBLISH before this one, so once "sync" is in,
	// a leaked message would be too. (other.Publish would wake its own
	// subscriber directly, not through Redis.)
	if err := newClient(t, srv).Publish(ctx, "two:notify", "sync").Err(); err != nil {
		t.Fatalf("PUBLISH: %v", err)
	}
	wantWake(t, syncOther, time.Second, "sync")
	wantNoWake(t, onOther, "subscriber under another prefix")
}

func TestNotifierRedisRestart(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	a, b := newNotifier(t, srv, ""), newNotifier(t, srv, "")
	onA, cancelA := a.Subscribe("t")
	defer cancelA()
	onB, cancelB := b.Subscribe("t")
	defer cancelB()
	before := runtime.NumGoroutine()

	srv.Stop()
	start := time.Now()
	err := a.Publish(ctx, "t")
	if err == nil || strings.Contains(err.Error(), `"t"`) {
		t.Fatalf("Publish with Redis down = %v, want an error without the topic", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Publish with Redis down took %s", d)
	}
	// The publishing instance's own subscribers are woken regardless.
	wantWake(t, onA, 0, "local subscriber with Redis down")

	// While Redis is down, go-redis keeps trying to reconnect (every
	// 100 ms); that must not pile up goroutines. Each client's pool may
	// start one dial prober.
	time.Sleep(time.Second)
	now := runtime.NumGoroutine()
	t.Logf("%d goroutines after a second without Redis, %d before", now, before)
	if now > before+4 {
		t.Errorf("goroutines piled up: %d after a second without Redis, %d before", now, before)
	}

	srv.Restart()
	// b resubscribes by itself and wakes its subscribers, since
	// messages sent meanwhile are lost.
	d := wantWake(t, onB, 5*time.Second, "subscriber after Redis came back")
	t.Logf("subscriber woken %s after Redis came back", d)

	// And delivers again, without being recreated.
	deadline := time.Now().Add(5 * time.Second)
	for a.Publish(ctx, "t") != nil {
		if time.Now().After(deadline) {
			t.Fatal("Publish still failing 5s after Redis came back")
		}
		time.Sleep(20 * time.Millisecond)
	}
	wantWake(t, onB, time.Second, "subscriber on the other instance after restart")
}

func TestNotifierConnectionDropped(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	a, b := newNotifier(t, srv, ""), newNotifier(t, srv, "")
	onB, cancelB := b.Subscribe("t")
	defer cancelB()

	// Redis drops subscriber connections (client-output-buffer-limit, a
	// proxy's idle timeout) while the server stays up: messages published
	// meanwhile are lost, so b wakes everyone once it has resubscribed.
	admin := newClient(t, srv)
	killed, err := admin.ClientKillByFilter(ctx, "TYPE", "pubsub").Result()
	if err != nil || killed != 2 {
		t.Fatalf("CLIENT KILL TYPE pubsub = %d, %v; want 2 killed", killed, err)
	}
	d := wantWake(t, onB, 2*time.Second, "subscriber after its connection dropped")
	t.Logf("subscriber woken %s after its connection was killed", d)

	// Wait until b is subscribed again, then it delivers as before.
	deadline := time.Now().Add(2 * time.Second)
	for {
		n, err := admin.PubSubNumSub(ctx, b.channel).Result()
		if err == nil && n[b.channel] == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("PUBSUB NUMSUB = %v, %v; want both notifiers back", n, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := a.Publish(ctx, "t"); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	wantWake(t, onB, time.Second, "subscriber after resubscribing")
}

func TestNotifierUnavailable(t *testing.T) {
	srv := redistest.Start(t)
	client := newClient(t, srv)
	srv.Stop()
	start := time.Now()
	n, err := subscribeNotifier(context.Background(), client, "")
	if err == nil {
		_ = n.Close()
		t.Fatal("NewNotifier with Redis down succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("NewNotifier with Redis down took %s", d)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := subscribeNotifier(ctx, client, ""); err == nil {
		t.Fatal("NewNotifier with a cancelled context succeeded")
	}
}

func TestNotifierClose(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	client := newClient(t, srv)
	n, err := subscribeNotifier(ctx, client, "")
	if err != nil {
		t.Fatalf("NewNotifier: %v", err)
	}
	ch, cancel := n.Subscribe("t")
	defer cancel()

	// Close while Redis is down must not hang.
	srv.Stop()
	start := time.Now()
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %s", d)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	select {
	case <-n.done:
	default:
		t.Fatal("receive goroutine still running after Close")
	}

	// The client stays the caller's, and a closed Notifier still wakes
	// its own subscribers on Publish.
	srv.Restart()
	if err := client.Ping(ctx).Err(); errors.Is(err, redis.ErrClosed) {
		t.Fatalf("Notifier.Close closed the caller's client")
	}
	_ = n.Publish(ctx, "t")
	wantWake(t, ch, 0, "local subscriber of a closed notifier")
}

// TestNotifierStartsWhileRedisDown: a server that starts while Redis is down
// gets a working Notifier at once, which starts delivering across instances
// when Redis comes up, without being recreated.
func TestNotifierStartsWhileRedisDown(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	srv.Stop()
	start := time.Now()
	late := startNotifier(newClient(t, srv), "")
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("StartNotifier blocked for %s", d)
	}
	defer func() {
		if err := late.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	sub, cancel := late.Subscribe("t")
	defer cancel()
	// Its own publishes wake its own subscribers even now.
	_ = late.Publish(ctx, "t")
	wantWake(t, sub, 0, "local subscriber with Redis down")

	srv.Restart()
	// Once subscribed, it wakes everyone to re-read ...
	wantWake(t, sub, 5*time.Second, "subscriber when the subscription came up")
	// ... and then hears the other instances.
	other := newNotifier(t, srv, "")
	if err := other.Publish(ctx, "t"); err != nil {
		t.Fatal(err)
	}
	wantWake(t, sub, time.Second, "subscriber after a publish on another instance")
}

// TestNotifierClosedEarly: closing before the background subscribe has
// finished does not leak or hang.
func TestNotifierClosedEarly(t *testing.T) {
	srv := redistest.Start(t)
	srv.Stop()
	n := startNotifier(newClient(t, srv), "")
	done := make(chan error, 1)
	go func() { done <- n.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung")
	}
}

// subscribedPair returns two stores on one Redis, each subscribed to topic,
// once Redis has confirmed b's subscriptions (a publish of a's reaches
// b).
func subscribedPair(t *testing.T, topic string) (a, b *Store, onA, onB <-chan struct{}) {
	t.Helper()
	ctx := context.Background()
	srv := redistest.Start(t)
	prefix := uniquePrefix()
	a, b = New(newClient(t, srv), prefix), New(newClient(t, srv), prefix)
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	onA, cancelA := a.Subscribe(topic)
	t.Cleanup(cancelA)
	onB, cancelB := b.Subscribe(topic)
	t.Cleanup(cancelB)
	// Each side's notifier subscribes in the background and wakes its
	// subscribers once when Redis confirms: wait until each has heard the
	// other through Redis, which comes after its confirmation, so that no
	// such wake-up arrives after this returns.
	heard := func(from, to *Store, sync string) {
		ch, cancel := to.Subscribe(sync)
		defer cancel()
		for deadline := time.Now().Add(5 * time.Second); ; {
			if err := from.Publish(ctx, sync); err != nil {
				t.Fatal(err)
			}
			select {
			case <-ch:
				return
			case <-time.After(50 * time.Millisecond):
				if time.Now().After(deadline) {
					t.Fatalf("%s never heard a publish through Redis", sync)
				}
			}
		}
	}
	heard(a, b, "sync-b")
	heard(b, a, "sync-a")
	return a, b, onA, onB
}

// TestPublishThenCreate: the publish wakes subscribers on both instances
// and the key is created, in one call; a second call still publishes and
// finds the key there.
func TestPublishThenCreate(t *testing.T) {
	ctx := context.Background()
	a, b, onA, onB := subscribedPair(t, "scene:1")

	pubErr, err := a.PublishThenCreate(ctx, "scene:1", "marker", []byte("reply"), time.Minute)
	if pubErr != nil || err != nil {
		t.Fatalf("PublishThenCreate = %v, %v", pubErr, err)
	}
	wantWake(t, onA, time.Second, "subscriber on the publishing instance")
	wantWake(t, onB, time.Second, "subscriber on the other instance")
	if v, err := b.Get(ctx, "marker"); err != nil || string(v) != "reply" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	pubErr, err = a.PublishThenCreate(ctx, "scene:1", "marker", []byte("other"), time.Minute)
	if pubErr != nil || !errors.Is(err, store.ErrExists) {
		t.Fatalf("second PublishThenCreate = %v, %v; want nil, ErrExists", pubErr, err)
	}
	wantWake(t, onB, time.Second, "subscriber on the other instance, second publish")
	if _, err := a.PublishThenCreate(ctx, "scene:1", "marker2", []byte("x"), 0); err == nil {
		t.Fatal("a time to live of zero was accepted")
	}
}
