package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"
)

// The browser tests drive a real headless Chromium against the sandbox served
// by a real Caddy process: what a person trying the demo sees, with no mocks
// between the page's script and the server.

// chromiumPath finds Chromium, or skips the test: locally a missing browser
// is a setup matter, in CI it is a failure.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium not found, and CI=true: the browser tests must run in CI (scripts/install-test-deps installs Debian's chromium)")
	}
	t.Skip("chromium not found: install it (Debian: apt-get install chromium) or set CHROMIUM to run the browser tests")
	return ""
}

// browserSite is the protected site of the browser tests: the sandbox, a short
// QR lifetime, and a page that greets the user by identity.
func browserSite(name string) string {
	return `	wechat_login {
		sandbox
		site_name "` + name + `"
		qr_ttl 30s
	}
	header Content-Type "text/html; charset=utf-8"
	respond ` + "`" + `<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><title>Protected</title><h1 id="hello">Hello {http.auth.user.openid} via {http.auth.user.login_method}</h1>` + "`" + ` 200`
}

// tab is one browser tab with everything its pages wrote to the console.
type tab struct {
	t   *testing.T
	ctx context.Context

	mu        sync.Mutex
	console   []chromedp.ConsoleMessage
	qrPosts   int      // POST {prefix}/qr requests: each one may be a new login code
	codePosts int      // POST {prefix}/code requests: the same for code login
	requests  []string // the network log, for failure messages
}

// cspReporter makes every Content-Security-Policy violation a console error,
// whatever the browser's own logging of them.
const cspReporter = `document.addEventListener("securitypolicyviolation", function (e) {
	console.error("CSP violation: " + e.violatedDirective + " blocked " + e.blockedURI);
});`

// newTab starts a fresh Chromium (own profile, nothing shared between tests)
// and opens a tab of the given size.
func newTab(t *testing.T, width, height int, opts ...chromedp.ExecAllocatorOption) *tab {
	t.Helper()
	all := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
	)
	all = append(all, opts...)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), all...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(cancel)

	tb := &tab{t: t}
	// The first action starts the browser; it must run without a deadline,
	// which would otherwise bind the browser's life to it.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(int64(width), int64(height))); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	tb.watch(ctx)
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: cspReporter}); err != nil {
		t.Fatal(err)
	}
	tctx, tcancel := context.WithTimeout(ctx, 50*time.Second)
	t.Cleanup(tcancel)
	tb.ctx = tctx
	return tb
}

// watch records the console and the login-code requests of the tab.
func (tb *tab) watch(ctx context.Context) {
	start := time.Now()
	err := chromedp.Listen(ctx, func(ev any) {
		tb.mu.Lock()
		defer tb.mu.Unlock()
		switch ev := ev.(type) {
		case *network.EventRequestWillBeSent:
			tb.requests = append(tb.requests, fmt.Sprintf("%6dms %s %s %s", time.Since(start).Milliseconds(), ev.RequestID, ev.Request.Method, ev.Request.URL))
			if ev.Request.Method == "POST" {
				switch path := strings.SplitN(ev.Request.URL, "?", 2)[0]; {
				case strings.HasSuffix(path, "/wechat/qr"):
					tb.qrPosts++
				case strings.HasSuffix(path, "/wechat/code"):
					tb.codePosts++
				}
			}
		case *network.EventLoadingFailed:
			tb.requests = append(tb.requests, fmt.Sprintf("%6dms %s failed: %s", time.Since(start).Milliseconds(), ev.RequestID, ev.ErrorText))
		}
	})
	if err != nil {
		tb.t.Fatal(err)
	}
	messages := chromedp.Console(ctx)
	go func() {
		// Ends when the tab's context does.
		for m, err := range messages {
			if err != nil {
				return
			}
			tb.mu.Lock()
			tb.console = append(tb.console, m)
			tb.mu.Unlock()
		}
	}()
}

func (tb *tab) do(steps ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	if err := chromedp.Do(tb.ctx, steps...); err != nil {
		tb.t.Fatalf("%v\n%s", err, tb.dump())
	}
}

func (tb *tab) text(sel string) string {
	tb.t.Helper()
	s, err := chromedp.Run(tb.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		tb.t.Fatalf("text of %s: %v\n%s", sel, err, tb.dump())
	}
	return s
}

