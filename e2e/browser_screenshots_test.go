package e2e

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/wechat-login/caddy-wechat-login/internal/qrsvg"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

var screenshots = flag.Bool("screenshots", false, "write the login page screenshots under docs/")

// TestBrowserScreenshots renders the login page as a visitor of a real site
// sees it (no sandbox controls; website login on) at desktop and phone
// widths, in English and Chinese, and the code login of a subscription
// account's site, and writes docs/login-*.png. It runs with
//
//	cd e2e && go test -run TestBrowserScreenshots -screenshots
func TestBrowserScreenshots(t *testing.T) {
	if !*screenshots {
		t.Skip("writes docs/*.png; run with -screenshots")
	}
	fake := wechattest.NewServer(wechattest.Config{})
	t.Cleanup(fake.Close)
	const openID, openSecret = "wx00000000000000bb", "screenshot-website-secret"
	site := `	wechat_login {
		app_id ` + itAppID + `
		app_secret {env.IT_WECHAT_SECRET}
		token ` + itToken + `
		encoding_aes_key {env.IT_WECHAT_AES_KEY}
		session_key {env.IT_SESSION_KEY}
		open_app_id ` + openID + `
		open_app_secret ` + openSecret + `
		site_name "Example Docs"
		api_base ` + fake.URL + `
		oauth_base ` + fake.URL + `
		mp_base ` + fake.URL + `
	}
	respond "members only"`
	c := startCaddy(t, site, itEnv...)
	if err := fake.AddApp(wechattest.App{
		AppID: itAppID, AppSecret: itSecret, Token: itToken, EncodingAESKey: itAESKey,
		OriginalID: "gh_00000000aaaa", CallbackURL: c.BaseURL + "/wechat/callback", Mode: wechattest.Safe,
	}); err != nil {
		t.Fatal(err)
	}
	if err := fake.AddApp(wechattest.App{AppID: openID, AppSecret: openSecret, Kind: wechattest.WebsiteApp}); err != nil {
		t.Fatal(err)
	}

	codeBase := codeLoginShotSite(t, fake)

	_, file, _, _ := runtime.Caller(0)
	docs := filepath.Join(filepath.Dir(filepath.Dir(file)), "docs")
	if err := os.MkdirAll(docs, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, shot := range []struct {
		name          string
		width, height int
		lang          string
		dark          bool
		margin        float64
		code          bool // the code-login site
	}{
		{"login-desktop-en.png", 960, 800, "en-US,en", false, 40, false},
		{"login-desktop-zh.png", 960, 800, "zh-CN,zh", false, 40, false},
		{"login-desktop-en-dark.png", 960, 800, "en-US,en", true, 40, false},
		// A phone's browser outside WeChat, which cannot scan its own
		// screen: the page says what works there.
		{"login-phone-en.png", 390, 844, "en-US,en", false, 0, false},
		{"login-phone-zh.png", 390, 844, "zh-CN,zh", false, 0, false},
		// A subscription account, which WeChat allows no login QR codes:
		// the code to send it in chat.
		{"login-code-desktop-en.png", 960, 900, "en-US,en", false, 40, true},
		{"login-code-phone-zh.png", 390, 844, "zh-CN,zh", false, 0, true},
	} {
		t.Run(shot.name, func(t *testing.T) {
			opts := []chromedp.ExecAllocatorOption{chromedp.Flag("accept-lang", shot.lang)}
			if shot.margin == 0 {
				opts = append(opts, chromedp.UserAgent(uaPhoneSafari))
			}
			tb := newTab(t, shot.width, shot.height, opts...)
			if shot.dark {
				if _, err := chromedp.Call(tb.ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
					Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}},
				}); err != nil {
					t.Fatal(err)
				}
			}
			if shot.code {
				tb.do(chromedp.Navigate(codeBase + "/guide/"))
				tb.waitCode()
				// The account's QR code loaded, and the countdown ticked.
				tb.do(chromedp.Poll[chromedp.Void](`document.querySelector("#wl-steps img.follow").naturalWidth > 0 && document.getElementById("wl-countdown").textContent !== ""`))
			} else {
				tb.do(chromedp.Navigate(c.BaseURL + "/guide/"))
				tb.waitState("waiting")
				// The QR image loaded, and the countdown is past its first tick.
				tb.do(chromedp.Poll[chromedp.Void](`document.getElementById("wl-img").naturalWidth > 0 && document.getElementById("wl-countdown").textContent !== ""`),
					chromedp.Sleep(600*time.Millisecond)) // the QR's fade-in
			}

			png, err := chromedp.Run(tb.ctx, cardShot(shot.margin))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(docs, shot.name), png, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %d bytes", shot.name, len(png))
			tb.assertCleanConsole()
		})
	}
}

