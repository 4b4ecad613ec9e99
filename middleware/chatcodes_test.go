package middleware

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

var (
	confirmCodeRE = regexp.MustCompile(`reply with the code (\d{6}) to confirm`)
	notMeCodeRE   = regexp.MustCompile(`Not you\? Reply (\d{6}) to end this login now\.`)
)

// promptCode returns the confirmation code a chat prompt asks for.
func promptCode(t *testing.T, reply string) string {
	t.Helper()
	m := confirmCodeRE.FindStringSubmatch(reply)
	if m == nil {
		t.Fatalf("no confirmation code in the chat reply %q", reply)
	}
	return m[1]
}

// notMeCode returns the "not me" code a login reply offers.
func notMeCode(t *testing.T, reply string) string {
	t.Helper()
	m := notMeCodeRE.FindStringSubmatch(reply)
	if m == nil {
		t.Fatalf("no \"not me\" code in the chat reply %q", reply)
	}
	return m[1]
}

var msgIDs atomic.Int64

// say sends a chat message from user's phone to the Official Account, the
// way WeChat pushes it.
func (e *testEnv) say(user, text string) *wechattest.Delivery {
	e.t.Helper()
	d, err := e.fake.Push(context.Background(), testAppID, &wechat.Event{
		ToUserName: testGhID, FromUserName: e.fake.OpenID(testAppID, user),
		CreateTime: time.Now().Unix(), MsgType: "text", Content: text, MsgID: 7_000_000 + msgIDs.Add(1),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

func replyText(d *wechattest.Delivery) string {
	if d.Reply == nil {
		return ""
	}
	return d.Reply.Content
}

// scanned creates a login code in a new browser and has user scan it; it
// returns the browser, the scene and the scan's chat reply.
func scanned(t *testing.T, env *testEnv, user string) (*browser, string, string) {
	t.Helper()
	b := env.browser()
	qr := b.createQR("/in")
	d, err := env.fake.Scan(context.Background(), testAppID, qr["qr_content"].(string), user)
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != wechattest.StatusReplied {
		t.Fatalf("scan: %s %s", d.Status, d.Problem)
	}
	return b, qr["scene"].(string), d.Reply.Content
}

// assertNoLogin checks that the browser holds no working session.
func assertNoLogin(t *testing.T, b *browser) {
	t.Helper()
	if resp := b.get("/in", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("protected path: %d %s, want 401", resp.StatusCode, resp.body)
	}
}

// TestConfirmCodeEverydayWordsConfirmNothing: the answers people give any
// Official Account menu ("1", "yes", "确认") do not confirm a login waiting
// for its code; they reach the site like any other message.
func TestConfirmCodeEverydayWordsConfirmNothing(t *testing.T) {
	env := newEnv(t, wechattest.Safe, func(c *Config) { c.ConfirmInChat = true; c.PassThroughPushes = true })
	b, scene, prompt := scanned(t, env, "alice")
	promptCode(t, prompt)
	for _, word := range []string{"1", " 1 ", "yes", "YES", "confirm", "确认", "１", "12345", "1234567"} {
		d := env.say("alice", word)
		if d.Status != wechattest.StatusUnavailable && strings.Contains(replyText(d), "logged in") {
			t.Fatalf("%q was answered as a confirmation: %q", word, replyText(d))
		}
		// Passed through to the site: the wrapped handler's JSON answer is no
		// valid passive reply, which is how the fake sees a pass-through here.
		if len(d.Attempts) == 0 || !strings.Contains(string(d.Attempts[0].Body), `"path":"/wechat/callback"`) {
			t.Fatalf("%q did not reach the site: %+v", word, d.Attempts)
		}
		if s := env.sceneState(scene); s != StateScanned {
			t.Fatalf("after %q the scene is %s", word, s)
		}
	}
	if got := b.poll(scene, 0).json(t); got["status"] != StateScanned || b.cookie(sessionCookie) != nil {
		t.Fatalf("poll %v, session cookie %v", got, b.cookie(sessionCookie))
	}
	assertNoLogin(t, b)
}

// TestConfirmCodeWrongGuessesBounded: a wrong code confirms nothing and is
// counted; the fifth wrong one refuses the login, after which even the right
// code does nothing.
func TestConfirmCodeWrongGuessesBounded(t *testing.T) {
	metrics := &countingMetrics{}
	env := newEnv(t, wechattest.Safe, func(c *Config) { c.ConfirmInChat = true }, withMetrics(metrics))
	b, scene, prompt := scanned(t, env, "alice")
	code := promptCode(t, prompt)
	wrong := func(i int) string {
		w := []byte(code)
		w[i%chatCodeLen] = '0' + (w[i%chatCodeLen]-'0'+1)%10
		return string(w)
	}
	for i := range maxConfirmTries - 1 {
		d := env.say("alice", wrong(i))
		if !strings.Contains(replyText(d), "not the confirmation code") {
			t.Fatalf("wrong code %d answered %q", i+1, replyText(d))
		}
		if s := env.sceneState(scene); s != StateScanned {
			t.Fatalf("after wrong code %d the scene is %s", i+1, s)
		}
	}
	if d := env.say("alice", wrong(maxConfirmTries)); !strings.Contains(replyText(d), "Too many wrong codes") {
		t.Fatalf("last wrong code answered %q", replyText(d))
	}
	if s := env.sceneState(scene); s != StateDenied {
		t.Fatalf("after %d wrong codes the scene is %s, want denied", maxConfirmTries, s)
	}
	if got := b.poll(scene, 0).json(t); got["status"] != StateDenied {
		t.Fatalf("poll after too many wrong codes: %v", got)
	}
	// The right code now comes too late.
	if d := env.say("alice", code); d.Status != wechattest.StatusAcknowledged {
		t.Fatalf("the right code after the limit: %s %q", d.Status, replyText(d))
	}
	if s := env.sceneState(scene); s != StateDenied {
		t.Fatalf("the right code after the limit made the scene %s", s)
	}
	if b.poll(scene, 0).json(t)["status"] != StateDenied || b.cookie(sessionCookie) != nil {
		t.Fatal("a refused login was redeemed")
	}
	if n := metrics.get("scan:denied"); n != 1 {
		t.Fatalf("scan:denied counted %d times, want 1", n)
	}
}

// TestConfirmCodeRightCodeConfirms: the scanner's own code confirms, typed
// with surrounding spaces or in full-width digits.
func TestConfirmCodeRightCodeConfirms(t *testing.T) {
	fullWidth := func(s string) string {
		return strings.Map(func(r rune) rune { return r - '0' + '０' }, s)
	}
	for name, form := range map[string]func(string) string{
		"ascii":                  func(c string) string { return c },
		"spaces":                 func(c string) string { return "  " + c + "\n" },
		"full-width":             fullWidth,
		"full-width with spaces": func(c string) string { return "\u3000" + fullWidth(c) + " " },
	} {
		t.Run(name, func(t *testing.T) {
			env := newEnv(t, wechattest.Safe, func(c *Config) { c.ConfirmInChat = true })
			b, scene, prompt := scanned(t, env, "alice")
			d := env.say("alice", form(promptCode(t, prompt)))
			if !strings.Contains(replyText(d), "logged in to Example") {
				t.Fatalf("confirmation answered %q", replyText(d))
			}
			notMeCode(t, replyText(d)) // every QR login offers "not me"
			if got := b.poll(scene, 0).json(t); got["status"] != StateConfirmed {
				t.Fatalf("poll after confirmation: %v", got)
			}
			if id := b.get("/in", nil).json(t); id["openid"] != env.fake.OpenID(testAppID, "alice") {
				t.Fatalf("upstream saw %v", id)
			}
		})
	}
}

// TestConfirmCodeOtherUsersCodeConfirmsNothing: the code is the scanner's
// alone: anybody else sending it, with or without a login of their own
// waiting, confirms nothing.
func TestConfirmCodeOtherUsersCodeConfirmsNothing(t *testing.T) {
	env := newEnv(t, wechattest.Safe, func(c *Config) { c.ConfirmInChat = true })
	alice, aliceScene, prompt := scanned(t, env, "alice")
	code := promptCode(t, prompt)

	if d := env.say("bob", code); d.Status != wechattest.StatusAcknowledged {
		t.Fatalf("bob, nothing waiting: %s %q", d.Status, replyText(d))
	}
	bob, bobScene, bobPrompt := scanned(t, env, "bob")
	if promptCode(t, bobPrompt) == code {
		t.Skip("two logins drew the same code (one chance in a million)")
	}
	if d := env.say("bob", code); !strings.Contains(replyText(d), "not the confirmation code") {
		t.Fatalf("bob, own login waiting: %q", replyText(d))
	}
	if s := env.sceneState(aliceScene); s != StateScanned {
		t.Fatalf("alice's login became %s through bob's message", s)
	}
	if s := env.sceneState(bobScene); s != StateScanned {
		t.Fatalf("bob's login became %s through alice's code", s)
	}
	for _, b := range []*browser{alice, bob} {
		if b.cookie(sessionCookie) != nil {
			t.Fatal("a session was issued")
		}
	}
	if got := alice.poll(aliceScene, 0).json(t); got["status"] != StateScanned {
		t.Fatalf("alice's poll: %v", got)
	}
}

// TestNotMeBeforeRedemption: the scanner's "not me" ends a login whose
// browser has not picked it up yet: the browser is told "denied" and gets no
// session.
func TestNotMeBeforeRedemption(t *testing.T) {
	metrics := &countingMetrics{}
	env := newEnv(t, wechattest.Safe, withMetrics(metrics))
	b, scene, reply := scanned(t, env, "alice")
	if !strings.Contains(reply, "logged in to Example") {
		t.Fatalf("scan reply %q", reply)
	}
	code := notMeCode(t, reply)
	if env.sceneState(scene) != StateConfirmed {
		t.Fatalf("scene %s after the scan", env.sceneState(scene))
	}

	// Somebody else sending the code changes nothing.
	if d := env.say("bob", code); d.Status != wechattest.StatusAcknowledged {
		t.Fatalf("bob's copy of the code: %s %q", d.Status, replyText(d))
	}
	if env.sceneState(scene) != StateConfirmed {
		t.Fatal("bob's message changed alice's login")
	}

	d := env.say("alice", code)
	if !strings.Contains(replyText(d), "That login has been ended") {
		t.Fatalf("not me answered %q", replyText(d))
	}
	if s := env.sceneState(scene); s != StateDenied {
		t.Fatalf("scene %s after not me, want denied", s)
	}
	if got := b.poll(scene, 0).json(t); got["status"] != StateDenied {
		t.Fatalf("the browser was told %v, want denied", got)
	}
	if b.cookie(sessionCookie) != nil {
		t.Fatal("a session cookie was set after not me")
	}
	assertNoLogin(t, b)
	if n := metrics.get("scan:denied"); n != 1 {
		t.Fatalf("scan:denied counted %d times, want 1", n)
	}
}

// TestNotMeAfterRedemption: "not me" after the browser got its session ends
// that session server-side: the cookie stops working at once. The scanner's
// other sessions are not touched.
func TestNotMeAfterRedemption(t *testing.T) {
	for _, confirm := range []bool{false, true} {
		t.Run(map[bool]string{false: "scan", true: "confirm in chat"}[confirm], func(t *testing.T) {
			env := newEnv(t, wechattest.Safe, func(c *Config) { c.ConfirmInChat = confirm })
			login := func() (*browser, string) {
				b, scene, reply := scanned(t, env, "alice")
				if confirm {
					reply = replyText(env.say("alice", promptCode(t, reply)))
				}
				code := notMeCode(t, reply)
				if got := b.poll(scene, 0).json(t); got["status"] != StateConfirmed {
					t.Fatalf("poll: %v", got)
				}
				if resp := b.get("/in", nil); resp.StatusCode != http.StatusOK {
					t.Fatalf("protected path after login: %d", resp.StatusCode)
				}
				return b, code
			}
			other, _ := login()
			b, code := login()

			if d := env.say("alice", code); !strings.Contains(replyText(d), "That login has been ended") {
				t.Fatalf("not me answered %q", replyText(d))
			}
			assertNoLogin(t, b)
			if resp := other.get("/in", nil); resp.StatusCode != http.StatusOK {
				t.Fatalf("the scanner's other session: %d, want it untouched", resp.StatusCode)
			}
		})
	}
}

// TestNotMeRetriedPushSameReply: WeChat's retry of a "not me" message (same
// MsgId, same CreateTime) gets the answer the first delivery got, and the
// login is ended once.
func TestNotMeRetriedPushSameReply(t *testing.T) {
	metrics := &countingMetrics{}
	env := newEnv(t, wechattest.Safe, withMetrics(metrics))
	b, scene, reply := scanned(t, env, "alice")
	b.poll(scene, 0)
	ev := &wechat.Event{
		ToUserName: testGhID, FromUserName: env.fake.OpenID(testAppID, "alice"),
		CreateTime: time.Now().Unix(), MsgType: "text", Content: notMeCode(t, reply), MsgID: 424242,
	}
	var replies []string
	for range 3 {
		d, err := env.fake.Push(context.Background(), testAppID, ev)
		if err != nil {
			t.Fatal(err)
		}
		replies = append(replies, replyText(d))
	}
	if !strings.Contains(replies[0], "That login has been ended") || replies[1] != replies[0] || replies[2] != replies[0] {
		t.Fatalf("replies to the copies: %q", replies)
	}
	if n := metrics.get("scan:denied"); n != 1 {
		t.Fatalf("scan:denied counted %d times, want 1", n)
	}
	assertNoLogin(t, b)
}

// TestScanRetryRepeatsCodes: a retried scan push is answered with the same
// codes as the first, before and after the browser redeemed the login.
func TestScanRetryRepeatsCodes(t *testing.T) {
	for _, confirm := range []bool{false, true} {
		env := newEnv(t, wechattest.Safe, func(c *Config) { c.ConfirmInChat = confirm })
		b, scene, ticket := pendingScene(t, env)
		now := time.Now()
		ev := scanEvent(env.fake.OpenID(testAppID, "alice"), scene, ticket, false, now)
		first := env.sendPush(safePush(t, ev, now.Unix(), "s1"))
		if !confirm {
			b.poll(scene, 0) // redeemed between the copies
		}
		again := env.sendPush(safePush(t, ev, now.Unix()+1, "s2"))
		if first.StatusCode != http.StatusOK || again.StatusCode != http.StatusOK || len(first.body) == 0 {
			t.Fatalf("confirm=%v: %d %d", confirm, first.StatusCode, again.StatusCode)
		}
		c, err := wechat.NewCrypter(testToken, testAESKey, testAppID)
		if err != nil {
			t.Fatal(err)
		}
		content := func(body []byte) string {
			env2, err := wechat.ParseReplyEnvelope(body)
			if err != nil {
				t.Fatalf("reply %q: %v", body, err)
			}
			plain, err := c.Decrypt(env2.MsgSignature, env2.TimeStamp, env2.Nonce, env2.Encrypt)
			if err != nil {
				t.Fatal(err)
			}
			ev, err := wechat.ParseEvent(plain)
			if err != nil {
				t.Fatal(err)
			}
			return ev.Content
		}
		if a, b := content(first.body), content(again.body); a != b || !regexp.MustCompile(`\d{6}`).MatchString(a) {
			t.Fatalf("confirm=%v: first reply %q, retry %q", confirm, a, b)
		}
	}
}