func (tb *tab) eval(js string) string {
	tb.t.Helper()
	s, err := chromedp.Run(tb.ctx, chromedp.Evaluate[string](js))
	if err != nil {
		tb.t.Fatalf("evaluate %s: %v\n%s", js, err, tb.dump())
	}
	return s
}

// dump describes the tab for a failure message.
func (tb *tab) dump() string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(tb.ctx), 3*time.Second)
	defer cancel()
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	tb.mu.Lock()
	defer tb.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "location: %s\npage text: %q\nrequests:\n  %s\nconsole:\n", loc, body, strings.Join(tb.requests, "\n  "))
	for _, m := range tb.console {
		fmt.Fprintf(&b, "  %s [%s] %s: %s\n", m.Type, m.Source, m.URL, m.Text)
	}
	return b.String()
}

// assertCleanConsole fails on any console error or warning, uncaught
// exception or CSP violation. Lines matching one of allowed are expected.
func (tb *tab) assertCleanConsole(allowed ...string) {
	tb.t.Helper()
	time.Sleep(100 * time.Millisecond) // let the last events arrive
	tb.mu.Lock()
	defer tb.mu.Unlock()
next:
	for _, m := range tb.console {
		if m.Type != chromedp.ConsoleError && m.Type != chromedp.ConsoleWarning && !m.IsException() &&
			!strings.Contains(m.Text, "Content Security Policy") {
			continue
		}
		for _, a := range allowed {
			if strings.Contains(m.URL+" "+m.Text, a) {
				continue next
			}
		}
		tb.t.Errorf("console %s [%s] at %s: %s", m.Type, m.Source, m.URL, m.Text)
	}
}

func (tb *tab) qrRequests() int {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return tb.qrPosts
}

// codeRequests counts the tab's requests for a code-login code.
func (tb *tab) codeRequests() int {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return tb.codePosts
}

// waitState waits for the login page's QR area to reach a state.
func (tb *tab) waitState(state string) {
	tb.t.Helper()
	tb.do(chromedp.WaitVisible(chromedp.CSS(`#wl-qr[data-state="` + state + `"]`)))
}

// assertGreeted checks that the tab shows the protected page, greeting the
// identity that the session cookie carries, logged in by method.
func (tb *tab) assertGreeted(base, method string) {
	tb.t.Helper()
	tb.do(chromedp.WaitVisible(chromedp.ID("hello")))
	loc, err := chromedp.Run(tb.ctx, chromedp.Location())
	if err != nil || !strings.HasPrefix(loc, base+"/") || strings.Contains(loc, "/wechat/") {
		tb.t.Fatalf("landed on %q (%v), want the protected page", loc, err)
	}
	raw, err := chromedp.Run(tb.ctx, chromedp.Evaluate[string](
		`fetch("/wechat/userinfo", {credentials: "same-origin"}).then(function (r) { return r.text(); })`, chromedp.EvalAwaitPromise))
	if err != nil {
		tb.t.Fatalf("userinfo: %v", err)
	}
	var id struct {
		OpenID string `json:"openid"`
		Method string `json:"method"`
		AppID  string `json:"appid"`
	}
	if err := json.Unmarshal([]byte(raw), &id); err != nil || id.OpenID == "" {
		tb.t.Fatalf("userinfo %q: %v", raw, err)
	}
	if want := "Hello " + id.OpenID + " via " + method; tb.text("#hello") != want {
		tb.t.Fatalf("greeting %q, want %q", tb.text("#hello"), want)
	}
}

func startBrowserCaddy(t *testing.T) *caddyProc {
	t.Helper()
	return startCaddy(t, browserSite("Browser Test"))
}

