package middleware

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/middleware/bigcachestore"
	"github.com/wechat-login/caddy-wechat-login/middleware/store"
	"github.com/wechat-login/caddy-wechat-login/wechat"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// attemptKey tags a push request's context, so that gateStore can tell
// which attempt made a store call.
type attemptKey struct{}

// gateCall is one call gateStore saw.
type gateCall struct {
	attempt, op, key string
	err              error
	done             bool
}

// gateStore holds one chosen store call until the test opens the gate. A
// store that ignores its context (honour false) then applies the call
// whenever it is let go, however late: the worst case, a wedged store.
// One that honours it (honour true) gives up when the context ends,
// without effect. Every call is recorded with the attempt that made it.
type gateStore struct {
	store.Store
	honour bool

	mu    sync.Mutex
	hold  func(op, key string) bool
	calls []*gateCall

	arrived  chan struct{} // closed when the held call arrives
	release  chan struct{} // closed by open
	settled  chan struct{} // closed when the held call has returned
	openOnce sync.Once
}

func newGateStore(t *testing.T, honour bool) *gateStore {
	t.Helper()
	// Long enough for the "not me" records, as the default store is.
	inner, err := bigcachestore.New(bigcachestore.Config{MaxTTL: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	g := &gateStore{
		Store: inner, honour: honour,
		arrived: make(chan struct{}), release: make(chan struct{}), settled: make(chan struct{}),
	}
	t.Cleanup(func() { g.open(); _ = inner.Close() })
	return g
}

// holdNext arms the gate: the next call sel chooses is held.
func (g *gateStore) holdNext(sel func(op, key string) bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.hold = sel
}

// open lets the held call go on.
func (g *gateStore) open() { g.openOnce.Do(func() { close(g.release) }) }

func (g *gateStore) do(ctx context.Context, op, key string, call func() error) error {
	attempt, _ := ctx.Value(attemptKey{}).(string)
	c := &gateCall{attempt: attempt, op: op, key: key}
	g.mu.Lock()
	held := g.hold != nil && g.hold(op, key)
	if held {
		g.hold = nil
	}
	g.calls = append(g.calls, c)
	g.mu.Unlock()

	var err error
	if held {
		defer close(g.settled)
		close(g.arrived)
		if g.honour {
			select {
			case <-g.release:
			case <-ctx.Done():
				err = ctx.Err()
			}
		} else {
			<-g.release
		}
	}
	if err == nil {
		err = call()
	}
	g.mu.Lock()
	c.err, c.done = err, true
	g.mu.Unlock()
	return err
}

// callsBy counts the calls attempt made, finished or not.
func (g *gateStore) callsBy(attempt string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, c := range g.calls {
		if c.attempt == attempt {
			n++
		}
	}
	return n
}

// updated counts the updates of key that the store applied.
func (g *gateStore) updated(key string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, c := range g.calls {
		if c.op == "Update" && c.key == key && c.done && c.err == nil {
			n++
		}
	}
	return n
}

func (g *gateStore) Create(ctx context.Context, k string, v []byte, ttl time.Duration) error {
	return g.do(ctx, "Create", k, func() error { return g.Store.Create(ctx, k, v, ttl) })
}

func (g *gateStore) Get(ctx context.Context, k string) (v []byte, err error) {
	err = g.do(ctx, "Get", k, func() error { v, err = g.Store.Get(ctx, k); return err })
	return v, err
}

func (g *gateStore) Update(ctx context.Context, k string, old, v []byte) error {
	return g.do(ctx, "Update", k, func() error { return g.Store.Update(ctx, k, old, v) })
}

func (g *gateStore) Take(ctx context.Context, k string) (v []byte, err error) {
	err = g.do(ctx, "Take", k, func() error { v, err = g.Store.Take(ctx, k); return err })
	return v, err
}

func (g *gateStore) Delete(ctx context.Context, k string) error {
	return g.do(ctx, "Delete", k, func() error { return g.Store.Delete(ctx, k) })
}

// countingNotifier counts publications per topic.
type countingNotifier struct {
	LocalNotifier
	mu        sync.Mutex
	published map[string]int
}

func (n *countingNotifier) Publish(ctx context.Context, topic string) error {
	n.mu.Lock()
	if n.published == nil {
		n.published = map[string]int{}
	}
	n.published[topic]++
	n.mu.Unlock()
	return n.LocalNotifier.Publish(ctx, topic)
}

func (n *countingNotifier) count(topic string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.published[topic]
}

// servePush hands a push to the middleware under the given request context.
func (e *testEnv) servePush(ctx context.Context, p pushReq) *httptest.ResponseRecorder {
	req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/wechat/callback?"+p.query.Encode(), bytes.NewReader(p.body))
	req.Header.Set("Content-Type", "text/xml")
	w := httptest.NewRecorder()
	e.srv.Config.Handler.ServeHTTP(w, req)
	return w
}

// retryPush is a copy of p's push that WeChat sends again, tagged attempt.
func (e *testEnv) retryPush(attempt string, p pushReq) *httptest.ResponseRecorder {
	return e.servePush(context.WithValue(context.Background(), attemptKey{}, attempt), p)
}

// pushCutShort sends p as the attempt "first" and ends its request context
// (as its deadline would) while the gate holds one of its store calls. It
// returns the answer once the handler has returned.
func pushCutShort(t *testing.T, env *testEnv, g *gateStore, p pushReq) *httptest.ResponseRecorder {
	t.Helper()
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), attemptKey{}, "first"))
	defer cancel()
	answer := make(chan *httptest.ResponseRecorder, 1)
	go func() { answer <- env.servePush(ctx, p) }()
	select {
	case <-g.arrived:
	case w := <-answer:
		t.Fatalf("answered %d %q before the held store call", w.Code, w.Body)
	case <-time.After(time.Minute):
		t.Fatal("the store call to hold never came")
	}
	cancel()
	select {
	case w := <-answer:
		return w
	case <-time.After(time.Minute):
		t.Fatal("no answer after the push's context ended")
	}
	return nil
}

