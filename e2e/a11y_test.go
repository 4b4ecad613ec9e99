package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

// axe-core, the accessibility checker, is fetched from the npm registry the
// first time (the same way the test command fetches everything else) and
// checked against the registry's published digest; it is not kept in this
// repository.
const (
	axeVersion   = "4.14.1"
	axeTarball   = "https://registry.npmjs.org/axe-core/-/axe-core-" + axeVersion + ".tgz"
	axeIntegrity = "sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
)

var axeOnce struct {
	sync.Once
	src string
	err error
}

// axeSource returns axe.min.js, from the user cache or the registry.
func axeSource(t *testing.T) string {
	t.Helper()
	axeOnce.Do(func() { axeOnce.src, axeOnce.err = loadAxe() })
	if axeOnce.err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("axe-core: %v", axeOnce.err)
		}
		t.Skipf("axe-core unavailable (%v): the accessibility checks need the npm registry once", axeOnce.err)
	}
	return axeOnce.src
}

func loadAxe() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	cached := filepath.Join(dir, "wechat-login-tests", "axe-core-"+axeVersion+".tgz")
	tgz, err := os.ReadFile(cached)
	if err != nil || checkIntegrity(tgz) != nil {
		client := &http.Client{Timeout: 60 * time.Second}
		resp, err := client.Get(axeTarball)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("GET %s: %s", axeTarball, resp.Status)
		}
		if tgz, err = io.ReadAll(io.LimitReader(resp.Body, 16<<20)); err != nil {
			return "", err
		}
		if err := checkIntegrity(tgz); err != nil {
			return "", err
		}
		_ = os.MkdirAll(filepath.Dir(cached), 0o755)
		_ = os.WriteFile(cached, tgz, 0o644)
	}
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		return "", err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err != nil {
			return "", fmt.Errorf("axe.min.js not in the package: %v", err)
		}
		if h.Name == "package/axe.min.js" {
			b, err := io.ReadAll(tr)
			return string(b), err
		}
	}
}

func checkIntegrity(b []byte) error {
	sum := sha512.Sum512(b)
	if got := "sha512-" + base64.StdEncoding.EncodeToString(sum[:]); got != axeIntegrity {
		return fmt.Errorf("axe-core package digest %s, want %s", got, axeIntegrity)
	}
	return nil
}

// axeViolation is the part of axe's result a failure message needs.
type axeViolation struct {
	ID    string `json:"id"`
	Help  string `json:"help"`
	Nodes []struct {
		Target  []any  `json:"target"`
		Summary string `json:"failureSummary"`
	} `json:"nodes"`
}

// assertAccessible runs axe-core (WCAG 2.1 A and AA, and best practices)
// on the tab's page as it is now, and fails on any violation.
func (tb *tab) assertAccessible(state string) {
	tb.t.Helper()
	// Evaluated through the DevTools protocol, so the page's
	// Content-Security-Policy (rightly) does not apply to the checker.
	tb.eval(axeSource(tb.t) + `; "loaded"`)
	raw, err := chromedp.Run(tb.ctx, chromedp.Evaluate[string](`axe.run(document, {
		runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]},
		resultTypes: ["violations"]
	}).then(function (r) { return JSON.stringify(r.violations); })`, chromedp.EvalAwaitPromise))
	if err != nil {
		tb.t.Fatalf("%s: axe: %v\n%s", state, err, tb.dump())
	}
	var vs []axeViolation
	if err := json.Unmarshal([]byte(raw), &vs); err != nil {
		tb.t.Fatalf("%s: axe result %q: %v", state, raw, err)
	}
	for _, v := range vs {
		var where []string
		for _, n := range v.Nodes {
			where = append(where, fmt.Sprintf("%v: %s", n.Target, strings.ReplaceAll(n.Summary, "\n", " ")))
		}
		tb.t.Errorf("%s: %s (%s)\n    %s", state, v.ID, v.Help, strings.Join(where, "\n    "))
	}
}