// TestBrowserQRLogin: a protected page sends the browser to the login page,
// which shows our own QR code; "Simulate scan" logs in and the browser lands
// on the protected page, greeted by its identity, with no reload by hand; and
// nothing on the way wrote a console error or broke the CSP.
func TestBrowserQRLogin(t *testing.T) {
	t.Parallel()
	c := startBrowserCaddy(t)
	tb := newTab(t, 1280, 800)

	tb.do(chromedp.Navigate(c.BaseURL + "/members/area?x=1"))
	tb.waitState("waiting")
	loc, _ := chromedp.Run(tb.ctx, chromedp.Location())
	if !strings.HasPrefix(loc, c.BaseURL+"/wechat/login?next=") {
		t.Fatalf("protected page went to %q, want the login page", loc)
	}
	// The QR code is our own SVG, fully loaded, and described for screen readers.
	img := tb.eval(`(function () { var i = document.getElementById("wl-img");
		return i.naturalWidth > 0 && i.complete ? new URL(i.src).pathname + " alt=" + i.alt : "not loaded"; })()`)
	if img != "/wechat/qr.svg alt=Login QR code: scan it with WeChat" {
		t.Fatalf("QR image: %q", img)
	}
	if live := tb.eval(`document.getElementById("wl-status").getAttribute("aria-live")`); live != "polite" {
		t.Fatalf("status aria-live %q", live)
	}
	if s := tb.text("#wl-status"); s != "Waiting for you to scan…" {
		t.Fatalf("status %q", s)
	}
	if cd := tb.text("#wl-countdown"); !strings.HasPrefix(cd, "Expires in 0:") {
		t.Fatalf("countdown %q", cd)
	}

	tb.do(chromedp.Click(chromedp.ID("wl-simulate")))
	tb.assertGreeted(c.BaseURL, "qr")
	if loc, _ := chromedp.Run(tb.ctx, chromedp.Location()); loc != c.BaseURL+"/members/area?x=1" {
		t.Fatalf("after login at %q, want the page first asked for", loc)
	}
	if n := tb.qrRequests(); n != 1 {
		t.Fatalf("%d login codes requested, want 1", n)
	}
	tb.assertCleanConsole()
}

// TestBrowserChineseAndKeyboard: Accept-Language picks Chinese, and the whole
// login works from the keyboard alone.
func TestBrowserChineseAndKeyboard(t *testing.T) {
	t.Parallel()
	c := startBrowserCaddy(t)
	tb := newTab(t, 390, 844, chromedp.Flag("accept-lang", "zh-CN,zh;q=0.9,en;q=0.5"), chromedp.Flag("lang", "zh-CN"))

	tb.do(chromedp.Navigate(c.BaseURL + "/"))
	tb.waitState("waiting")
	if lang := tb.eval(`document.documentElement.lang`); lang != "zh-CN" {
		t.Fatalf("html lang %q", lang)
	}
	if s := tb.text("#wl-status"); s != "等待扫码…" {
		t.Fatalf("status %q", s)
	}
	// Tab to the sandbox button and press Enter, as a keyboard user would.
	tb.do(chromedp.Focus(chromedp.ID("wl-user")), chromedp.KeyEvent("\t"))
	if f := tb.eval(`document.activeElement.id`); f != "wl-simulate" {
		t.Fatalf("Tab from the user list went to %q", f)
	}
	tb.do(chromedp.KeyEvent("\r"))
	tb.assertGreeted(c.BaseURL, "qr")
	tb.assertCleanConsole()
}

// TestBrowserExpiredCodeRefresh: when the code expires the page says so and
// offers one button, focused, that brings a new code without reloading the
// page; the new code logs in.
func TestBrowserExpiredCodeRefresh(t *testing.T) {
	t.Parallel()
	c := startBrowserCaddy(t)
	tb := newTab(t, 1280, 800)

	tb.do(chromedp.Navigate(c.BaseURL + "/"))
	tb.waitState("waiting")
	first := tb.eval(`document.getElementById("wl-img").src`)
	// Mark the document: a reload would lose the mark.
	tb.eval(`window.__sameDocument = "yes"`)

	// qr_ttl is 30s, the shortest the middleware allows: the server ends the
	// code and the page must notice by itself.
	tb.waitState("expired")
	if s := tb.text("#wl-status"); s != "This code has expired." {
		t.Fatalf("status %q", s)
	}
	if f := tb.eval(`document.activeElement.id`); f != "wl-retry" {
		t.Fatalf("focus on %q after expiry, want the refresh button", f)
	}
	tb.do(chromedp.Click(chromedp.ID("wl-retry")))
	tb.waitState("waiting")
	if second := tb.eval(`document.getElementById("wl-img").src`); second == first {
		t.Fatal("refresh showed the expired code again")
	}
	if tb.eval(`window.__sameDocument || "reloaded"`) != "yes" {
		t.Fatal("refresh reloaded the page")
	}
	tb.do(chromedp.Click(chromedp.ID("wl-simulate")))
	tb.assertGreeted(c.BaseURL, "qr")
	if n := tb.qrRequests(); n != 2 {
		t.Fatalf("%d login codes requested, want 2", n)
	}
	tb.assertCleanConsole()
}

