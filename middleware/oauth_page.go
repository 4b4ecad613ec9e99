package middleware

import (
	"bytes"
	"crypto/rand"
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"net/http"

	"go.uber.org/zap"
)

//go:embed assets/oauth_page.html
var oauthAssets embed.FS

// oauthTmpl renders every page of the OAuth flows: results, errors, and the
// popup page that reports to its opener. It is parsed once and only read.
var oauthTmpl = template.Must(template.ParseFS(oauthAssets, "assets/oauth_page.html"))

// popupMessageType is the "type" of every message the popup page posts to
// its opener; the login page ignores messages of any other type.
const popupMessageType = "wechat_login"

// popupMessage is what the popup page posts to window.opener, at this
// site's exact origin.
type popupMessage struct {
	Type     string `json:"type"`
	Status   string `json:"status"` // StateConfirmed or "error"
	Redirect string `json:"redirect,omitempty"`
	Message  string `json:"message,omitempty"`
}

// oauthMsg names a page's wording.
type oauthMsg int

const (
	msgSuccess oauthMsg = iota
	msgBadRequest
	msgBadNext
	msgNotEnabled
	msgExpired
	msgOtherBrowser
	msgCookies
	msgDeclined
	msgSnapshot
	msgCodeInvalid
	msgMisconfigured
	msgBusy
	msgUnavailable
	msgForbidden
	msgTooMany
)

// oauthText is one language's wording of the OAuth pages.
type oauthText struct {
	Title, Retry, Continue, Close string
	Messages                      map[oauthMsg]string
}

var oauthTexts = map[string]oauthText{
	"en": {
		Title:    "Log in with WeChat",
		Retry:    "Try again",
		Continue: "Continue",
		Close:    "Close this window",
		Messages: map[oauthMsg]string{
			msgSuccess:       "Logged in. Taking you back…",
			msgBadRequest:    "This login link is not valid. Please start again.",
			msgBadNext:       "This login link points to another site, so it was not followed.",
			msgTooMany:       "Too many login attempts from your network. Please wait a minute and try again.",
			msgNotEnabled:    "This way of logging in is not enabled on this site.",
			msgExpired:       "This login link has expired or has already been used. Please start again.",
			msgOtherBrowser:  "This login was started in another browser or tab. For your safety it was not completed here. Please start again.",
			msgCookies:       "Your browser did not keep this site's cookies, which logging in needs. Please allow cookies (or open the page in your phone's browser) and try again.",
			msgDeclined:      "You did not allow WeChat to log you in.",
			msgSnapshot:      "You are viewing a preview of this page, which does not tell us who you are. Tap “Use full service” (使用完整服务) at the bottom of the screen, then log in again.",
			msgCodeInvalid:   "This WeChat login has expired or was already used. Please log in again.",
			msgMisconfigured: "WeChat login is not set up correctly on this site. Please try again later or tell the site's owner.",
			msgBusy:          "WeChat is busy right now. Please try again in a moment.",
			msgUnavailable:   "Logging in is temporarily unavailable. Please try again in a moment.",
			msgForbidden:     "This WeChat account is not allowed to use this site.",
		},
	},
	"zh": {
		Title:    "微信登录",
		Retry:    "重试",
		Continue: "继续",
		Close:    "关闭此窗口",
		Messages: map[oauthMsg]string{
			msgSuccess:       "登录成功，正在跳转…",
			msgBadRequest:    "登录链接无效，请重新开始。",
			msgBadNext:       "登录链接指向其他网站，已拒绝跳转。",
			msgTooMany:       "你所在的网络登录尝试过多，请稍等一分钟再试。",
			msgNotEnabled:    "本站未启用这种登录方式。",
			msgExpired:       "登录链接已过期或已被使用，请重新开始。",
			msgOtherBrowser:  "此次登录是在另一个浏览器或标签页中发起的，为安全起见未在此完成，请重新开始。",
			msgCookies:       "您的浏览器没有保存本站的 Cookie，登录需要它。请允许 Cookie（或在手机浏览器中打开本页）后重试。",
			msgDeclined:      "您没有允许使用微信登录。",
			msgSnapshot:      "您正在浏览本页的快照，无法确认您的身份。请点击屏幕下方的“使用完整服务”，然后重新登录。",
			msgCodeInvalid:   "微信登录已过期或已被使用，请重新登录。",
			msgMisconfigured: "本站的微信登录配置有误，请稍后再试或联系网站管理员。",
			msgBusy:          "微信繁忙，请稍后再试。",
			msgUnavailable:   "登录暂时不可用，请稍后再试。",
			msgForbidden:     "此微信账号无权访问本站。",
		},
	},
}

// oauthPageData is what assets/oauth_page.html receives.
type oauthPageData struct {
	Lang, Title, Message string
	// RetryURL and ContinueURL are same-site links; either may be empty.
	RetryURL, ContinueURL string
	T                     oauthText
	Nonce                 string
	// Popup, when set, is posted to window.opener at Origin, after which
	// the window closes. Without an opener, a confirmed login navigates to
	// Popup.Redirect and an error stays on this page.
	Popup  *popupMessage
	Origin string
}

// oauthPage renders a result or error page. When the flow runs in a popup
// (rec.Popup), the page also reports the error to the opener.
func (m *Middleware) oauthPage(w http.ResponseWriter, r *http.Request, status int, msg oauthMsg, retry string, rec *oauthRecord) {
	var popup *popupMessage
	if rec != nil && rec.Popup {
		text := oauthTexts[pickLang(r.Header.Get("Accept-Language"))]
		popup = &popupMessage{Type: popupMessageType, Status: "error", Message: text.Messages[msg]}
	}
	m.renderOAuthPage(w, r, status, msg, retry, popup)
}

func (m *Middleware) renderOAuthPage(w http.ResponseWriter, r *http.Request, status int, msg oauthMsg, retry string, popup *popupMessage) {
	lang := pickLang(r.Header.Get("Accept-Language"))
	text := oauthTexts[lang]
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	d := oauthPageData{
		Lang:     lang,
		Title:    text.Title,
		Message:  text.Messages[msg],
		RetryURL: retry,
		T:        text,
		Nonce:    base64.RawURLEncoding.EncodeToString(nonce), // no character that HTML escapes
		Popup:    popup,
		Origin:   m.origin(r),
	}
	if popup != nil && popup.Status == StateConfirmed {
		d.ContinueURL = popup.Redirect
	}
	var buf bytes.Buffer
	if err := oauthTmpl.Execute(&buf, d); err != nil {
		m.log.Error("cannot render OAuth page", zap.Error(err))
		writeError(w, http.StatusInternalServerError, "cannot render page")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	// No external resources at all: the page may sit at a URL that carried
	// a code.
	h.Set("Content-Security-Policy", fmt.Sprintf(
		"default-src 'none'; script-src 'nonce-%[1]s'; style-src 'nonce-%[1]s'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'", d.Nonce))
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}