// TestLoginPageAccessible: every state of the login page (the embedded
// website QR and code login among them), in both
// languages, on a desktop and a phone, light and dark, has no violation axe
// can find.
func TestLoginPageAccessible(t *testing.T) {
	t.Parallel()
	confirm := startCaddy(t, strings.Replace(browserSite("Accessible"), "sandbox\n", "sandbox\n\t\tconfirm_in_chat\n", 1))
	refusing := startCaddy(t, strings.Replace(browserSite("Accessible"), "sandbox\n", "sandbox\n\t\tallow_openids nobody\n", 1))
	// Code login: an account WeChat refuses QR codes, and one offering both.
	subscription := startCaddy(t, codeSite("Accessible", "sandbox subscription"))
	both := startCaddy(t, codeSite("Accessible", "sandbox", "methods qr code", `account_name "Accessible Account"`))
	for _, tc := range []struct {
		name          string
		width, height int
		lang          string
		dark          bool
	}{
		{"desktop en", 1280, 800, "en-US", false},
		{"phone zh", 390, 844, "zh-CN", false},
		{"desktop zh dark", 1280, 800, "zh-CN", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tb := newTab(t, tc.width, tc.height, chromedp.Flag("accept-lang", tc.lang+";q=1"), chromedp.Flag("lang", tc.lang))
			if tc.dark {
				if _, err := chromedp.Call(tb.ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
					Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}},
				}); err != nil {
					t.Fatal(err)
				}
			}
			tb.do(chromedp.Navigate(confirm.BaseURL + "/members"))
			tb.waitState("waiting")
			tb.assertAccessible("waiting")
			tb.do(chromedp.Click(chromedp.ID("wl-simulate")))
			tb.waitState("scanned")
			tb.assertAccessible("scanned")

			tb.do(chromedp.Navigate(refusing.BaseURL + "/members"))
			tb.waitState("waiting")
			tb.do(chromedp.Click(chromedp.ID("wl-simulate")))
			tb.waitState("denied")
			tb.assertAccessible("denied")

			// WeChat refusing login codes, as far as the page can tell.
			tb.block("*://*:*/wechat/qr")
			tb.do(chromedp.Navigate(confirm.BaseURL + "/members"))
			tb.waitState("error")
			tb.assertAccessible("error")
			tb.block()

			// Website login embedded in the page: WeChat's QR in a frame.
			tb.do(chromedp.Navigate(confirm.BaseURL + "/members"))
			tb.waitState("waiting")
			tb.do(chromedp.Click(chromedp.ID("wl-open")))
			tb.do(chromedp.WaitVisible(chromedp.CSS(`#wl-frame[data-state="waiting"] iframe`)))
			tb.assertAccessible("embedded QR")

			// Code login: the page moved to a code by itself, WeChat
			// refusing the account QR codes; then a site offering both,
			// on its QR code and on the code chosen with the switch.
			tb.do(chromedp.Navigate(subscription.BaseURL + "/members"))
			tb.waitCode()
			tb.do(chromedp.WaitVisible(chromedp.ID("wl-note")))
			tb.assertAccessible("code login after the QR refusal")
			tb.do(chromedp.Navigate(both.BaseURL + "/members"))
			tb.waitState("waiting")
			tb.do(chromedp.WaitVisible(chromedp.ID("wl-switch")))
			tb.assertAccessible("QR code with the switch to a code")
			tb.do(chromedp.Click(chromedp.ID("wl-switch")))
			tb.waitCode()
			tb.assertAccessible("code login chosen")

			// A page of the OAuth flows: a callback that went wrong.
			tb.do(chromedp.Navigate(confirm.BaseURL + "/wechat/oauth/callback?state=0123456789abcdef0123456789abcdef&code=x"))
			tb.do(chromedp.WaitVisible(chromedp.CSS("main")))
			tb.assertAccessible("oauth error page")
		})
	}
}

// TestExpiredCodeAccessible: the expired state of a QR code and of a login
// code, this one in a phone's browser (qr_ttl is 30 s, the shortest
// allowed: this test waits for it).
func TestExpiredCodeAccessible(t *testing.T) {
	t.Parallel()
	t.Run("QR code", func(t *testing.T) {
		t.Parallel()
		c := startBrowserCaddy(t)
		tb := newTab(t, 1280, 800)
		tb.do(chromedp.Navigate(c.BaseURL + "/"))
		tb.waitState("expired")
		tb.assertAccessible("expired")
	})
	t.Run("login code on a phone", func(t *testing.T) {
		t.Parallel()
		c := startCaddy(t, strings.Replace(browserSite("Accessible"), "sandbox\n", "sandbox subscription\n", 1))
		tb := newTab(t, 390, 844, chromedp.UserAgent(uaPhoneSafari))
		tb.do(chromedp.Navigate(c.BaseURL + "/"))
		tb.waitCode()
		if tb.visible("wl-phone") {
			t.Error("the help for scanning a QR code from a phone's own screen is shown next to a login code")
		}
		tb.assertAccessible("login code on a phone")
		tb.waitState("expired")
		if s := tb.text("#wl-status"); s != "This login code has expired." {
			t.Errorf("status %q", s)
		}
		if b := tb.text("#wl-retry"); b != "Get a new code" {
			t.Errorf("refresh button %q", b)
		}
		tb.assertAccessible("expired login code")
	})
}
