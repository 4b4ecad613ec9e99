package middleware

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"html"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/wechat-login/caddy-wechat-login/internal/loginpage"
)

// pageFor serves GET target from a middleware configured by cfg (on top
// of a valid minimal configuration), with the given request headers.
// sandboxHeader makes pageFor serve the request as the Caddy module's
// sandbox does, with these comma-separated test users.
const sandboxHeader = "Test-Sandbox-Users"

func pageFor(t *testing.T, cfg func(*Config), target string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	c := Config{
		AppID:       testAppID,
		AppSecret:   testSecret,
		PushToken:   testToken,
		SessionKeys: [][]byte{testSessionKey},
		SiteName:    "Example",
	}
	if cfg != nil {
		cfg(&c)
	}
	mw, err := New(c)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = mw.Close() })
	req := httptest.NewRequest(http.MethodGet, target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if req.Header.Get(sandboxHeader) != "" {
		req = req.WithContext(loginpage.WithSandbox(req.Context(), loginpage.Sandbox{
			ScanURL: "/wechat/sandbox/scan", Users: strings.Split(req.Header.Get(sandboxHeader), ","),
		}))
	}
	rec := httptest.NewRecorder()
	mw.Handler(http.NotFoundHandler()).ServeHTTP(rec, req)
	return rec
}

var (
	cspNonce = regexp.MustCompile(`script-src 'nonce-([A-Za-z0-9_-]+)'`)
	openTags = regexp.MustCompile(`<(script|style)\b[^>]*>`)
)

