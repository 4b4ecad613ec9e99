package ratelimit

import (
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a manually advanced clock, safe for concurrent reads.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newLimiter(rate float64, burst int, opts ...Option) (*Limiter, *fakeClock) {
	clk := newFakeClock()
	return New(rate, burst, append([]Option{WithClock(clk.Now)}, opts...)...), clk
}

func TestOutOfRangeArgumentsFailClosed(t *testing.T) {
	day := 24 * time.Hour
	tests := []struct {
		name      string
		rate      float64
		burst     int
		opts      []Option
		wantBurst int
		wantRetry time.Duration
	}{
		{"zero rate", 0, 2, nil, 2, day},
		{"negative rate", -5, 1, nil, 1, day},
		{"NaN rate", math.NaN(), 1, nil, 1, day},
		{"negative infinite rate", math.Inf(-1), 1, nil, 1, day},
		{"tiny rate", 1e-300, 1, nil, 1, day},
		{"zero burst", 1, 0, nil, 1, time.Second},
		{"negative burst", 1, -3, nil, 1, time.Second},
		{"nil clock and zero max keys ignored", 1, 1, []Option{WithClock(nil), WithMaxKeys(0)}, 1, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, _ := newLimiter(tt.rate, tt.burst, tt.opts...)
			for i := range tt.wantBurst {
				if ok, _ := l.Allow("k"); !ok {
					t.Fatalf("request %d of the burst denied", i)
				}
			}
			ok, ra := l.Allow("k")
			if ok || ra != tt.wantRetry {
				t.Fatalf("after burst: Allow = %v, %v; want denied for %v", ok, ra, tt.wantRetry)
			}
		})
	}
	// Ignored options leave the defaults in place.
	l := New(1, 1, WithClock(nil), WithMaxKeys(0))
	if l.now == nil || l.maxKeys != DefaultMaxKeys {
		t.Fatalf("ignored options changed the limiter: clock set=%v maxKeys=%d", l.now != nil, l.maxKeys)
	}
}

func TestInfiniteRateRefillsAsTimeMoves(t *testing.T) {
	l, clk := newLimiter(math.Inf(1), 1)
	for range 5 {
		if ok, _ := l.Allow("k"); !ok {
			t.Fatal("denied after the clock moved")
		}
		clk.Advance(time.Nanosecond)
	}
}

func TestBurstThenRefill(t *testing.T) {
	l, clk := newLimiter(2, 3) // 2 per second, bursts of 3

	for i := range 3 {
		if ok, ra := l.Allow("ip"); !ok || ra != 0 {
			t.Fatalf("request %d in burst: Allow = %v, %v; want allowed", i, ok, ra)
		}
	}
	ok, ra := l.Allow("ip")
	if ok || ra != 500*time.Millisecond {
		t.Fatalf("after burst: Allow = %v, %v; want denied, retry after 500ms", ok, ra)
	}
	// Denied requests spend nothing: the wait only shrinks with time.
	clk.Advance(200 * time.Millisecond)
	if ok, ra = l.Allow("ip"); ok || ra != 300*time.Millisecond {
		t.Fatalf("200ms later: Allow = %v, %v; want denied, retry after 300ms", ok, ra)
	}
	clk.Advance(300 * time.Millisecond)
	if ok, _ = l.Allow("ip"); !ok {
		t.Fatal("after retryAfter elapsed: denied")
	}
	if ok, _ = l.Allow("ip"); ok {
		t.Fatal("second request right after the refill token: allowed")
	}
	// A long pause refills to burst, never more.
	clk.Advance(time.Hour)
	for i := range 3 {
		if ok, _ := l.Allow("ip"); !ok {
			t.Fatalf("after an hour, request %d denied", i)
		}
	}
	if ok, _ := l.Allow("ip"); ok {
		t.Fatal("refill exceeded burst")
	}
}

func TestSteadyRate(t *testing.T) {
	// Over a simulated minute at 1 request per 10ms, a 5/s limit with
	// burst 5 allows the burst plus 5 per second.
	l, clk := newLimiter(5, 5)
	allowed := 0
	for range 6000 {
		if ok, _ := l.Allow("k"); ok {
			allowed++
		}
		clk.Advance(10 * time.Millisecond)
	}
	if want := 5 + 5*60; allowed < want-1 || allowed > want {
		t.Fatalf("allowed %d in 60s, want about %d", allowed, want)
	}
}

func TestSlowRateRetryAfter(t *testing.T) {
	l, _ := newLimiter(1.0/60, 1) // one per minute
	l.Allow("k")
	if ok, ra := l.Allow("k"); ok || ra != time.Minute {
		t.Fatalf("Allow = %v, %v; want denied for 1m", ok, ra)
	}
}

