package bigcachestore

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/middleware/store/storetest"
)

const (
	benchEntries   = 100_000
	benchValueSize = 250
	benchTTL       = 5 * time.Minute
)

// benchKeys returns n keys shaped like the middleware's scene keys: a
// prefix and 43 characters of base64url.
func benchKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("wechat_login:wx5f3a9c1e2b7d4a60:scene:%043d", i)
	}
	return keys
}

func benchValue(version byte) []byte {
	return bytes.Repeat([]byte{'a' + version}, benchValueSize)
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// residentBytes returns the process's resident memory after returning what
// the Go runtime holds free to the system, or 0 where /proc is not there.
func residentBytes() int64 {
	debug.FreeOSMemory()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// BenchmarkPendingSceneMemory measures the memory that 100k pending scenes
// of 250 bytes cost, written once (just created) and three times (created,
// scanned, confirmed: bigcache keeps the bytes of every write until they
// age out). bytes/scene is the heap growth after GC divided by the scenes:
// it includes bigcache's index and the queue memory reserved for
// MaxEntries but not yet written. rss-bytes/scene is the growth of the
// resident memory, once the runtime has returned its free memory.
// index-bytes/scene is the heap growth that Stats().AllocatedBytes does not
// count: bigcache's per-shard index maps, about 25-30 bytes an entry.
func BenchmarkPendingSceneMemory(b *testing.B) {
	keys := benchKeys(benchEntries)
	for _, writes := range []int{1, 3} {
		b.Run(fmt.Sprintf("writes=%d", writes), func(b *testing.B) {
			ctx := context.Background()
			var total, rss, index float64
			for b.Loop() {
				before := heapInUse()
				rssBefore := residentBytes()
				s, err := New(Config{MaxEntries: benchEntries, ValueSize: benchValueSize})
				if err != nil {
					b.Fatal(err)
				}
				for _, k := range keys {
					if err := s.Create(ctx, k, benchValue(0), benchTTL); err != nil {
						b.Fatal(err)
					}
				}
				for w := 1; w < writes; w++ {
					for _, k := range keys {
						if err := s.Update(ctx, k, benchValue(byte(w-1)), benchValue(byte(w))); err != nil {
							b.Fatal(err)
						}
					}
				}
				after := heapInUse()
				rss += float64(residentBytes() - rssBefore)
				if st := s.Stats(); st.Evictions > 0 {
					b.Fatalf("%d evictions within capacity", st.Evictions)
				}
				total += float64(after) - float64(before)
				index += float64(after) - float64(before) - float64(s.Stats().AllocatedBytes)
				runtime.KeepAlive(s)
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(total/float64(b.N)/benchEntries, "bytes/scene")
			b.ReportMetric(rss/float64(b.N)/benchEntries, "rss-bytes/scene")
			b.ReportMetric(index/float64(b.N)/benchEntries, "index-bytes/scene")
		})
	}
}

// benchStore returns a store on a fake clock holding benchEntries keys.
func benchStore(b *testing.B) (*Store, *storetest.FakeClock, []string) {
	b.Helper()
	s, clock := newTestStore(b, Config{MaxEntries: benchEntries, ValueSize: benchValueSize})
	keys := benchKeys(benchEntries)
	for _, k := range keys {
		if err := s.Create(context.Background(), k, benchValue(0), benchTTL); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	return s, clock, keys
}

func BenchmarkCreate(b *testing.B) {
	s, clock, keys := benchStore(b)
	ctx := context.Background()
	v := benchValue(0)
	clock.Advance(benchTTL) // every key has expired, so Create succeeds
	for i := 0; b.Loop(); i++ {
		if i > 0 && i%len(keys) == 0 {
			clock.Advance(benchTTL)
		}
		if err := s.Create(ctx, keys[i%len(keys)], v, benchTTL); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGet(b *testing.B) {
	s, _, keys := benchStore(b)
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		if _, err := s.Get(ctx, keys[i%len(keys)]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGetParallel(b *testing.B) {
	s, _, keys := benchStore(b)
	ctx := context.Background()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			if _, err := s.Get(ctx, keys[i%len(keys)]); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkUpdate(b *testing.B) {
	s, _, keys := benchStore(b)
	ctx := context.Background()
	values := [2][]byte{benchValue(0), benchValue(1)}
	for i := 0; b.Loop(); i++ {
		round := i / len(keys)
		if err := s.Update(ctx, keys[i%len(keys)], values[round%2], values[(round+1)%2]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTake(b *testing.B) {
	s, _, keys := benchStore(b)
	ctx := context.Background()
	v := benchValue(0)
	for i := 0; b.Loop(); i++ {
		if i > 0 && i%len(keys) == 0 {
			b.StopTimer()
			for _, k := range keys {
				if err := s.Create(ctx, k, v, benchTTL); err != nil {
					b.Fatal(err)
				}
			}
			b.StartTimer()
		}
		if _, err := s.Take(ctx, keys[i%len(keys)]); err != nil {
			b.Fatal(err)
		}
	}
}
