package e2e

import (
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// topURLs records every URL the tab's top-level frame navigates to.
type topURLs struct {
	mu   sync.Mutex
	urls []string
}

func (tu *topURLs) watch(tb *tab) {
	if err := chromedp.Listen(tb.ctx, func(ev any) {
		if ev, ok := ev.(*page.EventFrameNavigated); ok && ev.Frame.ParentID == "" {
			tu.mu.Lock()
			tu.urls = append(tu.urls, ev.Frame.URL)
			tu.mu.Unlock()
		}
	}); err != nil {
		tb.t.Fatal(err)
	}
}

func (tu *topURLs) list() []string {
	tu.mu.Lock()
	defer tu.mu.Unlock()
	return append([]string(nil), tu.urls...)
}

// clickInFrame clicks the element sel inside the login page's website-login
// frame.
func (tb *tab) clickInFrame(sel string) {
	tb.t.Helper()
	tb.do(chromedp.WaitVisible(chromedp.CSS(`#wl-frame[data-state="waiting"] iframe`)))
	frames, err := chromedp.Run(tb.ctx, chromedp.Nodes(chromedp.CSS(`#wl-frame iframe`)))
	if err != nil || len(frames) != 1 {
		tb.t.Fatalf("frame: %v %d\n%s", err, len(frames), tb.dump())
	}
	tb.do(chromedp.Click(chromedp.CSS(sel), chromedp.FromNode(frames[0])))
}

// TestBrowserEmbeddedWebsiteLogin: on the sandbox, the website-login button
// shows WeChat's website-login QR in a frame on the login page; the "scan"
// inside the frame logs the browser in without the page ever leaving for
// WeChat's pages: the frame hands its result to the page, which redeems it
// and goes on to the page first asked for, greeted by its identity.
func TestBrowserEmbeddedWebsiteLogin(t *testing.T) {
	t.Parallel()
	c := startBrowserCaddy(t)
	tb := newTab(t, 1280, 900)
	var top topURLs
	top.watch(tb)

	tb.do(chromedp.Navigate(c.BaseURL + "/account?tab=2"))
	tb.waitState("waiting")
	tb.do(chromedp.Click(chromedp.ID("wl-open")))
	tb.clickInFrame(`button[name="user"][value="alice"]`)
	tb.assertGreeted(c.BaseURL, "open")
	if loc := tb.location(); loc != c.BaseURL+"/account?tab=2" {
		t.Fatalf("landed on %q, want the page first asked for", loc)
	}
	urls := top.list()
	for _, u := range urls {
		if !strings.HasPrefix(u, c.BaseURL+"/") || strings.Contains(u, "/sandbox/") || strings.Contains(u, "/oauth/") {
			t.Fatalf("the top-level page went to %q: %v", u, urls)
		}
	}
	if len(urls) != 2 {
		t.Fatalf("top-level navigations %v, want the login page and the page asked for", urls)
	}
	// The frame is sandboxed so that WeChat's page cannot move this page
	// (no allow-top-navigation); it keeps its own origin, which WeChat's
	// page needs, and so does our callback, which the frame ends on. For
	// same-origin content Chromium warns that such a sandbox can be left,
	// which is expected: the only same-origin content is our own.
	tb.assertCleanConsole("can escape its sandboxing")
}
