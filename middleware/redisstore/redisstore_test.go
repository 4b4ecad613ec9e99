package redisstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/wechat-login/caddy-wechat-login/internal/redistest"
	"github.com/wechat-login/caddy-wechat-login/middleware/store"
	"github.com/wechat-login/caddy-wechat-login/middleware/store/storetest"
)

func TestMain(m *testing.M) {
	// go-redis logs every failed dial through a process-wide logger; the
	// fault tests fail thousands on purpose.
	redis.SetLogger(quietLogger{})
	goleak.VerifyTestMain(m)
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// newClient returns a client for srv with Open's settings, closed
// when the test ends.
func newClient(t testing.TB, srv *redistest.Server) *redis.Client {
	t.Helper()
	c, err := NewClient(srv.URL())
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// conformanceTTL is the time to live of the suite's expiring entries.
// Redis expires keys to the millisecond, but the suite sleeps, and keeps a
// quarter TTL of margin around each expiry. 75 ms, then 150 ms, were each
// once overrun by the scheduling delays of a two-core machine running
// several -race suites at once (against Sentinel); 250 ms has room.
const conformanceTTL = time.Second

// prefixes hands out prefixes no other store in the test binary uses, so
// stores can share one server.
var prefixes atomic.Int64

func uniquePrefix() string {
	return fmt.Sprintf("test%d:", prefixes.Add(1))
}

func TestConformance(t *testing.T) {
	srv := redistest.Start(t)
	client := newClient(t, srv)
	storetest.Run(t, storetest.Harness{
		NewStore: func(t *testing.T) storetest.Subject {
			return storetest.Subject{
				Store:   New(client, uniquePrefix()),
				Advance: func(d time.Duration) { time.Sleep(d) },
			}
		},
		TTL: conformanceTTL,
	})
}

func TestConformanceOwnedClient(t *testing.T) {
	srv := redistest.Start(t)
	storetest.Run(t, storetest.Harness{
		NewStore: func(t *testing.T) storetest.Subject {
			s, err := Open(srv.URL(), uniquePrefix())
			if err != nil {
				t.Fatalf("NewFromURL: %v", err)
			}
			return storetest.Subject{Store: s, Advance: func(d time.Duration) { time.Sleep(d) }}
		},
		TTL:         conformanceTTL,
		Concurrency: 8,
	})
}

func TestPrefix(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	client := newClient(t, srv)

	def := New(client, "")
	other := New(client, "other:")
	if err := def.Create(ctx, "k", []byte("default"), time.Minute); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := other.Create(ctx, "k", []byte("other"), time.Minute); err != nil {
		t.Fatalf("Create under another prefix: %v", err)
	}
	for key, want := range map[string]string{"wechat_login:k": "default", "other:k": "other"} {
		got, err := client.Get(ctx, key).Result()
		if err != nil || got != want {
			t.Errorf("Redis key %q = %q, %v; want %q", key, got, err, want)
		}
	}
	if _, err := other.Take(ctx, "k"); err != nil {
		t.Fatalf("Take: %v", err)
	}
	if got, err := def.Get(ctx, "k"); err != nil || string(got) != "default" {
		t.Fatalf("Take under one prefix touched the other: Get = %q, %v", got, err)
	}
	// Close leaves a caller's client open.
	if err := def.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := client.Ping(ctx).Err(); err != nil {
		t.Fatalf("client unusable after Store.Close: %v", err)
	}
}

func TestTTLOnEveryKey(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	client := newClient(t, srv)
	s := New(client, "p:")
	if err := s.Create(ctx, "k", []byte("v1"), 90*time.Second); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := s.Update(ctx, "k", []byte("v1"), []byte("v2")); err != nil {
		t.Fatalf("Update: %v", err)
	}
	// Update keeps the deadline: the key must never become permanent,
	// or it would survive an eviction policy that only drops keys with
	// a TTL.
	ttl, err := client.PTTL(ctx, "p:k").Result()
	if err != nil {
		t.Fatalf("PTTL: %v", err)
	}
	if ttl <= 80*time.Second || ttl > 90*time.Second {
		t.Fatalf("PTTL after Update = %s, want just under 90s", ttl)
	}
}

func TestBadInput(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	client := newClient(t, srv)
	s := New(client, "")
	long := strings.Repeat("k", maxKeyLen+1)
	huge := bytes.Repeat([]byte("v"), maxValueLen+1)

	tests := []struct {
		name string
		op   func() error
		want string
	}{
		{"zero ttl", func() error { return s.Create(ctx, "k", []byte("v"), 0) }, "ttl"},
		{"negative ttl", func() error { return s.Create(ctx, "k", []byte("v"), -time.Second) }, "ttl"},
		{"sub-millisecond ttl", func() error { return s.Create(ctx, "k", []byte("v"), time.Microsecond) }, "ttl"},
		{"long key create", func() error { return s.Create(ctx, long, []byte("v"), time.Minute) }, "key"},
		{"long key get", func() error { _, err := s.Get(ctx, long); return err }, "key"},
		{"long key update", func() error { return s.Update(ctx, long, nil, nil) }, "key"},
		{"long key take", func() error { _, err := s.Take(ctx, long); return err }, "key"},
		{"long key delete", func() error { return s.Delete(ctx, long) }, "key"},
		{"huge value create", func() error { return s.Create(ctx, "k", huge, time.Minute) }, "value"},
		{"huge value update", func() error { return s.Update(ctx, "k", nil, huge) }, "value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.op()
			if err == nil || errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error about the %s", err, tc.want)
			}
			if strings.Contains(err.Error(), "kkkk") || strings.Contains(err.Error(), "vvvv") {
				t.Fatalf("error quotes the input: %v", err)
			}
		})
	}
	// Nothing was written.
	if n, err := client.DBSize(ctx).Result(); err != nil || n != 0 {
		t.Fatalf("DBSIZE = %d, %v; want 0", n, err)
	}
}

