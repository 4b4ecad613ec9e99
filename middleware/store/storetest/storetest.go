// Package storetest is the conformance suite for store.Store backends.
//
// Every backend runs the same suite from its own tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, storetest.Harness{
//			NewStore: func(t *testing.T) storetest.Subject {
//				clock := storetest.NewFakeClock(time.Unix(1_700_000_000, 0))
//				s, err := mystore.New(mystore.Config{Now: clock.Now})
//				if err != nil {
//					t.Fatal(err)
//				}
//				return storetest.Subject{Store: s, Advance: clock.Advance}
//			},
//		})
//	}
//
// Embedded stores take their time from a FakeClock, so the expiry tests run
// instantly. Stores that cannot fake time (Redis) sleep in Advance and set a
// short Harness.TTL of a few hundred milliseconds; the suite keeps a margin of
// a quarter TTL on either side of every expiry so that such stores pass
// reliably.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/middleware/store"
)

// Subject is one store under test together with the way to move its time.
type Subject struct {
	// Store is a new, empty store. The suite closes it.
	Store store.Store

	// Advance moves the store's notion of time forward by d: embedded
	// stores move a fake clock, external stores simply sleep.
	Advance func(d time.Duration)
}

// Harness describes a backend to the suite.
type Harness struct {
	// NewStore returns a new, empty store that shares no keys with any
	// other store it returned. It is called once per sub-test, from
	// parallel sub-tests, so it must be safe for concurrent use.
	NewStore func(t *testing.T) Subject

	// TTL is the time to live the suite gives entries whose expiry it
	// checks. Default one minute, which suits fake clocks; stores that
	// sleep in Advance should use a few hundred milliseconds.
	TTL time.Duration

	// Concurrency is the number of goroutines that race in the
	// concurrency tests. Default 32.
	Concurrency int
}

// longTTL is the time to live of entries whose expiry the suite does not
// check; it is far beyond anything a test advances the clock by.
const longTTL = 10 * time.Minute

// Run runs the conformance suite against the backend h describes. Each
// check is a parallel sub-test with a store of its own.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.NewStore == nil {
		t.Fatal("storetest: Harness.NewStore is nil")
	}
	if h.TTL <= 0 {
		h.TTL = time.Minute
	}
	if h.Concurrency <= 0 {
		h.Concurrency = 32
	}
	if h.TTL*2 >= longTTL {
		t.Fatalf("storetest: Harness.TTL %s is too long; use at most %s", h.TTL, longTTL/4)
	}

	tests := []struct {
		name string
		run  func(t *testing.T, h Harness, s Subject)
	}{
		{"CreateGet", testCreateGet},
		{"CreateExisting", testCreateExisting},
		{"GetMissing", testGetMissing},
		{"Expiry", testExpiry},
		{"CreateAfterExpiry", testCreateAfterExpiry},
		{"CreateAfterDelete", testCreateAfterDelete},
		{"CreateAfterTake", testCreateAfterTake},
		{"Update", testUpdate},
		{"UpdateMismatch", testUpdateMismatch},
		{"UpdateMissing", testUpdateMissing},
		{"UpdateKeepsTTL", testUpdateKeepsTTL},
		{"Take", testTake},
		{"Delete", testDelete},
		{"KeysIndependent", testKeysIndependent},
		{"ValuesCopied", testValuesCopied},
		{"EmptyValue", testEmptyValue},
		{"BinaryValue", testBinaryValue},
		{"LongKeys", testLongKeys},
		{"ManyKeys", testManyKeys},
		{"ConcurrentCreate", testConcurrentCreate},
		{"ConcurrentTake", testConcurrentTake},
		{"ConcurrentUpdate", testConcurrentUpdate},
		{"Close", testClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := h.NewStore(t)
			if s.Store == nil || s.Advance == nil {
				t.Fatal("storetest: NewStore returned a Subject without Store or Advance")
			}
			if tc.name != "Close" {
				t.Cleanup(func() {
					if err := s.Store.Close(); err != nil {
						t.Errorf("Close: %v", err)
					}
				})
			}
			tc.run(t, h, s)
		})
	}
}

// The helpers below fail the test with the operation and key in the
// message; test keys are not secrets.

func mustCreate(t *testing.T, s store.Store, key string, value []byte, ttl time.Duration) {
	t.Helper()
	if err := s.Create(context.Background(), key, value, ttl); err != nil {
		t.Fatalf("Create(%q): %v", key, err)
	}
}

