package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/wechat-login/caddy-wechat-login/internal/caddytest"
)

// crossDomainSites runs one Caddy serving, on loopback only and on one
// port, a login host (the sandbox, handing logins to the shop and the blog)
// and two sites on unrelated domains that take their logins from it. It
// returns the three origins.
func crossDomainSites(t *testing.T) (login, shop, blog string) {
	t.Helper()
	port := caddytest.FreePort(t)
	at := func(host string) string { return fmt.Sprintf("http://%s:%d", host, port) }
	login, shop, blog = at("login.example.test"), at("shop.test"), at("blog.test")
	page := func(name string) string {
		return `	header Content-Type "text/html; charset=utf-8"
	respond ` + "`" + `<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><title>` + name + `</title><h1 id="hello">Hello {http.auth.user.openid} via {http.auth.user.login_method}</h1><p id="site">` + name + `</p><a id="everywhere" href="/wechat/logout?everywhere=1&amp;next=/bye">Log out everywhere</a>` + "`" + ` 200`
	}
	site := func(name, origin string) string {
		return "\n" + origin + ` {
	wechat_login {
		login_host ` + login + `
		session_key {env.IT_SESSION_KEY}
		public_origin ` + origin + `
	}
` + page(name)
	}
	// The helpers write "<base> {\n<site>\n}": the first lines close the
	// base site and the last block is closed by the helpers.
	body := "\trespond \"no such site\" 404\n}\n\n" + login + ` {
	wechat_login {
		sandbox
		site_name "Login host"
		session_key {env.IT_SESSION_KEY}
		public_origin ` + login + `
		handoff_to ` + shop + ` ` + blog + `
	}
` + page("login host") + "\n}\n" + site("shop", shop) + "\n}\n" + site("blog", blog)
	caddytest.StartGlobals(t, "default_bind 127.0.0.1", body, itEnv...)
	return login, shop, blog
}

// TestBrowserCrossDomainLogin: a real Chromium, resolving the test names to
// loopback, asks the shop for a page; the shop sends it to the login host,
// on another domain, where "Simulate scan" logs it in; it comes back through
// the handoff to the page it asked for, greeted by its identity. The blog
// then logs it in without another scan. "Log out everywhere" on the blog
// ends the blog's session and, once confirmed on the login host, the login
// host's: the blog then sends the browser to log in again, while the shop
// keeps its own session.
func TestBrowserCrossDomainLogin(t *testing.T) {
	t.Parallel()
	login, shop, blog := crossDomainSites(t)
	tb := newTab(t, 1280, 800, chromedp.Flag("host-resolver-rules", "MAP *.test 127.0.0.1"))

	tb.do(chromedp.Navigate(shop + "/cart?x=1"))
	tb.waitState("waiting")
	if loc := tb.location(); !strings.HasPrefix(loc, login+"/wechat/login?next=") {
		t.Fatalf("the shop sent the browser to %q, want the login host's login page", loc)
	}
	tb.do(chromedp.Click(chromedp.ID("wl-simulate")))
	tb.assertGreeted(shop, "qr")
	if loc := tb.location(); loc != shop+"/cart?x=1" {
		t.Fatalf("after the login at %q, want the page first asked for", loc)
	}
	openid := tb.text("#hello")

	// The blog: straight through the login host, no second login.
	tb.do(chromedp.Navigate(blog + "/posts/1"))
	tb.assertGreeted(blog, "qr")
	if loc := tb.location(); loc != blog+"/posts/1" {
		t.Fatalf("blog at %q", loc)
	}
	if tb.text("#hello") != openid {
		t.Fatalf("blog greets %q, the shop %q", tb.text("#hello"), openid)
	}
	if n := tb.qrRequests(); n != 1 {
		t.Fatalf("%d login codes requested, want 1", n)
	}

	// Log out everywhere: the login host asks to confirm (the request comes
	// from another site), then the blog has no session and sends the
	// browser to the login host, which has none either. Over plain HTTP the
	// browser sends no Sec-Fetch-Site, so the blog cannot tell its own link
	// from another site's and asks first too.
	tb.do(chromedp.Click(chromedp.ID("everywhere")))
	confirm := chromedp.CSS(`form[action="/wechat/logout"] button`)
	tb.do(chromedp.WaitVisible(confirm))
	if loc := tb.location(); strings.HasPrefix(loc, blog+"/wechat/logout?") {
		if !strings.Contains(loc, "everywhere=1") || tb.eval(`document.querySelector('input[name="everywhere"]').value`) != "1" {
			t.Fatalf("the blog's confirmation at %q lost the logout everywhere", loc)
		}
		tb.do(chromedp.Click(confirm))
		tb.waitFor(`location.href.indexOf(` + jsString(login+"/wechat/logout?") + `) === 0 && !!document.querySelector('form[action="/wechat/logout"] button')`)
	}
	if loc := tb.location(); !strings.HasPrefix(loc, login+"/wechat/logout?") {
		t.Fatalf("confirmation at %q, want the login host", loc)
	}
	tb.do(chromedp.Click(confirm))
	tb.waitState("waiting")
	if loc := tb.location(); !strings.HasPrefix(loc, login+"/wechat/login?next=") {
		t.Fatalf("after logging out everywhere at %q, want the login host's login page", loc)
	}
	// The shop's own session was not the blog's to end.
	tb.do(chromedp.Navigate(shop + "/cart?x=1"))
	tb.assertGreeted(shop, "qr")
	tb.assertCleanConsole("/favicon.ico")
}

