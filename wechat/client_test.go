package wechat_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat"
)

// Distinctive credentials: no error text may ever contain any of them.
const (
	testAppID        = "wx0123456789abcdef"
	testSecret       = "SECRETs3cr3tSECRET"
	testAccessToken  = "ACCESSTOKENa1b2c3d4"
	testCode         = "OAUTHCODEe5f6g7h8"
	testRefreshToken = "REFRESHTOKENi9j0k1"
	testOpenID       = "oOPENIDmnopqrstuvwxyz12345"
)

var sensitive = []string{testSecret, testAccessToken, testCode, testRefreshToken, testOpenID}

// assertNoSecrets fails if err's text leaks a credential or an openid.
func assertNoSecrets(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	for _, s := range sensitive {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error text leaks %q: %v", s, err)
		}
	}
}

// staticTokens always hands out testAccessToken.
var staticTokens = wechat.TokenSourceFunc(func(context.Context) (wechat.Token, error) {
	return wechat.Token{Value: testAccessToken, ExpiresAt: time.Now().Add(time.Hour)}, nil
})

// apiCall is one public method of the package, run against ep.
type apiCall struct {
	name string
	path string // the path WeChat (or the token service) is asked for
	do   func(ctx context.Context, ep wechat.Endpoint, hc *http.Client) error
}

func clientFor(ep wechat.Endpoint, hc *http.Client) *wechat.Client {
	return &wechat.Client{AppID: testAppID, AppSecret: testSecret, Endpoint: ep, HTTPClient: hc, Tokens: staticTokens}
}

func oauthFor(ep wechat.Endpoint, hc *http.Client) *wechat.OAuthApp {
	return &wechat.OAuthApp{AppID: testAppID, AppSecret: testSecret, Endpoint: ep, HTTPClient: hc}
}

// allCalls lists every method that talks to WeChat, so each transport
// fault is tried against each of them.
var allCalls = []apiCall{
	{"StableTokenSource", "/cgi-bin/stable_token", func(ctx context.Context, ep wechat.Endpoint, hc *http.Client) error {
		_, err := wechat.StableTokenSource(testAppID, testSecret, ep, hc).Token(ctx)
		return err
	}},
	{"RemoteTokenSource", "/internal/token", func(ctx context.Context, ep wechat.Endpoint, hc *http.Client) error {
		_, err := wechat.RemoteTokenSource(ep.API+"/internal/token?key="+testSecret, hc).Token(ctx)
		return err
	}},
	{"CreateTempQR", "/cgi-bin/qrcode/create", func(ctx context.Context, ep wechat.Endpoint, hc *http.Client) error {
		_, err := clientFor(ep, hc).CreateTempQR(ctx, "scene1", time.Minute)
		return err
	}},
	{"FollowerInfo", "/cgi-bin/user/info", func(ctx context.Context, ep wechat.Endpoint, hc *http.Client) error {
		_, err := clientFor(ep, hc).FollowerInfo(ctx, testOpenID)
		return err
	}},
	{"Exchange", "/sns/oauth2/access_token", func(ctx context.Context, ep wechat.Endpoint, hc *http.Client) error {
		_, err := oauthFor(ep, hc).Exchange(ctx, testCode)
		return err
	}},
	{"Refresh", "/sns/oauth2/refresh_token", func(ctx context.Context, ep wechat.Endpoint, hc *http.Client) error {
		_, err := oauthFor(ep, hc).Refresh(ctx, testRefreshToken)
		return err
	}},
	{"UserInfo", "/sns/userinfo", func(ctx context.Context, ep wechat.Endpoint, hc *http.Client) error {
		_, err := oauthFor(ep, hc).UserInfo(ctx, testAccessToken, testOpenID)
		return err
	}},
	{"CheckToken", "/sns/auth", func(ctx context.Context, ep wechat.Endpoint, hc *http.Client) error {
		return oauthFor(ep, hc).CheckToken(ctx, testAccessToken, testOpenID)
	}},
}