func mustUpdate(t *testing.T, s store.Store, key string, old, value []byte) {
	t.Helper()
	if err := s.Update(context.Background(), key, old, value); err != nil {
		t.Fatalf("Update(%q): %v", key, err)
	}
}

// wantValue checks that key holds exactly want, as a non-nil slice.
func wantValue(t *testing.T, s store.Store, key string, want []byte) {
	t.Helper()
	got, err := s.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v, want value %q", key, err, want)
	}
	if got == nil {
		t.Fatalf("Get(%q) = nil, nil; a found value must be non-nil", key)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Get(%q) = %q, want %q", key, got, want)
	}
}

// wantNotFound checks that Get reports key as missing.
func wantNotFound(t *testing.T, s store.Store, key string) {
	t.Helper()
	got, err := s.Get(context.Background(), key)
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get(%q) = %q, %v; want ErrNotFound", key, got, err)
	}
	if got != nil {
		t.Fatalf("Get(%q) returned %q together with ErrNotFound", key, got)
	}
}

func testCreateGet(t *testing.T, _ Harness, s Subject) {
	mustCreate(t, s.Store, "k", []byte("pending"), longTTL)
	wantValue(t, s.Store, "k", []byte("pending"))
	// Reading does not consume.
	wantValue(t, s.Store, "k", []byte("pending"))
}

func testCreateExisting(t *testing.T, _ Harness, s Subject) {
	mustCreate(t, s.Store, "k", []byte("first"), longTTL)
	err := s.Store.Create(context.Background(), "k", []byte("second"), longTTL)
	if !errors.Is(err, store.ErrExists) {
		t.Fatalf("second Create = %v, want ErrExists", err)
	}
	wantValue(t, s.Store, "k", []byte("first"))
}

func testGetMissing(t *testing.T, _ Harness, s Subject) {
	wantNotFound(t, s.Store, "missing")
}

func testExpiry(t *testing.T, h Harness, s Subject) {
	ctx := context.Background()
	for _, k := range []string{"get", "update", "take", "delete"} {
		mustCreate(t, s.Store, k, []byte("v"), h.TTL)
	}
	s.Advance(h.TTL * 3 / 4)
	wantValue(t, s.Store, "get", []byte("v"))
	s.Advance(h.TTL / 2)

	wantNotFound(t, s.Store, "get")
	if err := s.Store.Update(ctx, "update", []byte("v"), []byte("w")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Update of expired key = %v, want ErrNotFound", err)
	}
	if v, err := s.Store.Take(ctx, "take"); !errors.Is(err, store.ErrNotFound) || v != nil {
		t.Errorf("Take of expired key = %q, %v; want nil, ErrNotFound", v, err)
	}
	if err := s.Store.Delete(ctx, "delete"); err != nil {
		t.Errorf("Delete of expired key = %v, want nil", err)
	}
	// A failed Update must not have revived the entry.
	wantNotFound(t, s.Store, "update")
}

func testCreateAfterExpiry(t *testing.T, h Harness, s Subject) {
	mustCreate(t, s.Store, "k", []byte("old"), h.TTL)
	s.Advance(h.TTL * 5 / 4)
	mustCreate(t, s.Store, "k", []byte("new"), h.TTL)
	wantValue(t, s.Store, "k", []byte("new"))
	// The new entry has the new TTL, not what was left of the old one.
	s.Advance(h.TTL * 3 / 4)
	wantValue(t, s.Store, "k", []byte("new"))
	s.Advance(h.TTL / 2)
	wantNotFound(t, s.Store, "k")
}