// block makes the browser fail requests matching the URL patterns, as a
// dead network or a hostile proxy would; no patterns lifts the block.
func (tb *tab) block(patterns ...string) {
	tb.t.Helper()
	p := network.SetBlockedURLsParams{}
	for _, s := range patterns {
		p.URLPatterns = append(p.URLPatterns, &network.BlockPattern{URLPattern: s, Block: true})
	}
	if len(patterns) == 0 {
		// An empty list is left out of the command; an explicit "allow
		// everything" replaces the old list for sure.
		p.URLPatterns = []*network.BlockPattern{{URLPattern: "*://*:*/*", Block: false}}
	}
	if _, err := chromedp.Call(tb.ctx, network.SetBlockedURLs, p); err != nil {
		tb.t.Fatal(err)
	}
}

// TestBrowserFallbackToPlainPolling: with event streams and long-polls both
// failing (as behind a proxy that buffers or cuts them), the page falls back
// to plain polling and the login still completes, on the same code.
func TestBrowserFallbackToPlainPolling(t *testing.T) {
	t.Parallel()
	c := startBrowserCaddy(t)
	tb := newTab(t, 1280, 800)
	tb.block("*://*:*/wechat/events?*", "*://*:*/wechat/poll?*wait=*")

	tb.do(chromedp.Navigate(c.BaseURL + "/"))
	tb.waitState("waiting")
	// Three failed streams (2s apart) and three failed long-polls with
	// backoff bring plain polls.
	tb.do(chromedp.Poll[chromedp.Void](`performance.getEntriesByType("resource").some(function (e) {
		return e.name.indexOf("/wechat/poll?") >= 0 && e.name.indexOf("wait=") < 0; })`,
		chromedp.WithPollingInterval(200*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second)))
	tb.do(chromedp.Click(chromedp.ID("wl-simulate")))
	tb.assertGreeted(c.BaseURL, "qr")
	if n := tb.qrRequests(); n != 1 {
		t.Fatalf("%d login codes requested, want 1", n)
	}
	tb.assertCleanConsole("ERR_BLOCKED_BY_CLIENT", "/wechat/events", "wait=25")
}

// TestBrowserReconnectsAfterBlip: the server drops the event stream (a
// reload) while the network is briefly gone; the page says it is
// reconnecting, then carries on with the same code, and the login completes.
func TestBrowserReconnectsAfterBlip(t *testing.T) {
	t.Parallel()
	c := startBrowserCaddy(t)
	tb := newTab(t, 1280, 800)

	tb.do(chromedp.Navigate(c.BaseURL + "/"))
	tb.waitState("waiting")
	first := tb.eval(`document.getElementById("wl-img").src`)

	tb.block("*://*:*/wechat/*", "*://*:*/wechat/*?*")
	c.reload(browserSite("Browser Test, reloaded")) // ends the open event stream
	tb.do(chromedp.Poll[chromedp.Void](`document.getElementById("wl-status").textContent === "Connection lost. Reconnecting…"`,
		chromedp.WithPollingTimeout(15*time.Second)))
	tb.block()
	tb.do(chromedp.Poll[chromedp.Void](`document.getElementById("wl-status").textContent === "Waiting for you to scan…"`,
		chromedp.WithPollingTimeout(20*time.Second)))
	if now := tb.eval(`document.getElementById("wl-img").src`); now != first {
		t.Fatal("the page replaced its code after a blip")
	}
	tb.do(chromedp.Click(chromedp.ID("wl-simulate")))
	tb.assertGreeted(c.BaseURL, "qr")
	if n := tb.qrRequests(); n != 1 {
		t.Fatalf("%d login codes requested, want 1", n)
	}
	tb.assertCleanConsole("ERR_BLOCKED_BY_CLIENT", "/wechat/")
}

