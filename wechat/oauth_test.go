package wechat_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/wechat-login/caddy-wechat-login/wechat"
)

func TestAuthorizeURLExact(t *testing.T) {
	t.Parallel()
	app := &wechat.OAuthApp{AppID: testAppID}
	tests := []struct {
		redirect, scope, state string
		want                   string
	}{
		{
			"https://example.com/wechat/oauth/callback", wechat.ScopeBase, "abc123",
			"https://open.weixin.qq.com/connect/oauth2/authorize?appid=wx0123456789abcdef&redirect_uri=https%3A%2F%2Fexample.com%2Fwechat%2Foauth%2Fcallback&response_type=code&scope=snsapi_base&state=abc123#wechat_redirect",
		},
		{
			"https://example.com/cb?next=%2Fa+b&x=1", wechat.ScopeUserInfo, "",
			"https://open.weixin.qq.com/connect/oauth2/authorize?appid=wx0123456789abcdef&redirect_uri=https%3A%2F%2Fexample.com%2Fcb%3Fnext%3D%252Fa%2Bb%26x%3D1&response_type=code&scope=snsapi_userinfo&state=#wechat_redirect",
		},
		{
			"http://例子.测试/回调", wechat.ScopeBase, strings.Repeat("Z9", 64),
			"https://open.weixin.qq.com/connect/oauth2/authorize?appid=wx0123456789abcdef&redirect_uri=http%3A%2F%2F%E4%BE%8B%E5%AD%90.%E6%B5%8B%E8%AF%95%2F%E5%9B%9E%E8%B0%83&response_type=code&scope=snsapi_base&state=" + strings.Repeat("Z9", 64) + "#wechat_redirect",
		},
	}
	for _, tt := range tests {
		got, err := app.AuthorizeURL(tt.redirect, tt.scope, tt.state)
		if err != nil {
			t.Errorf("AuthorizeURL(%q): %v", tt.redirect, err)
			continue
		}
		if got != tt.want {
			t.Errorf("AuthorizeURL(%q)\n got %s\nwant %s", tt.redirect, got, tt.want)
		}
		u, _ := url.Parse(got)
		if u.Query().Get("redirect_uri") != tt.redirect {
			t.Errorf("redirect_uri does not round-trip: %s", got)
		}
	}

	custom := &wechat.OAuthApp{AppID: "wxA", Endpoint: wechat.Endpoint{Authorize: "http://127.0.0.1:9/"}}
	got, err := custom.AuthorizeURL("https://a.test/cb", wechat.ScopeBase, "s")
	if want := "http://127.0.0.1:9/connect/oauth2/authorize?appid=wxA&redirect_uri=https%3A%2F%2Fa.test%2Fcb&response_type=code&scope=snsapi_base&state=s#wechat_redirect"; err != nil || got != want {
		t.Errorf("custom endpoint: got %q, %v; want %q", got, err, want)
	}
}

func TestQRConnectURLExact(t *testing.T) {
	t.Parallel()
	app := &wechat.OAuthApp{AppID: "wxwebsiteapp0001"}
	got, err := app.QRConnectURL("https://example.com/wechat/oauth/callback", "xyz")
	want := "https://open.weixin.qq.com/connect/qrconnect?appid=wxwebsiteapp0001&redirect_uri=https%3A%2F%2Fexample.com%2Fwechat%2Foauth%2Fcallback&response_type=code&scope=snsapi_login&state=xyz#wechat_redirect"
	if err != nil || got != want {
		t.Errorf("QRConnectURL\n got %s, %v\nwant %s", got, err, want)
	}
}

func TestAuthorizeURLRejects(t *testing.T) {
	t.Parallel()
	const good = "https://example.com/cb"
	tests := []struct {
		name                          string
		appID, redirect, scope, state string
	}{
		{"login scope on OA page", testAppID, good, wechat.ScopeLogin, ""},
		{"empty scope", testAppID, good, "", ""},
		{"scope injection", testAppID, good, "snsapi_base&x=1", ""},
		{"state too long", testAppID, good, wechat.ScopeBase, strings.Repeat("a", 129)},
		{"state with dash", testAppID, good, wechat.ScopeBase, "a-b"},
		{"state with ampersand", testAppID, good, wechat.ScopeBase, "a&scope=snsapi_userinfo"},
		{"state non-ASCII", testAppID, good, wechat.ScopeBase, "状态"},
		{"relative redirect", testAppID, "/cb", wechat.ScopeBase, ""},
		{"scheme-relative redirect", testAppID, "//evil.test/cb", wechat.ScopeBase, ""},
		{"javascript redirect", testAppID, "javascript:alert(1)", wechat.ScopeBase, ""},
		{"redirect with fragment", testAppID, "https://example.com/#/cb", wechat.ScopeBase, ""},
		{"redirect with user info", testAppID, "https://u:p@example.com/cb", wechat.ScopeBase, ""},
		{"redirect too long", testAppID, good + "?" + strings.Repeat("a", 3000), wechat.ScopeBase, ""},
		{"no app ID", "", good, wechat.ScopeBase, ""},
	}
	for _, tt := range tests {
		app := &wechat.OAuthApp{AppID: tt.appID}
		got, err := app.AuthorizeURL(tt.redirect, tt.scope, tt.state)
		if !errors.Is(err, wechat.ErrInvalidArgument) || got != "" {
			t.Errorf("%s: got %q, %v; want ErrInvalidArgument", tt.name, got, err)
		}
	}
	if _, err := (&wechat.OAuthApp{AppID: testAppID}).QRConnectURL(good, "bad state"); !errors.Is(err, wechat.ErrInvalidArgument) {
		t.Errorf("QRConnectURL with a bad state: %v", err)
	}
}

