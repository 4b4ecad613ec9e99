package wechat_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

const (
	fakeOA      = "wxfakeofficial0001"
	fakeOASec   = "fakeOfficialSecret0001"
	fakeWeb     = "wxfakewebsite00001"
	fakeWebSec  = "fakeWebsiteSecret00001"
	fakeRedirct = "https://site.example/wechat/oauth/callback"
)

// newFake starts a fake WeChat with one Official Account and one website
// app, and returns a Client for the account using the default token source.
func newFake(t *testing.T) (*wechattest.Server, *wechat.Client) {
	t.Helper()
	srv := wechattest.NewServer(wechattest.Config{})
	t.Cleanup(srv.Close)
	for _, a := range []wechattest.App{
		{AppID: fakeOA, AppSecret: fakeOASec, Kind: wechattest.OfficialAccount, Mode: wechattest.Plaintext},
		{AppID: fakeWeb, AppSecret: fakeWebSec, Kind: wechattest.WebsiteApp},
	} {
		if err := srv.AddApp(a); err != nil {
			t.Fatalf("AddApp: %v", err)
		}
	}
	return srv, &wechat.Client{AppID: fakeOA, AppSecret: fakeOASec, Endpoint: srv.Endpoint()}
}

func TestFakeCreateTempQR(t *testing.T) {
	t.Parallel()
	srv, c := newFake(t)
	ctx := context.Background()
	for range 3 {
		qr, err := c.CreateTempQR(ctx, "login-0123456789abcdef", 5*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if qr.Ticket == "" || qr.URL == "" || qr.ExpiresIn != 5*time.Minute {
			t.Fatalf("QRCode = %+v", qr)
		}
		// The escaped ticket must bring back the image; an unescaped '+'
		// would arrive as a space and 404.
		resp, err := srv.Client().Get(srv.Endpoint().ShowQRCodeURL(qr.Ticket))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "image/") {
			t.Errorf("showqrcode: %s %s", resp.Status, resp.Header.Get("Content-Type"))
		}
	}
	if n := srv.Calls("/cgi-bin/stable_token"); n != 1 {
		t.Errorf("stable_token calls = %d, want 1 (the token is reused)", n)
	}
	if n := srv.Calls("/cgi-bin/token"); n != 0 {
		t.Errorf("cgi-bin/token calls = %d, want 0", n)
	}
}

