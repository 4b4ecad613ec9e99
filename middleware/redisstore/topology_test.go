package redisstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wechat-login/caddy-wechat-login/internal/redistest"
	"github.com/wechat-login/caddy-wechat-login/middleware/store"
	"github.com/wechat-login/caddy-wechat-login/middleware/store/storetest"
)

// urlClient returns a client for rawURL with Open's settings, closed when
// the test ends.
func urlClient(t testing.TB, rawURL string) redis.UniversalClient {
	t.Helper()
	c, err := NewUniversalClient(rawURL)
	if err != nil {
		t.Fatalf("NewUniversalClient: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func conformance(t *testing.T, rawURL string) {
	client := urlClient(t, rawURL)
	storetest.Run(t, storetest.Harness{
		NewStore: func(t *testing.T) storetest.Subject {
			return storetest.Subject{
				Store:   New(client, uniquePrefix()),
				Advance: func(d time.Duration) { time.Sleep(d) },
			}
		},
		TTL:         conformanceTTL,
		Concurrency: 16,
	})
}

// TestConformanceSentinel runs the store suite through a Sentinel: the
// client asks the Sentinel for the primary and talks to it. The Stores
// come from Open, so every write also waits for the replica (WAIT).
func TestConformanceSentinel(t *testing.T) {
	g := redistest.StartSentinel(t, 1)
	storetest.Run(t, storetest.Harness{
		NewStore: func(t *testing.T) storetest.Subject {
			s, err := Open(g.URL(), uniquePrefix())
			if err != nil {
				t.Fatal(err)
			}
			if s.waitReplicas != 1 {
				t.Fatalf("a Sentinel store waits for %d replicas, want 1", s.waitReplicas)
			}
			return storetest.Subject{Store: s, Advance: func(d time.Duration) { time.Sleep(d) }}
		},
		TTL:         conformanceTTL,
		Concurrency: 8,
	})
}

// TestConformanceCluster runs the store suite on a three-node Cluster.
// Every operation touches one key and each script one key (KEYS[1]), so
// nothing needs keys in one slot.
func TestConformanceCluster(t *testing.T) {
	c := redistest.StartCluster(t)
	conformance(t, c.URL())
	// No hash tag pins the store's keys to one slot: they spread over the
	// nodes like any keys.
	nodes := map[*redistest.Server]bool{}
	for i := range 30 {
		n, err := c.NodeFor(DefaultPrefix + fmt.Sprintf("scene:%d", i))
		if err != nil {
			t.Fatal(err)
		}
		nodes[n] = true
	}
	if len(nodes) != len(c.Nodes) {
		t.Fatalf("30 scene keys live on %d of %d nodes", len(nodes), len(c.Nodes))
	}
}

// notifyAcross checks that a Publish through one client wakes a
// subscriber on another, as between two instances.
func notifyAcross(t *testing.T, rawURL string) {
	ctx := context.Background()
	a, err := subscribeNotifier(ctx, urlClient(t, rawURL), "n:")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := subscribeNotifier(ctx, urlClient(t, rawURL), "n:")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for i := range 20 {
		topic := fmt.Sprintf("scene:%d", i)
		ch, cancel := b.Subscribe(topic)
		start := time.Now()
		if err := a.Publish(ctx, topic); err != nil {
			t.Fatalf("Publish: %v", err)
		}
		wantWake(t, ch, time.Second, topic)
		if i == 0 {
			t.Logf("first wake-up on B %s after A's Publish", time.Since(start))
		}
		cancel()
	}
}

func TestNotifierSentinel(t *testing.T) {
	notifyAcross(t, redistest.StartSentinel(t, 1).URL())
}

// TestNotifierCluster: plain PUBLISH is forwarded to every node of a
// Cluster, so a subscriber on one node hears a Publish sent to any other.
func TestNotifierCluster(t *testing.T) {
	notifyAcross(t, redistest.StartCluster(t).URL())
}

// TestClusterSendsOnce: a cluster client does not resend a command after
// a network error that leaves open whether it ran, as go-redis would by
// default (a resent GETDEL would then answer "not found"): a command to a
// hung node fails after one read timeout, not after several.
func TestClusterSendsOnce(t *testing.T) {
	ctx := context.Background()
	c := redistest.StartCluster(t)
	client := urlClient(t, c.URL()+"?read_timeout=300ms")
	s := New(client, "p:")
	if err := s.Create(ctx, "k", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	node, err := c.NodeFor("p:k")
	if err != nil {
		t.Fatal(err)
	}
	node.Pause()
	start := time.Now()
	_, err = s.Take(ctx, "k")
	took := time.Since(start)
	node.Resume()
	t.Logf("Take from a hung node: %v after %s", err, took)
	if err == nil || errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Take from a hung node = %v, want a backend error", err)
	}
	if took > 550*time.Millisecond {
		t.Fatalf("Take took %s: it was sent again after the first read timeout", took)
	}
	var sent mayHaveRun
	if errors.As(err, &sent) {
		t.Fatalf("the store's error still wraps mayHaveRun: %v", err)
	}
	// The GETDEL did run once the node resumed: the value is gone, and
	// the client works again.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := s.Get(ctx, "k")
		if errors.Is(err, store.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Get after Resume = %v, want ErrNotFound", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestHideUnsafe(t *testing.T) {
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	read := &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}
	for _, tc := range []struct {
		err    error
		hidden bool
	}{
		{nil, false},
		{redis.Nil, false},
		{context.DeadlineExceeded, false},
		{dial, false},
		{fmt.Errorf("wrapped: %w", dial), false},
		{redis.ErrPoolTimeout, false},
		{redis.ErrClosed, false},
		{io.EOF, true},
		{io.ErrUnexpectedEOF, true},
		{read, true},
	} {
		got := hideUnsafe(tc.err)
		var sent mayHaveRun
		if errors.As(got, &sent) != tc.hidden {
			t.Errorf("hideUnsafe(%v) = %#v; want hidden %v", tc.err, got, tc.hidden)
		}
		if tc.hidden {
			if errors.Is(got, io.EOF) || errors.Is(got, io.ErrUnexpectedEOF) {
				t.Errorf("hideUnsafe(%v) can still be unwrapped", tc.err)
			}
			if b := backendError("op", got); !errors.Is(b, tc.err) {
				t.Errorf("backendError does not unwrap it: %v", b)
			}
		}
	}
	// A Redis error reply passes unchanged: MOVED and the like must
	// reach the cluster client.
	if err := hideUnsafe(replyError("MOVED 1 127.0.0.1:2")); !errors.Is(err, replyError("MOVED 1 127.0.0.1:2")) {
		t.Errorf("a Redis error reply was hidden: %v", err)
	}
}

// replyError is an error reply from Redis, as go-redis types it.
type replyError string

func (e replyError) Error() string { return string(e) }
func (replyError) RedisError()     {}

// TestWaitReplicas: a Store opened with wait_replicas reports a write done
// only once that many replicas have it. Without them, writes fail as
// backend errors within wait_timeout, though the primary applied them;
// writes that change nothing answer as usual.
func TestWaitReplicas(t *testing.T) {
	ctx := context.Background()
	g := redistest.StartSentinel(t, 1)
	s, err := Open(g.URL()+"&wait_timeout=300ms", "w:")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Create(ctx, "k", []byte("v1"), time.Minute); err != nil {
		t.Fatalf("Create with the replica up: %v", err)
	}
	if err := s.Update(ctx, "k", []byte("v1"), []byte("v2")); err != nil {
		t.Fatalf("Update with the replica up: %v", err)
	}
	// What the Store reported done is on the replica.
	replica := g.Servers[1]
	if got, err := redistest.Command(replica.Addr(), "GET", "w:k"); err != nil || len(got) != 1 || got[0] != "v2" {
		t.Fatalf("GET on the replica = %q, %v; want v2", got, err)
	}

	replica.Stop()
	notReplicated := func(op string, err error) {
		t.Helper()
		if !backend(err) || !strings.Contains(err.Error(), "replicas") {
			t.Errorf("%s without a replica = %v, want a backend error about replicas", op, err)
		}
	}
	start := time.Now()
	notReplicated("create", s.Create(ctx, "new", []byte("v"), time.Minute))
	if d := time.Since(start); d > time.Second {
		t.Errorf("Create without a replica took %s, want about wait_timeout (300ms)", d)
	}
	notReplicated("update", s.Update(ctx, "k", []byte("v2"), []byte("v3")))
	_, err = s.Incr(ctx, "n", time.Minute)
	notReplicated("incr", err)
	_, err = s.Take(ctx, "k")
	notReplicated("take", err)
	// The unconfirmed Take put the value back, time to live and all, for
	// a retry once a replica is back.
	if got, err := s.Get(ctx, "k"); err != nil || string(got) != "v3" {
		t.Errorf("Get after an unconfirmed Take = %q, %v; want v3 (the unconfirmed Update applied) back", got, err)
	}
	if ttl, err := redistest.Command(g.Servers[0].Addr(), "PTTL", "w:k"); err != nil || len(ttl) != 1 || ttl[0] == "-1" || ttl[0] == "-2" {
		t.Errorf("PTTL after an unconfirmed Take = %q, %v; want the time left", ttl, err)
	}
	notReplicated("delete", s.Delete(ctx, "new"))
	// Writes that write nothing need no replica.
	if err := s.Create(ctx, "n", []byte("v"), time.Minute); !errors.Is(err, store.ErrExists) {
		t.Errorf("Create of an existing key = %v, want ErrExists", err)
	}
	if _, err := s.Take(ctx, "missing"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Take of a missing key = %v, want ErrNotFound", err)
	}
	if err := s.Update(ctx, "n", []byte("other"), []byte("x")); !errors.Is(err, store.ErrChanged) {
		t.Errorf("Update of a changed key = %v, want ErrChanged", err)
	}

	if err := g.Rejoin(replica); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, "again", []byte("v"), time.Minute); err != nil {
		t.Fatalf("Create once the replica is back: %v", err)
	}
	if got, err := s.Take(ctx, "k"); err != nil || string(got) != "v3" {
		t.Fatalf("Take once the replica is back = %q, %v; want v3", got, err)
	}
	if _, err := s.Take(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second Take = %v, want ErrNotFound", err)
	}
}
