package caddymodule

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// TestCaddyChatCodesAndPlaintextReuse runs, through a real Caddy process and
// the fake WeChat, what an attacker and a victim meet: the scanner's "not
// me" ends a QR login at once (before or after its browser picked it up),
// and a plaintext-mode site refuses a forged body posted under a push URL
// WeChat already used.
func TestCaddyChatCodesAndPlaintextReuse(t *testing.T) {
	notMeRE := regexp.MustCompile(`Not you\? Reply (\d{6}) to end this login now\.`)
	// say sends a chat message from user's phone and returns the chat
	// reply ("" when the message was only acknowledged).
	say := func(t *testing.T, fake *wechattest.Server, user, text string) string {
		t.Helper()
		d, err := fake.Push(context.Background(), itAppID, &wechat.Event{
			FromUserName: fake.OpenID(itAppID, user), MsgType: "text", Content: text, MsgID: time.Now().UnixNano(),
		})
		if err != nil || d.Status == wechattest.StatusUnavailable {
			t.Fatalf("chat message: %v %+v", err, d)
		}
		if d.Reply == nil {
			return ""
		}
		return d.Reply.Content
	}
	// loggedIn reports whether b's session still opens the protected site,
	// asking as a browser (302 to the login page when not) and as an API
	// client (401 when not).
	loggedIn := func(t *testing.T, b *client, openid string) bool {
		t.Helper()
		page, body := b.do(http.MethodGet, "/private", nil, "Accept", "text/html")
		api, _ := b.do(http.MethodGet, "/private", nil, "Accept", "application/json")
		switch {
		case page.StatusCode == http.StatusOK && api.StatusCode == http.StatusOK && strings.Contains(body, "openid="+openid):
			return true
		case page.StatusCode == http.StatusFound && strings.HasPrefix(page.Header.Get("Location"), "/wechat/login") && api.StatusCode == http.StatusUnauthorized:
			return false
		}
		t.Fatalf("protected path: page %d, API %d", page.StatusCode, api.StatusCode)
		return false
	}

	t.Run("not me", func(t *testing.T) {
		l := startCaddyLogin(t)
		alice := l.fake.OpenID(itAppID, "alice")

		// After the browser got its session.
		b := newClient(t, l.caddy.BaseURL)
		qr := l.createQR(b)
		d, err := l.fake.Scan(context.Background(), itAppID, qr["qr_content"].(string), "alice")
		if err != nil || d.Status != wechattest.StatusReplied {
			t.Fatalf("scan: %v %+v", err, d)
		}
		m := notMeRE.FindStringSubmatch(d.Reply.Content)
		if m == nil || !strings.Contains(d.Reply.Content, "Caddy Site") {
			t.Fatalf("login reply offers no \"not me\": %q", d.Reply.Content)
		}
		if got := pollStatus(t, b, qr["scene"].(string), 0); got["status"] != "confirmed" {
			t.Fatalf("poll: %v", got)
		}
		if !loggedIn(t, b, alice) {
			t.Fatal("no session after the login")
		}
		if reply := say(t, l.fake, "bob", m[1]); reply != "" {
			t.Fatalf("bob's copy of alice's code was answered %q", reply)
		}
		if !loggedIn(t, b, alice) {
			t.Fatal("somebody else's message ended the session")
		}
		if reply := say(t, l.fake, "alice", m[1]); !strings.Contains(reply, "That login has been ended") {
			t.Fatalf("not me answered %q", reply)
		}
		if loggedIn(t, b, alice) {
			t.Fatal("the session still works after not me")
		}

		// Before the browser picked the login up: it is told "denied".
		b2 := newClient(t, l.caddy.BaseURL)
		qr = l.createQR(b2)
		d, err = l.fake.Scan(context.Background(), itAppID, qr["qr_content"].(string), "alice")
		if err != nil || d.Status != wechattest.StatusReplied || notMeRE.FindStringSubmatch(d.Reply.Content) == nil {
			t.Fatalf("second scan: %v %+v", err, d)
		}
		say(t, l.fake, "alice", notMeRE.FindStringSubmatch(d.Reply.Content)[1])
		if got := pollStatus(t, b2, qr["scene"].(string), 0); got["status"] != "denied" {
			t.Fatalf("poll after not me: %v, want denied", got)
		}
		if loggedIn(t, b2, alice) {
			t.Fatal("a denied login got a session")
		}

		resp, err := http.Get("http://" + l.caddy.admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		if metrics := readAll(resp); !strings.Contains(metrics, `caddy_wechat_login_scans_total{outcome="denied"} 2`) {
			t.Errorf("metrics lack two denied logins")
		}
	})

	t.Run("plaintext push URL reuse", func(t *testing.T) {
		fake := wechattest.NewServer(wechattest.Config{})
		t.Cleanup(fake.Close)
		site := strings.Replace(siteWithFake(fake.URL, "127.0.0.1:9", "Plain Site"), "encoding_aes_key {env.IT_WECHAT_AES_KEY}\n\t\t", "", 1)
		if strings.Contains(site, "encoding_aes_key") {
			t.Fatal("the plaintext site still has an encoding_aes_key")
		}
		c := startCaddy(t, site, itEnv...)
		if err := fake.AddApp(wechattest.App{
			AppID: itAppID, AppSecret: itSecret, Token: itToken,
			OriginalID: "gh_00000000aaaa", CallbackURL: c.BaseURL + "/wechat/callback", Mode: wechattest.Plaintext,
		}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "the start-up warning about plaintext pushes", func() bool {
			return strings.Contains(c.logs.String(), "only right for WeChat test accounts")
		})
		l := &caddyLogin{t: t, fake: fake, caddy: c}
		alice := fake.OpenID(itAppID, "alice")

		// The victim logs in; the push URL is logged somewhere.
		victim := newClient(t, c.BaseURL)
		qr := l.createQR(victim)
		used, err := fake.Scan(context.Background(), itAppID, qr["qr_content"].(string), "alice")
		if err != nil || used.Status != wechattest.StatusReplied {
			t.Fatalf("victim's scan: %v %+v", err, used)
		}

		// The attacker gets a login code of their own and posts, under
		// the logged URL, a scan of it in the victim's name.
		attacker := newClient(t, c.BaseURL)
		aqr := l.createQR(attacker)
		scene := aqr["scene"].(string)
		forged := wechat.MarshalEvent(&wechat.Event{
			ToUserName: "gh_00000000aaaa", FromUserName: alice, CreateTime: time.Now().Unix(),
			MsgType: "event", Event: "SCAN", EventKey: scene,
		})
		post := func(target string, body []byte) (int, string) {
			t.Helper()
			resp, err := http.Post(target, "text/xml", strings.NewReader(string(body)))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		for i := range 2 {
			if status, body := post(used.URL, forged); status != http.StatusForbidden || len(body) > 100 {
				t.Fatalf("forged body %d under a used URL: %d %q, want a short 403", i+1, status, body)
			}
		}
		if got := pollStatus(t, attacker, scene, 0); got["status"] != "pending" {
			t.Fatalf("attacker's poll after the forgery: %v", got)
		}
		if loggedIn(t, attacker, alice) {
			t.Fatal("the attacker got a session")
		}

		// WeChat's byte-identical retry of the used push is still answered
		// as the first delivery was.
		status, body := post(used.URL, used.Body)
		if ev, err := wechat.ParseEvent([]byte(body)); status != http.StatusOK || err != nil || ev.Content != used.Reply.Content {
			t.Fatalf("retry of the real push: %d %q, first answer %q", status, body, used.Reply.Content)
		}

		// Control: the forged body itself is well made; only someone who
		// holds the token (WeChat) can sign a fresh URL for it. That is
		// what plaintext mode trusts, and why it is for test accounts only.
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		fresh := c.BaseURL + "/wechat/callback?" + url.Values{
			"signature": {wechat.Signature(itToken, ts, "control")}, "timestamp": {ts}, "nonce": {"control"}, "openid": {alice},
		}.Encode()
		if status, body := post(fresh, forged); status != http.StatusOK {
			t.Fatalf("control under a fresh URL: %d %q", status, body)
		}
		if got := pollStatus(t, attacker, scene, 0); got["status"] != "confirmed" {
			t.Fatalf("control: %v", got)
		}

		resp, err := http.Get("http://" + c.admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		if metrics := readAll(resp); !strings.Contains(metrics, `caddy_wechat_login_push_rejections_total{reason="replay"} 2`) {
			t.Errorf("metrics lack the two refused replays")
		}
	})
}