// TestLoginPageCSP: a strict policy with a fresh nonce per response, carried
// by every script and style element, and nothing that loads from elsewhere.
func TestLoginPageCSP(t *testing.T) {
	first := pageFor(t, nil, "/wechat/login?next=/a", sandboxHeader, "alice")
	second := pageFor(t, nil, "/wechat/login?next=/a", sandboxHeader, "alice")
	if first.Code != http.StatusOK {
		t.Fatalf("status %d: %s", first.Code, first.Body)
	}
	csp := first.Header().Get("Content-Security-Policy")
	m := cspNonce.FindStringSubmatch(csp)
	if m == nil {
		t.Fatalf("no script nonce in CSP %q", csp)
	}
	nonce := m[1]
	for _, want := range []string{"default-src 'none'", "style-src 'nonce-" + nonce + "'", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe") {
		t.Errorf("CSP allows something unsafe: %q", csp)
	}
	if other := cspNonce.FindStringSubmatch(second.Header().Get("Content-Security-Policy")); other == nil || other[1] == nonce {
		t.Errorf("nonce reused across responses")
	}

	body := first.Body.String()
	tags := openTags.FindAllString(body, -1)
	if len(tags) < 3 {
		t.Fatalf("found only %d script/style tags", len(tags))
	}
	for _, tag := range tags {
		if strings.Contains(tag, `type="application/json"`) {
			continue // data, never run
		}
		if !strings.Contains(tag, `nonce="`+nonce+`"`) {
			t.Errorf("%s has no nonce", tag)
		}
	}
	for _, bad := range []string{` style="`, ` onclick=`, ` onload=`, ` onerror=`, `javascript:`, `src="http`, `href="http`, `src="//`, `href="//`, `@import`, `url(`} {
		if strings.Contains(body, bad) {
			t.Errorf("page contains %q", bad)
		}
	}
	for k, want := range map[string]string{
		"X-Frame-Options":        "DENY",
		"X-Content-Type-Options": "nosniff",
		"Cache-Control":          "no-store",
		"Referrer-Policy":        "no-referrer",
		"Vary":                   "Accept-Language",
	} {
		if got := first.Header().Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}

// pageScriptData returns what the page hands its script.
func pageScriptData(t *testing.T, body string) loginpage.ScriptConfig {
	t.Helper()
	m := regexp.MustCompile(`<script type="application/json" id="wl-data">(.*?)</script>`).FindStringSubmatch(body)
	if m == nil {
		t.Fatal("no #wl-data")
	}
	var c loginpage.ScriptConfig
	if err := json.Unmarshal([]byte(m[1]), &c); err != nil {
		t.Fatalf("#wl-data: %v: %s", err, m[1])
	}
	return c
}

func TestLoginPageContent(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    func(*Config)
		target string
		hdr    []string
		want   []string
		absent []string
		check  func(t *testing.T, c loginpage.ScriptConfig)
	}{{
		name:   "english by default",
		target: "/wechat/login?next=/docs",
		want:   []string{`<html lang="en">`, "<h1 id=\"wl-title\">Example</h1>", "Log in with WeChat · Example", `alt="Login QR code: scan it with WeChat"`, `role="status" aria-live="polite"`},
		absent: []string{`id="wl-open"`, `id="wl-sandbox"`, `class="logo"`},
		check: func(t *testing.T, c loginpage.ScriptConfig) {
			if c.Prefix != "/wechat" || c.Next != "/docs" || c.Text.Waiting != "Waiting for you to scan…" || c.Open != "" || c.Sandbox != "" {
				t.Errorf("script data %+v", c)
			}
		},
	}, {
		name:   "chinese",
		target: "/wechat/login",
		hdr:    []string{"Accept-Language", "zh-CN,zh;q=0.9,en;q=0.8"},
		want:   []string{`<html lang="zh-CN">`, "微信登录 · Example", "请用微信扫描"},
		check: func(t *testing.T, c loginpage.ScriptConfig) {
			if c.Next != "/" || c.Text.Waiting != "等待扫码…" || !strings.Contains(c.Text.ExpiresIn, "{t}") {
				t.Errorf("script data %+v", c)
			}
		},
	}, {
		name:   "site name is escaped",
		cfg:    func(c *Config) { c.SiteName = `<script>alert(1)</script>` },
		target: "/wechat/login",
		want:   []string{"&lt;script&gt;alert(1)&lt;/script&gt;"},
		absent: []string{"<script>alert(1)"},
	}, {
		name:   "logo",
		cfg:    func(c *Config) { c.LogoURL = "/static/logo.svg" },
		target: "/wechat/login",
		want:   []string{`<img class="logo" src="/static/logo.svg" alt=""`},
	}, {
		name:   "script URL as logo is neutralised",
		cfg:    func(c *Config) { c.LogoURL = "javascript:alert(1)" },
		target: "/wechat/login",
		absent: []string{"javascript:"},
	}, {
		name: "website login button",
		cfg: func(c *Config) {
			c.OpenAppID, c.OpenAppSecret = "wx00000000000000bb", "open-secret-0123456789"
			c.OpenDisplay = OpenDisplayPopup
		},
		target: "/wechat/login?next=/a%3Fb%3D1%26c",
		want:   []string{`<button type="button" class="secondary" id="wl-open">Open the WeChat login window</button>`},
		absent: []string{`id="wl-frame"`, "frame-src"},
		check: func(t *testing.T, c loginpage.ScriptConfig) {
			if c.Open != "/wechat/oauth/start?method=open&next=%2Fa%3Fb%3D1%26c" || c.Display != "popup" || c.Embed != nil {
				t.Errorf("website login URL %q, display %q, embed %v", c.Open, c.Display, c.Embed)
			}
		},
	}, {
		name: "website login in the page",
		cfg: func(c *Config) {
			c.OpenAppID, c.OpenAppSecret = "wx00000000000000bb", "open-secret-0123456789"
		},
		target: "/wechat/login?next=/a",
		want: []string{`id="wl-open">Log in with a WeChat website login code</button>`,
			`<div class="embed" id="wl-frame" data-state="idle" tabindex="-1" hidden></div>`},
		check: func(t *testing.T, c loginpage.ScriptConfig) {
			if c.Display != "embedded" || c.Embed == nil || c.Embed.URL != "/wechat/oauth/embed" ||
				c.Embed.Redeem != "/wechat/oauth/redeem" || c.Embed.Auto {
				t.Errorf("display %q, embed %+v", c.Display, c.Embed)
			}
		},
	}, {
		name: "website login in a full page",
		cfg: func(c *Config) {
			c.OpenAppID, c.OpenAppSecret = "wx00000000000000bb", "open-secret-0123456789"
			c.OpenDisplay = OpenDisplayPage
		},
		target: "/wechat/login?next=/a",
		absent: []string{`id="wl-frame"`},
		check: func(t *testing.T, c loginpage.ScriptConfig) {
			if c.Display != "page" || c.Embed != nil {
				t.Errorf("display %q, embed %+v", c.Display, c.Embed)
			}
		},
	}, {
		name:   "sandbox controls",
		target: "/wechat/login",
		hdr:    []string{sandboxHeader, "alice,bob"},
		want:   []string{`id="wl-sandbox"`, "<option>alice</option><option>bob</option>", "Simulate scan"},
		check: func(t *testing.T, c loginpage.ScriptConfig) {
			if c.Sandbox != "/wechat/sandbox/scan" {
				t.Errorf("sandbox URL %q", c.Sandbox)
			}
		},
	}, {
		name:   "other prefix",
		cfg:    func(c *Config) { c.Prefix = "/auth/wx" },
		target: "/auth/wx/login?next=/z",
		check: func(t *testing.T, c loginpage.ScriptConfig) {
			if c.Prefix != "/auth/wx" || c.Next != "/z" {
				t.Errorf("script data %+v", c)
			}
		},
	}, {
		name:   "bad next falls back to /",
		target: "/wechat/login?next=//evil.example/",
		absent: []string{"evil.example"},
		check: func(t *testing.T, c loginpage.ScriptConfig) {
			if c.Next != "/" {
				t.Errorf("next %q", c.Next)
			}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			rec := pageFor(t, tc.cfg, tc.target, tc.hdr...)
			if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
				t.Fatalf("status %d, type %q", rec.Code, rec.Header().Get("Content-Type"))
			}
			body := rec.Body.String()
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("page lacks %q", w)
				}
			}
			for _, a := range tc.absent {
				if strings.Contains(body, a) {
					t.Errorf("page contains %q", a)
				}
			}
			if tc.check != nil {
				tc.check(t, pageScriptData(t, body))
			}
		})
	}
}

