package wechattest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// Browser User-Agents, real ones (reference §12).
const (
	uaChrome    = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
	uaIOSWeChat = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.49(0x18003128) NetType/WIFI Language/zh_CN"
	uaWindows   = "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/39.0.2171.95 Safari/537.36 MicroMessenger/6.5.2.501 NetType/WIFI WindowsWechat"
	uaIPhone    = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)

// openAs is open with a User-Agent.
func openAs(t testing.TB, ua, method, u string, form url.Values) (*http.Response, string) {
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
	req.Header.Set("User-Agent", ua)
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestAuthorizeOnlyInWeChat: other browsers get WeChat's "open this link
// in WeChat" page, whatever the parameters and on the choice page's POST
// too; WeChat's browser on any platform gets through, and so does a plain
// HTTP client that does not pretend to be a browser.
func TestAuthorizeOnlyInWeChat(t *testing.T) {
	s := newPlatformServer(t, Config{OAuthUser: "alice"}, "", Plaintext)
	good := authorizeURL(s, "snsapi_base", "a")
	bad := s.URL + "/connect/oauth2/authorize?appid=wxnope"
	for _, ua := range []string{uaChrome, uaIPhone, "mozilla/5.0 (X11)"} {
		for _, u := range []string{good, bad} {
			for _, method := range []string{http.MethodGet, http.MethodPost} {
				var form url.Values
				if method == http.MethodPost {
					form = url.Values{"user": {"alice"}}
				}
				resp, body := openAs(t, ua, method, u, form)
				if resp.StatusCode != http.StatusOK || resp.Header.Get("Location") != "" ||
					!strings.Contains(body, "请在微信客户端打开链接") || !strings.Contains(body, `data-errcode="wechat_client"`) {
					t.Fatalf("%s %s as %q: %d %q\n%s", method, u, ua, resp.StatusCode, resp.Header.Get("Location"), body)
				}
			}
		}
	}
	for _, ua := range []string{uaIOSWeChat, uaWindows, "Go-http-client/1.1", "curl/8.5.0", ""} {
		resp, body := openAs(t, ua, http.MethodGet, good, nil)
		if code, _ := codeFrom(t, resp); code == "" {
			t.Fatalf("as %q: %s", ua, body)
		}
	}
	// Website login is for desktop browsers.
	web := s.URL + "/connect/qrconnect?appid=" + webID + "&redirect_uri=" + url.QueryEscape(redirect) + "&response_type=code&scope=snsapi_login&state=w"
	resp, _ := openAs(t, uaChrome, http.MethodGet, web, nil)
	codeFrom(t, resp)
}

// embeddedURL is the iframe URL wxLogin.js builds (reference §9.2) with
// extra parameters appended.
func embeddedURL(s *Server, extra string) string {
	return s.URL + "/connect/qrconnect?appid=" + webID + "&scope=snsapi_login&redirect_uri=" + url.QueryEscape(redirect) +
		"&state=emb1&login_type=jssdk&styletype=&sizetype=&bgcolor=&rst=" + extra
}

var formTarget = regexp.MustCompile(`<form method="post" action="([^"]*)" target="([^"]*)">`)

// TestQRConnectEmbedded: the page inside wxLogin.js's iframe, with its
// parameters, and where the redirect after the scan goes.
func TestQRConnectEmbedded(t *testing.T) {
	s := newPlatformServer(t, Config{}, "", Plaintext)
	for _, tc := range []struct {
		name, extra, target, style string
		css                        string // the stylesheet link, "" for none
	}{
		{"self_redirect default", "&self_redirect=default", "_top", "black", ""},
		{"self_redirect false", "&self_redirect=false", "_top", "black", ""},
		{"self_redirect true", "&self_redirect=true", "_self", "black", ""},
		{"style white", "&self_redirect=true&style=white", "_self", "white", ""},
		{"https css", "&self_redirect=false&href=" + url.QueryEscape("https://cdn.example.com/wx.css"), "_top", "black", "https://cdn.example.com/wx.css"},
		{"inline css", "&self_redirect=false&href=" + url.QueryEscape("data:text/css;base64,LmltcG93ZXJCb3gge30="), "_top", "black", "data:text/css;base64,LmltcG93ZXJCb3gge30="},
		{"http css refused", "&self_redirect=false&href=" + url.QueryEscape("http://cdn.example.com/wx.css"), "_top", "black", ""},
		{"script refused", "&self_redirect=false&href=" + url.QueryEscape("javascript:alert(1)"), "_top", "black", ""},
		{"stylelite ignores css", "&self_redirect=false&stylelite=1&href=" + url.QueryEscape("https://cdn.example.com/wx.css"), "_top", "black", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := embeddedURL(s, tc.extra)
			resp, body := openAs(t, uaChrome, http.MethodGet, u, nil)
			if resp.StatusCode != http.StatusOK || !strings.Contains(body, `data-page="qrframe"`) ||
				!strings.Contains(body, `data-style="`+tc.style+`"`) || !strings.Contains(body, `value="alice"`) {
				t.Fatalf("%d\n%s", resp.StatusCode, body)
			}
			m := formTarget.FindStringSubmatch(body)
			if m == nil || m[2] != tc.target || m[1] != strings.ReplaceAll(u, "&", "&amp;") {
				t.Fatalf("form %v, want target %s posting to the page itself", m, tc.target)
			}
			hasLink := strings.Contains(body, `<link rel="stylesheet"`)
			if tc.css == "" && hasLink || tc.css != "" && !strings.Contains(body, `<link rel="stylesheet" href="`+tc.css+`">`) {
				t.Fatalf("stylesheet: want %q\n%s", tc.css, body)
			}
			// The phone confirms: the target's window goes to redirect_uri.
			resp, _ = openAs(t, uaChrome, http.MethodPost, u, url.Values{"user": {"alice"}})
			code, state := codeFrom(t, resp)
			if state != "emb1" {
				t.Fatalf("state %q", state)
			}
			if a := exchange(t, s, webID, webSecret, code); a.str("openid") != s.OpenID(webID, "alice") {
				t.Fatalf("exchange %v", a)
			}
		})
	}

	_, body := openAs(t, uaChrome, http.MethodGet, embeddedURL(s, "&lang=en"), nil)
	if !strings.Contains(body, `<html lang="en">`) || !strings.Contains(body, "WeChat login") {
		t.Fatalf("lang=en page\n%s", body)
	}
	// The embedded page checks what the redirect page checks.
	_, body = openAs(t, uaChrome, http.MethodGet, strings.Replace(embeddedURL(s, ""), url.QueryEscape(redirect), url.QueryEscape("https://evil.example/cb"), 1), nil)
	if m := errcodeAttr.FindStringSubmatch(body); m == nil || m[1] != "redirect_uri" {
		t.Fatalf("foreign redirect_uri: %v", m)
	}
}