// oauthServer answers the sns endpoints with fixed bodies and records the
// query each received.
type oauthServer struct {
	*httptest.Server
	queries map[string]url.Values
	hits    atomic.Int32
}

func newOAuthServer(t *testing.T, bodies map[string]string) *oauthServer {
	s := &oauthServer{queries: map[string]url.Values{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		body, ok := bodies[r.URL.Path]
		if !ok || r.Method != http.MethodGet {
			t.Errorf("unexpected %s %s", r.Method, r.URL.Path)
		}
		s.queries[r.URL.Path] = r.URL.Query()
		fmt.Fprint(w, body)
	}))
	t.Cleanup(s.Close)
	return s
}

func TestExchange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want wechat.OAuthToken
	}{
		{
			"userinfo scope",
			`{"access_token":"AT","expires_in":7200,"refresh_token":"RT","openid":"OID","scope":"snsapi_userinfo","unionid":" UID "}`,
			wechat.OAuthToken{AccessToken: "AT", RefreshToken: "RT", OpenID: "OID", UnionID: "UID", Scope: "snsapi_userinfo", ExpiresIn: 7200e9},
		},
		{
			"snapshot user",
			`{"access_token":"AT","expires_in":7200,"refresh_token":"RT","openid":"OID","scope":"snsapi_userinfo","is_snapshotuser":1}`,
			wechat.OAuthToken{AccessToken: "AT", RefreshToken: "RT", OpenID: "OID", Scope: "snsapi_userinfo", ExpiresIn: 7200e9, IsSnapshotUser: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newOAuthServer(t, map[string]string{"/sns/oauth2/access_token": tt.body})
			tok, err := oauthFor(wechat.Endpoint{API: s.URL}, nil).Exchange(context.Background(), testCode)
			if err != nil {
				t.Fatal(err)
			}
			if *tok != tt.want {
				t.Errorf("token = %+v, want %+v", *tok, tt.want)
			}
			q := s.queries["/sns/oauth2/access_token"]
			want := url.Values{"appid": {testAppID}, "secret": {testSecret}, "code": {testCode}, "grant_type": {"authorization_code"}}
			if !reflect.DeepEqual(q, want) {
				t.Errorf("query = %v, want %v", q, want)
			}
		})
	}
}

func TestOAuthAnswerValidation(t *testing.T) {
	t.Parallel()
	for _, body := range []string{
		`{"access_token":"AT","expires_in":7200}`,
		`{"openid":"OID","expires_in":7200}`,
		`{"access_token":"AT","openid":"OID","expires_in":0}`,
	} {
		s := newOAuthServer(t, map[string]string{"/sns/oauth2/access_token": body})
		if _, err := oauthFor(wechat.Endpoint{API: s.URL}, nil).Exchange(context.Background(), testCode); err == nil {
			t.Errorf("answer %s accepted", body)
		}
	}
}

