package redisstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/internal/redistest"
)

// The benchmarks measure one round trip per operation to a redis-server
// on loopback, through Open's client; run them with
// go test -run '^$' -bench . ./middleware/redisstore/

// benchValue is the size of a typical scene record.
var benchValue = make([]byte, 300)

func newBenchStore(b *testing.B) *Store {
	b.Helper()
	srv := redistest.Start(b)
	s, err := Open(srv.URL(), "")
	if err != nil {
		b.Fatalf("NewFromURL: %v", err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

func benchKey(i int) string {
	return fmt.Sprintf("wx0123456789:scene:%032x", i)
}

func BenchmarkCreate(b *testing.B) {
	ctx := context.Background()
	s := newBenchStore(b)
	i := 0
	for b.Loop() {
		if err := s.Create(ctx, benchKey(i), benchValue, time.Minute); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkGet(b *testing.B) {
	ctx := context.Background()
	s := newBenchStore(b)
	if err := s.Create(ctx, "k", benchValue, time.Minute); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.Get(ctx, "k"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGetParallel(b *testing.B) {
	ctx := context.Background()
	s := newBenchStore(b)
	if err := s.Create(ctx, "k", benchValue, time.Minute); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Get(ctx, "k"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkUpdate(b *testing.B) {
	ctx := context.Background()
	s := newBenchStore(b)
	vals := [2][]byte{make([]byte, 300), make([]byte, 300)}
	vals[1][0] = 1
	if err := s.Create(ctx, "k", vals[0], time.Hour); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		if err := s.Update(ctx, "k", vals[i%2], vals[(i+1)%2]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkTake(b *testing.B) {
	ctx := context.Background()
	s := newBenchStore(b)
	i := 0
	for b.Loop() {
		// Refill outside the timed part, in one pipelined batch per 1000.
		if i%1000 == 0 {
			b.StopTimer()
			pipe := s.client.Pipeline()
			for j := i; j < i+1000; j++ {
				pipe.Set(ctx, s.prefix+benchKey(j), benchValue, time.Minute)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		if _, err := s.Take(ctx, benchKey(i)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkNotify measures Publish on one instance to wake-up on another.
func BenchmarkNotify(b *testing.B) {
	ctx := context.Background()
	srv := redistest.Start(b)
	a, other := newNotifier(b, srv, ""), newNotifier(b, srv, "")
	ch, cancel := other.Subscribe("scene:x")
	defer cancel()
	for b.Loop() {
		if err := a.Publish(ctx, "scene:x"); err != nil {
			b.Fatal(err)
		}
		<-ch
	}
}
