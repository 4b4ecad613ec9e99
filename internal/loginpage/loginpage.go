// Package loginpage renders the HTML pages of a WeChat login: the login
// page, which shows the QR code and drives it with its script, and the
// pages that end the OAuth flows (a finished login in a popup, and every
// error).
//
// The pages know nothing of sessions, stores or configuration: the caller
// says what a page shows, and the Renderer picks the language from the
// request, executes the template and writes the response with its security
// headers. Every page carries a strict Content-Security-Policy that allows
// nothing but the page's own script and style, which carry a nonce fresh
// for each response.
package loginpage

import (
	"bytes"
	"context"
	"crypto/rand"
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
)

//go:embed assets
var assets embed.FS

// Renderer renders the pages. It is safe for concurrent use.
type Renderer struct {
	login  *template.Template
	oauth  *template.Template
	style  template.CSS
	script template.JS
}

// New returns a Renderer with the built-in pages, and custom in place of
// the built-in login page when it is not nil. custom receives a Page.
func New(custom *template.Template) (*Renderer, error) {
	css, err := assets.ReadFile("assets/login.css")
	if err != nil {
		return nil, fmt.Errorf("loginpage: style: %w", err)
	}
	js, err := assets.ReadFile("assets/login.js")
	if err != nil {
		return nil, fmt.Errorf("loginpage: script: %w", err)
	}
	p := &Renderer{
		login: custom,
		// Both are our own embedded files, never user input, which is what
		// makes these conversions safe.
		style:  template.CSS(compact(string(css), true)),
		script: template.JS(compact(string(js), false)),
	}
	if p.login == nil {
		if p.login, err = template.ParseFS(assets, "assets/login.html"); err != nil {
			return nil, fmt.Errorf("loginpage: login page: %w", err)
		}
	}
	if p.oauth, err = template.ParseFS(assets, "assets/oauth.html"); err != nil {
		return nil, fmt.Errorf("loginpage: OAuth page: %w", err)
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

// Login is what the login page shows of the site and its configuration.
type Login struct {
	SiteName string
	LogoURL  string
	Prefix   string // where the login's endpoints are: {Prefix}/qr, {Prefix}/events, …
	Next     string // where a finished login goes

	// OpenURL starts website login (without popup=1: the script adds it
	// when it manages to open a popup). Empty when the method is off.
	OpenURL string
	// NoQR leaves out the QR code: the site offers no QR login.
	NoQR bool
	// Code offers code login: the page shows a code that the user sends
	// to the Official Account (AccountName) in chat. CodeFirst starts with
	// the code rather than the QR code (a site with code login only, or
	// one whose account WeChat refused QR codes to a moment ago). FollowQR
	// is the account's own QR code, shown with the steps.
	Code        bool
	CodeFirst   bool
	AccountName string
	FollowQR    string
	// Phone is a phone's browser outside WeChat: the QR code on its screen
	// cannot be scanned by the same phone, so the page says what works
	// there (save the code and scan it from the album, or open the page in
	// WeChat).
	Phone bool

	// Embed shows website login's QR code in a frame on this page
	// (OpenDisplay embedded) instead of in a popup; nil for the popup or a
	// full-page visit.
	Embed *Embed
	// FullPage sends the website login button's click to OpenURL in this
	// window, without trying a popup first.
	FullPage bool

	// SandboxScanURL and SandboxUsers add the sandbox's "Simulate scan"
	// control; they come from the request's context (WithSandbox).
	SandboxScanURL string
	SandboxUsers   []string
}

// Embed is what the login page needs to show WeChat's website-login frame.
type Embed struct {
	// URL is where the script asks for a frame (POST {prefix}/oauth/embed).
	URL string `json:"url"`
	// Redeem is where the script trades the frame's result for the session
	// (POST {prefix}/oauth/redeem).
	Redeem string `json:"redeem"`
	// FrameSrc lists what the frame may show, for the page's
	// Content-Security-Policy frame-src: WeChat's origin (or the fake's) and
	// this site's callback, which the frame is sent to after the scan.
	FrameSrc []string `json:"-"`
	// Auto shows the frame as soon as the page loads (a site with website
	// login only); otherwise the website login button shows it.
	Auto bool `json:"-"`
}

// Sandbox is the "Simulate scan" control of the Caddy module's sandbox: the
// URL that makes the fake phone scan, and the test users to scan as.
type Sandbox struct {
	ScanURL string
	Users   []string
}

type sandboxKey struct{}

// WithSandbox returns ctx carrying the sandbox's control for the login page.
// Only this module's sandbox sets it (this package is internal), so no
// configuration of a real site can put a fake-scan button on its page.
func WithSandbox(ctx context.Context, sb Sandbox) context.Context {
	return context.WithValue(ctx, sandboxKey{}, sb)
}

// SandboxFrom returns the sandbox control ctx carries, if any.
func SandboxFrom(ctx context.Context) (Sandbox, bool) {
	sb, ok := ctx.Value(sandboxKey{}).(Sandbox)
	return sb, ok
}

// Page is what the login page template receives, the built-in one and a
// custom one alike: the fields of Login, and the following.
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
type Page struct {
	Login
	Lang     string // "en" or "zh"
	HTMLLang string // for <html lang>: "en" or "zh-CN"
	Nonce    string // the CSP nonce every <script> and <style> must carry
	Message  string // when set, the page shows it instead of a QR code
	// FollowStep is the code login's first step, naming the account.
	FollowStep string

	T      Text // the wording in Lang
	Style  template.CSS
	Script template.JS
	Config ScriptConfig
}

// ScriptConfig is the JSON the login page's script reads from #wl-data.
type ScriptConfig struct {
	Prefix string `json:"prefix"`
	Next   string `json:"next"`
	// Kinds are the login scenes the page can ask for, "qr" and "code",
	// the first to start with.
	Kinds   []string `json:"kinds,omitempty"`
	Open    string   `json:"open,omitempty"`
	Sandbox string   `json:"sandbox,omitempty"`
	// Display is how website login is shown: "embedded", "popup" or
	// "page".
	Display string `json:"display,omitempty"`
	Embed   *Embed `json:"embed,omitempty"`
	Text    Text   `json:"t"`
}

// Login renders the login page.
func (p *Renderer) Login(w http.ResponseWriter, r *http.Request, l Login) error {
	return p.renderLogin(w, r, http.StatusOK, l, 0)
}

// Notice renders the login page with msg in place of the QR code; of l,
// only the site's name and logo are shown.
func (p *Renderer) Notice(w http.ResponseWriter, r *http.Request, status int, l Login, msg Message) error {
	return p.renderLogin(w, r, status, l, msg)
}

func (p *Renderer) renderLogin(w http.ResponseWriter, r *http.Request, status int, l Login, msg Message) error {
	lang := pickLang(r.Header.Get("Accept-Language"))
	t := texts[lang]
	d := Page{
		Login:    l,
		Lang:     lang,
		HTMLLang: htmlLang[lang],
		Nonce:    newNonce(),
		Message:  t.message(msg),
		T:        t,
		Style:    p.style,
		Script:   p.script,
		Config:   ScriptConfig{Prefix: l.Prefix, Next: l.Next, Kinds: l.kinds(), Open: l.OpenURL, Sandbox: l.SandboxScanURL, Text: t},
	}
	account := t.OurAccount
	if l.AccountName != "" {
		account = strings.ReplaceAll(t.NamedAccount, "{name}", l.AccountName)
	}
	step := t.CodeStepFollow
	if l.FollowQR == "" {
		step = t.CodeStepSearch
	}
	d.FollowStep = strings.ReplaceAll(step, "{account}", account)
	sources := loginSources(l.FollowQR)
	if l.OpenURL != "" && msg == 0 {
		switch {
		case l.Embed != nil:
			d.Config.Display, d.Config.Embed = "embedded", l.Embed
			// Nothing but WeChat's page and our own callback may be framed:
			// a script injected into the page could not frame anything else.
			sources += "; frame-src " + strings.Join(l.Embed.FrameSrc, " ")
		case l.FullPage:
			d.Config.Display = "page"
		default:
			d.Config.Display = "popup"
		}
	}
	return send(w, r, status, p.login, d, d.Nonce, sources, false)
}

// Outcome is what a page that ends an OAuth flow says.
type Outcome struct {
	// Message is MsgSuccess for a finished login, otherwise what went
	// wrong.
	Message Message
	// RetryURL is a same-site link that starts the login again; "" for
	// none.
	RetryURL string
	// Next is where a finished login goes on to.
	Next string
	// Popup is set when the flow runs in a popup opened by the login page:
	// the page then posts a PopupMessage to window.opener at Origin, this
	// site's exact origin, and closes. Without an opener, a finished login
	// goes on to Next and an error stays on the page.
	Popup  bool
	Origin string
	// Frame is set when the flow runs in the login page's frame (website
	// login embedded in the page): the page may be framed by this site
	// alone, and posts a PopupMessage to window.parent at Origin. A
	// finished login carries State and Token, which the parent redeems
	// for the session with its own cookies.
	Frame        bool
	State, Token string
}

// PopupMessage is what the page that ends a flow in a popup posts to its
// opener.
type PopupMessage struct {
	Type     string `json:"type"`   // always "wechat_login": the login page ignores other messages
	Status   string `json:"status"` // "confirmed" or "error"
	Redirect string `json:"redirect,omitempty"`
	Message  string `json:"message,omitempty"`
	// State and Token come from a frame: the parent posts them to
	// {prefix}/oauth/redeem.
	State string `json:"state,omitempty"`
	Token string `json:"token,omitempty"`
}

// outcomePage is what assets/oauth.html receives.
type outcomePage struct {
	Lang, Message string
	// RetryURL and ContinueURL are same-site links; either may be empty.
	RetryURL, ContinueURL string
	T                     Text
	Nonce                 string
	Popup                 *PopupMessage
	Origin                string
	// InFrame: Popup goes to window.parent rather than window.opener.
	InFrame bool
}

// Outcome renders the page that ends an OAuth flow.
func (p *Renderer) Outcome(w http.ResponseWriter, r *http.Request, status int, o Outcome) error {
	lang := pickLang(r.Header.Get("Accept-Language"))
	t := texts[lang]
	d := outcomePage{
		Lang:     lang,
		Message:  t.message(o.Message),
		RetryURL: o.RetryURL,
		T:        t,
		Nonce:    newNonce(),
		Origin:   o.Origin,
	}
	popup := PopupMessage{Type: "wechat_login", Status: "error", Message: d.Message}
	if o.Message == MsgSuccess {
		d.ContinueURL = o.Next
		popup = PopupMessage{Type: popup.Type, Status: "confirmed", Redirect: o.Next}
	}
	if o.Frame {
		if o.Message == MsgSuccess {
			// The frame cannot go on to next itself: the session cookie is
			// set by the parent's request.
			d.ContinueURL = ""
			popup = PopupMessage{Type: popup.Type, Status: "frame", State: o.State, Token: o.Token}
			d.Message = t.FrameDone
		}
		d.InFrame = true
		o.Popup = true
	}
	if o.Popup {
		d.Popup = &popup
	}
	return send(w, r, status, p.oauth, d, d.Nonce, oauthSources, o.Frame)
}

// kinds lists the login scenes the page may ask for, the first first. A
// site whose account WeChat just refused QR codes offers only the code.
func (l Login) kinds() []string {
	switch {
	case l.Code && (l.NoQR || l.CodeFirst):
		return []string{"code"}
	case l.Code:
		return []string{"qr", "code"}
	case !l.NoQR:
		return []string{"qr"}
	}
	return nil
}

// What each page may use besides its own script and style. The OAuth pages
// load nothing at all: they may sit at a URL that carried a code.
const oauthSources = "form-action 'none'"

// loginSources is what the login page may load: images from this origin
// and from the follow QR code's, if that is elsewhere.
func loginSources(followQR string) string {
	img := "img-src 'self' data:"
	if u, err := url.Parse(followQR); err == nil && (u.Scheme == "https" || u.Scheme == "http") && plainHost(u.Host) {
		img += " " + u.Scheme + "://" + u.Host
	}
	return img + "; connect-src 'self'; form-action 'self'"
}

// newNonce returns 128 random bits in the URL-safe alphabet, which needs no
// escaping in an HTML attribute.
func newNonce() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails: crypto/rand panics rather than return an error
	return base64.RawURLEncoding.EncodeToString(b)
}

// send executes t with data and writes the page with its security headers:
// a policy that allows sources and the script and style carrying nonce.
// Only a page that ends a flow inside the login page's frame (frameable)
// may be framed, and then by this origin alone; every other page refuses
// framing. When t fails, nothing is written and the error is returned.
func send(w http.ResponseWriter, r *http.Request, status int, t *template.Template, data any, nonce, sources string, frameable bool) error {
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		return fmt.Errorf("loginpage: %w", err)
	}
	ancestors, xfo := "'none'", "DENY"
	if frameable {
		ancestors, xfo = "'self'", "SAMEORIGIN"
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'nonce-"+nonce+"'; style-src 'nonce-"+nonce+"'; "+
		sources+"; base-uri 'none'; frame-ancestors "+ancestors)
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", xfo)
	h.Set("Vary", "Accept-Language")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(buf.Bytes())
	}
	return nil
}

// plainHost reports whether host is a host name or address with an
// optional port and nothing that could end a policy directive.
func plainHost(host string) bool {
	if host == "" {
		return false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(".-:[]", c) >= 0) {
			return false
		}
	}
	return true
}
