package redisstore

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/internal/redistest"
	"github.com/wechat-login/caddy-wechat-login/middleware/store"
)

// TestGetMany: each key's value or error at its index, as Get gives them,
// from one server (MGET) and from a Cluster, where the keys live on
// different nodes (a pipeline of GETs).
func TestGetMany(t *testing.T) {
	ctx := context.Background()
	stores := map[string]func() *Store{
		"single":  func() *Store { return New(newClient(t, redistest.Start(t)), uniquePrefix()) },
		"cluster": func() *Store { return New(urlClient(t, redistest.StartCluster(t).URL()), uniquePrefix()) },
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			s := open()
			keys := []string{"a", "b", "c", "d", "e", "f"} // several slots
			for i, k := range keys {
				if err := s.Create(ctx, k, []byte{'0' + byte(i)}, time.Minute); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Create(ctx, "empty", nil, time.Minute); err != nil {
				t.Fatal(err)
			}
			ask := append(slices.Clone(keys), "missing", strings.Repeat("k", maxKeyLen+1), "empty")
			vals, errs := s.GetMany(ctx, ask...)
			if len(vals) != len(ask) || len(errs) != len(ask) {
				t.Fatalf("%d values, %d errors for %d keys", len(vals), len(errs), len(ask))
			}
			for i, k := range keys {
				if errs[i] != nil || string(vals[i]) != string('0'+rune(i)) {
					t.Fatalf("%s: %q, %v", k, vals[i], errs[i])
				}
			}
			n := len(keys)
			if !errors.Is(errs[n], store.ErrNotFound) || vals[n] != nil {
				t.Fatalf("missing: %q, %v", vals[n], errs[n])
			}
			if errs[n+1] == nil || errors.Is(errs[n+1], store.ErrNotFound) {
				t.Fatalf("an overlong key: %v", errs[n+1])
			}
			if errs[n+2] != nil || vals[n+2] == nil || len(vals[n+2]) != 0 {
				t.Fatalf("empty value: %q (nil %v), %v", vals[n+2], vals[n+2] == nil, errs[n+2])
			}
			// Only invalid keys: no call, each key's own error.
			if _, errs := s.GetMany(ctx, ""); errs[0] == nil {
				t.Fatal("an empty key was accepted")
			}
		})
	}
}

// TestCreateThenUpdate: the Create as Create would make it, the Update
// as Update would, and no Update when the Create failed.
func TestCreateThenUpdate(t *testing.T) {
	ctx := context.Background()
	s := New(newClient(t, redistest.Start(t)), uniquePrefix())
	if err := s.Create(ctx, "scene", []byte("old"), time.Minute); err != nil {
		t.Fatal(err)
	}
	c, u := s.CreateThenUpdate(ctx, "code", []byte("c1"), 30*time.Second, "scene", []byte("old"), []byte("new"))
	if c != nil || u != nil {
		t.Fatalf("first = %v, %v", c, u)
	}
	if v, _ := s.Get(ctx, "scene"); string(v) != "new" {
		t.Fatalf("scene = %q", v)
	}
	if v, _ := s.Get(ctx, "code"); string(v) != "c1" {
		t.Fatalf("code = %q", v)
	}
	ttl, err := s.client.PTTL(ctx, s.prefix+"code").Result()
	if err != nil || ttl <= 29*time.Second || ttl > 30*time.Second {
		t.Fatalf("code's ttl = %v, %v", ttl, err)
	}
	if ttl, _ := s.client.PTTL(ctx, s.prefix+"scene").Result(); ttl <= 30*time.Second {
		t.Fatalf("scene's ttl = %v, not kept", ttl)
	}
	c, u = s.CreateThenUpdate(ctx, "code", []byte("c2"), time.Minute, "scene", []byte("old"), []byte("newer"))
	if !errors.Is(c, store.ErrExists) || !errors.Is(u, store.ErrChanged) {
		t.Fatalf("stale = %v, %v", c, u)
	}
	if v, _ := s.Get(ctx, "code"); string(v) != "c1" {
		t.Fatalf("code = %q, overwritten", v)
	}
	c, u = s.CreateThenUpdate(ctx, "code2", []byte("c"), time.Minute, "gone", []byte("old"), []byte("new"))
	if c != nil || !errors.Is(u, store.ErrNotFound) {
		t.Fatalf("missing scene = %v, %v", c, u)
	}
	c, u = s.CreateThenUpdate(ctx, "code3", []byte("c"), 0, "scene", []byte("new"), []byte("x"))
	if c == nil || !errors.Is(u, store.ErrNotAttempted) {
		t.Fatalf("bad ttl = %v, %v", c, u)
	}
	if v, _ := s.Get(ctx, "scene"); string(v) != "new" {
		t.Fatalf("scene = %q after a failed create", v)
	}
}