// TestBrowserPopupWebsiteLogin: with open_display popup, the website-login button opens WeChat's
// login in a popup; finishing it there closes the popup and the opener
// lands on the protected page.
func TestBrowserPopupWebsiteLogin(t *testing.T) {
	t.Parallel()
	c := startCaddy(t, strings.Replace(browserSite("Browser Test"), "sandbox\n", "sandbox\n\t\topen_display popup\n", 1))
	tb := newTab(t, 1280, 800)

	tb.do(chromedp.Navigate(c.BaseURL + "/account"))
	tb.waitState("waiting")
	popupID := chromedp.WaitNewTarget(tb.ctx, func(info *target.Info) bool {
		return strings.Contains(info.URL, "/wechat/")
	})
	tb.do(chromedp.Click(chromedp.ID("wl-open")))
	var id target.ID
	select {
	case v, ok := <-popupID:
		if !ok {
			t.Fatal("no popup")
		}
		id = v
	case <-tb.ctx.Done():
		t.Fatalf("no popup opened\n%s", tb.dump())
	}
	popup, cancel := chromedp.NewContext(tb.ctx, chromedp.WithTargetID(id))
	defer cancel()
	// The sandbox's website-login page: pick the test user who "scans".
	if err := chromedp.Do(popup, chromedp.Click(chromedp.CSS(`button[name="user"][value="alice"]`))); err != nil {
		t.Fatalf("popup: %v", err)
	}
	tb.assertGreeted(c.BaseURL, "open")
	if loc, _ := chromedp.Run(tb.ctx, chromedp.Location()); loc != c.BaseURL+"/account" {
		t.Fatalf("opener at %q, want /account", loc)
	}
	tb.assertCleanConsole()
}

// TestBrowserInsideWeChat: a browser whose User-Agent says it is WeChat's
// never sees the QR code: it goes through in-WeChat authorization and comes
// back logged in.
func TestBrowserInsideWeChat(t *testing.T) {
	t.Parallel()
	c := startBrowserCaddy(t)
	const ua = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36 MicroMessenger/8.0.50.2701(0x28003237) NetType/WIFI Language/zh_CN"
	tb := newTab(t, 390, 844, chromedp.UserAgent(ua))

	tb.do(chromedp.Navigate(c.BaseURL + "/inbox"))
	if loc, _ := chromedp.Run(tb.ctx, chromedp.Location()); strings.Contains(loc, "/wechat/login") {
		t.Fatalf("WeChat's browser was shown the QR login page (%s)", loc)
	}
	// snsapi_base is silent in real WeChat; the sandbox asks which test
	// user holds the phone.
	tb.do(chromedp.Click(chromedp.CSS(`button[name="user"][value="bob"]`)))
	tb.assertGreeted(c.BaseURL, "oauth")
	if loc, _ := chromedp.Run(tb.ctx, chromedp.Location()); loc != c.BaseURL+"/inbox" {
		t.Fatalf("at %q, want /inbox", loc)
	}
	// The sandbox's stand-in for WeChat's page has no icon, so the browser
	// asks the protected site for one and is refused.
	tb.assertCleanConsole("/favicon.ico")
}

// TestBrowserConfirmInChat: with confirm_in_chat, "Simulate scan" only makes
// the login "scanned" (the page says so and stays), and the sandbox's reply
// of the confirmation code from the scan's chat message completes it.
func TestBrowserConfirmInChat(t *testing.T) {
	t.Parallel()
	c := startCaddy(t, strings.Replace(browserSite("Confirm Test"), "sandbox\n", "sandbox\n\t\tconfirm_in_chat\n", 1))
	tb := newTab(t, 1280, 800)

	tb.do(chromedp.Navigate(c.BaseURL + "/members"))
	tb.waitState("waiting")
	tb.do(chromedp.Click(chromedp.ID("wl-simulate")))
	tb.waitState("scanned")
	if s := tb.text("#wl-status"); s != "Scanned. Confirm the login on your phone…" {
		t.Fatalf("status after the scan %q", s)
	}
	if b := tb.text("#wl-simulate"); b != "Simulate replying the code in WeChat" {
		t.Fatalf("sandbox button %q", b)
	}
	if loc, _ := chromedp.Run(tb.ctx, chromedp.Location()); !strings.Contains(loc, "/wechat/login") {
		t.Fatalf("left the login page before confirming: %q", loc)
	}
	tb.do(chromedp.Click(chromedp.ID("wl-simulate")))
	tb.assertGreeted(c.BaseURL, "qr")
	tb.assertCleanConsole()
}