// location is the tab's current URL.
func (tb *tab) location() string {
	tb.t.Helper()
	loc, err := chromedp.Run(tb.ctx, chromedp.Location())
	if err != nil {
		tb.t.Fatalf("location: %v", err)
	}
	return loc
}

// jsString quotes s for a JavaScript expression.
func jsString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// waitFor waits (at most 15 s) until the JavaScript condition holds on the
// tab's page, across navigations, which end a single evaluation.
func (tb *tab) waitFor(cond string) {
	tb.t.Helper()
	for range 75 {
		if ok, err := chromedp.Run(tb.ctx, chromedp.Evaluate[bool](cond)); err == nil && ok {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	tb.t.Fatalf("waiting for %s: timed out\n%s", cond, tb.dump())
}

// TestBrowserSubdomainLogin: with cookie_domain, a real Chromium logged in
// on one subdomain is logged in on the other (the names are *.localhost,
// which browsers resolve to this machine themselves, as in
// examples/many-sites), and a logout on the second ends the login on the
// first.
func TestBrowserSubdomainLogin(t *testing.T) {
	t.Parallel()
	port := caddytest.FreePort(t)
	a, b := fmt.Sprintf("http://a.demo.localhost:%d", port), fmt.Sprintf("http://b.demo.localhost:%d", port)
	site := strings.Replace(browserSite("Subdomains"), "sandbox\n", "sandbox\n\t\tsession_key {env.IT_SESSION_KEY}\n\t\tcookie_domain demo.localhost\n", 1)
	// Two site blocks of one Caddy, as two sites would be; the helpers
	// write "<base> {\n<site>\n}", closing the last.
	body := "\trespond \"no such site\" 404\n}\n\n" + a + " {\n" + site + "\n}\n\n" + b + " {\n" + site
	caddytest.StartGlobals(t, "default_bind 127.0.0.1", body, itEnv...)
	tb := newTab(t, 1280, 800)

	tb.do(chromedp.Navigate(a + "/one"))
	tb.waitState("waiting")
	tb.do(chromedp.Click(chromedp.ID("wl-simulate")))
	tb.assertGreeted(a, "qr")
	openid := tb.text("#hello")
	tb.do(chromedp.Navigate(b + "/two"))
	tb.assertGreeted(b, "qr")
	if tb.text("#hello") != openid {
		t.Fatalf("b greets %q, a greeted %q", tb.text("#hello"), openid)
	}
	if n := tb.qrRequests(); n != 1 {
		t.Fatalf("%d login codes requested, want 1", n)
	}
	// Log out on b, with the page's own form; then a wants a login.
	tb.eval(`(function () { var f = document.createElement("form"); f.method = "post"; f.action = "/wechat/logout";
		document.body.appendChild(f); f.submit(); return ""; })()`)
	// The logout goes on to b's home page, which now sends to b's login.
	tb.waitFor(`location.href.indexOf(` + jsString(b+"/wechat/login?next=") + `) === 0`)
	tb.do(chromedp.Navigate(a + "/one"))
	tb.waitState("waiting")
	if loc := tb.location(); !strings.HasPrefix(loc, a+"/wechat/login?next=") {
		t.Fatalf("a after the logout on b: %q", loc)
	}
	tb.assertCleanConsole()
}
