package e2e

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
)

// Code login: for an Official Account that WeChat refuses parametric QR
// codes (48001, as subscription accounts), the login page shows a code that
// the user sends to the account in chat.

// codeSite is the protected site of the code-login tests: the browser
// tests' site with the sandbox line replaced by options (sandbox
// subscription, methods …), and codes that last the default 5 minutes (a
// browser asking again gets its pending code back only while it has 30
// seconds left).
func codeSite(name string, options ...string) string {
	site := strings.Replace(browserSite(name), "\t\tsandbox\n", "\t\t"+strings.Join(options, "\n\t\t")+"\n", 1)
	return strings.Replace(site, "\t\tqr_ttl 30s\n", "", 1)
}

// groupedCode is a login code as the page shows it: ten digits in two
// groups of five.
var groupedCode = regexp.MustCompile(`^[0-9]{5} [0-9]{5}$`)

// visible reports whether the element with id takes up room on the page.
func (tb *tab) visible(id string) bool {
	tb.t.Helper()
	return tb.eval(`(function () { var e = document.getElementById(`+jsString(id)+`);
		return String(!!e && e.getClientRects().length > 0 && getComputedStyle(e).visibility !== "hidden"); })()`) == "true"
}

// waitCode waits for the login page to show a login code to send, and
// returns it as shown.
func (tb *tab) waitCode() string {
	tb.t.Helper()
	tb.do(chromedp.WaitVisible(chromedp.CSS(`#wl-qr[data-kind="code"][data-state="waiting"] #wl-digits`)))
	shown := tb.text("#wl-digits")
	if !groupedCode.MatchString(shown) {
		tb.t.Fatalf("login code shown as %q, want ten digits in groups of five", shown)
	}
	return shown
}

// assertCodeView checks what the page shows next to a login code: the
// steps naming the account, the countdown, no QR code and no phone help.
func (tb *tab) assertCodeView(account string) {
	tb.t.Helper()
	for _, id := range []string{"wl-code", "wl-steps", "wl-copy-code", "wl-timer"} {
		if !tb.visible(id) {
			tb.t.Errorf("#%s is not shown next to the login code", id)
		}
	}
	for _, id := range []string{"wl-img", "wl-scan-hint"} {
		if tb.visible(id) {
			tb.t.Errorf("#%s is shown next to the login code", id)
		}
	}
	steps := tb.text("#wl-steps")
	if !strings.Contains(steps, account) || !strings.Contains(steps, "Send it the code above") {
		tb.t.Errorf("steps %q do not say to follow %q and send the code", steps, account)
	}
	if s := tb.text("#wl-status"); s != "Waiting for your message in WeChat…" {
		tb.t.Errorf("status %q", s)
	}
	if cd := tb.text("#wl-countdown"); !strings.HasPrefix(cd, "Expires in ") {
		tb.t.Errorf("countdown %q", cd)
	}
}

