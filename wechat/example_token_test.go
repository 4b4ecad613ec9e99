package wechat_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// withHeader adds one header to every request, here to authenticate to a
// token service.
type withHeader struct {
	name, value string
	next        http.RoundTripper
}

func (t withHeader) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(t.name, t.value)
	return t.next.RoundTrip(r)
}

// Where a company's central token service is the one process that fetches
// the account's access_token from WeChat, every server asks that service
// instead, and needs no app secret. Here the service is a small handler in
// front of a fake WeChat; in production it is the company's own, and the
// Client's Endpoint is left empty.
func ExampleRemoteTokenSource() {
	const appID, secret = "wx0123456789abcdef", "app-secret"
	fake := wechattest.NewServer(wechattest.Config{})
	defer fake.Close()
	if err := fake.AddApp(wechattest.App{AppID: appID, AppSecret: secret, Mode: wechattest.Plaintext}); err != nil {
		log.Fatal(err)
	}

	// The central service fetches from cgi-bin/token and passes WeChat's
	// answer on to callers that present the service's key.
	service := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer service-key" {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		q := url.Values{"grant_type": {"client_credential"}, "appid": {appID}, "secret": {secret}}
		resp, err := http.Get(fake.URL + "/cgi-bin/token?" + q.Encode())
		if err != nil {
			http.Error(w, "WeChat unreachable", http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.Copy(w, resp.Body)
	}))
	defer service.Close()

	hc := &http.Client{Timeout: 10 * time.Second, Transport: withHeader{"Authorization", "Bearer service-key", http.DefaultTransport}}
	c := &wechat.Client{
		AppID:    appID,
		Endpoint: fake.Endpoint(),
		Tokens:   wechat.ReuseTokenSource(wechat.RemoteTokenSource(service.URL+"/token", hc), 0),
	}
	for _, scene := range []string{"login-1", "login-2"} {
		if _, err := c.CreateTempQR(context.Background(), scene, 5*time.Minute); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println("cgi-bin/token calls:", fake.Calls("/cgi-bin/token"))
	fmt.Println("stable_token calls:", fake.Calls("/cgi-bin/stable_token"))
	// Output:
	// cgi-bin/token calls: 1
	// stable_token calls: 0
}