// fault is a misbehaving WeChat and what the caller must see.
type fault struct {
	name    string
	handler http.HandlerFunc
	timeout time.Duration // caller's context deadline; 0 means 5 s
	want    string        // substring of the error text
	check   func(t *testing.T, err error)
}

var faults = []fault{
	{
		name: "non-200 status",
		handler: func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "upstream broke", http.StatusBadGateway)
		},
		want: "HTTP status 502 Bad Gateway",
	},
	{
		name: "non-JSON body",
		handler: func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, "<html><body>maintenance</body></html>")
		},
		want: "decode response",
	},
	{
		name: "empty body",
		handler: func(w http.ResponseWriter, r *http.Request) {
		},
		want: "decode response",
	},
	{
		name: "oversized body",
		handler: func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, `{"errmsg":"%s"}`, strings.Repeat("a", 1<<20))
		},
		want: "too large",
		check: func(t *testing.T, err error) {
			if !errors.Is(err, wechat.ErrResponseTooLarge) {
				t.Errorf("errors.Is(err, ErrResponseTooLarge) = false for %v", err)
			}
		},
	},
	{
		name: "dropped connection",
		handler: func(w http.ResponseWriter, r *http.Request) {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		},
		want: "send request",
	},
	{
		name: "body cut short",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "100")
			fmt.Fprint(w, `{"access_token":`)
			_ = http.NewResponseController(w).Flush()
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
		},
		want: "read response",
	},
	{
		name: "context deadline",
		handler: func(w http.ResponseWriter, r *http.Request) {
			// The server notices the client leaving only once the body
			// has been read.
			_, _ = io.Copy(io.Discard, r.Body)
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		},
		timeout: 50 * time.Millisecond,
		want:    "deadline exceeded",
		check: func(t *testing.T, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("errors.Is(err, context.DeadlineExceeded) = false for %v", err)
			}
			var te interface{ Timeout() bool }
			if !errors.As(err, &te) || !te.Timeout() {
				t.Errorf("error does not report Timeout(): %v", err)
			}
		},
	},
	{
		name: "redirect is not followed",
		handler: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/elsewhere?"+r.URL.RawQuery, http.StatusFound)
		},
		want: "HTTP status 302",
	},
}

func TestTransportFaults(t *testing.T) {
	t.Parallel()
	for _, f := range faults {
		for _, c := range allCalls {
			t.Run(f.name+"/"+c.name, func(t *testing.T) {
				t.Parallel()
				var hits atomic.Int32
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path != c.path {
						t.Errorf("request for %s, want %s", r.URL.Path, c.path)
						http.NotFound(w, r)
						return
					}
					hits.Add(1)
					f.handler(w, r)
				}))
				defer srv.Close()
				timeout := f.timeout
				if timeout == 0 {
					timeout = 5 * time.Second
				}
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				defer cancel()
				// A nil HTTPClient exercises the package's default client.
				err := c.do(ctx, wechat.Endpoint{API: srv.URL}, nil)
				if err == nil {
					t.Fatal("no error")
				}
				if hits.Load() == 0 {
					t.Fatal("no request reached the server")
				}
				if !strings.Contains(err.Error(), f.want) {
					t.Errorf("error %q does not contain %q", err, f.want)
				}
				if c.name != "RemoteTokenSource" && !strings.HasPrefix(err.Error(), "wechat: "+c.path[1:]+": ") {
					t.Errorf("error %q does not start with the API path", err)
				}
				if _, ok := wechat.ErrorCode(err); ok {
					t.Errorf("transport failure reported as a WeChat errcode: %v", err)
				}
				assertNoSecrets(t, err)
				if f.check != nil {
					f.check(t, err)
				}
			})
		}
	}
}