// TestBrowserCodeLogin: on the sandbox run as a subscription account, a
// protected page sends the browser to the login page, whose QR code
// WeChat refuses: the page moves to a login code by itself and says why.
// A reload within the server's memory of the refusal starts with the code
// (the same one: it is still pending for this browser) and asks for no QR
// code. The test user then follows the account and sends the code, as
// shown, from the fake WeChat's phone page in another browser, and the
// waiting page lands on the page first asked for, logged in by code.
func TestBrowserCodeLogin(t *testing.T) {
	t.Parallel()
	c := startCaddy(t, codeSite("Code Test", "sandbox subscription"))
	tb := newTab(t, 1280, 900)

	tb.do(chromedp.Navigate(c.BaseURL + "/members/area?x=1"))
	if loc := tb.location(); !strings.HasPrefix(loc, c.BaseURL+"/wechat/login?next=") {
		t.Fatalf("protected page went to %q, want the login page", loc)
	}
	shown := tb.waitCode()
	if n, m := tb.qrRequests(), tb.codeRequests(); n != 1 || m != 1 {
		t.Fatalf("%d QR and %d login-code requests, want one of each (the QR refused, then the code)", n, m)
	}
	tb.assertCodeView("WeChat Login Sandbox")
	if !tb.visible("wl-note") {
		t.Error("the page does not say why it shows a code")
	} else if note := tb.text("#wl-note"); !strings.Contains(note, "cannot show a login QR code") {
		t.Errorf("note %q", note)
	}
	if tb.visible("wl-switch") {
		t.Error("the page offers the QR code that WeChat refused")
	}
	follow := tb.eval(`(function () { var i = document.querySelector("#wl-steps img.follow");
		return i && i.complete && i.naturalWidth > 0 ? new URL(i.src).pathname : "not loaded"; })()`)
	if follow != "/wechat/sandbox/follow.svg" {
		t.Fatalf("follow QR: %q", follow)
	}
	if b := tb.text("#wl-simulate"); b != "Simulate sending the code" {
		t.Errorf("sandbox button %q", b)
	}

	// The copy button copies the digits alone.
	for _, name := range []string{"clipboard-read", "clipboard-write"} {
		if _, err := chromedp.CallBrowser(tb.ctx, browser.SetPermission, browser.SetPermissionParams{
			Permission: &browser.PermissionDescriptor{Name: name}, Setting: browser.PermissionSettingGranted, Origin: c.BaseURL,
		}); err != nil {
			t.Fatal(err)
		}
	}
	tb.do(chromedp.Click(chromedp.ID("wl-copy-code")))
	tb.waitFor(`document.getElementById("wl-status").textContent === "Code copied."`)
	copied, err := chromedp.Run(tb.ctx, chromedp.Evaluate[string](`navigator.clipboard.readText()`, chromedp.EvalAwaitPromise))
	if err != nil || copied != strings.ReplaceAll(shown, " ", "") {
		t.Fatalf("copied %q (%v), want the code %q without its space", copied, err, shown)
	}

	// The server remembers the refusal: a reload starts with the code.
	tb.do(chromedp.Reload())
	if again := tb.waitCode(); again != shown {
		t.Fatalf("after a reload the page shows %q, want the pending %q", again, shown)
	}
	if n, m := tb.qrRequests(), tb.codeRequests(); n != 1 || m != 2 {
		t.Fatalf("after a reload: %d QR and %d login-code requests, want 1 and 2", n, m)
	}
	if !tb.visible("wl-note") || tb.visible("wl-switch") {
		t.Error("after a reload: the note is hidden or a QR code is offered")
	}
	tb.assertCodeView("WeChat Login Sandbox")

	// Alice's phone: she does not follow the account yet, so she cannot
	// send it anything; she follows, then sends the code as shown.
	phone, cancel := chromedp.NewContext(tb.ctx, chromedp.WithNewBrowserContext())
	defer cancel()
	phoneDo := func(steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(phone, steps...); err != nil {
			t.Fatalf("phone: %v\nlogin page:\n%s", err, tb.dump())
		}
	}
	phoneDo(chromedp.Navigate(c.BaseURL+"/wechat/sandbox/sandbox/phone?user=alice"),
		chromedp.WaitVisible(chromedp.CSS(`main[data-page="phone"][data-following="false"]`)))
	phoneDo(chromedp.Click(chromedp.CSS(`button[name="follow"][value="1"]`)),
		chromedp.WaitVisible(chromedp.CSS(`main[data-page="phone"][data-following="true"] input[name="content"]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name="content"]`), shown),
		chromedp.Submit(chromedp.CSS(`input[name="content"]`)))

	tb.assertGreeted(c.BaseURL, "code")
	if loc := tb.location(); loc != c.BaseURL+"/members/area?x=1" {
		t.Fatalf("after login at %q, want the page first asked for", loc)
	}
	// The phone's chat, once the phone is back on it from sending: the
	// code sent, and the account's answer naming the site.
	var chat string
	for deadline := time.Now().Add(15 * time.Second); ; {
		chat, _ = chromedp.Run(phone, chromedp.Evaluate[string](`(function () {
			var s = document.querySelector("main[data-page=phone] section[data-chat]"); return s ? s.textContent : ""; })()`))
		if strings.Contains(chat, shown) && strings.Contains(chat, "logged in to Code Test") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("phone chat %q lacks the code sent or the reply naming the site", chat)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The QR code WeChat refused (502), as the browser logs it.
	tb.assertCleanConsole("/wechat/qr Failed to load resource: the server responded with a status of 502")
}

// TestBrowserCodeLoginSwitch: a site whose account may make QR codes and
// offers code login too starts with the QR code and a button to switch;
// the button moves to a code and back, and the code logs in, here through the sandbox's button,
// which makes the chosen test user follow the account and send the code.
func TestBrowserCodeLoginSwitch(t *testing.T) {
	t.Parallel()
	c := startCaddy(t, codeSite("Switch Test", "sandbox", "methods qr code", `account_name "Switch Account"`))
	tb := newTab(t, 1280, 900)

	tb.do(chromedp.Navigate(c.BaseURL + "/orders"))
	tb.do(chromedp.WaitVisible(chromedp.CSS(`#wl-qr[data-kind="qr"][data-state="waiting"] #wl-img`)))
	for _, id := range []string{"wl-code", "wl-steps", "wl-note"} {
		if tb.visible(id) {
			t.Errorf("#%s is shown next to the QR code", id)
		}
	}
	if s := tb.text("#wl-switch"); !tb.visible("wl-switch") || s != "Log in with a code instead" {
		t.Fatalf("switch button %q (shown %v)", s, tb.visible("wl-switch"))
	}

	tb.do(chromedp.Click(chromedp.ID("wl-switch")))
	tb.waitCode()
	tb.assertCodeView("Switch Account")
	if s := tb.text("#wl-switch"); s != "Scan a QR code instead" {
		t.Fatalf("switch button in the code view: %q", s)
	}
	if tb.visible("wl-note") {
		t.Error("the page says the QR code is unavailable, but it is not")
	}
	if f := tb.eval(`document.activeElement.id`); f != "wl-qr" {
		t.Errorf("focus on %q after switching, want the login area", f)
	}

	tb.do(chromedp.Click(chromedp.ID("wl-switch")))
	tb.do(chromedp.WaitVisible(chromedp.CSS(`#wl-qr[data-kind="qr"][data-state="waiting"] #wl-img`)))
	if tb.eval(`document.getElementById("wl-img").complete && document.getElementById("wl-img").naturalWidth > 0 ? "loaded" : "no"`) != "loaded" {
		t.Error("back to the QR code: no QR image")
	}
	if tb.visible("wl-code") || tb.visible("wl-steps") {
		t.Error("the code view stays on screen with the QR code")
	}

	tb.do(chromedp.Click(chromedp.ID("wl-switch")))
	tb.waitCode()
	if n, m := tb.qrRequests(), tb.codeRequests(); n != 2 || m != 2 {
		t.Errorf("%d QR and %d login-code requests, want 2 of each", n, m)
	}
	tb.do(chromedp.SetValue(chromedp.ID("wl-user"), "alice"), chromedp.Click(chromedp.ID("wl-simulate")))
	tb.assertGreeted(c.BaseURL, "code")
	if loc := tb.location(); loc != c.BaseURL+"/orders" {
		t.Fatalf("after login at %q, want /orders", loc)
	}
	tb.assertCleanConsole()
}
