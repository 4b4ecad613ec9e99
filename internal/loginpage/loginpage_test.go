package loginpage

import (
	"encoding/json"
	"html/template"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func TestCompact(t *testing.T) {
	css := "/* a\n   b */\na { color: red; } /* c */\n\n  b{x:y}\n"
	if got, want := compact(css, true), "a { color: red; }\nb{x:y}\n"; got != want {
		t.Errorf("css: %q, want %q", got, want)
	}
	js := "// head\n  var a = \"//not a comment\";\n\n  // note\n  f(); // trailing stays\n"
	if got, want := compact(js, false), "var a = \"//not a comment\";\nf(); // trailing stays\n"; got != want {
		t.Errorf("js: %q, want %q", got, want)
	}
}

func newRenderer(t *testing.T, custom string) *Renderer {
	t.Helper()
	var tmpl *template.Template
	if custom != "" {
		tmpl = template.Must(template.New("login").Parse(custom))
	}
	p, err := New(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func request(method, lang string) *http.Request {
	r := httptest.NewRequest(method, "/", nil)
	r.Header.Set("Accept-Language", lang)
	return r
}

var nonceRe = regexp.MustCompile(`script-src 'nonce-([A-Za-z0-9_-]{22})'`)

// TestPolicies: both pages allow their own nonce'd script and style and
// nothing else but what each needs, under the same security headers.
func TestPolicies(t *testing.T) {
	p := newRenderer(t, "")
	login, outcome := httptest.NewRecorder(), httptest.NewRecorder()
	if err := p.Login(login, request(http.MethodGet, "en"), Login{SiteName: "S", Prefix: "/w", Next: "/"}); err != nil {
		t.Fatal(err)
	}
	if err := p.Outcome(outcome, request(http.MethodGet, "en"), http.StatusBadRequest, Outcome{Message: MsgExpired}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		rec   *httptest.ResponseRecorder
		allow []string
	}{
		{login, []string{"img-src 'self' data:", "connect-src 'self'", "form-action 'self'"}},
		{outcome, []string{"form-action 'none'"}},
	} {
		csp := tc.rec.Header().Get("Content-Security-Policy")
		m := nonceRe.FindStringSubmatch(csp)
		if m == nil {
			t.Fatalf("no nonce in %q", csp)
		}
		directives := append([]string{"default-src 'none'", "script-src 'nonce-" + m[1] + "'", "style-src 'nonce-" + m[1] + "'",
			"base-uri 'none'", "frame-ancestors 'none'"}, tc.allow...)
		if got := strings.Split(csp, "; "); len(got) != len(directives) {
			t.Errorf("CSP %q, want exactly %q", csp, directives)
		}
		for _, d := range directives {
			if !strings.Contains(csp, d) {
				t.Errorf("CSP %q lacks %q", csp, d)
			}
		}
		if n := strings.Count(tc.rec.Body.String(), `nonce="`+m[1]+`"`); n < 1 {
			t.Errorf("page carries no nonce'd element")
		}
		for k, want := range map[string]string{
			"Content-Type":           "text/html; charset=utf-8",
			"Cache-Control":          "no-store",
			"Referrer-Policy":        "no-referrer",
			"X-Content-Type-Options": "nosniff",
			"X-Frame-Options":        "DENY",
		} {
			if got := tc.rec.Header().Get(k); got != want {
				t.Errorf("%s = %q, want %q", k, got, want)
			}
		}
	}
}

var popupRe = regexp.MustCompile(`var message = (\{.*?\});`)

func TestOutcome(t *testing.T) {
	p := newRenderer(t, "")
	for _, tc := range []struct {
		name  string
		o     Outcome
		lang  string
		want  []string
		popup *PopupMessage
	}{{
		name: "error, not in a popup",
		o:    Outcome{Message: MsgDeclined, RetryURL: "/w/oauth/start?next=%2F", Origin: "https://a.example"},
		lang: "en",
		want: []string{`<html lang="en">`, "<h1>Log in with WeChat</h1>", "You did not allow WeChat to log you in.", `href="/w/oauth/start?next=%2F"`},
	}, {
		name:  "error in a popup",
		o:     Outcome{Message: MsgBusy, Popup: true, Origin: "https://a.example"},
		lang:  "zh-CN",
		want:  []string{`<html lang="zh">`, "微信繁忙，请稍后再试。", `var origin = "https://a.example"`},
		popup: &PopupMessage{Type: "wechat_login", Status: "error", Message: "微信繁忙，请稍后再试。"},
	}, {
		name:  "finished login in a popup",
		o:     Outcome{Message: MsgSuccess, Next: "/dash", Popup: true, Origin: "https://a.example"},
		lang:  "en",
		want:  []string{"Logged in. Taking you back…", `href="/dash"`, ">Continue</a>"},
		popup: &PopupMessage{Type: "wechat_login", Status: "confirmed", Redirect: "/dash"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			if err := p.Outcome(rec, request(http.MethodGet, tc.lang), http.StatusTeapot, tc.o); err != nil {
				t.Fatal(err)
			}
			body := rec.Body.String()
			if rec.Code != http.StatusTeapot {
				t.Errorf("status %d", rec.Code)
			}
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("page lacks %q: %s", w, body)
				}
			}
			m := popupRe.FindStringSubmatch(body)
			if (m != nil) != (tc.popup != nil) {
				t.Fatalf("popup script %v, want %v", m != nil, tc.popup != nil)
			}
			if m != nil {
				var got PopupMessage
				if err := json.Unmarshal([]byte(m[1]), &got); err != nil || got != *tc.popup {
					t.Errorf("popup message %+v (%v), want %+v", got, err, *tc.popup)
				}
			}
		})
	}
}

func TestLoginTemplateData(t *testing.T) {
	// Every field a custom template could use before the pages had their
	// own package.
	const custom = `{{.Lang}}|{{.HTMLLang}}|{{.SiteName}}|{{.LogoURL}}|{{.Prefix}}|{{.Next}}|{{.Message}}|{{.OpenURL}}|` +
		`{{.SandboxScanURL}}|{{range .SandboxUsers}}{{.}},{{end}}|{{.T.Title}}|{{.T.Forbidden}}|{{.T.Waiting}}|` +
		`<style nonce="{{.Nonce}}">{{.Style}}</style><script type="application/json">{{.Config}}</script><script nonce="{{.Nonce}}">{{.Script}}</script>`
	p := newRenderer(t, custom)
	rec := httptest.NewRecorder()
	l := Login{SiteName: "Site", LogoURL: "/logo.svg", Prefix: "/w", Next: "/n", OpenURL: "/w/oauth/start?method=open",
		SandboxScanURL: "/w/sandbox/scan", SandboxUsers: []string{"alice", "bob"}}
	if err := p.Login(rec, request(http.MethodGet, "zh"), l); err != nil {
		t.Fatal(err)
	}
	body := rec.Body.String()
	want := "zh|zh-CN|Site|/logo.svg|/w|/n||/w/oauth/start?method=open|/w/sandbox/scan|alice,bob,|微信登录|此微信账号无权访问本站。|等待扫码…|"
	if !strings.HasPrefix(body, want) {
		t.Fatalf("custom page %q, want it to start %q", body, want)
	}
	for _, w := range []string{`"prefix":"/w"`, `"next":"/n"`, `"open":"/w/oauth/start?method=open"`, `"sandbox":"/w/sandbox/scan"`, `"waiting":"等待扫码…"`, "EventSource"} {
		if !strings.Contains(body, w) {
			t.Errorf("custom page lacks %q", w)
		}
	}
}

func TestNotice(t *testing.T) {
	p := newRenderer(t, "")
	rec := httptest.NewRecorder()
	if err := p.Notice(rec, request(http.MethodGet, "en"), http.StatusForbidden, Login{SiteName: "Site"}, MsgForbidden); err != nil {
		t.Fatal(err)
	}
	body := rec.Body.String()
	if rec.Code != http.StatusForbidden || !strings.Contains(body, `role="alert">This WeChat account is not allowed to use this site.`) ||
		strings.Contains(body, "wl-data") || !strings.Contains(body, `<h1 id="wl-title">Site</h1>`) {
		t.Fatalf("notice: %d %s", rec.Code, body)
	}
}

func TestHEADAndFailures(t *testing.T) {
	rec := httptest.NewRecorder()
	if err := newRenderer(t, "").Login(rec, request(http.MethodHead, "en"), Login{}); err != nil || rec.Code != http.StatusOK ||
		rec.Body.Len() != 0 || rec.Header().Get("Content-Security-Policy") == "" {
		t.Fatalf("HEAD: %v, %d, %d bytes, CSP %q", err, rec.Code, rec.Body.Len(), rec.Header().Get("Content-Security-Policy"))
	}
	// A template that fails while rendering writes nothing: the caller
	// answers instead.
	rec = httptest.NewRecorder()
	err := newRenderer(t, "<p>{{.NoSuchField}}</p>").Login(rec, request(http.MethodGet, "en"), Login{})
	if err == nil || rec.Body.Len() != 0 || len(rec.Header()) != 0 {
		t.Fatalf("failing template: %v, %d bytes, headers %v", err, rec.Body.Len(), rec.Header())
	}
}