// TestFakeColdCacheOneFetch: 1,000 concurrent first calls through one
// Client make exactly one stable_token request.
func TestFakeColdCacheOneFetch(t *testing.T) {
	t.Parallel()
	srv, c := newFake(t)
	srv.SetLatency("/cgi-bin/stable_token", 50*time.Millisecond)
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for range 1000 {
		wg.Go(func() {
			if _, err := c.AccessToken(context.Background()); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := srv.Calls("/cgi-bin/stable_token"); n != 1 {
		t.Errorf("stable_token calls = %d, want 1", n)
	}
}

// TestFakeExpiredTokenRecovers: WeChat's clock runs past the token's life
// while ours still trusts it; the 42001 answer makes the client fetch a new
// token and retry once.
func TestFakeExpiredTokenRecovers(t *testing.T) {
	t.Parallel()
	srv, c := newFake(t)
	ctx := context.Background()
	if _, err := c.CreateTempQR(ctx, "a", time.Minute); err != nil {
		t.Fatal(err)
	}
	srv.Advance(3 * time.Hour)
	if _, err := c.CreateTempQR(ctx, "b", time.Minute); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	if a, b := srv.Calls("/cgi-bin/stable_token"), srv.Calls("/cgi-bin/qrcode/create"); a != 2 || b != 3 {
		t.Errorf("stable_token calls %d, qrcode calls %d; want 2 and 3", a, b)
	}
}

// TestFakeInjectedTokenError: an injected 40001 costs exactly one token
// fetch and one retry.
func TestFakeInjectedTokenError(t *testing.T) {
	t.Parallel()
	srv, c := newFake(t)
	ctx := context.Background()
	if _, err := c.AccessToken(ctx); err != nil {
		t.Fatal(err)
	}
	srv.FailNext("/cgi-bin/qrcode/create", 1, wechattest.Fault{Errcode: 40001})
	if _, err := c.CreateTempQR(ctx, "s", time.Minute); err != nil {
		t.Fatal(err)
	}
	if a, b := srv.Calls("/cgi-bin/stable_token"), srv.Calls("/cgi-bin/qrcode/create"); a != 2 || b != 2 {
		t.Errorf("stable_token calls %d, qrcode calls %d; want 2 and 2", a, b)
	}

	srv.FailNext("/cgi-bin/user/info", 2, wechattest.Fault{Errcode: 42001})
	_, err := c.FollowerInfo(ctx, srv.OpenID(fakeOA, "bob"))
	if !wechat.IsTokenInvalid(err) {
		t.Fatalf("err = %v, want a token error after the single retry", err)
	}
	if n := srv.Calls("/cgi-bin/user/info"); n != 2 {
		t.Errorf("user/info calls = %d, want 2", n)
	}
}

func TestFakeFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		fault wechattest.Fault
		check func(error) bool
	}{
		{"system busy", wechattest.Fault{Errcode: -1}, wechat.IsSystemBusy},
		{"daily quota", wechattest.Fault{Errcode: 45009}, wechat.IsRateLimited},
		{"not whitelisted", wechattest.Fault{Errcode: 40164}, wechat.IsIPNotWhitelisted},
		{"unauthorized", wechattest.Fault{Errcode: 48001}, wechat.IsUnauthorized},
		{"bad gateway", wechattest.Fault{HTTPStatus: http.StatusBadGateway}, func(err error) bool {
			return strings.Contains(err.Error(), "HTTP status 502")
		}},
		{"dropped", wechattest.Fault{Drop: true}, func(err error) bool {
			return strings.Contains(err.Error(), "send request")
		}},
		// The fake notices a departed client on POSTs only after the
		// delay, so the delay is kept short to keep Close quick.
		{"slow", wechattest.Fault{Delay: 600 * time.Millisecond}, func(err error) bool {
			return errors.Is(err, context.DeadlineExceeded)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, c := newFake(t)
			if _, err := c.AccessToken(context.Background()); err != nil {
				t.Fatal(err)
			}
			srv.FailNext("/cgi-bin/qrcode/create", 1, tt.fault)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			_, err := c.CreateTempQR(ctx, "s", time.Minute)
			if err == nil || !tt.check(err) {
				t.Fatalf("err = %v", err)
			}
			if !strings.HasPrefix(err.Error(), "wechat: cgi-bin/qrcode/create: ") {
				t.Errorf("error %q does not name the API path", err)
			}
			if n := srv.Calls("/cgi-bin/qrcode/create"); n != 1 {
				t.Errorf("qrcode calls = %d, want 1 (no retry)", n)
			}
			tok, _ := c.AccessToken(context.Background())
			if strings.Contains(err.Error(), tok) || strings.Contains(err.Error(), fakeOASec) {
				t.Errorf("error leaks a credential: %v", err)
			}
		})
	}
}

func TestFakeIPNotWhitelisted(t *testing.T) {
	t.Parallel()
	srv, c := newFake(t)
	srv.SetIPAllowed(false)
	_, err := c.CreateTempQR(context.Background(), "s", time.Minute)
	if !wechat.IsIPNotWhitelisted(err) || !strings.HasPrefix(err.Error(), "wechat: cgi-bin/stable_token: errcode 40164") {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), fakeOASec) {
		t.Errorf("error leaks the secret: %v", err)
	}
	if n := srv.Calls("/cgi-bin/qrcode/create"); n != 0 {
		t.Errorf("qrcode calls = %d, want 0", n)
	}
	// A failed fetch is not cached: once allowed, the next call works.
	srv.SetIPAllowed(true)
	if _, err := c.CreateTempQR(context.Background(), "s", time.Minute); err != nil {
		t.Fatal(err)
	}
}

