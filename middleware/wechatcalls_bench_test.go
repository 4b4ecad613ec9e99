package middleware

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// countingWeChat is a fake WeChat that counts the TCP connections it
// accepts.
type countingWeChat struct {
	*wechattest.Platform
	srv      *httptest.Server
	accepted atomic.Int64
}

func newCountingWeChat(t testing.TB) *countingWeChat {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	p, err := wechattest.New(wechattest.Config{BaseURL: "http://" + srv.Listener.Addr().String()})
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	c := &countingWeChat{Platform: p, srv: srv}
	srv.Config.Handler = p
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			c.accepted.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return c
}

// qrBurst has n browsers ask for a login code at once and returns how many
// connections the fake WeChat accepted meanwhile.
func qrBurst(t *testing.T, env *testEnv, wc *countingWeChat, n int) int64 {
	t.Helper()
	before := wc.accepted.Load()
	var start, done sync.WaitGroup
	start.Add(1)
	for range n {
		done.Add(1)
		b := env.browser()
		go func() {
			defer done.Done()
			start.Wait()
			b.createQR("/")
		}()
	}
	start.Done()
	done.Wait()
	return wc.accepted.Load() - before
}

// TestQRBurstConnections: a burst of 100 QR creations reaches WeChat over
// at most maxWeChatConnsPerHost connections, and the next burst reuses
// them. The bound is the transport's own (it never holds more connections
// to one host), so the test does not depend on timing; the latency makes
// the calls overlap, as they would with a real WeChat.
func TestQRBurstConnections(t *testing.T) {
	wc := newCountingWeChat(t)
	wc.SetLatency("/cgi-bin/qrcode/create", 5*time.Millisecond)
	env := newEnv(t, wechattest.Safe, func(c *Config) {
		c.Endpoint = wc.Endpoint()
		c.QRRateBurst, c.QRRateLimit, c.QRCeiling = 1000, 1000, 1000
	})
	if err := wc.AddApp(wechattest.App{
		AppID: testAppID, AppSecret: testSecret, Token: testToken,
		EncodingAESKey: testAESKey, OriginalID: testGhID,
		CallbackURL: env.srv.URL + "/wechat/callback", Mode: wechattest.Safe,
	}); err != nil {
		t.Fatal(err)
	}
	const burst = 100
	first := qrBurst(t, env, wc, burst)
	second := qrBurst(t, env, wc, burst)
	t.Logf("connections accepted by WeChat: %d for the first %d concurrent QR creations, %d for the next %d", first, burst, second, burst)
	if first > maxWeChatConnsPerHost || second > maxWeChatConnsPerHost {
		t.Fatalf("%d and %d new connections to WeChat for bursts of %d, want at most %d each", first, second, burst, maxWeChatConnsPerHost)
	}
	if got := wc.Calls("/cgi-bin/qrcode/create"); got != 2*burst {
		t.Fatalf("qrcode/create called %d times, want %d", got, 2*burst)
	}
}

// TestDefaultWeChatClientRefusesRedirects: the default client to WeChat
// hands a redirect back as the answer, as the wechat package's own default
// client does, rather than following it.
func TestDefaultWeChatClientRefusesRedirects(t *testing.T) {
	var followed atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			followed.Store(true)
			return
		}
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	}))
	defer srv.Close()
	resp, err := ObservedClient(nil, nil).Get(srv.URL + "/cgi-bin/qrcode/create?access_token=secret")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || followed.Load() {
		t.Fatalf("status %d, followed %v: want the 302 itself", resp.StatusCode, followed.Load())
	}
}
