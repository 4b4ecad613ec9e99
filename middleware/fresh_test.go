package middleware

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/middleware/bigcachestore"
	"github.com/wechat-login/caddy-wechat-login/middleware/store"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// TestFreshScenes: a watch is claimed once, says "unchanged" only until
// its scene's topic is published, and is dropped (its subscription
// cancelled) when it expires, when newer ones need its room, or on close.
func TestFreshScenes(t *testing.T) {
	n := &LocalNotifier{}
	f := &freshScenes{max: 3}
	f.add(n, "a", 100, 0)
	f.add(n, "b", 100, 0)
	if n.Waiting() != 2 {
		t.Fatalf("%d subscriptions for 2 watches", n.Waiting())
	}
	w, unchanged, ok := f.claim("a", 1)
	if !ok || !unchanged {
		t.Fatalf("claim a: unchanged %v ok %v", unchanged, ok)
	}
	if _, _, ok := f.claim("a", 1); ok {
		t.Fatal("a claimed twice")
	}
	w.cancel()
	_ = n.Publish(context.Background(), sceneKey("b"))
	w, unchanged, ok = f.claim("b", 1)
	if !ok || unchanged {
		t.Fatalf("claim b after a publish: unchanged %v ok %v", unchanged, ok)
	}
	w.cancel()
	if n.Waiting() != 0 {
		t.Fatalf("%d subscriptions left after both were cancelled", n.Waiting())
	}

	// Expired at the claim: refused and cancelled.
	f.add(n, "c", 10, 0)
	if _, _, ok := f.claim("c", 10); ok || n.Waiting() != 0 {
		t.Fatalf("expired watch claimed (%v) or kept (%d)", ok, n.Waiting())
	}
	// Expired at a later add: dropped.
	f.add(n, "d", 10, 0)
	f.add(n, "e", 100, 20)
	if _, _, ok := f.claim("d", 5); ok {
		t.Fatal("an expired watch outlived a later add")
	}
	// Over the bound: the oldest goes.
	f.add(n, "f", 100, 20)
	f.add(n, "g", 100, 20)
	f.add(n, "h", 100, 20)
	if n.Waiting() != 3 {
		t.Fatalf("%d subscriptions for a bound of 3", n.Waiting())
	}
	if _, _, ok := f.claim("e", 20); ok {
		t.Fatal("the oldest watch outlived the bound")
	}
	// Claimed ids do not pile up in the queue.
	for i := range 1000 {
		id := string(rune('A'+i%26)) + string(rune('a'+i/26))
		f.add(n, id, 100, 20)
		if w, _, ok := f.claim(id, 20); ok {
			w.cancel()
		}
	}
	if len(f.queue) > 4*f.max+1 {
		t.Fatalf("queue of %d ids for %d watches", len(f.queue), len(f.byID))
	}
	f.close()
	if n.Waiting() != 0 {
		t.Fatalf("%d subscriptions left after close", n.Waiting())
	}
}

// sceneReads counts the reads of scene records a store serves.
type sceneReads struct {
	store.Store
	n atomic.Int64
}

func (s *sceneReads) Get(ctx context.Context, key string) ([]byte, error) {
	if strings.HasPrefix(key, "scene:") {
		s.n.Add(1)
	}
	return s.Store.Get(ctx, key)
}

func newSceneReadsEnv(t *testing.T) (*testEnv, *sceneReads) {
	inner, err := bigcachestore.New(bigcachestore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inner.Close() })
	reads := &sceneReads{Store: inner}
	return newEnv(t, wechattest.Safe, func(c *Config) { c.Store = reads }), reads
}

// TestFirstWaitReadsNoScene: the browser's first long-poll or event stream
// on the instance that made its scene starts without reading the scene,
// and still hears the scan at once.
func TestFirstWaitReadsNoScene(t *testing.T) {
	for _, kind := range []string{"poll", "events"} {
		t.Run(kind, func(t *testing.T) {
			env, reads := newSceneReadsEnv(t)
			b := env.browser()
			qr := b.createQR("/x")
			got := waitOn(b, qr, kind)
			env.waitForWaiters(1)
			if kind == "events" {
				if s := <-got; s != StatePending {
					t.Fatalf("first event %q", s)
				}
			} else {
				time.Sleep(50 * time.Millisecond) // what a read would have taken, and more
			}
			if n := reads.n.Load(); n != 0 {
				t.Fatalf("%d scene reads before the scan", n)
			}
			if _, err := env.fake.Scan(context.Background(), testAppID, qr["qr_content"].(string), "alice"); err != nil {
				t.Fatal(err)
			}
			select {
			case s := <-got:
				if s != StateConfirmed {
					t.Fatalf("after the scan: %q", s)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("the scan was not heard")
			}
			// A second wait reads, as every wait did before.
			before := reads.n.Load()
			if kind == "poll" {
				return // the first redeemed the scene
			}
			b.poll(qr["scene"].(string), 0)
			if reads.n.Load() == before {
				t.Fatal("a later poll did not read the scene")
			}
		})
	}
}

// TestChangeBeforeFirstWait: a scan that lands between the scene's answer
// and the browser's first wait is answered at once, by a long-poll and by
// an event stream, not after the wait.
func TestChangeBeforeFirstWait(t *testing.T) {
	for _, kind := range []string{"poll", "events"} {
		t.Run(kind, func(t *testing.T) {
			env := newEnv(t, wechattest.Safe)
			b := env.browser()
			qr := b.createQR("/x")
			if _, err := env.fake.Scan(context.Background(), testAppID, qr["qr_content"].(string), "alice"); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			got := waitOn(b, qr, kind)
			select {
			case s := <-got:
				if s != StateConfirmed {
					t.Fatalf("first answer %q, want confirmed", s)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no answer")
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("answered after %v: the wait did not read the changed scene", d)
			}
		})
	}
}

// waitOn starts the browser's wait on qr's scene, a long-poll of 10 s or
// an event stream, and returns the states it reports.
func waitOn(b *browser, qr map[string]any, kind string) <-chan string {
	if kind == "poll" {
		got := make(chan string, 1)
		go func() {
			var v map[string]string
			_ = json.Unmarshal(b.poll(qr["scene"].(string), 10).body, &v)
			got <- v["status"]
		}()
		return got
	}
	_, states := b.events(qr["events_url"].(string))
	return states
}
