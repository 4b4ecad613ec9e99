package wechattest

import (
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

const redirect = "https://app.example.com/wechat/oauth/callback"

func authorizeURL(s *Server, scope, state string) string {
	return s.URL + "/connect/oauth2/authorize?appid=" + oaID + "&redirect_uri=" + url.QueryEscape(redirect) +
		"&response_type=code&scope=" + scope + "&state=" + state
}

// open requests u without following redirects and returns the response
// and its body.
func open(t testing.TB, method, u string, form url.Values) (*http.Response, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// codeFrom checks that resp redirects to the callback and returns the code
// and state it carries.
func codeFrom(t testing.TB, resp *http.Response) (code, state string) {
	t.Helper()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("status %d, want 302", resp.StatusCode)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || !strings.HasPrefix(loc.String(), redirect+"?") {
		t.Fatalf("Location %q", resp.Header.Get("Location"))
	}
	return loc.Query().Get("code"), loc.Query().Get("state")
}

var errcodeAttr = regexp.MustCompile(`data-errcode="([^"]*)"`)

func TestAuthorizeValidation(t *testing.T) {
	s := newPlatformServer(t, Config{OAuthUser: "alice"}, "", Plaintext)
	if err := s.AddApp(App{AppID: "wxlimited", AppSecret: "x", RedirectDomains: []string{"app.example.com"}}); err != nil {
		t.Fatal(err)
	}
	r := url.QueryEscape(redirect)
	base := s.URL + "/connect/oauth2/authorize?"
	for _, tc := range []struct {
		name, query string
		want        string // errcode on the page; "" = redirect with a code
	}{
		{"ok", "appid=" + oaID + "&redirect_uri=" + r + "&response_type=code&scope=snsapi_base&state=abc123", ""},
		{"no state", "appid=" + oaID + "&redirect_uri=" + r + "&response_type=code&scope=snsapi_base", ""},
		{"extras after state", "appid=" + oaID + "&redirect_uri=" + r + "&response_type=code&scope=snsapi_userinfo&state=a&forcePopup=true&connect_redirect=1", ""},
		{"128-char state", "appid=" + oaID + "&redirect_uri=" + r + "&response_type=code&scope=snsapi_base&state=" + strings.Repeat("a", 128), ""},
		{"domain ok", "appid=wxlimited&redirect_uri=" + r + "&response_type=code&scope=snsapi_base&state=a", ""},
		{"swapped", "redirect_uri=" + r + "&appid=" + oaID + "&response_type=code&scope=snsapi_base&state=a", "param_order"},
		{"scope before response_type", "appid=" + oaID + "&redirect_uri=" + r + "&scope=snsapi_base&response_type=code&state=a", "param_order"},
		{"state first", "state=a&appid=" + oaID + "&redirect_uri=" + r + "&response_type=code&scope=snsapi_base", "param_order"},
		{"extra before state", "appid=" + oaID + "&redirect_uri=" + r + "&response_type=code&scope=snsapi_base&forcePopup=true&state=a", "param_order"},
		{"duplicate appid", "appid=" + oaID + "&redirect_uri=" + r + "&response_type=code&scope=snsapi_base&state=a&appid=" + oaID, "param_order"},
		{"no response_type", "appid=" + oaID + "&redirect_uri=" + r + "&scope=snsapi_base&state=a", "param_order"},
		{"response_type token", "appid=" + oaID + "&redirect_uri=" + r + "&response_type=token&scope=snsapi_base&state=a", "response_type"},
		{"129-char state", "appid=" + oaID + "&redirect_uri=" + r + "&response_type=code&scope=snsapi_base&state=" + strings.Repeat("a", 129), "state"},
		{"state with dash", "appid=" + oaID + "&redirect_uri=" + r + "&response_type=code&scope=snsapi_base&state=a-b", "state"},
		{"no appid", "redirect_uri=" + r + "&response_type=code&scope=snsapi_base", "10012"},
		{"no redirect", "appid=" + oaID + "&response_type=code&scope=snsapi_base", "10011"},
		{"no scope", "appid=" + oaID + "&redirect_uri=" + r + "&response_type=code", "10010"},
		{"bad scope", "appid=" + oaID + "&redirect_uri=" + r + "&response_type=code&scope=snsapi_login&state=a", "10005"},
		{"website appid", "appid=" + webID + "&redirect_uri=" + r + "&response_type=code&scope=snsapi_base&state=a", "10016"},
		{"unknown appid", "appid=wxnope&redirect_uri=" + r + "&response_type=code&scope=snsapi_base&state=a", "appid"},
		{"domain mismatch", "appid=wxlimited&redirect_uri=" + url.QueryEscape("https://evil.example.net/cb") + "&response_type=code&scope=snsapi_base&state=a", "10003"},
		{"relative redirect", "appid=" + oaID + "&redirect_uri=%2Fcb&response_type=code&scope=snsapi_base&state=a", "10003"},
		{"bad escape", "appid=" + oaID + "&redirect_uri=%zz&response_type=code&scope=snsapi_base", "param"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := open(t, http.MethodGet, base+tc.query, nil)
			if tc.want == "" {
				code, _ := codeFrom(t, resp)
				if len(code) != 32 {
					t.Errorf("code %q", code)
				}
				return
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want an error page with 200", resp.StatusCode)
			}
			m := errcodeAttr.FindStringSubmatch(body)
			if m == nil || m[1] != tc.want {
				t.Fatalf("page error %v, want %s", m, tc.want)
			}
		})
	}
}

func exchange(t testing.TB, s *Server, appID, secret, code string) apiAnswer {
	t.Helper()
	return get(t, s.URL+"/sns/oauth2/access_token?appid="+appID+"&secret="+secret+"&code="+code+"&grant_type=authorization_code")
}

func TestOAuthCodeSingleUseAndExpiry(t *testing.T) {
	s := newPlatformServer(t, Config{Now: fixedClock(), OAuthUser: "alice"}, "", Plaintext)
	resp, _ := open(t, http.MethodGet, authorizeURL(s, "snsapi_userinfo", "xyz"), nil)
	code, state := codeFrom(t, resp)
	if state != "xyz" {
		t.Fatalf("state %q", state)
	}
	a := exchange(t, s, oaID, oaSecret, code)
	wantErrcode(t, a, 0)
	if a.str("openid") != s.OpenID(oaID, "alice") || a.str("scope") != "snsapi_userinfo" ||
		a.str("unionid") != s.UnionID("alice") || a.num("expires_in") != 7200 || a.str("refresh_token") == "" {
		t.Fatalf("answer %v", a)
	}
	if _, ok := a["is_snapshotuser"]; ok {
		t.Error("is_snapshotuser present for a normal user")
	}
	wantErrcode(t, exchange(t, s, oaID, oaSecret, code), 40163)

	// OA codes last 5 minutes.
	resp, _ = open(t, http.MethodGet, authorizeURL(s, "snsapi_base", "a"), nil)
	code, _ = codeFrom(t, resp)
	s.Advance(5 * time.Minute)
	wantErrcode(t, exchange(t, s, oaID, oaSecret, code), 40029)

	for _, tc := range []struct {
		name, query string
		want        int
	}{
		{"unknown code", "appid=" + oaID + "&secret=" + oaSecret + "&code=nope&grant_type=authorization_code", 40029},
		{"no appid", "secret=" + oaSecret + "&code=c&grant_type=authorization_code", 41002},
		{"no secret", "appid=" + oaID + "&code=c&grant_type=authorization_code", 41004},
		{"no code", "appid=" + oaID + "&secret=" + oaSecret + "&grant_type=authorization_code", 41008},
		{"grant_type", "appid=" + oaID + "&secret=" + oaSecret + "&code=c&grant_type=client_credential", 40002},
		{"unknown app", "appid=wxnope&secret=" + oaSecret + "&code=c&grant_type=authorization_code", 40013},
		{"bad secret", "appid=" + oaID + "&secret=x&code=c&grant_type=authorization_code", 40125},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErrcode(t, get(t, s.URL+"/sns/oauth2/access_token?"+tc.query), tc.want)
		})
	}
}

