package middleware

import (
	"bytes"
	"crypto/rand"
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"net/http"
	"strings"
)

//go:embed assets/login.html
var assets embed.FS

// pageText is the login page's wording in one language. The JSON names are
// what the page's script reads.
type pageText struct {
	Title     string `json:"-"`
	Scan      string `json:"-"`
	QRAlt     string `json:"-"`
	NoScript  string `json:"-"`
	Refresh   string `json:"-"`
	Simulate  string `json:"-"`
	AsUser    string `json:"-"`
	Forbidden string `json:"-"`
	Loading   string `json:"loading"`
	Waiting   string `json:"waiting"`
	Scanned   string `json:"scanned"`
	Success   string `json:"success"`
	Expired   string `json:"expired"`
	Denied    string `json:"denied"`
	Error     string `json:"error"`
	ExpiresIn string `json:"expiresIn"`
}

var pageTexts = map[string]pageText{
	"en": {
		Title:     "Log in with WeChat",
		Scan:      "Scan the code with WeChat to log in.",
		QRAlt:     "QR code to scan with WeChat",
		NoScript:  "This page needs JavaScript to show the login code.",
		Refresh:   "Get a new code",
		Simulate:  "Simulate scan",
		AsUser:    "Sandbox: scan as test user",
		Forbidden: "This WeChat account is not allowed to use this site.",
		Loading:   "Preparing your login code…",
		Waiting:   "Waiting for you to scan…",
		Scanned:   "Scanned. Confirm in WeChat…",
		Success:   "Logged in. Taking you back…",
		Expired:   "This code has expired.",
		Denied:    "This WeChat account is not allowed to use this site.",
		Error:     "Something went wrong.",
		ExpiresIn: "Expires in %d s",
	},
	"zh": {
		Title:     "微信登录",
		Scan:      "请使用微信扫描二维码登录",
		QRAlt:     "用微信扫描的登录二维码",
		NoScript:  "本页面需要启用 JavaScript 才能显示登录二维码。",
		Refresh:   "刷新二维码",
		Simulate:  "模拟扫码",
		AsUser:    "沙盒：以测试用户身份扫码",
		Forbidden: "此微信账号无权访问本站。",
		Loading:   "正在生成登录二维码…",
		Waiting:   "等待扫码…",
		Scanned:   "已扫码，请在微信中确认…",
		Success:   "登录成功，正在跳转…",
		Expired:   "二维码已过期。",
		Denied:    "此微信账号无权访问本站。",
		Error:     "出错了。",
		ExpiresIn: "%d 秒后过期",
	},
}

// pickLang chooses zh or en from Accept-Language, by the first language
// listed that we have (quality values are rarely out of order in practice).
func pickLang(acceptLanguage string) string {
	for _, part := range strings.Split(acceptLanguage, ",") {
		tag := strings.ToLower(strings.TrimSpace(strings.SplitN(part, ";", 2)[0]))
		switch {
		case strings.HasPrefix(tag, "zh"):
			return "zh"
		case strings.HasPrefix(tag, "en"):
			return "en"
		}
	}
	return "en"
}

type loginPage struct {
	tmpl *template.Template
}

func newLoginPage(Config) (*loginPage, error) {
	t, err := template.ParseFS(assets, "assets/login.html")
	if err != nil {
		return nil, fmt.Errorf("middleware: login page template: %w", err)
	}
	return &loginPage{tmpl: t}, nil
}

type pageData struct {
	Lang, SiteName, Prefix, Next, Mode, Nonce, Message string
	SandboxScanURL                                     string
	SandboxUsers                                       []string
	T                                                  pageText
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

// serveMessage renders the page with a message instead of a QR code.
func (p *loginPage) serveMessage(w http.ResponseWriter, r *http.Request, status int, which string) {
	lang := pickLang(r.Header.Get("Accept-Language"))
	msg := pageTexts[lang].Forbidden
	_ = which
	p.renderData(w, status, pageData{Lang: lang, Message: msg, T: pageTexts[lang]})
}

func (p *loginPage) render(w http.ResponseWriter, r *http.Request, m *Middleware, status int, next, message string) {
	lang := pickLang(r.Header.Get("Accept-Language"))
	p.renderData(w, status, pageData{
		Lang:     lang,
		SiteName: m.cfg.SiteName,
		Prefix:   m.cfg.Prefix,
		Next:     next,
		Mode:     "qr",
		Message:  message,
		T:        pageTexts[lang],

		SandboxScanURL: m.cfg.SandboxScanURL,
		SandboxUsers:   m.cfg.SandboxUsers,
	})
}

func (p *loginPage) renderData(w http.ResponseWriter, status int, d pageData) {
	if d.SiteName == "" {
		d.SiteName = defaultSiteName
	}
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	d.Nonce = base64.RawStdEncoding.EncodeToString(nonce)
	var buf bytes.Buffer
	if err := p.tmpl.Execute(&buf, d); err != nil {
		writeError(w, http.StatusInternalServerError, "cannot render page")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", fmt.Sprintf(
		"default-src 'none'; script-src 'nonce-%[1]s'; style-src 'nonce-%[1]s'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'", d.Nonce))
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}
