package middleware

import (
	"bytes"
	"crypto/rand"
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"go.uber.org/zap"
)

// The whole assets directory is embedded, so pages added next to the login
// page are picked up without touching this directive.
//
//go:embed assets
var assets embed.FS

// pageText is the login page's wording in one language. Fields with a JSON
// name are also handed to the page's script, which shows them as the login
// moves from state to state.
type pageText struct {
	Title     string `json:"-"`
	Scan      string `json:"-"`
	QRAlt     string `json:"-"`
	NoScript  string `json:"-"`
	Simulate  string `json:"-"`
	AsUser    string `json:"-"`
	Sandbox   string `json:"-"`
	OpenLogin string `json:"-"`
	Or        string `json:"-"`
	Forbidden string `json:"-"`

	Loading      string `json:"loading"`
	Waiting      string `json:"waiting"`
	Scanned      string `json:"scanned"`
	Success      string `json:"success"`
	Expired      string `json:"expired"`
	Denied       string `json:"denied"`
	Error        string `json:"error"`
	Reconnecting string `json:"reconnecting"`
	Refresh      string `json:"refresh"`
	Retry        string `json:"retry"`
	ExpiresIn    string `json:"expiresIn"` // {t} is replaced by m:ss
	// SimulateConfirm labels the sandbox button once a scan waits for the
	// confirmation in chat.
	SimulateConfirm string `json:"simulateConfirm"`
}

var pageTexts = map[string]pageText{
	"en": {
		Title:    "Log in with WeChat",
		Scan:     "Open WeChat on your phone, tap + then Scan, and point it at the code.",
		QRAlt:    "Login QR code: scan it with WeChat",
		NoScript: "This page needs JavaScript to show the login code.",
		Simulate: "Simulate scan",

		SimulateConfirm: "Simulate replying the code in WeChat",
		AsUser:          "Scan as test user",
		Sandbox:         "Sandbox: no real WeChat involved",
		OpenLogin:       "Open the WeChat login window",
		Or:              "or",
		Forbidden:       "This WeChat account is not allowed to use this site.",

		Loading:      "Preparing your login code…",
		Waiting:      "Waiting for you to scan…",
		Scanned:      "Scanned. Confirm the login on your phone…",
		Success:      "Logged in. Taking you back…",
		Expired:      "This code has expired.",
		Denied:       "This WeChat account is not allowed to use this site.",
		Error:        "Something went wrong. Please try again.",
		Reconnecting: "Connection lost. Reconnecting…",
		Refresh:      "Get a new code",
		Retry:        "Try again",
		ExpiresIn:    "Expires in {t}",
	},
	"zh": {
		Title:    "微信登录",
		Scan:     "打开手机微信，点击右上角“+”中的“扫一扫”，扫描二维码即可登录。",
		QRAlt:    "登录二维码，请用微信扫描",
		NoScript: "本页面需要启用 JavaScript 才能显示登录二维码。",
		Simulate: "模拟扫码",

		SimulateConfirm: "模拟在微信中回复确认码",
		AsUser:          "以测试用户身份扫码",
		Sandbox:         "沙盒模式：不连接真实的微信",
		OpenLogin:       "打开微信登录窗口",
		Or:              "或",
		Forbidden:       "此微信账号无权访问本站。",

		Loading:      "正在生成登录二维码…",
		Waiting:      "等待扫码…",
		Scanned:      "扫码成功，请在手机上确认登录…",
		Success:      "登录成功，正在跳转…",
		Expired:      "二维码已过期。",
		Denied:       "此微信账号无权访问本站。",
		Error:        "出错了，请重试。",
		Reconnecting: "连接中断，正在重新连接…",
		Refresh:      "刷新二维码",
		Retry:        "重试",
		ExpiresIn:    "{t} 后过期",
	},
}

// htmlLang is the value of <html lang>, which screen readers use to pick a
// voice.
var htmlLang = map[string]string{"en": "en", "zh": "zh-CN"}