func TestFakeWrongSecret(t *testing.T) {
	t.Parallel()
	srv, _ := newFake(t)
	for _, src := range []wechat.TokenSource{
		wechat.StableTokenSource(fakeOA, "wrong-secret-value", srv.Endpoint(), nil),
	} {
		_, err := src.Token(context.Background())
		if _, ok := wechat.ErrorCode(err); !ok || strings.Contains(err.Error(), "wrong-secret-value") {
			t.Errorf("err = %v", err)
		}
	}
}

func TestFakeFollowerInfo(t *testing.T) {
	t.Parallel()
	srv, c := newFake(t)
	ctx := context.Background()
	bob, err := c.FollowerInfo(ctx, srv.OpenID(fakeOA, "bob"))
	if err != nil {
		t.Fatal(err)
	}
	if !bob.Subscribed || bob.OpenID != srv.OpenID(fakeOA, "bob") || bob.UnionID != srv.UnionID("bob") || bob.SubscribeTime.IsZero() {
		t.Errorf("bob = %+v", bob)
	}
	alice, err := c.FollowerInfo(ctx, srv.OpenID(fakeOA, "alice"))
	if err != nil {
		t.Fatal(err)
	}
	if alice.Subscribed || alice.UnionID != "" {
		t.Errorf("alice = %+v, want not subscribed", alice)
	}
	_, err = c.FollowerInfo(ctx, srv.OpenID(fakeWeb, "bob"))
	if code, _ := wechat.ErrorCode(err); code != wechat.CodeInvalidOpenID {
		t.Errorf("openid of another app: err = %v, want errcode 40003", err)
	}
}

// authorize follows an authorization URL on the fake (auto-approving as
// user) and returns the code and state WeChat redirects back with.
func authorize(t *testing.T, srv *wechattest.Server, authURL string) (code, state string) {
	t.Helper()
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("authorize: %s", resp.Status)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || !strings.HasPrefix(loc.String(), fakeRedirct+"?") {
		t.Fatalf("redirected to %q", resp.Header.Get("Location"))
	}
	return loc.Query().Get("code"), loc.Query().Get("state")
}

