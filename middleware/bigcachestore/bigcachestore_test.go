package bigcachestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wechat-login/caddy-wechat-login/middleware/store"
	"github.com/wechat-login/caddy-wechat-login/middleware/store/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// newTestStore returns a store on a fake clock, closed when the test ends.
func newTestStore(t testing.TB, cfg Config) (*Store, *storetest.FakeClock) {
	t.Helper()
	clock := storetest.NewFakeClock(epoch)
	cfg.Now = clock.Now
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, clock
}

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		NewStore: func(t *testing.T) storetest.Subject {
			clock := storetest.NewFakeClock(epoch)
			s, err := New(Config{MaxEntries: 10_000, Now: clock.Now})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			return storetest.Subject{Store: s, Advance: clock.Advance}
		},
	})
}

func TestNewConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"zero", Config{}, ""},
		{"small", Config{MaxEntries: 1, MaxTTL: time.Second, ValueSize: 1}, ""},
		{"large values", Config{ValueSize: maxValueLen}, ""},
		{"negative entries", Config{MaxEntries: -1}, "MaxEntries"},
		{"negative ttl", Config{MaxTTL: -time.Second}, "MaxTTL"},
		{"negative value size", Config{ValueSize: -1}, "ValueSize"},
		{"huge value size", Config{ValueSize: maxValueLen + 1}, "ValueSize"},
		{"part reserved", Config{MaxEntries: 100, ReserveEntries: 10}, ""},
		{"negative reserve", Config{MaxEntries: 100, ReserveEntries: -1}, "ReserveEntries"},
		{"reserve past MaxEntries", Config{MaxEntries: 100, ReserveEntries: 101}, "ReserveEntries"},
		{"reserve without MaxEntries", Config{ReserveEntries: 10}, "ReserveEntries"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("New(%+v) = %v, want error mentioning %s", tc.cfg, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New(%+v): %v", tc.cfg, err)
			}
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
		})
	}
}

func TestSizeCache(t *testing.T) {
	tests := []struct {
		maxEntries, valueSize int
		wantShards            int
	}{
		{1, 300, 1},
		{1_000, 300, 1},
		{10_000, 300, 2},
		{DefaultMaxEntries, DefaultValueSize, 16},
		{10_000_000, 300, maxShards},
	}
	for _, tc := range tests {
		shards, limitMB, writeSize := sizeCache(tc.maxEntries, tc.valueSize)
		if shards != tc.wantShards {
			t.Errorf("sizeCache(%d, %d) shards = %d, want %d", tc.maxEntries, tc.valueSize, shards, tc.wantShards)
		}
		// Every shard must hold its share of entries, written four times.
		perShard := (limitMB << 20) / shards
		share := (tc.maxEntries + shards - 1) / shards
		if need := share * writesPerEntry * writeSize; perShard < need {
			t.Errorf("sizeCache(%d, %d): %d bytes per shard, need at least %d", tc.maxEntries, tc.valueSize, perShard, need)
		}
	}
}

func TestArgumentLimits(t *testing.T) {
	s, _ := newTestStore(t, Config{MaxTTL: time.Minute})
	ctx := context.Background()
	secretKey := "scene:" + strings.Repeat("S", maxKeyLen)
	tests := []struct {
		name string
		op   func() error
	}{
		{"zero ttl", func() error { return s.Create(ctx, "k", nil, 0) }},
		{"negative ttl", func() error { return s.Create(ctx, "k", nil, -time.Second) }},
		{"ttl above MaxTTL", func() error { return s.Create(ctx, "k", nil, time.Minute+time.Nanosecond) }},
		{"long key Create", func() error { return s.Create(ctx, secretKey, nil, time.Second) }},
		{"long key Get", func() error { _, err := s.Get(ctx, secretKey); return err }},
		{"long key Update", func() error { return s.Update(ctx, secretKey, nil, nil) }},
		{"long key Take", func() error { _, err := s.Take(ctx, secretKey); return err }},
		{"long key Delete", func() error { return s.Delete(ctx, secretKey) }},
		{"huge value Create", func() error { return s.Create(ctx, "k", make([]byte, maxValueLen+1), time.Second) }},
		{"huge value Update", func() error { return s.Update(ctx, "k", nil, make([]byte, maxValueLen+1)) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.op()
			if err == nil {
				t.Fatal("got nil error")
			}
			if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrExists) || errors.Is(err, store.ErrChanged) {
				t.Fatalf("got %v, want a usage error, not a store outcome", err)
			}
			if strings.Contains(err.Error(), "SSSS") {
				t.Fatalf("error text contains the key: %v", err)
			}
		})
	}
	// The boundaries themselves are fine.
	if err := s.Create(ctx, strings.Repeat("k", maxKeyLen), make([]byte, maxValueLen), time.Minute); err != nil {
		t.Fatalf("Create at the limits: %v", err)
	}
}