// codeLoginShotSite runs the site of a subscription account on fake, with
// code login only (the way such an account is set up) and the account's
// follow QR code served by the site, and returns its base URL.
func codeLoginShotSite(t *testing.T, fake *wechattest.Server) string {
	t.Helper()
	const appID, ghID = "wx00000000000000dd", "gh_00000000dddd"
	follow, err := qrsvg.SVG("http://weixin.qq.com/r/" + ghID)
	if err != nil {
		t.Fatal(err)
	}
	c := startCaddy(t, `	wechat_login {
		app_id `+appID+`
		app_secret {env.IT_WECHAT_SECRET}
		token `+itToken+`
		encoding_aes_key {env.IT_WECHAT_AES_KEY}
		session_key {env.IT_SESSION_KEY}
		methods code
		site_name "Example Docs"
		account_name "Example Docs"
		follow_qr /follow.svg
		public_paths /follow.svg
		api_base `+fake.URL+`
		oauth_base `+fake.URL+`
		mp_base `+fake.URL+`
	}
	@follow path /follow.svg
	header @follow Content-Type image/svg+xml
	respond @follow `+"`"+string(follow)+"`"+` 200
	respond "members only"`, itEnv...)
	if err := fake.AddApp(wechattest.App{
		AppID: appID, AppSecret: itSecret, Token: itToken, EncodingAESKey: itAESKey,
		OriginalID: ghID, CallbackURL: c.BaseURL + "/wechat/callback", Mode: wechattest.Safe,
		Account: wechattest.SubscriptionAccount,
	}); err != nil {
		t.Fatal(err)
	}
	return c.BaseURL
}

// cardShot captures the login card with margin pixels of page around it,
// the full width on a phone where the card fills the screen.
func cardShot(margin float64) chromedp.Action[[]byte] {
	return func(ctx context.Context, t *chromedp.Target) ([]byte, error) {
		// Bottom is where the card's content ends: on a phone the card
		// itself runs to the bottom of the screen.
		rect, err := chromedp.Evaluate[struct{ X, Y, W, H, VW, Bottom float64 }](`(function () {
			var main = document.querySelector("main"), r = main.getBoundingClientRect(), bottom = 0;
			for (var i = 0; i < main.children.length; i++) {
				bottom = Math.max(bottom, main.children[i].getBoundingClientRect().bottom);
			}
			return {X: r.left, Y: r.top, W: r.width, H: r.height, VW: document.documentElement.clientWidth, Bottom: bottom};
		})()`)(ctx, t)
		if err != nil {
			return nil, err
		}
		x, y := max(0, rect.X-margin), max(0, rect.Y-margin)
		w, h := min(rect.VW, rect.W+2*margin), rect.H+2*margin
		if margin == 0 {
			x, y, w, h = 0, 0, rect.VW, rect.Bottom+32
		}
		res, err := chromedp.Call(ctx, page.CaptureScreenshot, page.CaptureScreenshotParams{
			Format: page.CaptureScreenshotFormatPng,
			Clip:   &page.Viewport{X: x, Y: y, Width: w, Height: h, Scale: 1},
		})
		return res.Data, err
	}
}