func TestKeysAreIndependent(t *testing.T) {
	l, _ := newLimiter(1, 1)
	if ok, _ := l.Allow("a"); !ok {
		t.Fatal("a denied")
	}
	if ok, _ := l.Allow("a"); ok {
		t.Fatal("a allowed twice")
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("b denied because of a")
	}
}

func TestClockBackwards(t *testing.T) {
	l, clk := newLimiter(1, 2)
	l.Allow("k")
	clk.Advance(-time.Hour)
	if ok, _ := l.Allow("k"); !ok {
		t.Fatal("second burst token lost when the clock stepped back")
	}
	if ok, ra := l.Allow("k"); ok || ra != time.Second {
		t.Fatalf("Allow = %v, %v; want denied for 1s", ok, ra)
	}
}

func TestMaxKeysEvictsLeastRecentlyUsed(t *testing.T) {
	l, _ := newLimiter(1, 1, WithMaxKeys(3))
	for _, k := range []string{"a", "b", "c"} {
		l.Allow(k) // each bucket now empty
	}
	l.Allow("a") // a becomes most recently used (and stays denied)
	if ok, _ := l.Allow("d"); !ok {
		t.Fatal("new key denied at the cap")
	}
	if n := l.Len(); n != 3 {
		t.Fatalf("Len = %d, want the cap 3", n)
	}
	// b was least recently used, so it was forgotten and starts afresh;
	// a and c are still remembered as empty.
	if ok, _ := l.Allow("a"); ok {
		t.Error("a was evicted instead of the least recently used key")
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Error("b was not evicted")
	}
}

func TestMemoryStaysBounded(t *testing.T) {
	const maxKeys = 100
	l, clk := newLimiter(1, 1, WithMaxKeys(maxKeys))
	for i := range 10 * maxKeys {
		l.Allow(strconv.Itoa(i))
		if n := l.Len(); n > maxKeys {
			t.Fatalf("after %d keys Len = %d, over the cap", i+1, n)
		}
	}
	// Idle buckets are swept as traffic continues, so a quiet limiter
	// shrinks back instead of holding its peak.
	clk.Advance(time.Minute)
	for range maxKeys {
		l.Allow("steady")
		clk.Advance(time.Second)
	}
	if n := l.Len(); n != 1 {
		t.Fatalf("after idle keys refilled, Len = %d, want 1", n)
	}
}

func TestSweepKeepsActiveBuckets(t *testing.T) {
	l, clk := newLimiter(1, 2)
	l.Allow("busy")
	l.Allow("busy") // empty
	clk.Advance(500 * time.Millisecond)
	for i := range 5 {
		l.Allow(fmt.Sprint("other", i))
	}
	// busy is the least recently used but not yet refilled: keep it.
	if ok, _ := l.Allow("busy"); ok {
		t.Fatal("a partly refilled bucket was swept, resetting its limit")
	}
}

func TestConcurrentAllowExactlyBurst(t *testing.T) {
	const burst = 50
	l, _ := newLimiter(1, burst)
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 100 {
				if ok, _ := l.Allow("shared"); ok {
					allowed.Add(1)
				}
				// Interleave other keys to exercise inserts and the LRU list.
				l.Allow(strconv.Itoa(g*1000 + i))
			}
		})
	}
	wg.Wait()
	if got := allowed.Load(); got != burst {
		t.Fatalf("allowed %d under concurrency with a frozen clock, want exactly %d", got, burst)
	}
}

func BenchmarkAllowOneKey(b *testing.B) {
	l := New(1e9, 1e6)
	b.ReportAllocs()
	for b.Loop() {
		l.Allow("203.0.113.7")
	}
}

// BenchmarkAllowManyKeys cycles through more keys than the cap, so every
// call creates a bucket and evicts one: the worst case under a flood of
// spoofed addresses.
func BenchmarkAllowManyKeys(b *testing.B) {
	l := New(1, 1, WithMaxKeys(1024))
	keys := make([]string, 4096)
	for i := range keys {
		keys[i] = fmt.Sprintf("198.51.%d.%d", i/256, i%256)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		l.Allow(keys[i%len(keys)])
		i++
	}
}

func BenchmarkAllowParallel(b *testing.B) {
	l := New(1e9, 1e6)
	var n atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		key := "10.0.0." + strconv.Itoa(int(n.Add(1)))
		for pb.Next() {
			l.Allow(key)
		}
	})
}
