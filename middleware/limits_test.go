package middleware

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/middleware/bigcachestore"
	"github.com/wechat-login/caddy-wechat-login/middleware/store"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// pairCountingStore is countingStore with store.PairCounter, as Redis has.
type pairCountingStore struct {
	countingStore
	pairs int
}

func (c *pairCountingStore) IncrIfWithin(ctx context.Context, first string, limit int64, second string, ttl time.Duration) (int64, int64, error) {
	c.mu.Lock()
	c.pairs++
	c.mu.Unlock()
	n, _ := c.Incr(ctx, first, ttl)
	if n > limit {
		return n, 0, nil
	}
	m, _ := c.Incr(ctx, second, ttl)
	return n, m, nil
}

func (c *pairCountingStore) Uncount(_ context.Context, key string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.counts[key]; ok {
		c.counts[key]--
	}
	return nil
}

var _ store.PairCounter = (*pairCountingStore)(nil)

// TestClusterQRLimitsCountAsBefore: with a store that makes both shared
// counts of a QR creation in one call (store.PairCounter), every request
// gets the answer, and every shared count ends at the value, that a store
// with only store.Counter gives: the site-wide count is not spent by
// requests the address's limit refuses, nor by those this instance's own
// ceiling refuses; the address's is spent by those the ceiling refuses.
func TestClusterQRLimitsCountAsBefore(t *testing.T) {
	for _, pair := range []bool{false, true} {
		inner, err := bigcachestore.New(bigcachestore.Config{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = inner.Close() })
		var shared store.Store
		var counts func() map[string]int64
		var ps *pairCountingStore
		if pair {
			ps = &pairCountingStore{countingStore: countingStore{Store: inner}}
			shared, counts = ps, func() map[string]int64 { return byName(&ps.countingStore) }
		} else {
			cs := &countingStore{Store: inner}
			shared, counts = cs, func() map[string]int64 { return byName(cs) }
		}
		opts := func(c *Config) { c.Store = shared; c.QRRateLimit = 5; c.QRRateBurst = 100; c.QRCeiling = 2 }
		a := newEnv(t, wechattest.Safe, opts)
		b := newEnv(t, wechattest.Safe, opts)
		var got []int
		for _, env := range []*testEnv{a, a, a, b, b, b, b} {
			resp := env.browser().do(http.MethodPost, "/wechat/qr", nil, map[string]string{"Origin": env.srv.URL})
			got = append(got, resp.StatusCode)
		}
		want := []int{200, 200, 503, 503, 503, 429, 429}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("pair=%v: answers %v, want %v", pair, got, want)
			}
		}
		c := counts()
		if c["rl:qr:all"] != 4 || len(c) != 2 {
			t.Fatalf("pair=%v: shared counts %v, want the address's at 7 and the site's at 4", pair, c)
		}
		for name, n := range c {
			if name != "rl:qr:all" && (!strings.HasPrefix(name, "rl:qr:") || n != 7) {
				t.Fatalf("pair=%v: shared counts %v, want the address's at 7 and the site's at 4", pair, c)
			}
		}
		if pair && ps.pairs != 7 {
			t.Fatalf("%d paired counts for 7 requests", ps.pairs)
		}
	}
}

// byName sums c's counts by name, without the minute.
func byName(c *countingStore) map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int64{}
	for k, n := range c.counts {
		out[k[:strings.LastIndex(k, ":")]] += n
	}
	return out
}
