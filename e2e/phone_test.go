package e2e

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
)

// uaPhoneSafari is Safari on an iPhone: a phone's browser outside WeChat.
const uaPhoneSafari = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"

// TestPhoneBrowserLogin: a phone's browser outside WeChat, which cannot
// scan its own screen, is told what works: the code saves as a picture (a
// real PNG of the same code, to scan from the album in WeChat), or the page
// opens in WeChat. Every part of it passes the accessibility checks.
func TestPhoneBrowserLogin(t *testing.T) {
	t.Parallel()
	c := startBrowserCaddy(t)
	tb := newTab(t, 390, 844, chromedp.UserAgent(uaPhoneSafari))
	downloads := t.TempDir()
	if _, err := chromedp.Call(tb.ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads,
	}); err != nil {
		t.Fatal(err)
	}

	tb.do(chromedp.Navigate(c.BaseURL + "/orders"))
	tb.waitState("waiting")
	tb.do(chromedp.WaitVisible(chromedp.ID("wl-phone")))
	if hint := tb.text("#wl-phone"); !strings.Contains(hint, "album") || !strings.Contains(hint, "open this page in WeChat") {
		t.Fatalf("phone help %q", hint)
	}
	tb.assertAccessible("phone browser")
	tb.do(chromedp.Poll[chromedp.Void](`!document.getElementById("wl-save").disabled`, chromedp.WithPollingTimeout(10*time.Second)))
	tb.do(chromedp.Click(chromedp.ID("wl-save")))
	if s := tb.text("#wl-status"); !strings.HasPrefix(s, "Code saved") {
		t.Fatalf("status after saving %q", s)
	}
	var saved []byte
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(filepath.Join(downloads, "wechat-login.png")); err == nil && len(b) > 0 {
			saved = b
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	img, err := png.Decode(bytes.NewReader(saved))
	if err != nil {
		t.Fatalf("saved code is not a PNG (%d bytes): %v", len(saved), err)
	}
	if b := img.Bounds(); b.Dx() < 400 || b.Dx() != b.Dy() {
		t.Fatalf("saved code is %v, want a square big enough to scan", b)
	}
	// The saved picture is a QR code: dark and light modules, not a blank.
	dark, light := 0, 0
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y += 8 {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x += 8 {
			if r, _, _, _ := img.At(x, y).RGBA(); r < 0x4000 {
				dark++
			} else {
				light++
			}
		}
	}
	if dark < light/5 || light < dark/5 {
		t.Fatalf("saved picture has %d dark and %d light samples: not a code", dark, light)
	}
	// The same code still logs in (here through the sandbox's phone).
	tb.do(chromedp.Click(chromedp.ID("wl-simulate")))
	tb.assertGreeted(c.BaseURL, "qr")
	tb.assertCleanConsole()
}