// waitSettled waits for the held store call to return.
func waitSettled(t *testing.T, g *gateStore) {
	t.Helper()
	select {
	case <-g.settled:
	case <-time.After(time.Minute):
		t.Fatal("the held store call did not return")
	}
}

// replyContent decrypts a safe-mode passive reply and returns its text.
func replyContent(t *testing.T, body []byte) string {
	t.Helper()
	c, err := wechat.NewCrypter(testToken, testAESKey, testAppID)
	if err != nil {
		t.Fatal(err)
	}
	env, err := wechat.ParseReplyEnvelope(body)
	if err != nil {
		t.Fatalf("reply %q: %v", body, err)
	}
	plain, err := c.Decrypt(env.MsgSignature, env.TimeStamp, env.Nonce, env.Encrypt)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := wechat.ParseEvent(plain)
	if err != nil {
		t.Fatal(err)
	}
	return ev.Content
}

func holdOp(op, prefix string) func(string, string) bool {
	return func(o, k string) bool { return o == op && strings.HasPrefix(k, prefix) }
}

// TestPushPastDeadlineChangesNothingAfter503: a push whose deadline passes
// while a store call is held is answered 503, and once that answer is
// written nothing of the push runs any more: when the held call is let go,
// no other store call follows, the scene stays pending and nobody is
// woken. WeChat's retry then completes the login, once.
func TestPushPastDeadlineChangesNothingAfter503(t *testing.T) {
	for name, tc := range map[string]struct {
		honour bool
		hold   func(op, key string) bool
	}{
		"store ignores ctx, held at the dedupe check": {false, holdOp("Get", "push:")},
		"store honours ctx, held at the scene read":   {true, holdOp("Get", "scene:")},
		"store honours ctx, held at the transition":   {true, holdOp("Update", "scene:")},
	} {
		t.Run(name, func(t *testing.T) {
			g := newGateStore(t, tc.honour)
			notifier := &countingNotifier{}
			metrics := &countingMetrics{}
			env := newEnv(t, wechattest.Safe, withMetrics(metrics), func(c *Config) { c.Store, c.Notifier = g, notifier })
			b, scene, ticket := pendingScene(t, env)
			alice := env.fake.OpenID(testAppID, "alice")
			now := time.Now()
			ev := scanEvent(alice, scene, ticket, false, now)

			g.holdNext(tc.hold)
			w := pushCutShort(t, env, g, safePush(t, ev, now.Unix(), "first"))
			if w.Code != http.StatusServiceUnavailable {
				t.Fatalf("got %d %q, want 503 so that WeChat retries", w.Code, w.Body)
			}
			answered := g.callsBy("first")
			g.open()
			waitSettled(t, g)
			if s := env.sceneState(scene); s != StatePending {
				t.Fatalf("scene became %s after the 503", s)
			}
			if n := notifier.count(sceneKey(scene)); n != 0 {
				t.Fatalf("%d notifications after the 503", n)
			}

			// WeChat's retry: the same event under a new URL.
			w = env.retryPush("retry", safePush(t, ev, now.Unix()+5, "retry"))
			if w.Code != http.StatusOK {
				t.Fatalf("retry: %d %q", w.Code, w.Body)
			}
			notMeCode(t, replyContent(t, w.Body.Bytes()))
			if s := env.sceneState(scene); s != StateConfirmed {
				t.Fatalf("after the retry the scene is %s", s)
			}
			if n := g.updated(sceneKey(scene)); n != 1 {
				t.Fatalf("%d transitions, want 1", n)
			}
			if n := notifier.count(sceneKey(scene)); n != 1 {
				t.Fatalf("%d notifications, want 1", n)
			}
			if n, d := metrics.get("scan:confirmed"), metrics.get("duplicate"); n != 1 || d != 0 {
				t.Fatalf("scan:confirmed %d, duplicate %d; want 1 and 0", n, d)
			}
			if got := b.poll(scene, 0).json(t); got["status"] != StateConfirmed {
				t.Fatalf("poll after the retry: %v", got)
			}
			if id := b.get("/private", nil).json(t); id["openid"] != alice {
				t.Fatalf("upstream saw %v", id)
			}
			if n := g.callsBy("first"); n != answered {
				t.Fatalf("the first attempt made %d store calls after its 503", n-answered)
			}
		})
	}
}