// TestExpiryIsExact checks the store's own deadline, which is finer than
// bigcache's one-second clock.
func TestExpiryIsExact(t *testing.T) {
	s, clock := newTestStore(t, Config{})
	ctx := context.Background()
	if err := s.Create(ctx, "k", []byte("v"), 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	clock.Advance(1500*time.Millisecond - time.Nanosecond)
	if _, err := s.Get(ctx, "k"); err != nil {
		t.Fatalf("Get 1 ns before the deadline: %v", err)
	}
	clock.Advance(time.Nanosecond)
	if _, err := s.Get(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get at the deadline = %v, want ErrNotFound", err)
	}
}

// TestCollisions forces every key onto one hash: a key must never see
// another key's value, and Delete, Update and Take of one key must leave
// the other alone.
func TestCollisions(t *testing.T) {
	clock := storetest.NewFakeClock(epoch)
	s, err := newStore(Config{Now: clock.Now}, func(string) uint64 { return 42 })
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()

	if err := s.Create(ctx, "alice", []byte("alice's scene"), time.Minute); err != nil {
		t.Fatal(err)
	}
	// bob lands on alice's slot. The store cannot keep both, but it must
	// not mix them up.
	if err := s.Create(ctx, "bob", []byte("bob's scene"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get(ctx, "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get(alice) = %q, %v; want ErrNotFound", v, err)
	}
	if err := s.Update(ctx, "alice", []byte("alice's scene"), []byte("x")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Update(alice) = %v, want ErrNotFound", err)
	}
	if v, err := s.Take(ctx, "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Take(alice) = %q, %v; want ErrNotFound", v, err)
	}
	if err := s.Delete(ctx, "alice"); err != nil {
		t.Fatalf("Delete(alice): %v", err)
	}
	if v, err := s.Get(ctx, "bob"); err != nil || string(v) != "bob's scene" {
		t.Fatalf("Get(bob) = %q, %v; want bob's scene intact", v, err)
	}
	if got := s.Stats().Collisions; got < 4 {
		t.Fatalf("Stats().Collisions = %d, want at least 4", got)
	}
}

// TestCapacity fills the store to twice MaxEntries, each entry created and
// updated three times like a pending login. The first MaxEntries must all
// survive until the second batch arrives; after it, every entry reads as
// either its own latest value or absent, the newest MaxEntries are all
// there, and each absent one was counted as an eviction.
func TestCapacity(t *testing.T) {
	// Large enough that rounding the limit up to whole MiB leaves less
	// headroom than the second batch needs.
	const maxEntries = 10_000
	s, _ := newTestStore(t, Config{MaxEntries: maxEntries, MaxTTL: 10 * time.Minute})
	ctx := context.Background()
	key := func(i int) string { return fmt.Sprintf("wechat_login:wx5f3a9c1e2b7d4a60:scene:%032d", i) }
	value := func(i, version int) []byte {
		v := fmt.Appendf(nil, "scene %d version %d|", i, version)
		return append(v, bytes.Repeat([]byte{'.'}, DefaultValueSize-len(v))...)
	}
	fill := func(from, to int) {
		for i := from; i < to; i++ {
			if err := s.Create(ctx, key(i), value(i, 0), 5*time.Minute); err != nil {
				t.Fatalf("Create(%d): %v", i, err)
			}
		}
		for version := 1; version < writesPerEntry; version++ {
			for i := from; i < to; i++ {
				err := s.Update(ctx, key(i), value(i, version-1), value(i, version))
				if err != nil && !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("Update(%d): %v", i, err)
				}
			}
		}
	}
	// check returns how many of [from, to) are absent, failing on any
	// wrong value.
	check := func(from, to int) (absent int) {
		for i := from; i < to; i++ {
			v, err := s.Get(ctx, key(i))
			switch {
			case errors.Is(err, store.ErrNotFound):
				absent++
			case err != nil:
				t.Fatalf("Get(%d): %v", i, err)
			case !bytes.Equal(v, value(i, writesPerEntry-1)):
				t.Fatalf("Get(%d) = %.40q, want %.40q", i, v, value(i, writesPerEntry-1))
			}
		}
		return absent
	}

	fill(0, maxEntries)
	if absent := check(0, maxEntries); absent != 0 {
		t.Fatalf("%d of %d entries evicted within capacity", absent, maxEntries)
	}
	if got := s.Stats().Evictions; got != 0 {
		t.Fatalf("Stats().Evictions = %d within capacity, want 0", got)
	}

	fill(maxEntries, 2*maxEntries)
	if absent := check(maxEntries, 2*maxEntries); absent != 0 {
		t.Fatalf("%d of the newest %d entries missing", absent, maxEntries)
	}
	absent := check(0, maxEntries)
	if absent == 0 {
		t.Fatalf("no entry evicted at twice the capacity; the test does not reach the limit (%+v)", s.Stats())
	}
	st := s.Stats()
	if st.Evictions != uint64(absent) {
		t.Fatalf("Stats().Evictions = %d, but %d entries are absent", st.Evictions, absent)
	}
	if st.AllocatedBytes > st.LimitBytes {
		t.Fatalf("allocated %d bytes, above the limit %d", st.AllocatedBytes, st.LimitBytes)
	}
	t.Logf("%d of the oldest %d entries evicted; %+v", absent, maxEntries, st)
}