func TestOAuthCodeBelongsToItsApp(t *testing.T) {
	s := newPlatformServer(t, Config{OAuthUser: "alice"}, "", Plaintext)
	resp, _ := open(t, http.MethodGet, authorizeURL(s, "snsapi_base", "a"), nil)
	code, _ := codeFrom(t, resp)
	wantErrcode(t, exchange(t, s, webID, webSecret, code), 40029)
	wantErrcode(t, exchange(t, s, oaID, oaSecret, code), 0)
}

func TestSNSUserInfoAndAuth(t *testing.T) {
	s := newPlatformServer(t, Config{Now: fixedClock(), OAuthUser: "alice"}, "", Plaintext)
	tokenFor := func(scope string) apiAnswer {
		resp, _ := open(t, http.MethodGet, authorizeURL(s, scope, "s"), nil)
		code, _ := codeFrom(t, resp)
		return exchange(t, s, oaID, oaSecret, code)
	}
	alice := s.OpenID(oaID, "alice")

	base := tokenFor("snsapi_base")
	if _, ok := base["unionid"]; ok {
		t.Error("snsapi_base answer carries a unionid")
	}
	wantErrcode(t, get(t, s.URL+"/sns/userinfo?access_token="+base.str("access_token")+"&openid="+alice), 48001)

	full := tokenFor("snsapi_userinfo")
	at := full.str("access_token")
	info := get(t, s.URL+"/sns/userinfo?access_token="+at+"&openid="+alice+"&lang=zh_CN")
	wantErrcode(t, info, 0)
	if info.str("nickname") != "Alice" || info.str("unionid") != s.UnionID("alice") || info.num("sex") != 0 || info.str("province") != "" {
		t.Fatalf("userinfo %v", info)
	}
	wantErrcode(t, get(t, s.URL+"/sns/userinfo?access_token="+at+"&openid="+s.OpenID(oaID, "bob")), 40003)
	wantErrcode(t, get(t, s.URL+"/sns/userinfo?access_token="+at), 41009)

	wantErrcode(t, get(t, s.URL+"/sns/auth?access_token="+at+"&openid="+alice), 0)
	if a := get(t, s.URL+"/sns/auth?access_token="+at+"&openid="+alice); a.str("errmsg") != "ok" || a["errcode"] != float64(0) {
		t.Fatalf("sns/auth %v", a)
	}
	wantErrcode(t, get(t, s.URL+"/sns/auth?access_token="+at+"&openid=ox"), 40003)
	wantErrcode(t, get(t, s.URL+"/sns/auth?access_token=junk&openid="+alice), 40014)

	// Refresh keeps a live token and extends it.
	s.Advance(7000 * time.Second)
	rt := full.str("refresh_token")
	ref := get(t, s.URL+"/sns/oauth2/refresh_token?appid="+oaID+"&grant_type=refresh_token&refresh_token="+rt)
	if ref.str("access_token") != at || ref.str("openid") != alice || ref.str("refresh_token") != rt {
		t.Fatalf("refresh %v", ref)
	}
	s.Advance(1000 * time.Second)
	wantErrcode(t, get(t, s.URL+"/sns/auth?access_token="+at+"&openid="+alice), 0)
	// Once expired, refresh gives a new one.
	s.Advance(7200 * time.Second)
	wantErrcode(t, get(t, s.URL+"/sns/auth?access_token="+at+"&openid="+alice), 42001)
	ref = get(t, s.URL+"/sns/oauth2/refresh_token?appid="+oaID+"&grant_type=refresh_token&refresh_token="+rt)
	if ref.str("access_token") == at || ref.str("access_token") == "" {
		t.Fatalf("refresh of an expired token: %v", ref)
	}

	wantErrcode(t, get(t, s.URL+"/sns/oauth2/refresh_token?appid="+oaID+"&grant_type=refresh_token&refresh_token=nope"), 40030)
	wantErrcode(t, get(t, s.URL+"/sns/oauth2/refresh_token?appid="+webID+"&grant_type=refresh_token&refresh_token="+rt), 40030)
	wantErrcode(t, get(t, s.URL+"/sns/oauth2/refresh_token?appid="+oaID+"&grant_type=x&refresh_token="+rt), 40002)
	wantErrcode(t, get(t, s.URL+"/sns/oauth2/refresh_token?appid="+oaID+"&grant_type=refresh_token"), 41003)
	s.Advance(30 * 24 * time.Hour)
	wantErrcode(t, get(t, s.URL+"/sns/oauth2/refresh_token?appid="+oaID+"&grant_type=refresh_token&refresh_token="+rt), 42002)
}

