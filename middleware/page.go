package middleware

import (
	"fmt"
	"html/template"
	"net/http"
	"net/url"

	"go.uber.org/zap"

	"github.com/wechat-login/caddy-wechat-login/internal/loginpage"
	"github.com/wechat-login/caddy-wechat-login/internal/useragent"
)

// newLoginPage prepares the HTML pages, with cfg.LoginTemplate in place of
// the built-in login page when it is set. The template receives a
// loginpage.Page.
func newLoginPage(cfg Config) (*loginpage.Renderer, error) {
	var custom *template.Template
	if cfg.LoginTemplate != "" {
		var err error
		if custom, err = template.New("login").Parse(cfg.LoginTemplate); err != nil {
			return nil, fmt.Errorf("middleware: LoginTemplate: %w", err)
		}
	}
	p, err := loginpage.New(custom)
	if err != nil {
		return nil, fmt.Errorf("middleware: %w", err)
	}
	return p, nil
}

// serveLogin serves GET {prefix}/login?next=…: the login page. A browser
// that already has a session goes straight on to next.
func (m *Middleware) serveLogin(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, http.MethodGet)
		return
	}
	next, ok := m.redirects.Next(r.URL.Query()["next"])
	if !ok {
		next = "/"
	}
	if _, err := m.sessions.Get(r); err == nil {
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, next, http.StatusFound)
		return
	}
	if m.oauth.AutoStart(w, r, next) {
		return
	}
	l := loginpage.Login{
		SiteName: m.cfg.SiteName,
		LogoURL:  m.cfg.LogoURL,
		Prefix:   m.cfg.Prefix,
		Next:     next,
	}
	if sb, ok := loginpage.SandboxFrom(r.Context()); ok {
		l.SandboxScanURL, l.SandboxUsers = sb.ScanURL, sb.Users
	}
	l.NoQR = !m.cfg.enabled(MethodQR)
	if m.cfg.enabled(MethodCode) {
		l.Code, l.AccountName, l.FollowQR = true, m.cfg.AccountName, m.cfg.FollowQR
		// WeChat refused this account QR codes a moment ago: start with
		// the code rather than ask again.
		l.CodeFirst = m.qrRefusedNow()
	}
	l.Phone = useragent.Phone(r.UserAgent()) && !useragent.InWeChat(r.UserAgent())
	if m.cfg.enabled(MethodOpen) {
		l.OpenURL = m.cfg.Prefix + "/oauth/start?method=open&next=" + url.QueryEscape(next)
		switch m.cfg.OpenDisplay {
		case OpenDisplayEmbedded:
			l.Embed = &loginpage.Embed{
				URL:      m.cfg.Prefix + "/oauth/embed",
				Redeem:   m.cfg.Prefix + "/oauth/redeem",
				FrameSrc: m.frameSources(r),
				// With website login alone there is nothing else to show.
				Auto: l.NoQR,
			}
		case OpenDisplayPage:
			l.FullPage = true
		}
	}
	m.pageDone(w, m.page.Login(w, r, l))
}

// serveForbidden tells a browser that its WeChat account may not use this
// site. The page names no site in particular.
func (m *Middleware) serveForbidden(w http.ResponseWriter, r *http.Request) {
	site := loginpage.Login{SiteName: defaultSiteName}
	m.pageDone(w, m.page.Notice(w, r, http.StatusForbidden, site, loginpage.MsgForbidden))
}

// pageDone answers 500 for a page that could not be rendered, and so was
// not written at all.
func (m *Middleware) pageDone(w http.ResponseWriter, err error) {
	if err != nil {
		m.log.Error("cannot render page", zap.Error(err))
		writeError(w, http.StatusInternalServerError, "cannot render page")
	}
}