// TestPushInFlightTransitionFinishedByRetry: the one thing a 503 cannot
// undo is a store write already under way when the deadline passed. A
// scene update that lands after the 503 has only moved the scene: nobody
// was woken, no dedupe marker was stored, and the push's other calls were
// never made. WeChat's retry sees that this very push made the transition,
// finishes what the first attempt left undone and answers with the codes
// the scene holds, without a second transition; later copies are answered
// from the dedupe marker.
func TestPushInFlightTransitionFinishedByRetry(t *testing.T) {
	for _, confirm := range []bool{false, true} {
		name := map[bool]string{false: "login at scan", true: "confirm in chat"}[confirm]
		t.Run(name, func(t *testing.T) {
			g := newGateStore(t, false)
			notifier := &countingNotifier{}
			env := newEnv(t, wechattest.Safe, func(c *Config) {
				c.Store, c.Notifier, c.ConfirmInChat = g, notifier, confirm
			})
			b, scene, ticket := pendingScene(t, env)
			alice := env.fake.OpenID(testAppID, "alice")
			now := time.Now()
			ev := scanEvent(alice, scene, ticket, false, now)

			g.holdNext(holdOp("Update", "scene:"))
			w := pushCutShort(t, env, g, safePush(t, ev, now.Unix(), "first"))
			if w.Code != http.StatusServiceUnavailable {
				t.Fatalf("got %d %q, want 503", w.Code, w.Body)
			}
			if s := env.sceneState(scene); s != StatePending {
				t.Fatalf("scene %s before the held update was let go", s)
			}
			answered := g.callsBy("first")
			g.open()
			waitSettled(t, g)

			want := StateConfirmed
			if confirm {
				want = StateScanned
			}
			rec, _, err := env.mw.loadScene(context.Background(), scene)
			if err != nil || rec.State != want || rec.ScanKey != dedupeKey(ev) {
				t.Fatalf("the update under way did not land as expected: %+v %v", rec, err)
			}
			if n := notifier.count(sceneKey(scene)); n != 0 {
				t.Fatalf("%d notifications after the 503", n)
			}
			if _, err := g.Store.Get(context.Background(), dedupeKey(ev)); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("dedupe marker after an unfinished push: %v", err)
			}
			if n := g.callsBy("first"); n != answered {
				t.Fatalf("the first attempt made %d store calls after its 503", n-answered)
			}

			w = env.retryPush("retry", safePush(t, ev, now.Unix()+5, "retry"))
			if w.Code != http.StatusOK {
				t.Fatalf("retry: %d %q", w.Code, w.Body)
			}
			reply := replyContent(t, w.Body.Bytes())
			if confirm {
				if code := promptCode(t, reply); code != rec.ConfirmCode {
					t.Fatalf("retry offers confirmation code %s, the scene holds %s", code, rec.ConfirmCode)
				}
			} else {
				if code := notMeCode(t, reply); code != rec.NotMeCode {
					t.Fatalf("retry offers not-me code %s, the scene holds %s", code, rec.NotMeCode)
				}
				if _, err := g.Store.Get(context.Background(), notMeKey(alice, rec.NotMeCode)); err != nil {
					t.Fatalf("the offered not-me code is not armed: %v", err)
				}
			}
			if n := g.updated(sceneKey(scene)); n != 1 {
				t.Fatalf("%d transitions, want 1", n)
			}
			if n := notifier.count(sceneKey(scene)); n != 1 {
				t.Fatalf("%d notifications, want 1", n)
			}
			// A further copy is answered from the marker, the same way.
			w = env.retryPush("retry2", safePush(t, ev, now.Unix()+10, "retry2"))
			if w.Code != http.StatusOK || replyContent(t, w.Body.Bytes()) != reply {
				t.Fatalf("second retry: %d, reply differs", w.Code)
			}
			if n := notifier.count(sceneKey(scene)); n != 1 {
				t.Fatalf("%d notifications after the second retry, want 1", n)
			}

			if confirm {
				d := env.say("alice", rec.ConfirmCode)
				if !strings.Contains(replyText(d), "logged in to Example") {
					t.Fatalf("confirmation reply %q", replyText(d))
				}
			}
			if got := b.poll(scene, 0).json(t); got["status"] != StateConfirmed {
				t.Fatalf("poll: %v", got)
			}
			if id := b.get("/private", nil).json(t); id["openid"] != alice {
				t.Fatalf("upstream saw %v", id)
			}
			if n := g.callsBy("first"); n != answered {
				t.Fatalf("the first attempt made %d store calls after its 503", n-answered)
			}
		})
	}
}