// TestOAuthInputValidation: malformed codes, tokens and openids are refused
// before any request, without echoing them.
func TestOAuthInputValidation(t *testing.T) {
	t.Parallel()
	s := newOAuthServer(t, nil)
	app := oauthFor(wechat.Endpoint{API: s.URL}, nil)
	ctx := context.Background()
	bad := []string{"", " ", "a b", "x\x00", "\u00e9t\u00e9", strings.Repeat("c", 2000), "code\r\nX-Injected: 1"}
	for _, v := range bad {
		checks := map[string]error{}
		_, checks["Exchange"] = app.Exchange(ctx, v)
		_, checks["Refresh"] = app.Refresh(ctx, v)
		_, checks["UserInfo token"] = app.UserInfo(ctx, v, testOpenID)
		_, checks["UserInfo openid"] = app.UserInfo(ctx, testAccessToken, v)
		checks["CheckToken token"] = app.CheckToken(ctx, v, testOpenID)
		checks["CheckToken openid"] = app.CheckToken(ctx, testAccessToken, v)
		for name, err := range checks {
			if !errors.Is(err, wechat.ErrInvalidArgument) {
				t.Errorf("%s(%q): err = %v, want ErrInvalidArgument", name, v, err)
			}
			if v != "" && v != " " && err != nil && strings.Contains(err.Error(), v) {
				t.Errorf("%s: error echoes the input: %v", name, err)
			}
		}
	}
	if _, err := (&wechat.OAuthApp{AppID: testAppID, Endpoint: wechat.Endpoint{API: s.URL}}).Exchange(ctx, testCode); !errors.Is(err, wechat.ErrInvalidArgument) {
		t.Errorf("Exchange without a secret: %v", err)
	}
	if n := s.hits.Load(); n != 0 {
		t.Errorf("%d requests reached WeChat", n)
	}
}

func TestRefresh(t *testing.T) {
	t.Parallel()
	s := newOAuthServer(t, map[string]string{
		"/sns/oauth2/refresh_token": `{"access_token":"AT2","expires_in":7200,"refresh_token":"RT2","openid":"OID","scope":"snsapi_base"}`,
	})
	tok, err := oauthFor(wechat.Endpoint{API: s.URL}, nil).Refresh(context.Background(), testRefreshToken)
	if err != nil || tok.AccessToken != "AT2" || tok.RefreshToken != "RT2" || tok.OpenID != "OID" {
		t.Fatalf("Refresh = %+v, %v", tok, err)
	}
	want := url.Values{"appid": {testAppID}, "grant_type": {"refresh_token"}, "refresh_token": {testRefreshToken}}
	if q := s.queries["/sns/oauth2/refresh_token"]; !reflect.DeepEqual(q, want) {
		t.Errorf("query = %v, want %v (the secret is not needed)", q, want)
	}
}

func TestUserInfo(t *testing.T) {
	t.Parallel()
	s := newOAuthServer(t, map[string]string{
		"/sns/userinfo": `{"openid":"` + testOpenID + `","nickname":"小明","sex":0,"language":"zh_CN","province":"","city":"","country":"",
			"headimgurl":"https:\/\/thirdwx.qlogo.cn\/mmopen\/abc\/132","privilege":["P1"],"unionid":"o6_bmasdasdsad6_2sgVt7hMZOPfL"}`,
	})
	info, err := oauthFor(wechat.Endpoint{API: s.URL}, nil).UserInfo(context.Background(), testAccessToken, testOpenID)
	if err != nil {
		t.Fatal(err)
	}
	want := wechat.UserInfo{OpenID: testOpenID, UnionID: "o6_bmasdasdsad6_2sgVt7hMZOPfL", Nickname: "小明",
		HeadImgURL: "https://thirdwx.qlogo.cn/mmopen/abc/132", Privilege: []string{"P1"}}
	if !reflect.DeepEqual(*info, want) {
		t.Errorf("UserInfo = %+v, want %+v", *info, want)
	}
	wantQ := url.Values{"access_token": {testAccessToken}, "openid": {testOpenID}, "lang": {"zh_CN"}}
	if q := s.queries["/sns/userinfo"]; !reflect.DeepEqual(q, wantQ) {
		t.Errorf("query = %v, want %v", q, wantQ)
	}
}

func TestUserInfoOtherOpenID(t *testing.T) {
	t.Parallel()
	s := newOAuthServer(t, map[string]string{"/sns/userinfo": `{"openid":"someone-else","nickname":"x"}`})
	_, err := oauthFor(wechat.Endpoint{API: s.URL}, nil).UserInfo(context.Background(), testAccessToken, testOpenID)
	if err == nil || !strings.Contains(err.Error(), "different openid") {
		t.Fatalf("err = %v", err)
	}
	assertNoSecrets(t, err)
}

func TestCheckToken(t *testing.T) {
	t.Parallel()
	s := newOAuthServer(t, map[string]string{"/sns/auth": `{"errcode":40003,"errmsg":"invalid openid"}`})
	err := oauthFor(wechat.Endpoint{API: s.URL}, nil).CheckToken(context.Background(), testAccessToken, testOpenID)
	if code, _ := wechat.ErrorCode(err); code != 40003 {
		t.Fatalf("err = %v, want errcode 40003", err)
	}
	wantQ := url.Values{"access_token": {testAccessToken}, "openid": {testOpenID}}
	if q := s.queries["/sns/auth"]; !reflect.DeepEqual(q, wantQ) {
		t.Errorf("query = %v, want %v", q, wantQ)
	}
}

