package middleware

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// TestQRLoginEndToEnd walks the whole QR login against the fake WeChat in each
// of WeChat's three push modes: protected page → login page → QR → the phone
// scans → the waiting poll answers → session → identity upstream → logout.
func TestQRLoginEndToEnd(t *testing.T) {
	for _, mode := range []wechattest.PushMode{wechattest.Plaintext, wechattest.Compatible, wechattest.Safe} {
		t.Run(mode.String(), func(t *testing.T) {
			env := newEnv(t, mode)
			b := env.browser()

			// A browser without a session is sent to the login page.
			resp := b.get("/protected/page?x=1", map[string]string{"Accept": "text/html"})
			if resp.StatusCode != http.StatusFound {
				t.Fatalf("protected page: got %d, want 302", resp.StatusCode)
			}
			loc := resp.Header.Get("Location")
			if loc != "/wechat/login?next=%2Fprotected%2Fpage%3Fx%3D1" {
				t.Fatalf("redirect to %q", loc)
			}
			// An API client gets 401 JSON instead.
			if resp := b.get("/protected/page", map[string]string{"Accept": "application/json"}); resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("API client: got %d, want 401", resp.StatusCode)
			}
			page := b.get(loc, map[string]string{"Accept": "text/html"})
			if page.StatusCode != http.StatusOK || !strings.Contains(page.Header.Get("Content-Security-Policy"), "script-src 'nonce-") {
				t.Fatalf("login page: %d, CSP %q", page.StatusCode, page.Header.Get("Content-Security-Policy"))
			}

			// First login: alice does not follow the account yet → subscribe.
			identity := loginByScan(t, env, b, "alice", "/protected/page?x=1", "subscribe")
			wantOpenID := env.fake.OpenID(testAppID, "alice")
			if identity["openid"] != wantOpenID || identity["method"] != MethodQR || identity["appid"] != testAppID {
				t.Fatalf("upstream saw identity %v, want openid %s via qr", identity, wantOpenID)
			}
			if identity["has_id"] != true {
				t.Fatal("identity missing from the request context")
			}

			// Spoofed identity headers never reach the upstream.
			resp = b.get("/protected/page", map[string]string{HeaderOpenID: "oEvil", HeaderUnionID: "uEvil", HeaderLoginMethod: "forged"})
			got := resp.json(t)
			if got["openid"] != wantOpenID || got["unionid"] != "" || got["method"] != MethodQR {
				t.Fatalf("spoofed headers leaked through: %v", got)
			}

			// userinfo and auth agree.
			if ui := b.get("/wechat/userinfo", nil).json(t); ui["openid"] != wantOpenID {
				t.Fatalf("userinfo: %v", ui)
			}
			if a := b.get("/wechat/auth", nil); a.StatusCode != http.StatusOK || a.Header.Get(HeaderOpenID) != wantOpenID {
				t.Fatalf("auth: %d %q", a.StatusCode, a.Header.Get(HeaderOpenID))
			}

			// Logout revokes the session server-side: the cookie stops working
			// even if somebody kept a copy.
			stolen := b.cookie(sessionCookie)
			if stolen == nil {
				t.Fatal("no session cookie")
			}
			out := b.do(http.MethodPost, "/wechat/logout", nil, map[string]string{"Origin": env.srv.URL})
			if out.StatusCode != http.StatusSeeOther {
				t.Fatalf("logout: %d %s", out.StatusCode, out.body)
			}
			if resp := b.get("/protected/page", map[string]string{"Accept": "text/html"}); resp.StatusCode != http.StatusFound {
				t.Fatalf("after logout: got %d, want 302", resp.StatusCode)
			}
			thief := env.browser()
			req, _ := http.NewRequest(http.MethodGet, env.srv.URL+"/protected/page", nil)
			req.AddCookie(stolen)
			req.Header.Set("Accept", "application/json")
			tr, err := thief.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			tr.Body.Close()
			if tr.StatusCode != http.StatusUnauthorized {
				t.Fatalf("revoked cookie replayed: got %d, want 401", tr.StatusCode)
			}

			// Second login: alice now follows → SCAN.
			identity = loginByScan(t, env, b, "alice", "/", "SCAN")
			if identity["openid"] != wantOpenID {
				t.Fatalf("second login as %v", identity["openid"])
			}
		})
	}
}

// loginByScan creates a scene in browser b, waits on it with a long poll,
// lets user scan it, checks the timing and the chat reply, and returns what
// the protected upstream then sees.
func loginByScan(t *testing.T, env *testEnv, b *browser, user, next, wantEvent string) map[string]any {
	t.Helper()
	qr := b.createQR(next)
	scene, _ := qr["scene"].(string)
	if !validSceneID(scene) {
		t.Fatalf("scene %q is not 128 random bits in hex", scene)
	}
	for _, k := range []string{"qr_image", "expires_at", "poll_url", "events_url", "qr_content"} {
		if qr[k] == "" || qr[k] == nil {
			t.Fatalf("QR response lacks %s: %v", k, qr)
		}
	}
	if img := b.get(qr["qr_image"].(string), nil); img.StatusCode != http.StatusOK || !strings.HasPrefix(string(img.body), "<svg") {
		t.Fatalf("QR image: %d %.40q", img.StatusCode, img.body)
	}

	type polled struct {
		resp response
		at   time.Time
	}
	done := make(chan polled, 1)
	go func() {
		r := b.poll(scene, 20)
		done <- polled{r, time.Now()}
	}()
	env.waitForWaiters(1)

	d, err := env.fake.Scan(context.Background(), testAppID, qr["qr_content"].(string), user)
	if err != nil {
		t.Fatalf("phone scan: %v", err)
	}
	acked := time.Now()
	if d.Status != wechattest.StatusReplied {
		t.Fatalf("callback did not acknowledge the push: %+v", d)
	}
	if d.Event.Event != wantEvent {
		t.Fatalf("phone pushed %q, want %q", d.Event.Event, wantEvent)
	}
	if d.Reply == nil || !strings.Contains(d.Reply.Content, "Example") {
		t.Fatalf("chat reply %+v does not name the site", d.Reply)
	}
	p := <-done
	lag := p.at.Sub(acked)
	t.Logf("%s: the waiting poll answered %v after the push was acknowledged (negative: before)", wantEvent, lag)
	if lag > 100*time.Millisecond {
		t.Fatalf("poll answered %v after the push was acknowledged, want ≤ 100ms", lag)
	}
	got := p.resp.json(t)
	if got["status"] != StateConfirmed || got["redirect"] != next {
		t.Fatalf("poll: %v", got)
	}
	if b.cookie(sessionCookie) == nil {
		t.Fatal("confirmed poll set no session cookie")
	}
	if b.cookie(bindingCookie) != nil {
		t.Fatal("binding cookie outlived the login")
	}
	// The scene is spent: asking again gets nothing.
	if again := b.poll(scene, 0).json(t); again["status"] == StateConfirmed {
		t.Fatal("a scene was redeemed twice")
	}
	resp := b.get("/protected/page", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("protected page with session: %d %s", resp.StatusCode, resp.body)
	}
	return resp.json(t)
}