// TestPushCutShortAfterTransitionFinishedByRetry: a push whose deadline
// passes after its transition, while it records what the scanner's
// confirmation code is for, is answered 503 although the scene moved, so
// that WeChat's retry does what was cut short; the scanner's code then
// confirms the login.
func TestPushCutShortAfterTransitionFinishedByRetry(t *testing.T) {
	g := newGateStore(t, true)
	env := newEnv(t, wechattest.Safe, func(c *Config) { c.Store, c.ConfirmInChat = g, true })
	b, scene, ticket := pendingScene(t, env)
	alice := env.fake.OpenID(testAppID, "alice")
	now := time.Now()
	ev := scanEvent(alice, scene, ticket, false, now)

	g.holdNext(holdOp("Create", "confirm:"))
	w := pushCutShort(t, env, g, safePush(t, ev, now.Unix(), "first"))
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("got %d %q, want 503", w.Code, w.Body)
	}
	answered := g.callsBy("first")
	g.open()
	waitSettled(t, g)
	rec, _, err := env.mw.loadScene(context.Background(), scene)
	if err != nil || rec.State != StateScanned {
		t.Fatalf("scene after the 503: %+v %v", rec, err)
	}
	if _, err := g.Store.Get(context.Background(), confirmKey(alice)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("pending confirmation recorded after the 503: %v", err)
	}
	if _, err := g.Store.Get(context.Background(), dedupeKey(ev)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("dedupe marker after an unfinished push: %v", err)
	}

	w = env.retryPush("retry", safePush(t, ev, now.Unix()+5, "retry"))
	if w.Code != http.StatusOK {
		t.Fatalf("retry: %d %q", w.Code, w.Body)
	}
	if code := promptCode(t, replyContent(t, w.Body.Bytes())); code != rec.ConfirmCode {
		t.Fatalf("retry offers confirmation code %s, the scene holds %s", code, rec.ConfirmCode)
	}
	if n := g.updated(sceneKey(scene)); n != 1 {
		t.Fatalf("%d transitions, want 1", n)
	}
	if d := env.say("alice", rec.ConfirmCode); !strings.Contains(replyText(d), "logged in to Example") {
		t.Fatalf("confirmation reply %q", replyText(d))
	}
	if got := b.poll(scene, 0).json(t); got["status"] != StateConfirmed {
		t.Fatalf("poll: %v", got)
	}
	if n := g.callsBy("first"); n != answered {
		t.Fatalf("the first attempt made %d store calls after its 503", n-answered)
	}
}

