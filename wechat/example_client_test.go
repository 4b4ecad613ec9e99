package wechat_test

import (
	"context"
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// A login page shows a temporary QR code carrying a random scene; when the
// user scans it, WeChat pushes an event with that scene to the account's
// server. Here the client talks to a fake WeChat; in production leave
// Endpoint empty.
func ExampleClient_CreateTempQR() {
	fake := wechattest.NewServer(wechattest.Config{})
	defer fake.Close()
	if err := fake.AddApp(wechattest.App{AppID: "wx0123456789abcdef", AppSecret: "app-secret", Mode: wechattest.Plaintext}); err != nil {
		log.Fatal(err)
	}

	c := &wechat.Client{
		AppID:     "wx0123456789abcdef",
		AppSecret: "app-secret",
		Endpoint:  fake.Endpoint(),
	}
	qr, err := c.CreateTempQR(context.Background(), "login-7f3a9c", 5*time.Minute)
	if err != nil {
		log.Fatal(err)
	}
	// Either render your own QR image from qr.URL, or use WeChat's.
	img := c.Endpoint.ShowQRCodeURL(qr.Ticket)
	fmt.Println("valid for", qr.ExpiresIn)
	fmt.Println("image at showqrcode:", strings.Contains(img, "/cgi-bin/showqrcode?ticket="))
	// Output:
	// valid for 5m0s
	// image at showqrcode: true
}

// Inside WeChat's browser, send the user to the authorization URL. WeChat
// comes back to the redirect URI with code and state; pass the code to
// Exchange.
func ExampleOAuthApp_AuthorizeURL() {
	app := &wechat.OAuthApp{AppID: "wx0123456789abcdef", AppSecret: "app-secret"}
	u, err := app.AuthorizeURL("https://example.com/wechat/oauth/callback", wechat.ScopeBase, "k3Jx9Qw2")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(u)
	// Output:
	// https://open.weixin.qq.com/connect/oauth2/authorize?appid=wx0123456789abcdef&redirect_uri=https%3A%2F%2Fexample.com%2Fwechat%2Foauth%2Fcallback&response_type=code&scope=snsapi_base&state=k3Jx9Qw2#wechat_redirect
}

// Several servers can each keep their own cache over stable_token: WeChat
// gives all of them the same live token.
func ExampleReuseTokenSource() {
	ep := wechat.DefaultEndpoint
	tokens := wechat.ReuseTokenSource(wechat.StableTokenSource("wx0123456789abcdef", "app-secret", ep, nil), 5*time.Minute)
	c := &wechat.Client{AppID: "wx0123456789abcdef", Endpoint: ep, Tokens: tokens}
	_ = c // c.CreateTempQR(ctx, ...) now fetches a token once and reuses it.
}
