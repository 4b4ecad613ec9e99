package ratelimit

import (
	"context"
	"errors"
	"testing"
	"time"
)

type mapCounter struct {
	n   map[string]int64
	err error
}

func (c *mapCounter) Incr(_ context.Context, key string, ttl time.Duration) (int64, error) {
	if c.err != nil {
		return 0, c.err
	}
	c.n[key]++
	return c.n[key], nil
}

func TestInWindow(t *testing.T) {
	c := &mapCounter{n: map[string]int64{}}
	start := time.Unix(1_700_000_060, 0) // 20 s into a minute
	for i := 1; i <= 3; i++ {
		if ok, _, err := InWindow(context.Background(), c, "k", 3, time.Minute, start.Add(time.Duration(i)*time.Second)); !ok || err != nil {
			t.Fatalf("event %d refused: %v", i, err)
		}
	}
	ok, retry, err := InWindow(context.Background(), c, "k", 3, time.Minute, start.Add(10*time.Second))
	if ok || err != nil || retry != 30*time.Second {
		t.Fatalf("fourth event: ok %v, retry %v, err %v; want refused for the 30 s left", ok, retry, err)
	}
	// The next minute counts afresh, under a key of its own.
	if ok, _, _ := InWindow(context.Background(), c, "k", 3, time.Minute, start.Add(40*time.Second)); !ok {
		t.Fatal("next window refused")
	}
	if len(c.n) != 2 {
		t.Fatalf("keys %v, want one per window", c.n)
	}
	c.err = errors.New("down")
	if _, _, err := InWindow(context.Background(), c, "k", 3, time.Minute, start); err == nil {
		t.Fatal("counter failure not reported")
	}
}

func TestClientKey(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"203.0.113.7", "203.0.113.7"},
		{"::ffff:203.0.113.7", "203.0.113.7"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"},
		{"fe80::1%eth0", "fe80::/64"},
		{"not an address", "not an address"},
	} {
		if got := ClientKey(tc.in); got != tc.want {
			t.Errorf("ClientKey(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
