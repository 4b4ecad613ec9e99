package caddymodule

import (
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// sandboxRedirectSite is a protected site on the sandbox that says who is
// logged in and how.
const sandboxRedirectSite = `	wechat_login {
		sandbox
	}
	respond "id={http.auth.user.openid} method={http.auth.user.login_method}"`

var sandboxErrcode = regexp.MustCompile(`data-errcode="([^"]*)"`)

// TestSandboxNoOpenRedirect: the sandbox's fake WeChat pages are public, so
// a crafted authorization link with a foreign redirect_uri must end on
// WeChat's error page, never in a redirect, while the sandbox's own logins
// (whose redirect_uri is the site itself) still go through.
func TestSandboxNoOpenRedirect(t *testing.T) {
	c := startCaddy(t, sandboxRedirectSite)
	b := newClient(t, c.BaseURL)
	u, _ := url.Parse(c.BaseURL)

	foreign := []string{
		"https://evil.example/",
		"https://" + u.Hostname() + ".evil.example/cb",
		"https://" + u.Host + "@evil.example/",
		"http://evil.example\\@" + u.Host + "/",
		"//evil.example/",
		"javascript:alert(1)//" + u.Host,
		"http://" + u.Hostname() + ":1/cb", // the site's host on another port
		"http://localhost:" + u.Port() + "/cb",
	}
	pages := []struct{ path, appid, scope, errcode string }{
		{"/wechat/sandbox/connect/oauth2/authorize", sandboxAppID, "snsapi_userinfo", "10003"},
		{"/wechat/sandbox/connect/qrconnect", sandboxOpenAppID, "snsapi_login", "redirect_uri"},
	}
	for _, pg := range pages {
		for _, ru := range foreign {
			link := pg.path + "?appid=" + pg.appid + "&redirect_uri=" + url.QueryEscape(ru) +
				"&response_type=code&scope=" + pg.scope + "&state=x1"
			for _, method := range []string{http.MethodGet, http.MethodPost} {
				var form io.Reader
				if method == http.MethodPost {
					// The choice page's button that approves as a user.
					form = strings.NewReader("user=alice")
				}
				resp, body := b.do(method, link, form)
				m := sandboxErrcode.FindStringSubmatch(body)
				if resp.StatusCode != http.StatusOK || resp.Header.Get("Location") != "" || m == nil || m[1] != pg.errcode {
					t.Errorf("%s %s with redirect_uri %q: %d, Location %q, error %v; want error page %s and no redirect",
						method, pg.path, ru, resp.StatusCode, resp.Header.Get("Location"), m, pg.errcode)
				}
			}
			resp, body := b.do(http.MethodPost, link, strings.NewReader("decision=deny"))
			if resp.Header.Get("Location") != "" || !strings.Contains(body, "data-errcode") {
				t.Errorf("deny on %s with redirect_uri %q: %d, Location %q", pg.path, ru, resp.StatusCode, resp.Header.Get("Location"))
			}
		}
	}

	// The sandbox's own login inside "WeChat" goes through its authorize
	// page and back to the site.
	ua := []string{"User-Agent", itWeChatUA, "Accept", "text/html"}
	resp, body := b.do(http.MethodGet, "/inbox", nil, ua...)
	auth := expectRedirect(t, "protected page in WeChat", resp, body, "/wechat/sandbox/connect/oauth2/authorize?appid="+sandboxAppID+"&")
	resp, body = b.do(http.MethodGet, auth, nil, ua...)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `value="bob"`) {
		t.Fatalf("sandbox authorize page: %d\n%s", resp.StatusCode, body)
	}
	resp, body = b.do(http.MethodPost, auth, strings.NewReader("user=bob"), ua...)
	callback := expectRedirect(t, "sandbox authorize as bob", resp, body, c.BaseURL+"/wechat/oauth/callback?code=")
	resp, body = b.getAbs(callback, ua...)
	expectRedirect(t, "callback", resp, body, "/inbox")
	if _, body = b.do(http.MethodGet, "/inbox", nil, ua...); !regexp.MustCompile(`^id=o[A-Za-z0-9_-]{27} method=oauth$`).MatchString(body) {
		t.Fatalf("after the sandbox's OAuth login: %q", body)
	}

	// So does its website login, in another browser.
	b2 := newClient(t, c.BaseURL)
	resp, body = b2.do(http.MethodGet, "/wechat/oauth/start?method=open&next=%2Fdone", nil)
	auth = expectRedirect(t, "website login start", resp, body, "/wechat/sandbox/connect/qrconnect?appid="+sandboxOpenAppID+"&")
	resp, body = b2.do(http.MethodPost, auth, strings.NewReader("user=alice"))
	callback = expectRedirect(t, "sandbox qrconnect as alice", resp, body, c.BaseURL+"/wechat/oauth/callback?code=")
	resp, body = b2.getAbs(callback)
	expectRedirect(t, "website callback", resp, body, "/done")
	if _, body = b2.do(http.MethodGet, "/done", nil); !regexp.MustCompile(`^id=o[A-Za-z0-9_-]{27} method=open$`).MatchString(body) {
		t.Fatalf("after the sandbox's website login: %q", body)
	}
}