// TestTakeIfPrefix: a value with the prefix is taken by exactly one of
// many callers; one without it is read and left.
func TestTakeIfPrefix(t *testing.T) {
	ctx := context.Background()
	s := New(newClient(t, redistest.Start(t)), uniquePrefix())
	if _, _, err := s.TakeIfPrefix(ctx, "none", []byte("x")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
	if err := s.Create(ctx, "k", []byte("\x01\x01pending"), time.Minute); err != nil {
		t.Fatal(err)
	}
	v, taken, err := s.TakeIfPrefix(ctx, "k", []byte{1, 3})
	if err != nil || taken || string(v) != "\x01\x01pending" {
		t.Fatalf("other prefix: %q, %v, %v", v, taken, err)
	}
	if err := s.Update(ctx, "k", v, []byte("\x01\x03confirmed")); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var got atomic.Int32
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, taken, err := s.TakeIfPrefix(ctx, "k", []byte{1, 3})
			switch {
			case err == nil && taken && string(v) == "\x01\x03confirmed":
				got.Add(1)
			case errors.Is(err, store.ErrNotFound):
			default:
				t.Errorf("concurrent: %q, %v, %v", v, taken, err)
			}
		}()
	}
	wg.Wait()
	if got.Load() != 1 {
		t.Fatalf("%d callers took the value", got.Load())
	}
}