func TestLoginPageHEAD(t *testing.T) {
	c := Config{AppID: testAppID, AppSecret: testSecret, PushToken: testToken, SessionKeys: [][]byte{testSessionKey}}
	mw, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	defer mw.Close()
	rec := httptest.NewRecorder()
	mw.Handler(http.NotFoundHandler()).ServeHTTP(rec, httptest.NewRequest(http.MethodHead, "/wechat/login", nil))
	if rec.Code != http.StatusOK || rec.Body.Len() != 0 || rec.Header().Get("Content-Security-Policy") == "" {
		t.Fatalf("HEAD: %d, %d bytes, CSP %q", rec.Code, rec.Body.Len(), rec.Header().Get("Content-Security-Policy"))
	}
}

func TestLoginTemplate(t *testing.T) {
	const custom = `<!doctype html><html lang="{{.HTMLLang}}"><title>{{.SiteName}}</title>` +
		`<style nonce="{{.Nonce}}">{{.Style}}</style><p class="brand">{{.T.Title}} at {{.SiteName}}</p>` +
		`<div id="wl-qr"><img id="wl-img" alt="{{.T.QRAlt}}"></div><p id="wl-status" role="status"></p>` +
		`<script type="application/json" id="wl-data">{{.Config}}</script><script nonce="{{.Nonce}}">{{.Script}}</script>`
	rec := pageFor(t, func(c *Config) { c.LoginTemplate = custom }, "/wechat/login?next=/n", "Accept-Language", "zh")
	body := rec.Body.String()
	if rec.Code != http.StatusOK || !strings.Contains(body, `<p class="brand">微信登录 at Example</p>`) {
		t.Fatalf("custom page: %d %s", rec.Code, body)
	}
	nonce := cspNonce.FindStringSubmatch(rec.Header().Get("Content-Security-Policy"))[1]
	if strings.Count(body, `nonce="`+nonce+`"`) != 2 || !strings.Contains(body, "EventSource") {
		t.Errorf("custom page lacks the nonce'd script and style: %s", body)
	}
	if c := pageScriptData(t, body); c.Next != "/n" {
		t.Errorf("script data %+v", c)
	}

	_, err := New(Config{AppID: testAppID, AppSecret: testSecret, PushToken: testToken, SessionKeys: [][]byte{testSessionKey},
		LoginTemplate: "{{.Broken"})
	if err == nil || !strings.Contains(err.Error(), "LoginTemplate") {
		t.Fatalf("a broken template: %v", err)
	}

	// A template that fails while rendering answers 500, not half a page.
	rec = pageFor(t, func(c *Config) { c.LoginTemplate = "<p>{{.NoSuchField}}</p>" }, "/wechat/login")
	if rec.Code != http.StatusInternalServerError || strings.Contains(rec.Body.String(), "<p>") {
		t.Fatalf("failing template: %d %q", rec.Code, rec.Body)
	}
}

func TestForbiddenPage(t *testing.T) {
	c := Config{AppID: testAppID, AppSecret: testSecret, PushToken: testToken, SessionKeys: [][]byte{testSessionKey}}
	mw, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	defer mw.Close()
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("Accept-Language", "zh-CN")
	rec := httptest.NewRecorder()
	mw.serveForbidden(rec, req)
	body := rec.Body.String()
	if rec.Code != http.StatusForbidden || !strings.Contains(body, `role="alert">此微信账号无权访问本站。`) || strings.Contains(body, "wl-data") {
		t.Fatalf("forbidden page: %d %s", rec.Code, body)
	}
}

// TestLoginPageWeight keeps the page small: everything it needs is in the
// one response (the QR image aside), so this is the whole cost of a visit.
// The page measured offers both QR logins, with website login embedded in
// the page, the heaviest default. The budget was 20 KiB (7 KiB gzipped)
// before code login and the embedded website QR brought their markup,
// script and words.
func TestLoginPageWeight(t *testing.T) {
	const maxRaw, maxGzip = 26 << 10, 9 << 10
	for _, lang := range []string{"en", "zh"} {
		rec := pageFor(t, func(c *Config) {
			c.OpenAppID, c.OpenAppSecret = "wx00000000000000bb", "open-secret-0123456789"
		}, "/wechat/login?next=/", "Accept-Language", lang)
		raw := rec.Body.Bytes()
		var z bytes.Buffer
		w, _ := gzip.NewWriterLevel(&z, gzip.DefaultCompression)
		_, _ = w.Write(raw)
		_ = w.Close()
		t.Logf("%s login page: %d bytes, %d gzipped", lang, len(raw), z.Len())
		if len(raw) > maxRaw || z.Len() > maxGzip {
			t.Errorf("%s login page is %d bytes (%d gzipped), budget %d (%d)", lang, len(raw), z.Len(), maxRaw, maxGzip)
		}
		if strings.Contains(html.UnescapeString(string(raw)), "\n  ") {
			t.Errorf("%s login page still carries indentation", lang)
		}
	}
}