// TestErrcodes checks that an errcode answer from every call becomes an
// *Error that the helpers classify.
func TestErrcodes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		code int
		is   func(error) bool
	}{
		{-1, wechat.IsSystemBusy},
		{40164, wechat.IsIPNotWhitelisted},
		{61004, wechat.IsIPNotWhitelisted},
		{45009, wechat.IsRateLimited},
		{45011, wechat.IsRateLimited},
		{48001, wechat.IsUnauthorized},
		{40029, wechat.IsCodeInvalid},
		{40163, wechat.IsCodeInvalid},
		{40030, wechat.IsRefreshTokenInvalid},
		{40001, wechat.IsTokenInvalid},
		{42001, wechat.IsTokenInvalid},
	}
	for _, tc := range cases {
		for _, c := range allCalls {
			t.Run(fmt.Sprintf("%d/%s", tc.code, c.name), func(t *testing.T) {
				t.Parallel()
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					// Echo the query into errmsg, as a hostile server might,
					// to prove errmsg is the only server text reported and
					// that it is the server's choice, not ours.
					fmt.Fprintf(w, `{"errcode":%d,"errmsg":"failure\n\u0007injected, rid: 1a2b3c4d-1a2b3c4d-1a2b3c4d"}`, tc.code)
				}))
				defer srv.Close()
				err := c.do(context.Background(), wechat.Endpoint{API: srv.URL}, srv.Client())
				var werr *wechat.Error
				if !errors.As(err, &werr) {
					t.Fatalf("err = %v, want *wechat.Error", err)
				}
				if werr.Code != tc.code {
					t.Errorf("Code = %d, want %d", werr.Code, tc.code)
				}
				if !tc.is(err) || !tc.is(fmt.Errorf("outer: %w", err)) {
					t.Errorf("helper does not recognise %v", err)
				}
				if strings.ContainsAny(werr.Msg, "\n\a") {
					t.Errorf("Msg keeps control characters: %q", werr.Msg)
				}
				if want := fmt.Sprintf("errcode %d: failureinjected, rid:", tc.code); !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
				assertNoSecrets(t, err)
			})
		}
	}
}

// TestSuccessWithErrcodeZero: errcode 0 is success, as sns/auth answers.
func TestSuccessWithErrcodeZero(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, `{"errcode":0,"errmsg":"ok"}`)
	}))
	defer srv.Close()
	if err := oauthFor(wechat.Endpoint{API: srv.URL}, nil).CheckToken(context.Background(), testAccessToken, testOpenID); err != nil {
		t.Fatalf("CheckToken = %v, want nil", err)
	}
}

func TestHTTPClientTimeout(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer srv.Close()
	hc := &http.Client{Timeout: 50 * time.Millisecond}
	_, err := clientFor(wechat.Endpoint{API: srv.URL}, hc).CreateTempQR(context.Background(), "s", time.Minute)
	var te interface{ Timeout() bool }
	if !errors.As(err, &te) || !te.Timeout() {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if !strings.HasPrefix(err.Error(), "wechat: cgi-bin/qrcode/create: ") {
		t.Errorf("error %q does not name the API path", err)
	}
	assertNoSecrets(t, err)
}

func TestEndpointDefaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ep     wechat.Endpoint
		ticket string
		want   string
	}{
		{wechat.Endpoint{}, "abc", "https://mp.weixin.qq.com/cgi-bin/showqrcode?ticket=abc"},
		{wechat.Endpoint{MP: "http://fake.test/"}, "abc", "http://fake.test/cgi-bin/showqrcode?ticket=abc"},
		{wechat.Endpoint{API: "http://other.test"}, "abc", "https://mp.weixin.qq.com/cgi-bin/showqrcode?ticket=abc"},
	}
	for _, tt := range tests {
		if got := tt.ep.ShowQRCodeURL(tt.ticket); got != tt.want {
			t.Errorf("%+v.ShowQRCodeURL(%q) = %q, want %q", tt.ep, tt.ticket, got, tt.want)
		}
	}
}