func TestFakeOAuthUserInfoFlow(t *testing.T) {
	t.Parallel()
	srv, _ := newFake(t)
	srv.SetOAuthUser("bob")
	app := &wechat.OAuthApp{AppID: fakeOA, AppSecret: fakeOASec, Endpoint: srv.Endpoint()}
	ctx := context.Background()

	u, err := app.AuthorizeURL(fakeRedirct, wechat.ScopeUserInfo, "st4te")
	if err != nil {
		t.Fatal(err)
	}
	code, state := authorize(t, srv, u)
	if state != "st4te" || code == "" {
		t.Fatalf("code %q state %q", code, state)
	}
	tok, err := app.Exchange(ctx, code)
	if err != nil {
		t.Fatal(err)
	}
	if tok.OpenID != srv.OpenID(fakeOA, "bob") || tok.UnionID != srv.UnionID("bob") || tok.Scope != wechat.ScopeUserInfo || tok.IsSnapshotUser || tok.ExpiresIn <= 0 {
		t.Errorf("token = %+v", tok)
	}
	// WeChat's browser replays the callback on refresh: the code is spent.
	_, err = app.Exchange(ctx, code)
	if !wechat.IsCodeInvalid(err) || strings.Contains(err.Error(), code) || strings.Contains(err.Error(), fakeOASec) {
		t.Errorf("second exchange: err = %v, want a code error without the code or secret", err)
	}

	info, err := app.UserInfo(ctx, tok.AccessToken, tok.OpenID)
	if err != nil {
		t.Fatal(err)
	}
	if info.OpenID != tok.OpenID || info.Nickname != "Bob" || info.UnionID != tok.UnionID {
		t.Errorf("user info = %+v", info)
	}
	if err := app.CheckToken(ctx, tok.AccessToken, tok.OpenID); err != nil {
		t.Errorf("CheckToken: %v", err)
	}
	if err := app.CheckToken(ctx, tok.AccessToken, srv.OpenID(fakeOA, "alice")); err == nil {
		t.Error("CheckToken accepted another user's openid")
	}
	fresh, err := app.Refresh(ctx, tok.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if fresh.OpenID != tok.OpenID || fresh.AccessToken == "" {
		t.Errorf("refreshed = %+v", fresh)
	}
	_, err = app.Refresh(ctx, "not-a-refresh-token")
	if !wechat.IsRefreshTokenInvalid(err) {
		t.Errorf("bad refresh token: err = %v", err)
	}
}

func TestFakeOAuthBaseScope(t *testing.T) {
	t.Parallel()
	srv, _ := newFake(t)
	srv.SetOAuthUser("alice")
	app := &wechat.OAuthApp{AppID: fakeOA, AppSecret: fakeOASec, Endpoint: srv.Endpoint()}
	u, err := app.AuthorizeURL(fakeRedirct, wechat.ScopeBase, "")
	if err != nil {
		t.Fatal(err)
	}
	code, _ := authorize(t, srv, u)
	tok, err := app.Exchange(context.Background(), code)
	if err != nil {
		t.Fatal(err)
	}
	if tok.OpenID != srv.OpenID(fakeOA, "alice") || tok.Scope != wechat.ScopeBase {
		t.Errorf("token = %+v", tok)
	}
	_, err = app.UserInfo(context.Background(), tok.AccessToken, tok.OpenID)
	if !wechat.IsUnauthorized(err) {
		t.Errorf("userinfo with a base token: err = %v, want 48001", err)
	}
}

func TestFakeSnapshotUser(t *testing.T) {
	t.Parallel()
	srv, _ := newFake(t)
	srv.SetOAuthUser("snapshot")
	app := &wechat.OAuthApp{AppID: fakeOA, AppSecret: fakeOASec, Endpoint: srv.Endpoint()}
	u, _ := app.AuthorizeURL(fakeRedirct, wechat.ScopeUserInfo, "s")
	code, _ := authorize(t, srv, u)
	tok, err := app.Exchange(context.Background(), code)
	if err != nil {
		t.Fatal(err)
	}
	if !tok.IsSnapshotUser {
		t.Errorf("IsSnapshotUser = false for %+v", tok)
	}
}

func TestFakeWebsiteLogin(t *testing.T) {
	t.Parallel()
	srv, _ := newFake(t)
	srv.SetOAuthUser("bob")
	web := &wechat.OAuthApp{AppID: fakeWeb, AppSecret: fakeWebSec, Endpoint: srv.Endpoint()}
	u, err := web.QRConnectURL(fakeRedirct, "w3b")
	if err != nil {
		t.Fatal(err)
	}
	code, state := authorize(t, srv, u)
	if state != "w3b" {
		t.Errorf("state = %q", state)
	}
	tok, err := web.Exchange(context.Background(), code)
	if err != nil {
		t.Fatal(err)
	}
	// The website openid differs from the account's; the unionid links them.
	if tok.Scope != wechat.ScopeLogin || tok.OpenID != srv.OpenID(fakeWeb, "bob") || tok.OpenID == srv.OpenID(fakeOA, "bob") || tok.UnionID != srv.UnionID("bob") {
		t.Errorf("token = %+v", tok)
	}
	info, err := web.UserInfo(context.Background(), tok.AccessToken, tok.OpenID)
	if err != nil || info.Nickname != "Bob" {
		t.Errorf("UserInfo = %+v, %v", info, err)
	}
	// The website app's secret does not work for the account's codes.
	oa := &wechat.OAuthApp{AppID: fakeOA, AppSecret: fakeWebSec, Endpoint: srv.Endpoint()}
	if _, err := oa.Exchange(context.Background(), "anycode"); err == nil {
		t.Error("exchange with a wrong secret succeeded")
	}
}