// TestIncrIfWithin: the first count always, as Incr makes it; the second
// only while the first is within the limit; Uncount takes one back and
// never creates a key.
func TestIncrIfWithin(t *testing.T) {
	ctx := context.Background()
	s := New(newClient(t, redistest.Start(t)), uniquePrefix())
	for i := int64(1); i <= 4; i++ {
		a, b, err := s.IncrIfWithin(ctx, "addr", 2, "all", 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		want := min(i, 2)
		if i > 2 {
			want = 0
		}
		if a != i || b != want {
			t.Fatalf("call %d: %d, %d; want %d, %d", i, a, b, i, want)
		}
	}
	if n, _ := s.Incr(ctx, "all", time.Minute); n != 3 {
		t.Fatalf("all = %d after the pair's two counts and one Incr", n)
	}
	for _, k := range []string{"addr", "all"} {
		ttl, err := s.client.PTTL(ctx, s.prefix+k).Result()
		if err != nil || ttl <= 29*time.Second || ttl > 30*time.Second {
			t.Fatalf("%s's ttl = %v, %v", k, ttl, err)
		}
	}
	if err := s.Uncount(ctx, "all"); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Incr(ctx, "all", time.Minute); n != 3 {
		t.Fatalf("all = %d after Uncount and Incr", n)
	}
	if err := s.Uncount(ctx, "missing"); err != nil {
		t.Fatal(err)
	}
	if n, err := s.client.Exists(ctx, s.prefix+"missing").Result(); err != nil || n != 0 {
		t.Fatalf("Uncount created a key: %d, %v", n, err)
	}
	if _, _, err := s.IncrIfWithin(ctx, "a", 1, "b", time.Microsecond); err == nil {
		t.Fatal("a ttl under 1ms was accepted")
	}
}

// TestCreateThenUpdateThen: CreateThenUpdate's writes; after a swap, the
// wake-up on both instances and the marker, as PublishThenCreate makes
// them; after no swap, neither.
func TestCreateThenUpdateThen(t *testing.T) {
	ctx := context.Background()
	a, b, onA, onB := subscribedPair(t, "scene:1")
	if err := a.Create(ctx, "scene", []byte("old"), time.Minute); err != nil {
		t.Fatal(err)
	}
	then := store.Followup{Topic: "scene:1", Key: "marker", Value: []byte("reply"), TTL: 40 * time.Second}
	// The wake-up every subscription gets once Redis confirms it.
	for _, ch := range []<-chan struct{}{onA, onB} {
		select {
		case <-ch:
		default:
		}
	}

	// Not swapped: no wake-up, no marker.
	c, u, p, m := a.CreateThenUpdateThen(ctx, "code0", []byte("c0"), time.Minute, "scene", []byte("other"), []byte("new"), then)
	if c != nil || !errors.Is(u, store.ErrChanged) || !errors.Is(p, store.ErrNotAttempted) || !errors.Is(m, store.ErrNotAttempted) {
		t.Fatalf("changed: %v, %v, %v, %v", c, u, p, m)
	}
	select {
	case <-onA:
		t.Fatal("woken without a swap")
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := a.Get(ctx, "marker"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("marker without a swap: %v", err)
	}
	c, u, p, m = a.CreateThenUpdateThen(ctx, "code0", []byte("c0"), time.Minute, "missing", []byte("old"), []byte("new"), then)
	if !errors.Is(c, store.ErrExists) || !errors.Is(u, store.ErrNotFound) || !errors.Is(p, store.ErrNotAttempted) || !errors.Is(m, store.ErrNotAttempted) {
		t.Fatalf("missing: %v, %v, %v, %v", c, u, p, m)
	}

	// Swapped: everything.
	c, u, p, m = a.CreateThenUpdateThen(ctx, "code", []byte("c1"), 30*time.Second, "scene", []byte("old"), []byte("new"), then)
	if c != nil || u != nil || p != nil || m != nil {
		t.Fatalf("swapped: %v, %v, %v, %v", c, u, p, m)
	}
	wantWake(t, onA, time.Second, "subscriber on the writing instance")
	wantWake(t, onB, time.Second, "subscriber on the other instance")
	for k, want := range map[string]string{"scene": "new", "code": "c1", "marker": "reply"} {
		if v, err := b.Get(ctx, k); err != nil || string(v) != want {
			t.Fatalf("%s = %q, %v", k, v, err)
		}
	}
	if ttl, err := a.client.PTTL(ctx, a.prefix+"marker").Result(); err != nil || ttl <= 39*time.Second || ttl > 40*time.Second {
		t.Fatalf("marker's ttl = %v, %v", ttl, err)
	}

	// The marker exists already: ErrExists, as Create.
	c, u, p, m = a.CreateThenUpdateThen(ctx, "code2", []byte("c2"), time.Minute, "scene", []byte("new"), []byte("newer"), then)
	if c != nil || u != nil || p != nil || !errors.Is(m, store.ErrExists) {
		t.Fatalf("marker exists: %v, %v, %v, %v", c, u, p, m)
	}
}

// TestSplice: a Splice stops at its guard, reports a missing key and a
// value that does not begin with the prefix as they are, and otherwise
// changes the value (keeping its time to live), makes the Create, wakes
// the topic's subscribers on every instance and stores the Then, all at
// once; on a Cluster it is not attempted.
func TestSplice(t *testing.T) {
	ctx := context.Background()
	a, b, onA, onB := subscribedPair(t, "scene:1")
	for _, ch := range []<-chan struct{}{onA, onB} { // the subscriptions' confirmations
		select {
		case <-ch:
		default:
		}
	}
	sp := store.Splice{
		Guard: "marker", Key: "scene", Prefix: []byte("P1"), Head: []byte("H2"), Tail: []byte("+tail"),
		Create: store.Entry{Key: "code", Value: []byte("c1"), TTL: 30 * time.Second},
		Then:   store.Followup{Topic: "scene:1", Key: "marker", Value: []byte("reply"), TTL: 40 * time.Second},
	}
	noWake := func(what string) {
		t.Helper()
		select {
		case <-onA:
			t.Fatalf("%s: woken", what)
		case <-time.After(50 * time.Millisecond):
		}
	}
	absent := func(what string, keys ...string) {
		t.Helper()
		for _, k := range keys {
			if _, err := a.Get(ctx, k); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("%s: %s is there (%v)", what, k, err)
			}
		}
	}

	if res, err := a.Splice(ctx, sp); !errors.Is(err, store.ErrNotFound) || res.Spliced {
		t.Fatalf("missing: %+v, %v", res, err)
	}
	absent("missing", "code", "marker")
	if err := a.Create(ctx, "scene", []byte("X1 rest"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if res, err := a.Splice(ctx, sp); err != nil || res.Spliced || string(res.Found) != "X1 rest" || res.Guarded != nil {
		t.Fatalf("other prefix: %+v, %v", res, err)
	}
	noWake("other prefix")
	absent("other prefix", "code", "marker")

	if err := a.Update(ctx, "scene", []byte("X1 rest"), []byte("P1 rest")); err != nil {
		t.Fatal(err)
	}
	res, err := a.Splice(ctx, sp)
	if err != nil || !res.Spliced || res.CreateErr != nil || res.ThenErr != nil || res.Found != nil || res.Guarded != nil {
		t.Fatalf("spliced: %+v, %v", res, err)
	}
	wantWake(t, onA, time.Second, "subscriber on the writing instance")
	wantWake(t, onB, time.Second, "subscriber on the other instance")
	for k, want := range map[string]string{"scene": "H2 rest+tail", "code": "c1", "marker": "reply"} {
		if v, err := b.Get(ctx, k); err != nil || string(v) != want {
			t.Fatalf("%s = %q, %v", k, v, err)
		}
	}
	for k, want := range map[string]time.Duration{"scene": time.Minute, "code": 30 * time.Second, "marker": 40 * time.Second} {
		if ttl, err := a.client.PTTL(ctx, a.prefix+k).Result(); err != nil || ttl <= want-time.Second || ttl > want {
			t.Fatalf("%s's ttl = %v, %v; want about %v", k, ttl, err, want)
		}
	}

	// The writing instance hears its own publication too, after the local
	// wake-up: let it arrive.
	time.Sleep(100 * time.Millisecond)
	select {
	case <-onA:
	default:
	}

	// The guard is there now: nothing is done, whatever the value.
	if err := a.Update(ctx, "scene", []byte("H2 rest+tail"), []byte("P1 again")); err != nil {
		t.Fatal(err)
	}
	if res, err := a.Splice(ctx, sp); err != nil || res.Spliced || string(res.Guarded) != "reply" {
		t.Fatalf("guarded: %+v, %v", res, err)
	}
	noWake("guarded")
	if v, _ := a.Get(ctx, "scene"); string(v) != "P1 again" {
		t.Fatalf("guarded splice changed the value to %q", v)
	}

	// The Create's and the Then's keys existing stop nothing.
	if err := a.Delete(ctx, "marker"); err != nil {
		t.Fatal(err)
	}
	sp.Then.Key = "code"
	if res, err := a.Splice(ctx, sp); err != nil || !res.Spliced || !errors.Is(res.CreateErr, store.ErrExists) || !errors.Is(res.ThenErr, store.ErrExists) {
		t.Fatalf("existing create and then: %+v, %v", res, err)
	}
	wantWake(t, onA, time.Second, "second splice")

	cluster := New(urlClient(t, redistest.StartCluster(t).URL()), uniquePrefix())
	defer cluster.Close()
	if err := cluster.Create(ctx, "scene", []byte("P1 rest"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.Splice(ctx, sp); !errors.Is(err, store.ErrNotAttempted) {
		t.Fatalf("cluster: %v", err)
	}
	if v, _ := cluster.Get(ctx, "scene"); string(v) != "P1 rest" {
		t.Fatalf("cluster changed the value to %q", v)
	}
}