func testCreateAfterDelete(t *testing.T, _ Harness, s Subject) {
	mustCreate(t, s.Store, "k", []byte("old"), longTTL)
	if err := s.Store.Delete(context.Background(), "k"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantNotFound(t, s.Store, "k")
	mustCreate(t, s.Store, "k", []byte("new"), longTTL)
	wantValue(t, s.Store, "k", []byte("new"))
}

func testCreateAfterTake(t *testing.T, _ Harness, s Subject) {
	mustCreate(t, s.Store, "k", []byte("old"), longTTL)
	if _, err := s.Store.Take(context.Background(), "k"); err != nil {
		t.Fatalf("Take: %v", err)
	}
	mustCreate(t, s.Store, "k", []byte("new"), longTTL)
	wantValue(t, s.Store, "k", []byte("new"))
}

func testUpdate(t *testing.T, _ Harness, s Subject) {
	mustCreate(t, s.Store, "k", []byte("pending"), longTTL)
	mustUpdate(t, s.Store, "k", []byte("pending"), []byte("scanned"))
	wantValue(t, s.Store, "k", []byte("scanned"))
	// Values of a different length, both ways.
	mustUpdate(t, s.Store, "k", []byte("scanned"), []byte("confirmed with a much longer value"))
	wantValue(t, s.Store, "k", []byte("confirmed with a much longer value"))
	mustUpdate(t, s.Store, "k", []byte("confirmed with a much longer value"), []byte("x"))
	wantValue(t, s.Store, "k", []byte("x"))
	// Writing the same value again is a successful no-op.
	mustUpdate(t, s.Store, "k", []byte("x"), []byte("x"))
	wantValue(t, s.Store, "k", []byte("x"))
}

func testUpdateMismatch(t *testing.T, _ Harness, s Subject) {
	mustCreate(t, s.Store, "k", []byte("scanned"), longTTL)
	for _, old := range [][]byte{[]byte("pending"), []byte("scanne"), []byte("scanned "), nil} {
		err := s.Store.Update(context.Background(), "k", old, []byte("confirmed"))
		if !errors.Is(err, store.ErrChanged) {
			t.Errorf("Update with old %q = %v, want ErrChanged", old, err)
		}
	}
	wantValue(t, s.Store, "k", []byte("scanned"))
}

func testUpdateMissing(t *testing.T, _ Harness, s Subject) {
	err := s.Store.Update(context.Background(), "missing", []byte("a"), []byte("b"))
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Update of missing key = %v, want ErrNotFound", err)
	}
	// Update never creates.
	wantNotFound(t, s.Store, "missing")
}

func testUpdateKeepsTTL(t *testing.T, h Harness, s Subject) {
	mustCreate(t, s.Store, "k", []byte("pending"), h.TTL)
	s.Advance(h.TTL / 2)
	mustUpdate(t, s.Store, "k", []byte("pending"), []byte("scanned"))
	// Not shortened...
	s.Advance(h.TTL / 4)
	wantValue(t, s.Store, "k", []byte("scanned"))
	// ...and not extended or made permanent: it expires at the original
	// deadline, even though it was written a quarter TTL before it.
	mustUpdate(t, s.Store, "k", []byte("scanned"), []byte("confirmed"))
	s.Advance(h.TTL / 2)
	wantNotFound(t, s.Store, "k")
}

func testTake(t *testing.T, _ Harness, s Subject) {
	ctx := context.Background()
	mustCreate(t, s.Store, "k", []byte("confirmed"), longTTL)
	got, err := s.Store.Take(ctx, "k")
	if err != nil || !bytes.Equal(got, []byte("confirmed")) {
		t.Fatalf("Take = %q, %v; want %q", got, err, "confirmed")
	}
	wantNotFound(t, s.Store, "k")
	if got, err := s.Store.Take(ctx, "k"); !errors.Is(err, store.ErrNotFound) || got != nil {
		t.Fatalf("second Take = %q, %v; want nil, ErrNotFound", got, err)
	}
	if got, err := s.Store.Take(ctx, "never"); !errors.Is(err, store.ErrNotFound) || got != nil {
		t.Fatalf("Take of missing key = %q, %v; want nil, ErrNotFound", got, err)
	}
}