// FuzzAuthorizeURL: for any input the result is either an error or a URL
// in WeChat's exact shape whose redirect_uri and state round-trip.
func FuzzAuthorizeURL(f *testing.F) {
	f.Add("https://example.com/cb?x=1", "abc", true)
	f.Add("http://a.test/#frag", "", false)
	f.Add("https://a.test/%zz", "Z", true)
	f.Add("https://a.test/ cb", strings.Repeat("a", 128), true)
	f.Fuzz(func(t *testing.T, redirect, state string, base bool) {
		scope := wechat.ScopeUserInfo
		if base {
			scope = wechat.ScopeBase
		}
		app := &wechat.OAuthApp{AppID: testAppID}
		got, err := app.AuthorizeURL(redirect, scope, state)
		if err != nil {
			if got != "" || !errors.Is(err, wechat.ErrInvalidArgument) {
				t.Fatalf("got %q with error %v", got, err)
			}
			return
		}
		prefix := "https://open.weixin.qq.com/connect/oauth2/authorize?appid=" + testAppID + "&redirect_uri="
		if !strings.HasPrefix(got, prefix) || !strings.HasSuffix(got, "&response_type=code&scope="+scope+"&state="+state+"#wechat_redirect") {
			t.Fatalf("bad shape: %s", got)
		}
		u, err := url.Parse(got)
		if err != nil {
			t.Fatalf("unparseable: %v", err)
		}
		q := u.Query()
		if q.Get("redirect_uri") != redirect || q.Get("state") != state || len(q) != 5 || u.Fragment != "wechat_redirect" {
			t.Fatalf("does not round-trip: %s", got)
		}
	})
}

func BenchmarkAuthorizeURL(b *testing.B) {
	app := &wechat.OAuthApp{AppID: testAppID}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := app.AuthorizeURL("https://example.com/wechat/oauth/callback?next=%2Fa", wechat.ScopeBase, "k3Jx9Qw2abcdefgh"); err != nil {
			b.Fatal(err)
		}
	}
}

// TestQRConnectFrameURL: the embedded page's URL is the one wxLogin.js
// builds (reference §9.2), and bad options are refused before any URL is.
func TestQRConnectFrameURL(t *testing.T) {
	t.Parallel()
	app := &wechat.OAuthApp{AppID: "wxwebsiteapp0001"}
	const cb = "https://example.com/wechat/oauth/callback"
	for _, tc := range []struct {
		name string
		o    wechat.FrameOptions
		want string // "" for an error
	}{
		{"plain", wechat.FrameOptions{}, "https://open.weixin.qq.com/connect/qrconnect?appid=wxwebsiteapp0001&scope=snsapi_login&redirect_uri=https%3A%2F%2Fexample.com%2Fwechat%2Foauth%2Fcallback&state=xyz&login_type=jssdk&self_redirect=true&styletype=&sizetype=&bgcolor=&rst="},
		{"styled english", wechat.FrameOptions{Style: "white", Href: "https://example.com/a.css?x=1", English: true},
			"https://open.weixin.qq.com/connect/qrconnect?appid=wxwebsiteapp0001&scope=snsapi_login&redirect_uri=https%3A%2F%2Fexample.com%2Fwechat%2Foauth%2Fcallback&state=xyz&login_type=jssdk&self_redirect=true&styletype=&sizetype=&bgcolor=&rst=&style=white&href=https%3A%2F%2Fexample.com%2Fa.css%3Fx%3D1&lang=en"},
		{"bad style", wechat.FrameOptions{Style: "red"}, ""},
		{"http css", wechat.FrameOptions{Href: "http://example.com/a.css"}, ""},
		{"script css", wechat.FrameOptions{Href: "javascript:alert(1)"}, ""},
	} {
		got, err := app.QRConnectFrameURL(cb, "xyz", tc.o)
		if tc.want == "" {
			if !errors.Is(err, wechat.ErrInvalidArgument) {
				t.Errorf("%s: %q, %v; want ErrInvalidArgument", tc.name, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s:\n got %s, %v\nwant %s", tc.name, got, err, tc.want)
		}
	}
	if _, err := app.QRConnectFrameURL(cb, "bad state", wechat.FrameOptions{}); !errors.Is(err, wechat.ErrInvalidArgument) {
		t.Errorf("bad state: %v", err)
	}
	for ep, want := range map[wechat.Endpoint]string{
		{}: "https://open.weixin.qq.com",
		{Authorize: "http://127.0.0.1:8080/fake/"}: "http://127.0.0.1:8080",
		{Authorize: "/wechat/sandbox"}:             "",
	} {
		if got := ep.PageOrigin(); got != want {
			t.Errorf("PageOrigin(%+v) = %q, want %q", ep, got, want)
		}
	}
}