// blockingStore stands for a wedged connection deaf to ctx: Get signals
// arrived and blocks until release is closed, then fails.
type blockingStore struct {
	store.Store
	arrived, release chan struct{}
}

func newBlockingStore(t *testing.T, inner store.Store) *blockingStore {
	s := &blockingStore{Store: inner, arrived: make(chan struct{}, 1), release: make(chan struct{})}
	t.Cleanup(func() { close(s.release) })
	return s
}

func (s *blockingStore) Get(ctx context.Context, k string) ([]byte, error) {
	s.arrived <- struct{}{}
	<-s.release
	return nil, errors.New("connection reset")
}

// TestPushDeadlineStore: the wrapper returns a store call's own result
// while its context lasts, returns ctx.Err() as soon as the context ends
// even when the call underneath has not returned, and starts no call once
// the context has ended.
func TestPushDeadlineStore(t *testing.T) {
	inner, err := bigcachestore.New(bigcachestore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inner.Close() })
	ds := deadlineStore{inner}
	ctx := context.Background()
	if err := ds.Create(ctx, "k", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := ds.Create(ctx, "k", []byte("v"), time.Minute); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second Create: %v", err)
	}
	if v, err := ds.Get(ctx, "k"); err != nil || string(v) != "v" {
		t.Fatalf("Get: %q %v", v, err)
	}
	if err := ds.Update(ctx, "k", []byte("v"), []byte("w")); err != nil {
		t.Fatal(err)
	}
	if v, err := ds.Take(ctx, "k"); err != nil || string(v) != "w" {
		t.Fatalf("Take: %q %v", v, err)
	}
	if err := ds.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}

	// A call under way when the context ends.
	wedged := newBlockingStore(t, inner)
	cctx, cancel := context.WithCancel(ctx)
	got := make(chan error, 1)
	go func() { _, err := deadlineStore{wedged}.Get(cctx, "k"); got <- err }()
	select {
	case <-wedged.arrived:
	case err := <-got:
		t.Fatalf("returned %v before the call reached the store", err)
	}
	cancel()
	if err := <-got; !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}

	// No call starts once the context has ended.
	idle := newBlockingStore(t, inner)
	if _, err := (deadlineStore{idle}).Get(cctx, "k"); !errors.Is(err, context.Canceled) {
		t.Fatalf("after the end: %v", err)
	}
	select {
	case <-idle.arrived:
		t.Fatal("a call reached the store after its context ended")
	default:
	}
}