func testDelete(t *testing.T, _ Harness, s Subject) {
	ctx := context.Background()
	mustCreate(t, s.Store, "k", []byte("v"), longTTL)
	if err := s.Store.Delete(ctx, "k"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantNotFound(t, s.Store, "k")
	if err := s.Store.Delete(ctx, "k"); err != nil {
		t.Fatalf("Delete of deleted key: %v", err)
	}
	if err := s.Store.Delete(ctx, "never"); err != nil {
		t.Fatalf("Delete of missing key: %v", err)
	}
}

func testKeysIndependent(t *testing.T, _ Harness, s Subject) {
	ctx := context.Background()
	// Prefixes of each other, and differing in case only.
	keys := []string{"a", "ab", "abc", "A", "scene:1", "scene:10"}
	for _, k := range keys {
		mustCreate(t, s.Store, k, []byte("v-"+k), longTTL)
	}
	mustUpdate(t, s.Store, "ab", []byte("v-ab"), []byte("changed"))
	if _, err := s.Store.Take(ctx, "abc"); err != nil {
		t.Fatalf("Take: %v", err)
	}
	if err := s.Store.Delete(ctx, "scene:1"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantValue(t, s.Store, "a", []byte("v-a"))
	wantValue(t, s.Store, "ab", []byte("changed"))
	wantNotFound(t, s.Store, "abc")
	wantValue(t, s.Store, "A", []byte("v-A"))
	wantNotFound(t, s.Store, "scene:1")
	wantValue(t, s.Store, "scene:10", []byte("v-scene:10"))
}

func testValuesCopied(t *testing.T, _ Harness, s Subject) {
	ctx := context.Background()
	in := []byte("pending")
	mustCreate(t, s.Store, "k", in, longTTL)
	copy(in, "XXXXXXX")
	wantValue(t, s.Store, "k", []byte("pending"))

	got, err := s.Store.Get(ctx, "k")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	copy(got, "YYYYYYY")
	wantValue(t, s.Store, "k", []byte("pending"))

	next := []byte("scanned")
	mustUpdate(t, s.Store, "k", []byte("pending"), next)
	copy(next, "ZZZZZZZ")
	wantValue(t, s.Store, "k", []byte("scanned"))

	taken, err := s.Store.Take(ctx, "k")
	if err != nil {
		t.Fatalf("Take: %v", err)
	}
	mustCreate(t, s.Store, "k", []byte("again"), longTTL)
	copy(taken, "WWWWWWW")
	wantValue(t, s.Store, "k", []byte("again"))
}

func testEmptyValue(t *testing.T, _ Harness, s Subject) {
	ctx := context.Background()
	mustCreate(t, s.Store, "empty", []byte{}, longTTL)
	wantValue(t, s.Store, "empty", []byte{})
	mustCreate(t, s.Store, "nil", nil, longTTL)
	wantValue(t, s.Store, "nil", []byte{})
	// An empty value is present: creating over it fails.
	if err := s.Store.Create(ctx, "empty", []byte("x"), longTTL); !errors.Is(err, store.ErrExists) {
		t.Fatalf("Create over empty value = %v, want ErrExists", err)
	}
	if err := s.Store.Update(ctx, "empty", []byte("x"), []byte("y")); !errors.Is(err, store.ErrChanged) {
		t.Fatalf("Update of empty value with old %q = %v, want ErrChanged", "x", err)
	}
	mustUpdate(t, s.Store, "empty", nil, []byte("full"))
	wantValue(t, s.Store, "empty", []byte("full"))
	mustUpdate(t, s.Store, "empty", []byte("full"), []byte{})
	wantValue(t, s.Store, "empty", []byte{})
	got, err := s.Store.Take(ctx, "empty")
	if err != nil || got == nil || len(got) != 0 {
		t.Fatalf("Take of empty value = %q (nil: %t), %v; want non-nil empty", got, got == nil, err)
	}
}

func testBinaryValue(t *testing.T, _ Harness, s Subject) {
	all := make([]byte, 0, 512)
	for i := range 256 {
		all = append(all, byte(i))
	}
	for i := range 256 {
		all = append(all, byte(255-i))
	}
	values := map[string][]byte{
		"all-bytes":      all,
		"zeros":          make([]byte, 64),
		"invalid-utf8":   {0xff, 0xfe, 0xc0, 0x80, 0xed, 0xa0, 0x80},
		"crlf-nul":       []byte("a\r\nb\x00c"),
		"redis-protocol": []byte("*1\r\n$4\r\nPING\r\n"),
	}
	for k, v := range values {
		mustCreate(t, s.Store, k, v, longTTL)
	}
	for k, v := range values {
		wantValue(t, s.Store, k, v)
	}
	mustUpdate(t, s.Store, "all-bytes", all, values["zeros"])
	wantValue(t, s.Store, "all-bytes", values["zeros"])
}

func testLongKeys(t *testing.T, _ Harness, s Subject) {
	ctx := context.Background()
	base := bytes.Repeat([]byte("k"), 199)
	// 200-byte keys that differ only in their last byte.
	a, b := string(base)+"a", string(base)+"b"
	mustCreate(t, s.Store, a, []byte("A"), longTTL)
	mustCreate(t, s.Store, b, []byte("B"), longTTL)
	wantValue(t, s.Store, a, []byte("A"))
	wantValue(t, s.Store, b, []byte("B"))
	mustUpdate(t, s.Store, a, []byte("A"), []byte("A2"))
	if got, err := s.Store.Take(ctx, b); err != nil || string(got) != "B" {
		t.Fatalf("Take(200-byte key) = %q, %v; want %q", got, err, "B")
	}
	wantValue(t, s.Store, a, []byte("A2"))
	wantNotFound(t, s.Store, string(base)+"c")
	wantNotFound(t, s.Store, string(base))
}

func testManyKeys(t *testing.T, _ Harness, s Subject) {
	ctx := context.Background()
	const n = 2000
	key := func(i int) string { return fmt.Sprintf("wechat_login:wx0123456789:scene:%06d", i) }
	value := func(i, version int) []byte { return fmt.Appendf(nil, "scene %d version %d", i, version) }
	for i := range n {
		mustCreate(t, s.Store, key(i), value(i, 0), longTTL)
	}
	for i := 0; i < n; i += 2 {
		mustUpdate(t, s.Store, key(i), value(i, 0), value(i, 1))
	}
	for i := 0; i < n; i += 3 {
		if err := s.Store.Delete(ctx, key(i)); err != nil {
			t.Fatalf("Delete(%q): %v", key(i), err)
		}
	}
	for i := range n {
		switch {
		case i%3 == 0:
			wantNotFound(t, s.Store, key(i))
		case i%2 == 0:
			wantValue(t, s.Store, key(i), value(i, 1))
		default:
			wantValue(t, s.Store, key(i), value(i, 0))
		}
	}
}

// race starts n goroutines that call f(i) as close to the same moment as
// possible and waits for all of them.
func race(n int, f func(i int)) {
	var start, done sync.WaitGroup
	start.Add(1)
	for i := range n {
		done.Go(func() {
			start.Wait()
			f(i)
		})
	}
	start.Done()
	done.Wait()
}

func testConcurrentCreate(t *testing.T, h Harness, s Subject) {
	const rounds = 10
	for r := range rounds {
		key := fmt.Sprintf("create-%d", r)
		errs := make([]error, h.Concurrency)
		race(h.Concurrency, func(i int) {
			errs[i] = s.Store.Create(context.Background(), key, fmt.Appendf(nil, "creator %d", i), longTTL)
		})
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("round %d: creators %d and %d both succeeded", r, winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, store.ErrExists):
				t.Fatalf("round %d: creator %d: %v, want nil or ErrExists", r, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no creator succeeded", r)
		}
		wantValue(t, s.Store, key, fmt.Appendf(nil, "creator %d", winner))
	}
}

func testConcurrentTake(t *testing.T, h Harness, s Subject) {
	const rounds = 10
	for r := range rounds {
		key := fmt.Sprintf("take-%d", r)
		want := fmt.Appendf(nil, "confirmed %d", r)
		mustCreate(t, s.Store, key, want, longTTL)
		got := make([][]byte, h.Concurrency)
		errs := make([]error, h.Concurrency)
		race(h.Concurrency, func(i int) {
			got[i], errs[i] = s.Store.Take(context.Background(), key)
		})
		winners := 0
		for i, err := range errs {
			switch {
			case err == nil:
				winners++
				if !bytes.Equal(got[i], want) {
					t.Fatalf("round %d: taker %d got %q, want %q", r, i, got[i], want)
				}
			case !errors.Is(err, store.ErrNotFound):
				t.Fatalf("round %d: taker %d: %v, want nil or ErrNotFound", r, i, err)
			}
		}
		if winners != 1 {
			t.Fatalf("round %d: %d takers got the value, want exactly 1", r, winners)
		}
		wantNotFound(t, s.Store, key)
	}
}

func testConcurrentUpdate(t *testing.T, h Harness, s Subject) {
	const rounds = 10
	for r := range rounds {
		key := fmt.Sprintf("update-%d", r)
		mustCreate(t, s.Store, key, []byte("pending"), longTTL)
		errs := make([]error, h.Concurrency)
		race(h.Concurrency, func(i int) {
			errs[i] = s.Store.Update(context.Background(), key, []byte("pending"), fmt.Appendf(nil, "confirmed by %d", i))
		})
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("round %d: updaters %d and %d both succeeded from the same old value", r, winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, store.ErrChanged):
				t.Fatalf("round %d: updater %d: %v, want nil or ErrChanged", r, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no updater succeeded", r)
		}
		wantValue(t, s.Store, key, fmt.Appendf(nil, "confirmed by %d", winner))
	}
}

func testClose(t *testing.T, _ Harness, s Subject) {
	mustCreate(t, s.Store, "k", []byte("v"), longTTL)
	if err := s.Store.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}