var topScript = regexp.MustCompile(`<script nonce="([^"]+)">window.top.location.href = "([^"]*)";</script>`)

// TestQRConnectEmbeddedApprovedAtOnce: with an OAuth user configured, the
// frame needs no click: self_redirect=true redirects the frame, otherwise a
// script moves the top window, allowed by the page's own CSP.
func TestQRConnectEmbeddedApprovedAtOnce(t *testing.T) {
	s := newPlatformServer(t, Config{OAuthUser: "bob"}, "", Plaintext)
	resp, _ := openAs(t, uaChrome, http.MethodGet, embeddedURL(s, "&self_redirect=true"), nil)
	codeFrom(t, resp)

	resp, body := openAs(t, uaChrome, http.MethodGet, embeddedURL(s, "&self_redirect=default"), nil)
	m := topScript.FindStringSubmatch(body)
	if resp.StatusCode != http.StatusOK || m == nil {
		t.Fatalf("%d\n%s", resp.StatusCode, body)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); csp != "default-src 'none'; script-src 'nonce-"+m[1]+"'" {
		t.Fatalf("CSP %q", csp)
	}
	// html/template writes a JS string that JSON reads the same way.
	var raw string
	if err := json.Unmarshal([]byte(`"`+m[2]+`"`), &raw); err != nil {
		t.Fatal(err)
	}
	target, err := url.Parse(raw)
	if err != nil || !strings.HasPrefix(target.String(), redirect+"?code=") || target.Query().Get("state") != "emb1" {
		t.Fatalf("top window sent to %q", m[2])
	}
	if !strings.Contains(body, `target="_top"`) {
		t.Fatal("no link for a top window that refuses the script")
	}
	if a := exchange(t, s, webID, webSecret, target.Query().Get("code")); a.str("openid") != s.OpenID(webID, "bob") {
		t.Fatalf("exchange %v", a)
	}
}
