package middleware

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/internal/redistest"
	"github.com/wechat-login/caddy-wechat-login/middleware/redisstore"
	"github.com/wechat-login/caddy-wechat-login/middleware/store"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// countingRedis is the Redis store, counting what its Splices found and
// the scene reads of the general way.
type countingRedis struct {
	*redisstore.Store
	mu                                      sync.Mutex
	spliced, found, guarded, missing, reads int
}

func (c *countingRedis) Splice(ctx context.Context, sp store.Splice) (store.SpliceResult, error) {
	res, err := c.Store.Splice(ctx, sp)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case err != nil:
		c.missing++
	case res.Spliced:
		c.spliced++
	case res.Guarded != nil:
		c.guarded++
	default:
		c.found++
	}
	return res, err
}

func (c *countingRedis) GetMany(ctx context.Context, keys ...string) ([][]byte, []error) {
	c.mu.Lock()
	c.reads++
	c.mu.Unlock()
	return c.Store.GetMany(ctx, keys...)
}

func (c *countingRedis) counts() [5]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return [5]int{c.spliced, c.found, c.guarded, c.missing, c.reads}
}

// TestScanInOneRoundTrip: with Redis, a QR scan that completes a login is
// made by one Splice, and answers, logs in and arms its "not me" code as
// the general way does; a retry of it is answered the same, from its
// marker; a scan the splice does not fit (a wrong ticket, a second
// scanner) goes the general way with the record the splice read, and
// changes nothing; a scan of a scene that is gone is answered as expired.
func TestScanInOneRoundTrip(t *testing.T) {
	srv := redistest.Start(t)
	client, err := redisstore.NewClient(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	rs := &countingRedis{Store: redisstore.New(client, "splice:")}
	env := newEnv(t, wechattest.Safe, func(c *Config) { c.Store = rs })
	b := env.browser()
	scene := b.createQR("/after")["scene"].(string)
	rec, _, err := env.mw.loadScene(context.Background(), scene)
	if err != nil {
		t.Fatal(err)
	}
	alice, bob := env.fake.OpenID(testAppID, "alice"), env.fake.OpenID(testAppID, "bob")
	now := time.Now()
	push := func(what, openid, scene, ticket string, at time.Time) string {
		t.Helper()
		resp := env.sendPush(safePush(t, scanEvent(openid, scene, ticket, false, at), at.Unix(), strings.ReplaceAll(what, " ", "-")))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", what, resp.StatusCode, resp.body)
		}
		return replyContent(t, resp.body)
	}
	want := func(what string, counts [5]int, state string) {
		t.Helper()
		if got := rs.counts(); got != counts {
			t.Errorf("%s: spliced, found, guarded, missing, general reads = %v, want %v", what, got, counts)
		}
		if got := env.sceneState(scene); got != state {
			t.Errorf("%s: scene %s, want %s", what, got, state)
		}
	}

	if reply := push("wrong ticket", alice, scene, "gQWrongTicket==", now); reply != env.mw.cfg.ExpiredReply {
		t.Errorf("wrong ticket answered %q", reply)
	}
	want("wrong ticket", [5]int{0, 1, 0, 0, 0}, StatePending)

	scan := now.Add(time.Second)
	reply := push("scan", alice, scene, rec.Ticket, scan)
	if !strings.HasPrefix(reply, env.mw.loginReply()) {
		t.Errorf("scan answered %q", reply)
	}
	code := notMeCode(t, reply)
	want("scan", [5]int{1, 1, 0, 0, 0}, StateConfirmed)
	if again := push("scan", alice, scene, rec.Ticket, scan); again != reply {
		t.Errorf("retry answered %q, the scan %q", again, reply)
	}
	want("retry", [5]int{1, 1, 1, 0, 0}, StateConfirmed)
	if other := push("second scanner", bob, scene, rec.Ticket, scan.Add(time.Second)); other != env.mw.cfg.ExpiredReply {
		t.Errorf("second scanner answered %q", other)
	}
	want("second scanner", [5]int{1, 2, 1, 0, 0}, StateConfirmed)
	if gone := push("gone", alice, randomHex(sceneIDLen/2), rec.Ticket, scan.Add(2*time.Second)); gone != env.mw.cfg.ExpiredReply {
		t.Errorf("scan of a scene that is gone answered %q", gone)
	}
	if got := rs.counts(); got[3] != 1 {
		t.Errorf("scan of a scene that is gone: %v", got)
	}

	if got := b.poll(scene, 0).json(t); got["status"] != StateConfirmed || got["redirect"] != "/after" {
		t.Fatalf("redeem: %v", got)
	}
	if resp := b.get("/private", nil); resp.StatusCode != http.StatusOK || resp.json(t)["openid"] != alice {
		t.Fatalf("protected page: %d %s", resp.StatusCode, resp.body)
	}
	// The "not me" code the reply offers was armed with the scan.
	env.say("alice", code)
	if resp := b.get("/private", map[string]string{"Accept": "application/json"}); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("after \"not me\": %d %s", resp.StatusCode, resp.body)
	}
}
