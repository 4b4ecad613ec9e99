package caddymodule

import (
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// TestReloadsLeakNothing loads a config in process, reloads it many times
// with cosmetic changes while logins are pending, and checks that the shared
// state is kept (same store across reloads), that goroutines do not pile
// up, and that stopping Caddy releases everything in the usage pool.
//
// What a reload does to connections, and so how the test talks to Caddy: the
// new configuration opens its own listening socket beside the old one (both
// with SO_REUSEPORT, the kernel spreads new connections over the two), and
// caddy.Load returns once the old server has begun shutting down in the
// background. The old server then closes its idle keep-alive connections
// and its listener, and closing a listener resets the connections the
// kernel had queued on it and nobody accepted yet. A request sent during a
// reload, on a kept-alive connection or on a new one, may thus fail with
// "connection reset by peer": that is Caddy's reload, not what this test is
// about. It makes no request while a reload is under way; after each reload
// it waits until the old listener is closed, and every request goes on a
// connection of its own.
func TestReloadsLeakNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Caddy in process")
	}
	// The embedded store's logouts go to a file under Caddy's data
	// directory: keep it out of the real home.
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	fake := wechattest.NewServer(wechattest.Config{})
	defer fake.Close()
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	load := func(siteName string) {
		t.Helper()
		cf := `{
	admin off
	auto_https off
	persist_config off
	grace_period 100ms
	servers {
		listener_wrappers {
			reload_watch
		}
	}
}
` + base + ` {
	wechat_login {
		app_id ` + itAppID + `
		app_secret ` + itSecret + `
		token ` + itToken + `
		encoding_aes_key ` + itAESKey + `
		session_key integration-session-key-0123456789abcdef
		site_name "` + siteName + `"
		api_base ` + fake.URL + `
		oauth_base ` + fake.URL + `
		mp_base ` + fake.URL + `
	}
	respond "ok"
}`
		js, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := caddy.Load(js, true); err != nil {
			t.Fatalf("load: %v", err)
		}
		// Until the previous configuration's listener is closed, a new
		// connection may be queued on it and reset.
		deadline := time.Now().Add(10 * time.Second)
		for n := watchedListeners.Load(); n != 1; n = watchedListeners.Load() {
			if time.Now().After(deadline) {
				t.Fatalf("%d listeners open 10s after loading a config, want 1", n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if err := fake.AddApp(wechattest.App{AppID: itAppID, AppSecret: itSecret, Token: itToken, EncodingAESKey: itAESKey,
		OriginalID: "gh_00000000aaaa", CallbackURL: base + "/wechat/callback", Mode: wechattest.Safe}); err != nil {
		t.Fatal(err)
	}

	load("site 0")
	b := newClient(t, base)
	b.hc.Transport = &http.Transport{DisableKeepAlives: true} // a connection per request
	resp, body := b.do(http.MethodPost, "/wechat/qr", nil, "Origin", base)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("create QR: %d %s", resp.StatusCode, body)
	}
	scene := body[strings.Index(body, `"scene":"`)+9:][:32]
	before := settledGoroutines()
	for i := 1; i <= 10; i++ {
		load(fmt.Sprintf("site %d", i))
		if _, body := b.do(http.MethodGet, "/wechat/poll?scene="+scene, nil); !strings.Contains(body, `"pending"`) {
			t.Fatalf("after reload %d the pending scene is gone: %s", i, body)
		}
	}
	after := settledGoroutines()
	if after > before+3 {
		t.Fatalf("goroutines grew from %d to %d over 10 reloads", before, after)
	}
	entries := 0
	pool.Range(func(any, any) bool { entries++; return true })
	if entries != 1 {
		t.Fatalf("%d shared states in the pool across reloads of one app, want 1", entries)
	}

	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	entries = 0
	pool.Range(func(any, any) bool { entries++; return true })
	if entries != 0 {
		t.Fatalf("%d shared states left in the pool after stopping", entries)
	}
}

// settledGoroutines counts goroutines once they stop changing, so that
// connection handlers winding down do not count.
func settledGoroutines() int {
	last := runtime.NumGoroutine()
	for range 50 {
		time.Sleep(40 * time.Millisecond)
		n := runtime.NumGoroutine()
		if n == last {
			return n
		}
		last = n
	}
	return last
}

// reloadWatch is a listener wrapper for TestReloadsLeakNothing
// (caddy.listeners.reload_watch): it counts the listeners it wrapped that
// are still open, so that the test knows when an old configuration's
// listening socket is closed for good.
type reloadWatch struct{}

var watchedListeners atomic.Int32

func init() { caddy.RegisterModule(new(reloadWatch)) }

func (*reloadWatch) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "caddy.listeners.reload_watch", New: func() caddy.Module { return new(reloadWatch) }}
}

func (*reloadWatch) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the wrapper's name; it takes no options
	return nil
}

func (*reloadWatch) WrapListener(ln net.Listener) net.Listener {
	watchedListeners.Add(1)
	return &watchedListener{Listener: ln}
}

type watchedListener struct {
	net.Listener
	once sync.Once
}

// Close returns once the socket is closed.
func (l *watchedListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { watchedListeners.Add(-1) })
	return err
}
