package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// TestCaddyCodeLoginOnSubscriptionAccount runs code login through a real
// Caddy process for an account that WeChat refuses parametric QR codes
// (48001), the way its users meet it: the QR creation fails over to the
// code, a non-follower cannot send it, a follower's wrong code is answered
// and changes nothing, the right one logs the waiting browser in, a used
// code is worth nothing, and five wrong codes lock their sender out, the
// right code included, while others are unaffected.
func TestCaddyCodeLoginOnSubscriptionAccount(t *testing.T) {
	fake := wechattest.NewServer(wechattest.Config{})
	t.Cleanup(fake.Close)
	c := startCaddy(t, siteWithFake(fake.URL, "127.0.0.1:9", "Caddy Site",
		"methods qr code", `account_name "Caddy Account"`, "follow_qr /follow.png"), itEnv...)
	if err := fake.AddApp(wechattest.App{
		AppID: itAppID, AppSecret: itSecret, Token: itToken, EncodingAESKey: itAESKey,
		OriginalID: "gh_00000000aaaa", CallbackURL: c.BaseURL + "/wechat/callback", Mode: wechattest.Safe,
		Account: wechattest.SubscriptionAccount,
	}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	send := func(user, text string) string {
		t.Helper()
		reply, err := fake.SendText(ctx, itAppID, user, text)
		if err != nil {
			t.Fatalf("%s sends %q: %v", user, text, err)
		}
		return reply
	}
	newCode := func(b *client) (scene, code string) {
		t.Helper()
		resp, body := b.do(http.MethodPost, "/wechat/code", strings.NewReader("next=%2Fdone"), "Origin", c.BaseURL)
		var j map[string]any
		if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &j) != nil {
			t.Fatalf("POST /wechat/code: %d %s", resp.StatusCode, body)
		}
		for _, k := range []string{"scene", "code", "expires_at", "poll_url", "events_url"} {
			if s, _ := j[k].(string); s == "" {
				t.Fatalf("POST /wechat/code: no %s in %s", k, body)
			}
		}
		return j["scene"].(string), j["code"].(string)
	}

	b := newClient(t, c.BaseURL)
	resp, body := b.do(http.MethodPost, "/wechat/qr", strings.NewReader("next=%2Fdone"), "Origin", c.BaseURL)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, `"fallback":"code"`) {
		t.Fatalf("QR creation on a subscription account: %d %s", resp.StatusCode, body)
	}
	_, page := b.do(http.MethodGet, "/wechat/login?next=/done", nil, "Accept-Language", "en")
	for _, want := range []string{`data-kind="code"`, "the Official Account “Caddy Account”", `src="/follow.png"`} {
		if !strings.Contains(page, want) {
			t.Errorf("login page after the 48001 lacks %q", want)
		}
	}
	if !strings.Contains(c.Log(), "qr_not_allowed") {
		t.Error("the operator was not told of the 48001")
	}

	scene, code := newCode(b)
	// The browser waits in a long-poll, as the page does without SSE.
	waited := make(chan map[string]any, 1)
	go func() {
		var got map[string]any
		resp, err := b.hc.Get(c.BaseURL + "/wechat/poll?scene=" + scene + "&wait=20")
		if err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&got)
			resp.Body.Close()
		}
		waited <- got
	}()

	if _, err := fake.SendText(ctx, itAppID, "alice", code); !errors.Is(err, wechattest.ErrNotFollowing) {
		t.Fatalf("a non-follower's message: %v", err)
	}
	if d, err := fake.Follow(ctx, itAppID, "alice"); err != nil || !strings.Contains(d.ChatText(), "send the login code") {
		t.Fatalf("follow: %v %q", err, d.ChatText())
	}
	if reply := send("alice", "1234512345"); !strings.Contains(reply, "not a valid login code") {
		t.Fatalf("wrong code: %q", reply)
	}
	if reply := send("alice", code[:5]+" "+code[5:]); !strings.Contains(reply, "logged in to Caddy Site") {
		t.Fatalf("the code: %q", reply)
	}
	if got := <-waited; got["status"] != "confirmed" || got["redirect"] != "/done" {
		t.Fatalf("long-poll: %v", got)
	}
	if _, body := b.do(http.MethodGet, "/private", nil); !strings.Contains(body, "openid="+fake.OpenID(itAppID, "alice")) || !strings.Contains(body, "method=code") {
		t.Fatalf("protected site: %s", body)
	}
	if reply := send("bob", code); !strings.Contains(reply, "not a valid login code") {
		t.Fatalf("used code sent again: %q", reply)
	}

	// Guessing: bob sends five wrong codes (one more above), then the right
	// code of a waiting browser.
	victim := newClient(t, c.BaseURL)
	vScene, vCode := newCode(victim)
	for i := range 3 {
		send("bob", "9999999"+strings.Repeat(string(rune('0'+i)), 3))
	}
	if reply := send("bob", "8888888888"); !strings.Contains(reply, "Too many wrong login codes") {
		t.Fatalf("fifth wrong code: %q", reply)
	}
	if reply := send("bob", vCode); !strings.Contains(reply, "Too many wrong login codes") {
		t.Fatalf("the right code from a locked-out sender: %q", reply)
	}
	if got := pollStatus(t, victim, vScene, 0); got["status"] != "pending" {
		t.Fatalf("the locked-out sender moved the login: %v", got)
	}
	if _, err := fake.Follow(ctx, itAppID, "alice"); !errors.Is(err, wechattest.ErrAlreadyFollowing) {
		t.Fatal(err)
	}
	if reply := send("alice", vCode); !strings.Contains(reply, "logged in") {
		t.Fatalf("another sender while bob is locked out: %q", reply)
	}
	if got := pollStatus(t, victim, vScene, 0); got["status"] != "confirmed" {
		t.Fatalf("after alice's code: %v", got)
	}
}
