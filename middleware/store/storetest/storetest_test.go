package storetest_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/middleware/store"
	"github.com/wechat-login/caddy-wechat-login/middleware/store/storetest"
)

// mapStore is a deliberately simple store: one mutex around a map. With no
// bug set it is correct, and the suite must pass it; each bug breaks one
// promise of the contract, and the suite must catch it.
type mapStore struct {
	bug string
	now func() time.Time

	mu      sync.Mutex
	entries map[string]mapEntry
}

type mapEntry struct {
	value   []byte
	ttl     time.Duration
	expires time.Time
}

func (s *mapStore) live(key string) (mapEntry, bool) {
	e, ok := s.entries[key]
	if !ok || (s.bug != "get-ignores-expiry" && !s.now().Before(e.expires)) {
		return mapEntry{}, false
	}
	return e, true
}

func (s *mapStore) Create(_ context.Context, key string, value []byte, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.live(key); ok && s.bug != "create-overwrites" {
		return store.ErrExists
	}
	s.entries[key] = mapEntry{value: bytes.Clone(value), ttl: ttl, expires: s.now().Add(ttl)}
	return nil
}

func (s *mapStore) Get(_ context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.live(key)
	if !ok {
		return nil, store.ErrNotFound
	}
	switch {
	case s.bug == "aliases-values":
		return e.value, nil
	case s.bug == "nil-for-empty" && len(e.value) == 0:
		return nil, nil
	}
	return append([]byte{}, e.value...), nil
}

func (s *mapStore) Update(_ context.Context, key string, old, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.live(key)
	if !ok {
		return store.ErrNotFound
	}
	if s.bug != "update-ignores-old" && !bytes.Equal(e.value, old) {
		return store.ErrChanged
	}
	e.value = bytes.Clone(value)
	if s.bug == "update-resets-ttl" {
		e.expires = s.now().Add(e.ttl)
	}
	s.entries[key] = e
	return nil
}

func (s *mapStore) Take(ctx context.Context, key string) ([]byte, error) {
	if s.bug == "take-not-atomic" {
		v, err := s.Get(ctx, key)
		if err != nil {
			return nil, err
		}
		// Give the other takers time to read the same value.
		time.Sleep(5 * time.Millisecond)
		return v, s.Delete(ctx, key)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.live(key)
	if !ok {
		return nil, store.ErrNotFound
	}
	delete(s.entries, key)
	return append([]byte{}, e.value...), nil
}

func (s *mapStore) Delete(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.entries, key)
	return nil
}

func (s *mapStore) Close() error { return nil }

func harness(bug string) storetest.Harness {
	return storetest.Harness{
		NewStore: func(t *testing.T) storetest.Subject {
			clock := storetest.NewFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
			s := &mapStore{bug: bug, now: clock.Now, entries: make(map[string]mapEntry)}
			return storetest.Subject{Store: s, Advance: clock.Advance}
		},
	}
}

func TestCorrectStorePasses(t *testing.T) {
	storetest.Run(t, harness(""))
}

// TestRealClock runs the suite the way a store that cannot fake time does:
// Advance sleeps.
func TestRealClock(t *testing.T) {
	if testing.Short() {
		t.Skip("sleeps")
	}
	storetest.Run(t, storetest.Harness{
		TTL: 100 * time.Millisecond,
		NewStore: func(t *testing.T) storetest.Subject {
			s := &mapStore{now: time.Now, entries: make(map[string]mapEntry)}
			return storetest.Subject{Store: s, Advance: time.Sleep}
		},
	})
}

// TestBrokenStore is run in a child process by TestSuiteCatchesBugs, with
// the bug to plant in the environment; it is expected to fail there.
func TestBrokenStore(t *testing.T) {
	bug := os.Getenv("STORETEST_BUG")
	if bug == "" {
		t.Skip("only run as a child of TestSuiteCatchesBugs")
	}
	storetest.Run(t, harness(bug))
}

func TestSuiteCatchesBugs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	tests := []struct {
		bug      string
		wantFail []string // sub-tests that must fail
	}{
		{"create-overwrites", []string{"CreateExisting", "ConcurrentCreate"}},
		{"get-ignores-expiry", []string{"Expiry", "UpdateKeepsTTL"}},
		{"update-ignores-old", []string{"UpdateMismatch", "ConcurrentUpdate"}},
		{"update-resets-ttl", []string{"UpdateKeepsTTL"}},
		{"take-not-atomic", []string{"ConcurrentTake"}},
		{"aliases-values", []string{"ValuesCopied"}},
		{"nil-for-empty", []string{"EmptyValue"}},
	}
	for _, tc := range tests {
		t.Run(tc.bug, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], "-test.run=^TestBrokenStore$", "-test.count=1")
			cmd.Env = append(os.Environ(), "STORETEST_BUG="+tc.bug)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("suite passed a store with bug %q:\n%s", tc.bug, out)
			}
			for _, name := range tc.wantFail {
				if !strings.Contains(string(out), "--- FAIL: TestBrokenStore/"+name+" ") {
					t.Errorf("sub-test %s did not fail for bug %q:\n%s", name, tc.bug, out)
				}
			}
		})
	}
}

func TestFakeClock(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	c := storetest.NewFakeClock(start)
	if got := c.Now(); !got.Equal(start) {
		t.Fatalf("Now() = %v, want %v", got, start)
	}
	c.Advance(90 * time.Second)
	c.Advance(10 * time.Second)
	if got, want := c.Now(), start.Add(100*time.Second); !got.Equal(want) {
		t.Fatalf("Now() after Advance = %v, want %v", got, want)
	}
}