func TestWrongType(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	client := newClient(t, srv)
	s := New(client, "p:")
	// Someone else's list under our prefix: a backend error, never a
	// value or ErrNotFound.
	if err := client.RPush(ctx, "p:list", "secret-item").Err(); err != nil {
		t.Fatalf("RPUSH: %v", err)
	}
	for name, op := range map[string]func() error{
		"get":    func() error { _, err := s.Get(ctx, "list"); return err },
		"update": func() error { return s.Update(ctx, "list", nil, []byte("x")) },
		"take":   func() error { _, err := s.Take(ctx, "list"); return err },
	} {
		err := op()
		if err == nil || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrChanged) {
			t.Errorf("%s on a list = %v, want a backend error", name, err)
		}
		if err != nil && strings.Contains(err.Error(), "secret-item") {
			t.Errorf("%s error quotes the stored value: %v", name, err)
		}
	}
}

func TestOpen(t *testing.T) {
	tests := []struct {
		name     string
		url      string
		wantErr  bool
		wantDB   int
		wantTLS  bool
		wantRead time.Duration
		wantPass string
		retries  int // after go-redis's normalisation: 0 is none
	}{
		{name: "plain", url: "redis://127.0.0.1:6379", wantRead: time.Second},
		{name: "db and password", url: "redis://:hunter2@redis.internal:6380/3", wantDB: 3, wantRead: time.Second, wantPass: "hunter2"},
		{name: "tls", url: "rediss://user:pw@redis.internal/1", wantDB: 1, wantTLS: true, wantRead: time.Second, wantPass: "pw"},
		{name: "settings from url", url: "redis://127.0.0.1/0?read_timeout=3s&max_retries=2", wantRead: 3 * time.Second, retries: 2},
		{name: "wrong scheme", url: "http://:hunter2@127.0.0.1:6379", wantErr: true},
		{name: "bad db", url: "redis://:hunter2@127.0.0.1:6379/notanumber", wantErr: true},
		{name: "garbage", url: "::hunter2", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(tc.url, "")
			if tc.wantErr {
				if err == nil {
					_ = s.Close()
					t.Fatal("NewFromURL succeeded, want an error")
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Fatalf("error quotes the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewFromURL: %v", err)
			}
			opt := s.client.(*redis.Client).Options()
			if opt.DB != tc.wantDB || (opt.TLSConfig != nil) != tc.wantTLS || opt.Password != tc.wantPass {
				t.Errorf("DB %d, TLS %v, password %q; want %d, %v, %q", opt.DB, opt.TLSConfig != nil, opt.Password, tc.wantDB, tc.wantTLS, tc.wantPass)
			}
			if opt.ReadTimeout != tc.wantRead || opt.DialTimeout != urlDialTimeout || opt.MaxRetries != tc.retries {
				t.Errorf("read timeout %s, dial timeout %s, retries %d; want %s, %s, %d",
					opt.ReadTimeout, opt.DialTimeout, opt.MaxRetries, tc.wantRead, urlDialTimeout, tc.retries)
			}
			if s.prefix != DefaultPrefix {
				t.Errorf("prefix %q, want %q", s.prefix, DefaultPrefix)
			}
			// Close closes the client it created, once.
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if err := s.client.Ping(context.Background()).Err(); !errors.Is(err, redis.ErrClosed) {
				t.Fatalf("client after Close: %v, want ErrClosed", err)
			}
		})
	}
}

