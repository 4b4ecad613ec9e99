package caddymodule

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// TestCaddyHandleErrors: with use_handle_errors, the refusals of protected
// paths (401 for API clients, 403 for users not on the allowlist) go to the
// site's handle_errors, with Caddy's {err.*} placeholders; browsers without
// a session are still sent to log in. Without it, the built-in answers
// stay, even on a site with handle_errors.
func TestCaddyHandleErrors(t *testing.T) {
	fake := wechattest.NewServer(wechattest.Config{})
	t.Cleanup(fake.Close)
	handleErrors := `
	handle_errors {
		respond "custom {err.status_code}: {err.message}" {err.status_code}
	}`
	site := func(extra ...string) string {
		return siteWithFake(fake.URL, "127.0.0.1:9", "Caddy Site", extra...) + handleErrors
	}
	c := startCaddy(t, site("use_handle_errors"), itEnv...)
	addFakeApp(t, fake, c.BaseURL)
	l := &caddyLogin{t: t, fake: fake, caddy: c}

	get := func(cookie, accept string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, c.BaseURL+"/private", nil)
		req.Header.Set("Accept", accept)
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		_, _ = io.Copy(&b, resp.Body)
		return resp.StatusCode, b.String(), resp.Header
	}

	if status, body, _ := get("", "application/json"); status != http.StatusUnauthorized || body != "custom 401: login required" {
		t.Fatalf("API client without a session: %d %q", status, body)
	}
	if status, _, h := get("", "text/html"); status != http.StatusFound || !strings.HasPrefix(h.Get("Location"), "/wechat/login?next=") {
		t.Fatalf("browser without a session: %d %q", status, h.Get("Location"))
	}
	alice := qrLoginAs(t, l, newClient(t, c.BaseURL), "alice")
	if status, body, _ := get(alice, "application/json"); status != http.StatusOK || !strings.Contains(body, "method=qr") {
		t.Fatalf("logged in: %d %q", status, body)
	}

	// Alice is taken off the allowlist; her session outlives the reload.
	c.reload(site("use_handle_errors", "allow_openids nobody"))
	for _, accept := range []string{"application/json", "text/html"} {
		if status, body, _ := get(alice, accept); status != http.StatusForbidden || body != "custom 403: this WeChat account is not allowed here" {
			t.Fatalf("not allowed (%s): %d %q", accept, status, body)
		}
	}

	// Without the option, the built-in answers, handle_errors or not.
	c.reload(site("allow_openids nobody"))
	if status, body, _ := get("", "application/json"); status != http.StatusUnauthorized || !strings.Contains(body, `"login_url":"/wechat/login?next=%2Fprivate"`) {
		t.Fatalf("built-in 401: %d %q", status, body)
	}
	if status, body, h := get(alice, "text/html"); status != http.StatusForbidden || !strings.HasPrefix(h.Get("Content-Type"), "text/html") || strings.Contains(body, "custom") {
		t.Fatalf("built-in 403 page: %d %s %q", status, h.Get("Content-Type"), body)
	}
}