// pickLang chooses zh or en from an Accept-Language header: the supported
// language with the highest quality, the earlier one on a tie, English when
// neither is acceptable.
func pickLang(acceptLanguage string) string {
	best, bestQ := "en", -1.0
	for part := range strings.SplitSeq(acceptLanguage, ",") {
		tag, params, _ := strings.Cut(part, ";")
		tag = strings.ToLower(strings.TrimSpace(tag))
		var lang string
		switch {
		case tag == "zh" || strings.HasPrefix(tag, "zh-"):
			lang = "zh"
		case tag == "en" || strings.HasPrefix(tag, "en-"):
			lang = "en"
		default:
			continue
		}
		if q := quality(params); q > bestQ {
			best, bestQ = lang, q
		}
	}
	return best
}

// quality reads the q parameter of one Accept-Language entry. A missing or
// malformed q counts as 1, as browsers intend; q=0 means "not acceptable".
func quality(params string) float64 {
	for p := range strings.SplitSeq(params, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok || strings.TrimSpace(k) != "q" {
			continue
		}
		q, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || !(q <= 1) { // also catches NaN
			return 1
		}
		if q <= 0 {
			return -1
		}
		return q
	}
	return 1
}

// loginPage renders the login page: the built-in template or the operator's
// Config.LoginTemplate.
type loginPage struct {
	tmpl   *template.Template
	style  template.CSS
	script template.JS
	log    *zap.Logger
}

func newLoginPage(cfg Config) (*loginPage, error) {
	css, err := assets.ReadFile("assets/login.css")
	if err != nil {
		return nil, fmt.Errorf("middleware: login page style: %w", err)
	}
	js, err := assets.ReadFile("assets/login.js")
	if err != nil {
		return nil, fmt.Errorf("middleware: login page script: %w", err)
	}
	p := &loginPage{
		// Both are our own embedded files, never user input, which is what
		// makes these conversions safe.
		style:  template.CSS(compact(string(css), true)),
		script: template.JS(compact(string(js), false)),
		log:    cfg.Logger,
	}
	if p.log == nil {
		p.log = zap.NewNop()
	}
	if cfg.LoginTemplate != "" {
		p.tmpl, err = template.New("login").Parse(cfg.LoginTemplate)
		if err != nil {
			return nil, fmt.Errorf("middleware: LoginTemplate: %w", err)
		}
		return p, nil
	}
	p.tmpl, err = template.ParseFS(assets, "assets/login.html")
	if err != nil {
		return nil, fmt.Errorf("middleware: login page template: %w", err)
	}
	return p, nil
}

// compact strips what a browser does not need from our own CSS or script:
// indentation, blank lines and comments. CSS comments (/* */) go wherever
// they are; script comments only when they fill a whole line starting with
// "//", so the script must keep its comments on lines of their own and never
// continue a string across lines.
func compact(src string, css bool) string {
	if css {
		var b strings.Builder
		for {
			start := strings.Index(src, "/*")
			if start < 0 {
				break
			}
			end := strings.Index(src[start+2:], "*/")
			if end < 0 {
				src = src[:start]
				break
			}
			b.WriteString(src[:start])
			src = src[start+2+end+2:]
		}
		b.WriteString(src)
		src = b.String()
	}
	var b strings.Builder
	b.Grow(len(src))
	for line := range strings.Lines(src) {
		line = strings.TrimSpace(line)
		if line == "" || (!css && strings.HasPrefix(line, "//")) {
			continue
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String()
}

// pageData is what the login page template receives, the built-in one and
// Config.LoginTemplate alike.
//
// A custom template includes the page's behaviour with
//
//	<style nonce="{{.Nonce}}">{{.Style}}</style>
//	<script type="application/json" id="wl-data">{{.Config}}</script>
//	<script nonce="{{.Nonce}}">{{.Script}}</script>
//
// and gives the script the elements it drives, by id: wl-qr (the QR area,
// whose data-state the script sets), wl-img (the QR <img>), wl-status (the
// live status line), and optionally wl-veil-text, wl-retry, wl-timer,
// wl-countdown, wl-bar, wl-open (website login button) and wl-sandbox.
type pageData struct {
	Lang     string // "en" or "zh"
	HTMLLang string // for <html lang>: "en" or "zh-CN"
	SiteName string
	LogoURL  string
	Prefix   string
	Next     string
	Nonce    string // the CSP nonce every <script> and <style> must carry
	Message  string // when set, the page shows it instead of a QR code

	// OpenURL starts website login (without popup=1: the script adds it
	// when it manages to open a popup). Empty when the method is off.
	OpenURL string

	SandboxScanURL string
	SandboxUsers   []string

	T      pageText
	Style  template.CSS
	Script template.JS
	Config pageConfig
}

// pageConfig is the JSON the page's script reads from #wl-data.
type pageConfig struct {
	Prefix  string   `json:"prefix"`
	Next    string   `json:"next"`
	Open    string   `json:"open,omitempty"`
	Sandbox string   `json:"sandbox,omitempty"`
	Text    pageText `json:"t"`
}

// serve renders the login page for GET {prefix}/login?next=…. A browser that
// already has a session goes straight on to next.
func (p *loginPage) serve(w http.ResponseWriter, r *http.Request, m *Middleware) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, http.MethodGet)
		return
	}
	next, ok := m.cleanNext(r.URL.Query()["next"])
	if !ok {
		next = "/"
	}
	if _, err := m.session(r); err == nil {
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, next, http.StatusFound)
		return
	}
	if m.oauthAutoRedirect(w, r, next) {
		return
	}
	p.render(w, r, m, http.StatusOK, next, "")
}