// TestEvictionOfExpiredIsNotCounted checks that making room by dropping
// entries that had expired anyway is not reported as an eviction.
func TestEvictionOfExpiredIsNotCounted(t *testing.T) {
	s, clock := newTestStore(t, Config{MaxEntries: 1_000, MaxTTL: time.Minute})
	ctx := context.Background()
	v := make([]byte, DefaultValueSize)
	for i := range 20_000 {
		if i%1_000 == 0 {
			clock.Advance(time.Minute)
		}
		if err := s.Create(ctx, fmt.Sprint("k", i), v, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	st := s.Stats()
	if st.Entries >= 20_000 {
		t.Fatalf("Stats().Entries = %d: nothing was dropped, the test does not reach the limit", st.Entries)
	}
	if st.Evictions != 0 {
		t.Fatalf("Stats().Evictions = %d, want 0: only expired entries were dropped", st.Evictions)
	}
}

func TestCloseStopsCleaner(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestQuiet checks that nothing the store does reaches stdout, stderr or
// the standard logger: bigcache prints colliding keys when verbose, and a
// line when its context ends.
func TestQuiet(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr, logOut := os.Stdout, os.Stderr, log.Writer()
	os.Stdout, os.Stderr = w, w
	log.SetOutput(w)
	restore := func() {
		os.Stdout, os.Stderr = stdout, stderr
		log.SetOutput(logOut)
	}
	defer restore()

	func() {
		clock := storetest.NewFakeClock(epoch)
		s, err := newStore(Config{MaxEntries: 100, Now: clock.Now}, func(k string) uint64 { return uint64(len(k) % 2) })
		if err != nil {
			t.Error(err)
			return
		}
		ctx := context.Background()
		// Collisions on every read, queue growth and evictions.
		for i := range 5_000 {
			k := fmt.Sprint("secret-key-", i)
			_ = s.Create(ctx, k, make([]byte, 300), time.Minute)
			_, _ = s.Get(ctx, fmt.Sprint("secret-key-", i+1))
			_ = s.Delete(ctx, fmt.Sprint("secret-key-", i+2))
		}
		_ = s.Close()
		// Give a cleaner that might print on its way out the chance to.
		time.Sleep(50 * time.Millisecond)
	}()

	restore()
	w.Close()
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) > 0 {
		t.Fatalf("store wrote output:\n%s", out)
	}
}

// TestClassesByTTL: entries go to the class of their time to live, whose
// window is the shortest of 2 minutes, 8, 32, … that covers it, never more
// than MaxTTL.
func TestClassesByTTL(t *testing.T) {
	s, _ := newTestStore(t, Config{MaxTTL: 31 * 24 * time.Hour})
	for _, tc := range []struct {
		ttl    time.Duration
		class  int
		window time.Duration
	}{
		{time.Second, 0, 2 * time.Minute},
		{2 * time.Minute, 0, 2 * time.Minute},
		{5 * time.Minute, 1, 8 * time.Minute},
		{15 * time.Minute, 2, 32 * time.Minute},
		{24 * time.Hour, 5, 2048 * time.Minute},
		{30 * 24 * time.Hour, 8, 31 * 24 * time.Hour},
		{31 * 24 * time.Hour, 8, 31 * 24 * time.Hour},
	} {
		if class, window := s.classOf(tc.ttl); class != tc.class || window != tc.window {
			t.Errorf("classOf(%v) = %d, %v; want %d, %v", tc.ttl, class, window, tc.class, tc.window)
		}
	}
	short, _ := newTestStore(t, Config{MaxTTL: 10 * time.Minute})
	if class, window := short.classOf(10 * time.Minute); class != 2 || window != 10*time.Minute {
		t.Errorf("classOf(MaxTTL) = %d, %v; want 2, 10m", class, window)
	}
	huge, _ := newTestStore(t, Config{MaxTTL: time.Duration(math.MaxInt64)})
	if class, _ := huge.classOf(time.Duration(math.MaxInt64)); class >= maxClasses {
		t.Errorf("classOf(forever) = %d", class)
	}
}

// TestEntriesAcrossClasses: a key is found, updated, taken and deleted
// whichever class holds it, and lives in one class at a time.
func TestEntriesAcrossClasses(t *testing.T) {
	s, clock := newTestStore(t, Config{MaxTTL: 24 * time.Hour})
	ctx := context.Background()
	if err := s.Create(ctx, "short", []byte("s"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, "long", []byte("l"), 20*time.Hour); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Classes != 2 || st.Entries != 2 {
		t.Fatalf("Stats() = %+v, want 2 classes holding 2 entries", st)
	}
	// A live entry in one class blocks a Create of the same key in any.
	if err := s.Create(ctx, "short", []byte("x"), 20*time.Hour); !errors.Is(err, store.ErrExists) {
		t.Fatalf("Create over a live entry of another class = %v", err)
	}
	if err := s.Update(ctx, "long", []byte("l"), []byte("l2")); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get(ctx, "long"); err != nil || string(v) != "l2" {
		t.Fatalf("Get(long) = %q, %v", v, err)
	}
	// Once the short entry expires, the key can live in the long class;
	// the stale copy in the short one is never read again.
	clock.Advance(time.Minute)
	if err := s.Create(ctx, "short", []byte("again"), 20*time.Hour); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get(ctx, "short"); err != nil || string(v) != "again" {
		t.Fatalf("Get(short) = %q, %v", v, err)
	}
	if v, err := s.Take(ctx, "short"); err != nil || string(v) != "again" {
		t.Fatalf("Take(short) = %q, %v", v, err)
	}
	if _, err := s.Get(ctx, "short"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after Take = %v", err)
	}
	if err := s.Delete(ctx, "long"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "long"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after Delete = %v", err)
	}
}

// TestClosedStoreCreatesNothing: after Close, a Create that would need a
// new class fails instead of starting a cleaner nobody stops.
func TestClosedStoreCreatesNothing(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	s, err := New(Config{MaxTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(context.Background(), "k", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(context.Background(), "k2", []byte("v"), time.Hour); err == nil {
		t.Fatal("Create after Close succeeded")
	}
}

// TestReserveTTL: with MaxEntries and ReserveTTL, only the class of that
// time to live is made for MaxEntries at once; another class starts small.
func TestReserveTTL(t *testing.T) {
	const entries = 200_000
	ctx := context.Background()
	allocated := func(cfg Config, ttl time.Duration) int {
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := s.Create(ctx, "k", []byte("v"), ttl); err != nil {
			t.Fatal(err)
		}
		return s.Stats().AllocatedBytes
	}
	cfg := Config{MaxEntries: entries, ReserveTTL: 5 * time.Minute, MaxTTL: time.Hour}
	reserved := allocated(cfg, 5*time.Minute)
	other := allocated(cfg, 30*time.Minute)
	all := allocated(Config{MaxEntries: entries, MaxTTL: time.Hour}, 30*time.Minute)
	if reserved < entries*DefaultValueSize/2 || all < entries*DefaultValueSize/2 {
		t.Fatalf("reserved class: %d bytes, every class reserved: %d; want room for %d entries at once", reserved, all, entries)
	}
	if other*20 > reserved {
		t.Fatalf("a class outside ReserveTTL's made %d bytes at once, the reserved one %d", other, reserved)
	}
	// ReserveEntries: made for that many at once, and still room for
	// MaxEntries as the queues grow.
	part := Config{MaxEntries: entries, ReserveTTL: 5 * time.Minute, ReserveEntries: entries / 10, MaxTTL: time.Hour}
	if got := allocated(part, 5*time.Minute); got*5 > reserved || got*20 < reserved {
		t.Fatalf("reserved for a tenth: %d bytes, for all: %d", got, reserved)
	}
	s, err := New(part)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range entries {
		if err := s.Create(ctx, strconv.Itoa(i), make([]byte, DefaultValueSize), 5*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if st := s.Stats(); st.Evictions != 0 || st.Entries != entries {
		t.Fatalf("after %d entries: %+v", entries, st)
	}
}
