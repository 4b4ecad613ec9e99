package wechattest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// Example starts a fake WeChat, registers an Official Account whose server
// is a local handler, creates a login QR code and lets a test user scan it.
func Example() {
	const appID, secret, token = "wx0123456789abcdef", "app-secret", "pushtoken"

	// The Official Account's own server, which WeChat pushes events to.
	account := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if !wechat.CheckSignature(q.Get("signature"), token, q.Get("timestamp"), q.Get("nonce")) {
			http.Error(w, "bad signature", http.StatusForbidden)
			return
		}
		body, _ := io.ReadAll(r.Body)
		ev, err := wechat.ParseEvent(body)
		if err != nil {
			http.Error(w, "bad event", http.StatusBadRequest)
			return
		}
		fmt.Println("pushed:", ev.Event, ev.EventKey)
		_, _ = io.WriteString(w, "success")
	}))
	defer account.Close()

	fake := wechattest.NewServer(wechattest.Config{})
	defer fake.Close()
	if err := fake.AddApp(wechattest.App{
		AppID: appID, AppSecret: secret, Token: token,
		OriginalID: "gh_0123456789ab", CallbackURL: account.URL,
	}); err != nil {
		panic(err)
	}

	// A WeChat client would use fake.Endpoint(); plain HTTP shows the wire.
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	getJSON(fake.URL+"/cgi-bin/token?grant_type=client_credential&appid="+appID+"&secret="+secret, "", &tok)
	var qr struct{ Ticket, URL string }
	getJSON(fake.URL+"/cgi-bin/qrcode/create?access_token="+url.QueryEscape(tok.AccessToken),
		`{"expire_seconds":300,"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"login42"}}}`, &qr)

	// Alice does not follow the account yet: scanning subscribes her.
	d, err := fake.Scan(context.Background(), appID, qr.Ticket, "alice")
	if err != nil {
		panic(err)
	}
	fmt.Println("delivery:", d.Status, "after", len(d.Attempts), "attempt(s)")

	// Output:
	// pushed: subscribe qrscene_login42
	// delivery: acknowledged after 1 attempt(s)
}

// getJSON GETs u, or POSTs body to it when body is not empty, and decodes
// the JSON answer into v.
func getJSON(u, body string, v any) {
	var resp *http.Response
	var err error
	if body == "" {
		resp, err = http.Get(u)
	} else {
		resp, err = http.Post(u, "application/json", strings.NewReader(body))
	}
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		panic(err)
	}
}

// ExamplePlatform_SendText runs a subscription account, which WeChat gives
// no parametric QR codes: a user follows it and sends it a message, and the
// account's passive reply is what the chat shows.
func ExamplePlatform_SendText() {
	const appID, secret, token = "wx0123456789abcdef", "app-secret", "pushtoken"

	// The account's server answers every text message.
	account := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ev, err := wechat.ParseEvent(body)
		if err != nil {
			http.Error(w, "bad event", http.StatusBadRequest)
			return
		}
		if ev.MsgType != "text" {
			fmt.Println("pushed:", ev.MsgType, ev.Event)
			_, _ = io.WriteString(w, "success")
			return
		}
		fmt.Println("pushed:", ev.MsgType, ev.Content)
		_, _ = w.Write(wechat.TextReply(ev.FromUserName, ev.ToUserName, "code "+ev.Content+" accepted", time.Now()))
	}))
	defer account.Close()

	fake := wechattest.NewServer(wechattest.Config{})
	defer fake.Close()
	if err := fake.AddApp(wechattest.App{
		AppID: appID, AppSecret: secret, Account: wechattest.SubscriptionAccount, Token: token,
		OriginalID: "gh_0123456789ab", CallbackURL: account.URL,
	}); err != nil {
		panic(err)
	}

	ctx := context.Background()
	if _, err := fake.SendText(ctx, appID, "alice", "123456"); errors.Is(err, wechattest.ErrNotFollowing) {
		fmt.Println("alice must follow first")
	}
	if _, err := fake.Follow(ctx, appID, "alice"); err != nil {
		panic(err)
	}
	reply, err := fake.SendText(ctx, appID, "alice", "123456")
	if err != nil {
		panic(err)
	}
	fmt.Println("chat shows:", reply)

	// Output:
	// alice must follow first
	// pushed: event subscribe
	// pushed: text 123456
	// chat shows: code 123456 accepted
}
