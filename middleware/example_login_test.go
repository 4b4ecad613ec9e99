package middleware_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"

	"github.com/wechat-login/caddy-wechat-login/middleware"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// A whole QR login against the fake WeChat, as a browser and a phone would
// do it: the page asks for a login code, the phone scans it, WeChat pushes
// the scan to the site, the waiting browser redeems it for a session, and
// the application sees who logged in.
func Example_qrLogin() {
	const appID, secret, token = "wx0123456789abcdef", "app-secret", "pushtoken"
	const aesKey = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	fake := wechattest.NewServer(wechattest.Config{})
	defer fake.Close()

	mw, err := middleware.New(middleware.Config{
		AppID: appID, AppSecret: secret, PushToken: token, EncodingAESKey: aesKey,
		SessionKeys: [][]byte{[]byte("0123456789abcdef0123456789abcdef")},
		Endpoint:    fake.Endpoint(),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer mw.Close()
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := middleware.IdentityFromContext(r.Context())
		fmt.Fprintf(w, "hello %s, logged in by %s", id.OpenID, id.Method)
	})
	site := httptest.NewServer(mw.Handler(app))
	defer site.Close()
	// The Official Account's server settings: where WeChat pushes.
	if err := fake.AddApp(wechattest.App{
		AppID: appID, AppSecret: secret, Token: token, EncodingAESKey: aesKey,
		OriginalID: "gh_0123456789ab", CallbackURL: site.URL + "/wechat/callback", Mode: wechattest.Safe,
	}); err != nil {
		log.Fatal(err)
	}

	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar}
	req, _ := http.NewRequest(http.MethodPost, site.URL+"/wechat/qr", strings.NewReader(url.Values{"next": {"/"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", site.URL)
	var qr struct {
		QRContent string `json:"qr_content"` // what the QR code shows
		PollURL   string `json:"poll_url"`
	}
	decode(browser.Do(req))(&qr)

	if _, err := fake.Scan(context.Background(), appID, qr.QRContent, "alice"); err != nil {
		log.Fatal(err)
	}

	var poll struct{ Status, Redirect string }
	decode(browser.Get(site.URL + qr.PollURL + "&wait=5"))(&poll)
	fmt.Println(poll.Status, poll.Redirect)

	resp, err := browser.Get(site.URL + "/")
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(strings.Replace(string(body), fake.OpenID(appID, "alice"), "<alice's openid>", 1))
	// Output:
	// confirmed /
	// hello <alice's openid>, logged in by qr
}

// decode reads a JSON answer into v.
func decode(resp *http.Response, err error) func(v any) {
	return func(v any) {
		if err != nil {
			log.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			log.Fatal(err)
		}
	}
}