func TestSnapshotUser(t *testing.T) {
	s := newPlatformServer(t, Config{OAuthUser: "snapshot"}, "", Plaintext)
	resp, _ := open(t, http.MethodGet, authorizeURL(s, "snsapi_userinfo", "s"), nil)
	code, _ := codeFrom(t, resp)
	a := exchange(t, s, oaID, oaSecret, code)
	if a.num("is_snapshotuser") != 1 {
		t.Fatalf("answer %v lacks is_snapshotuser 1", a)
	}
	if a.str("openid") == s.OpenID(oaID, "snapshot") || a.str("unionid") == s.UnionID("snapshot") || a.str("unionid") == "" {
		t.Fatalf("snapshot user got real ids: %v", a)
	}
	info := get(t, s.URL+"/sns/userinfo?access_token="+a.str("access_token")+"&openid="+a.str("openid"))
	if info.str("nickname") != "微信用户" || info.str("unionid") != a.str("unionid") {
		t.Fatalf("snapshot userinfo %v", info)
	}

	// snsapi_base is not affected.
	resp, _ = open(t, http.MethodGet, authorizeURL(s, "snsapi_base", "s"), nil)
	code, _ = codeFrom(t, resp)
	if a := exchange(t, s, oaID, oaSecret, code); a.str("openid") != s.OpenID(oaID, "snapshot") || a["is_snapshotuser"] != nil {
		t.Fatalf("base answer %v", a)
	}

	// forceSnapShot makes anyone a snapshot user.
	s.SetOAuthUser("alice")
	resp, _ = open(t, http.MethodGet, authorizeURL(s, "snsapi_userinfo", "s")+"&forceSnapShot=true", nil)
	code, _ = codeFrom(t, resp)
	if a := exchange(t, s, oaID, oaSecret, code); a.num("is_snapshotuser") != 1 {
		t.Fatalf("forceSnapShot answer %v", a)
	}
}