// ops runs every store operation once and returns their errors by name.
func ops(ctx context.Context, s *Store) map[string]error {
	_, getErr := s.Get(ctx, "k")
	_, takeErr := s.Take(ctx, "k")
	return map[string]error{
		"create": s.Create(ctx, "new-key", []byte("secret-value"), time.Minute),
		"get":    getErr,
		"update": s.Update(ctx, "k", []byte("secret-old"), []byte("secret-new")),
		"take":   takeErr,
		"delete": s.Delete(ctx, "k"),
	}
}

// wantBackendErrors checks that every operation failed as a backend
// failure, within limit, without quoting keys or values.
func wantBackendErrors(t *testing.T, s *Store, limit time.Duration) {
	t.Helper()
	start := time.Now()
	errs := ops(context.Background(), s)
	if d := time.Since(start); d > limit*time.Duration(len(errs)) {
		t.Errorf("five calls to an unavailable Redis took %s, want at most %s each", d, limit)
	}
	for op, err := range errs {
		switch {
		case err == nil, errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrExists), errors.Is(err, store.ErrChanged):
			t.Errorf("%s = %v, want a backend error", op, err)
		case strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "new-key"):
			t.Errorf("%s error quotes a key or value: %v", op, err)
		}
	}
}

func TestRedisDown(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	s, err := Open(srv.URL(), "")
	if err != nil {
		t.Fatalf("NewFromURL: %v", err)
	}
	defer s.Close()
	if err := s.Create(ctx, "k", []byte("v"), time.Minute); err != nil {
		t.Fatalf("Create: %v", err)
	}

	srv.Stop()
	// Enough failures to trip go-redis's dial breaker (pool size, 10 per
	// CPU), after which it fails calls at once and probes once a second.
	calls := 0
	start := time.Now()
	for calls < 20*runtime.GOMAXPROCS(0) {
		wantBackendErrors(t, s, 2*time.Second)
		calls += 5
	}
	t.Logf("%d calls with Redis down took %s", calls, time.Since(start))

	srv.Restart()
	// The restarted server is empty; the same Store works again once
	// go-redis's dialer has noticed.
	start = time.Now()
	for {
		_, err := s.Get(ctx, "k")
		if errors.Is(err, store.ErrNotFound) {
			break
		}
		if time.Since(start) > 3*time.Second {
			t.Fatalf("Get 3s after restart = %v, want ErrNotFound", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("store usable %s after Redis came back", time.Since(start))
	if err := s.Create(ctx, "k", []byte("again"), time.Minute); err != nil {
		t.Fatalf("Create after restart: %v", err)
	}
	if got, err := s.Take(ctx, "k"); err != nil || string(got) != "again" {
		t.Fatalf("Take after restart = %q, %v", got, err)
	}
}

func TestRedisHung(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	s, err := Open(srv.URL(), "")
	if err != nil {
		t.Fatalf("NewFromURL: %v", err)
	}
	defer s.Close()
	if err := s.Create(ctx, "k", []byte("v"), time.Minute); err != nil {
		t.Fatalf("Create: %v", err)
	}

	srv.Pause()
	start := time.Now()
	_, err = s.Get(ctx, "k")
	d := time.Since(start)
	t.Logf("Get from a hung Redis failed after %s: %v", d, err)
	if err == nil || errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get from a hung Redis = %v, want a backend error", err)
	}
	if d > 2*time.Second {
		t.Errorf("Get from a hung Redis took %s, want it to fail within the 1s read timeout", d)
	}

	// A caller's deadline cuts a call shorter still.
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	if err := s.Delete(short, "k"); err == nil {
		t.Error("Delete on a hung Redis succeeded")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Delete with a 200ms deadline took %s", d)
	}

	srv.Resume()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := s.Get(ctx, "k")
		if err == nil && string(got) == "v" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Get after Resume = %q, %v", got, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestIncr: counters are shared by every Store on the same Redis, start at
// one, and expire with the time to live given when they were created.
func TestIncr(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	a, b := New(newClient(t, srv), ""), New(newClient(t, srv), "")
	for i, s := range []*Store{a, b, a} {
		n, err := s.Incr(ctx, "rl:x", 300*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if n != int64(i+1) {
			t.Fatalf("count %d, want %d", n, i+1)
		}
	}
	time.Sleep(400 * time.Millisecond)
	if n, err := a.Incr(ctx, "rl:x", time.Second); err != nil || n != 1 {
		t.Fatalf("after expiry: %d %v, want a fresh count of 1", n, err)
	}
	if _, err := a.Incr(ctx, "rl:x", 0); err == nil {
		t.Fatal("zero ttl accepted")
	}
	srv.Stop()
	if _, err := a.Incr(ctx, "rl:x", time.Second); err == nil {
		t.Fatal("Incr with Redis down succeeded")
	}
}