// serveMessage renders the page with a message instead of a QR code. which
// names the message; "forbidden" is the only one so far.
func (p *loginPage) serveMessage(w http.ResponseWriter, r *http.Request, status int, which string) {
	lang := pickLang(r.Header.Get("Accept-Language"))
	t := pageTexts[lang]
	msg := t.Error
	if which == "forbidden" {
		msg = t.Forbidden
	}
	p.renderData(w, r, status, pageData{Lang: lang, Message: msg, T: t})
}

// render renders the page for m's configuration; a non-empty message is
// shown instead of the QR code.
func (p *loginPage) render(w http.ResponseWriter, r *http.Request, m *Middleware, status int, next, message string) {
	lang := pickLang(r.Header.Get("Accept-Language"))
	d := pageData{
		Lang:     lang,
		SiteName: m.cfg.SiteName,
		LogoURL:  m.cfg.LogoURL,
		Prefix:   m.cfg.Prefix,
		Next:     next,
		Message:  message,
		T:        pageTexts[lang],

		SandboxScanURL: m.cfg.SandboxScanURL,
		SandboxUsers:   m.cfg.SandboxUsers,
	}
	if m.cfg.enabled(MethodOpen) {
		d.OpenURL = m.cfg.Prefix + "/oauth/start?method=open&next=" + url.QueryEscape(next)
	}
	p.renderData(w, r, status, d)
}

// contentSecurityPolicy allows nothing but this origin's images and API, and
// the page's own script and style, which carry the per-response nonce.
const contentSecurityPolicy = "default-src 'none'; script-src 'nonce-%[1]s'; style-src 'nonce-%[1]s'; " +
	"img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

func (p *loginPage) renderData(w http.ResponseWriter, r *http.Request, status int, d pageData) {
	if d.SiteName == "" {
		d.SiteName = defaultSiteName
	}
	d.HTMLLang = htmlLang[d.Lang]
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce) // never fails: crypto/rand panics rather than return an error
	// The URL-safe alphabet needs no escaping in an HTML attribute.
	d.Nonce = base64.RawURLEncoding.EncodeToString(nonce)
	d.Style, d.Script = p.style, p.script
	d.Config = pageConfig{Prefix: d.Prefix, Next: d.Next, Open: d.OpenURL, Sandbox: d.SandboxScanURL, Text: d.T}

	var buf bytes.Buffer
	if err := p.tmpl.Execute(&buf, d); err != nil {
		p.log.Error("login page template failed", zap.Error(err))
		writeError(w, http.StatusInternalServerError, "cannot render page")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", fmt.Sprintf(contentSecurityPolicy, d.Nonce))
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Vary", "Accept-Language")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(buf.Bytes())
	}
}