func TestChoicePage(t *testing.T) {
	s := newPlatformServer(t, Config{}, "", Plaintext)
	u := authorizeURL(s, "snsapi_userinfo", "st8")
	resp, body := open(t, http.MethodGet, u, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `data-page="authorize"`) {
		t.Fatalf("status %d, body %s", resp.StatusCode, body)
	}
	for _, want := range []string{`value="alice"`, `value="bob"`, `value="deny"`, `action="` + strings.ReplaceAll(u, "&", "&amp;") + `"`} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %s", want)
		}
	}

	resp, _ = open(t, http.MethodPost, u, url.Values{"user": {"bob"}})
	code, state := codeFrom(t, resp)
	if state != "st8" {
		t.Errorf("state %q", state)
	}
	if a := exchange(t, s, oaID, oaSecret, code); a.str("openid") != s.OpenID(oaID, "bob") {
		t.Fatalf("exchange %v", a)
	}

	resp, _ = open(t, http.MethodPost, u, url.Values{"decision": {"deny"}})
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != redirect+"?state=st8" {
		t.Fatalf("deny: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}

	resp, _ = open(t, http.MethodPost, u, url.Values{"user": {"mallory"}})
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("unknown user: %d", resp.StatusCode)
	}

	// snsapi_base is silent: no deny button.
	_, body = open(t, http.MethodGet, authorizeURL(s, "snsapi_base", "a"), nil)
	if strings.Contains(body, `value="deny"`) {
		t.Error("snsapi_base page offers deny")
	}
}

