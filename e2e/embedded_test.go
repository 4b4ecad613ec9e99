package e2e

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
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

// TestBrowserEmbeddedCrossSite: WeChat's page on another site than ours
// (a fake WeChat at wechat.test, the site at 127.0.0.1), as in production.
// The frame's callback request, sent there from WeChat's site, does not
// carry our SameSite=Lax binding cookie — Chromium says it withheld it —
// and the login still completes, bound through the page, which never
// leaves the site.
func TestBrowserEmbeddedCrossSite(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fakeOrigin := fmt.Sprintf("http://wechat.test:%d", ln.Addr().(*net.TCPAddr).Port)
	platform, err := wechattest.New(wechattest.Config{BaseURL: fakeOrigin})
	if err != nil {
		t.Fatal(err)
	}
	fake := &http.Server{Handler: platform, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = fake.Serve(ln) }()
	t.Cleanup(func() { _ = fake.Close() })

	const appID, secret = "wx00000000000000cc", "cross-site-website-secret-0123"
	c := startCaddy(t, `	wechat_login {
		open_app_id `+appID+`
		open_app_secret `+secret+`
		session_key {env.IT_SESSION_KEY}
		api_base http://`+ln.Addr().String()+`
		oauth_base `+fakeOrigin+`
	}
	header Content-Type "text/html; charset=utf-8"
	respond `+"`"+`<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><title>Protected</title><h1 id="hello">Hello {http.auth.user.openid} via {http.auth.user.login_method}</h1>`+"`"+` 200`, itEnv...)
	site, _ := url.Parse(c.BaseURL)
	if err := platform.AddApp(wechattest.App{AppID: appID, AppSecret: secret, Kind: wechattest.WebsiteApp, RedirectDomains: []string{site.Host}}); err != nil {
		t.Fatal(err)
	}

	// WeChat's frame stays in the page's renderer (no site isolation), so
	// that the test can click in it as a person would; cookies are decided
	// by the network stack all the same.
	tb := newTab(t, 1280, 900, chromedp.Flag("host-resolver-rules", "MAP wechat.test 127.0.0.1"),
		chromedp.Flag("disable-site-isolation-trials", true),
		chromedp.Flag("disable-features", "Translate,BlinkGenPropertyTrees,IsolateOrigins,site-per-process"))
	var top topURLs
	top.watch(tb)
	// What Chromium did with each cookie of the frame's callback request.
	var mu sync.Mutex
	callbackIDs := map[network.RequestID]bool{}
	var withheld, sent []string
	if err := chromedp.Listen(tb.ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *network.EventRequestWillBeSent:
			if strings.HasPrefix(ev.Request.URL, c.BaseURL+"/wechat/oauth/callback?") {
				callbackIDs[ev.RequestID] = true
			}
		case *network.EventRequestWillBeSentExtraInfo:
			for _, ac := range ev.AssociatedCookies {
				entry := fmt.Sprintf("%s %s %v", ev.RequestID, ac.Cookie.Name, ac.BlockedReasons)
				if len(ac.BlockedReasons) > 0 {
					withheld = append(withheld, entry)
				} else {
					sent = append(sent, entry)
				}
			}
		}
	}); err != nil {
		t.Fatal(err)
	}

	tb.do(chromedp.Navigate(c.BaseURL + "/orders"))
	// A site with website login alone shows the frame at once.
	tb.clickInFrame(`button[name="user"][value="alice"]`)
	tb.assertGreeted(c.BaseURL, "open")
	for _, u := range top.list() {
		if !strings.HasPrefix(u, c.BaseURL+"/") || strings.Contains(u, "/oauth/") {
			t.Fatalf("the top-level page went to %q: %v", u, top.list())
		}
	}

	mu.Lock()
	defer mu.Unlock()
	var callbackWithheld, callbackSent int
	for id := range callbackIDs {
		for _, e := range withheld {
			if strings.HasPrefix(e, string(id)+" wechat_oauth ") && strings.Contains(e, "SameSiteLax") {
				callbackWithheld++
			}
		}
		for _, e := range sent {
			if strings.HasPrefix(e, string(id)+" wechat_oauth ") {
				callbackSent++
			}
		}
	}
	if len(callbackIDs) != 1 || callbackWithheld != 1 || callbackSent != 0 {
		t.Fatalf("callback requests %d; binding cookie withheld %d, sent %d (want 1, 0)\nwithheld: %v\nsent: %v",
			len(callbackIDs), callbackWithheld, callbackSent, withheld, sent)
	}
}