func TestQRConnect(t *testing.T) {
	s := newPlatformServer(t, Config{Now: fixedClock()}, "", Plaintext)
	r := url.QueryEscape(redirect)
	u := s.URL + "/connect/qrconnect?appid=" + webID + "&redirect_uri=" + r + "&response_type=code&scope=snsapi_login&state=w1"
	_, body := open(t, http.MethodGet, u, nil)
	if !strings.Contains(body, `data-page="qrconnect"`) || !strings.Contains(body, `value="deny"`) {
		t.Fatalf("page %s", body)
	}
	resp, _ := open(t, http.MethodPost, u, url.Values{"user": {"alice"}})
	code, _ := codeFrom(t, resp)
	a := exchange(t, s, webID, webSecret, code)
	if a.str("openid") != s.OpenID(webID, "alice") || a.str("scope") != "snsapi_login" {
		t.Fatalf("exchange %v", a)
	}
	// The website and the OA share the unionid, not the openid.
	if a.str("unionid") != s.UnionID("alice") || a.str("openid") == s.OpenID(oaID, "alice") {
		t.Fatalf("ids %v", a)
	}

	// Website codes last 10 minutes.
	resp, _ = open(t, http.MethodPost, u, url.Values{"user": {"alice"}})
	code, _ = codeFrom(t, resp)
	s.Advance(9 * time.Minute)
	wantErrcode(t, exchange(t, s, webID, webSecret, code), 0)
	resp, _ = open(t, http.MethodPost, u, url.Values{"user": {"alice"}})
	code, _ = codeFrom(t, resp)
	s.Advance(10 * time.Minute)
	wantErrcode(t, exchange(t, s, webID, webSecret, code), 40029)

	// wxLogin.js iframe URLs have no response_type and extra parameters.
	s.SetOAuthUser("bob")
	resp, _ = open(t, http.MethodGet, s.URL+"/connect/qrconnect?appid="+webID+"&scope=snsapi_login&redirect_uri="+r+"&state=&login_type=jssdk&self_redirect=true", nil)
	codeFrom(t, resp)

	for name, q := range map[string]string{
		"scope":    "/connect/qrconnect?appid=" + webID + "&redirect_uri=" + r + "&response_type=code&scope=snsapi_base",
		"scope ":   "/connect/qrconnect?appid=" + oaID + "&redirect_uri=" + r + "&response_type=code&scope=snsapi_login",
		"redirect": "/connect/qrconnect?appid=" + webID + "&redirect_uri=notaurl&response_type=code&scope=snsapi_login",
		"appid":    "/connect/qrconnect?appid=wxnope&redirect_uri=" + r + "&response_type=code&scope=snsapi_login",
	} {
		_, body := open(t, http.MethodGet, s.URL+q, nil)
		want := map[string]string{"scope": "scope", "scope ": "scope", "redirect": "redirect_uri", "appid": "appid"}[name]
		if m := errcodeAttr.FindStringSubmatch(body); m == nil || m[1] != want {
			t.Errorf("%s: page error %v, want %s", name, m, want)
		}
	}
}

func TestUnboundAppHasNoUnionID(t *testing.T) {
	s := newPlatformServer(t, Config{OAuthUser: "alice"}, "", Plaintext)
	if err := s.AddApp(App{AppID: "wxunbound", AppSecret: "sec", Unbound: true}); err != nil {
		t.Fatal(err)
	}
	resp, _ := open(t, http.MethodGet, s.URL+"/connect/oauth2/authorize?appid=wxunbound&redirect_uri="+url.QueryEscape(redirect)+"&response_type=code&scope=snsapi_userinfo&state=a", nil)
	code, _ := codeFrom(t, resp)
	a := exchange(t, s, "wxunbound", "sec", code)
	wantErrcode(t, a, 0)
	if _, ok := a["unionid"]; ok {
		t.Fatalf("unbound app got a unionid: %v", a)
	}
}

func TestRedirectKeepsExistingQuery(t *testing.T) {
	s := newPlatformServer(t, Config{OAuthUser: "alice"}, "", Plaintext)
	cb := "https://app.example.com/cb?next=%2Fhome"
	resp, _ := open(t, http.MethodGet, s.URL+"/connect/oauth2/authorize?appid="+oaID+"&redirect_uri="+url.QueryEscape(cb)+"&response_type=code&scope=snsapi_base&state=z", nil)
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	q := loc.Query()
	if q.Get("next") != "/home" || q.Get("state") != "z" || q.Get("code") == "" || !strings.HasPrefix(loc.RawQuery, "next=%2Fhome&code=") {
		t.Fatalf("Location %s", loc)
	}
}
