package wechattest

import (
	"bytes"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
)

// The pages are small and self-contained: no external assets, and no
// scripts except the one that moves the top window after an embedded
// website login approved at once (renderTopRedirect), which carries its own
// CSP. They work inside any sandbox and under a strict CSP.
var pages = template.Must(template.New("").Parse(`
{{define "head"}}<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.}}</title>
<style>
body{font-family:system-ui,sans-serif;background:#ededed;margin:0;padding:2em 1em;color:#191919}
main{max-width:26em;margin:auto;background:#fff;border-radius:8px;padding:1.5em;text-align:center}
button{display:block;width:100%;margin:.5em 0;padding:.7em;border:0;border-radius:4px;font-size:1em;background:#07c160;color:#fff;cursor:pointer}
button.deny{background:#f2f2f2;color:#191919}
img{max-width:100%;image-rendering:pixelated}
small{color:#888;word-break:break-all}
</style></head><body>{{end}}

{{define "error"}}{{template "head" "微信"}}
<main data-errcode="{{.Code}}"><h1>该链接无法访问</h1><p>{{.Message}}</p><small>wechattest error {{.Code}}</small></main>
</body></html>{{end}}

{{define "wechatonly"}}{{template "head" "微信"}}
<main data-errcode="wechat_client"><h1>请在微信客户端打开链接</h1><p>Open this link in WeChat.</p></main>
</body></html>{{end}}

{{define "qrframe"}}<!doctype html>
<html lang="{{if .English}}en{{else}}zh-CN{{end}}"><head><meta charset="utf-8">
<title>{{.Title}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;padding:8px;background:transparent;color:{{if eq .Style "white"}}#fff{{else}}#191919{{end}};text-align:center}
h1{font-size:18px;margin:8px 0}
p{font-size:13px;margin:6px 0 10px}
button{display:block;width:100%;margin:6px 0;padding:8px;border:0;border-radius:4px;font-size:14px;background:#07c160;color:#fff;cursor:pointer}
button.deny{background:#f2f2f2;color:#191919}
</style>
{{if .Href}}<link rel="stylesheet" href="{{.Href}}">{{end}}
</head><body>
<main data-page="qrframe" data-self-redirect="{{.SelfRedirect}}" data-style="{{.Style}}"{{if .Stylelite}} data-stylelite="1"{{end}}>
<h1 class="title">{{.Title}}</h1><p class="info">{{.Prompt}}</p>
<form method="post" action="{{.Action}}" target="{{.Target}}">
{{range .Users}}<button type="submit" name="user" value="{{.Name}}">{{.Label}}</button>
{{end}}{{if .CanDeny}}<button type="submit" class="deny" name="decision" value="deny">{{$.Deny}}</button>{{end}}
</form></main>
</body></html>{{end}}

{{define "topredirect"}}<!doctype html>
<html><head><meta charset="utf-8"><title>微信登录</title></head><body>
<main data-page="topredirect"><a href="{{.Target}}" target="_top">继续 (continue)</a></main>
<script nonce="{{.Nonce}}">window.top.location.href = {{.Target}};</script>
</body></html>{{end}}

{{define "choice"}}{{template "head" .Title}}
<main data-page="{{.Page}}"><h1>{{.Title}}</h1>
<p>{{.Prompt}}</p><small>appid {{.AppID}} · scope {{.Scope}}</small>
<form method="post" action="{{.Action}}">
{{range .Users}}<button type="submit" name="user" value="{{.Name}}">{{.Label}}</button>
{{end}}{{if .CanDeny}}<button type="submit" class="deny" name="decision" value="deny">拒绝 (deny)</button>{{end}}
</form></main>
</body></html>{{end}}

{{define "qr"}}{{template "head" "wechattest QR code"}}
<main data-page="qr"><h1>扫一扫 (scan)</h1>
<img src="{{.Image}}" alt="QR code" width="246" height="246">
<p>Scene <code>{{.Scene}}</code> · appid {{.AppID}}</p>
<form method="post" action="{{.Action}}">
<input type="hidden" name="ticket" value="{{.Ticket}}">
{{range .Users}}<button type="submit" name="user" value="{{.Name}}">以 {{.Label}} 扫码 (scan as)</button>
{{end}}<label><input type="checkbox" name="nofollow" value="1"> 只扫码，不关注 (scan without following)</label>
</form><p><a href="{{.Phone}}">手机 (phone): follow, unfollow, send messages</a></p></main>
</body></html>{{end}}

{{define "scanned"}}{{template "head" "wechattest scan"}}
<main data-page="scanned" data-status="{{.Status}}"><h1>{{.Title}}</h1><p>{{.Detail}}</p>
{{if .Follow}}<form method="post" action="{{.Follow.Action}}">
<input type="hidden" name="appid" value="{{.Follow.AppID}}"><input type="hidden" name="user" value="{{.Follow.User}}">
<button type="submit" name="follow" value="1">关注公众号 (follow)</button></form>{{end}}
{{if .Phone}}<p><a href="{{.Phone}}">打开手机 (open the phone)</a></p>{{end}}
{{if .Back}}<p><a href="{{.Back}}">返回 (back)</a></p>{{end}}</main>
</body></html>{{end}}

{{define "phone"}}{{template "head" "wechattest phone"}}
<main data-page="phone" data-user="{{.User}}" data-appid="{{.AppID}}" data-following="{{.Following}}">
<h1>{{.Nickname}} 的手机 (phone)</h1>
<p>{{range .Users}}<a href="{{.Link}}">{{.Name}}</a> {{end}}</p>
{{if .Apps}}<p>{{range .Apps}}<a href="{{.Link}}">{{.AppID}}</a> {{end}}</p>{{end}}
{{if .AppID}}<p>公众号 (account) <code>{{.AppID}}</code> · {{.Account}} · {{if .Following}}已关注 (following){{else}}未关注 (not following){{end}}</p>
{{if .Page}}<p>公众号页面 (account page) from QR scene <code>{{.Page}}</code></p>{{end}}
<form method="post" action="{{.FollowAction}}">
<input type="hidden" name="appid" value="{{.AppID}}"><input type="hidden" name="user" value="{{.User}}">
{{if .Following}}<button type="submit" class="deny" name="follow" value="0">不再关注 (unfollow)</button>
{{else}}<button type="submit" name="follow" value="1">关注公众号 (follow)</button>{{end}}
</form>
<section data-chat>{{range .Chat}}<p data-from="{{.From}}"><small>{{.From}}</small><br>{{.Text}}</p>
{{else}}<p><small>no messages yet</small></p>{{end}}</section>
{{if .Following}}<form method="post" action="{{.MessageAction}}">
<input type="hidden" name="appid" value="{{.AppID}}"><input type="hidden" name="user" value="{{.User}}">
<input name="content" maxlength="{{.MaxText}}" required aria-label="message" style="width:100%;box-sizing:border-box;padding:.6em;font-size:1em">
<button type="submit">发送 (send)</button></form>
{{else}}<p><small>Follow the account to chat with it.</small></p>{{end}}
{{else}}<p>No Official Account with a callback URL.</p>{{end}}
</main>
</body></html>{{end}}
`))

// renderPage writes a template to w, buffering so that a template error
// never leaves half a page.
func renderPage(w http.ResponseWriter, status int, name string, data any) {
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, data); err != nil {
		http.Error(w, "page error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// renderError shows an authorization error page. Like WeChat, it answers
// 200: the problem is only visible on the page.
func (p *Platform) renderError(w http.ResponseWriter, e *pageError) {
	renderPage(w, http.StatusOK, "error", struct{ Code, Message string }{e.code, e.message})
}

type userButton struct{ Name, Label string }

func (p *Platform) userButtons() []userButton {
	users := p.Users()
	out := make([]userButton, 0, len(users))
	for _, u := range users {
		label := u.Name
		if u.Nickname != "" {
			label = u.Nickname + " (" + u.Name + ")"
		}
		out = append(out, userButton{u.Name, label})
	}
	return out
}

// renderChoice shows the page where a person picks the test user who holds
// the phone and, for consent scopes, approves or denies.
func (p *Platform) renderChoice(w http.ResponseWriter, r *http.Request, req *authRequest) {
	data := struct {
		Page, Title, Prompt, AppID, Scope, Action string
		Users                                     []userButton
		CanDeny                                   bool
	}{
		Page:    "authorize",
		Title:   "微信网页授权",
		Prompt:  "Choose the test user who is signing in.",
		AppID:   req.app.AppID,
		Scope:   req.scope,
		Action:  p.baseURL(r) + r.URL.Path + "?" + r.URL.RawQuery,
		Users:   p.userButtons(),
		CanDeny: !req.silent,
	}
	if req.app.Kind == WebsiteApp {
		data.Page, data.Title = "qrconnect", "微信登录"
		data.Prompt = "Scan with WeChat: choose the test user whose phone scans and confirms."
	}
	if f := req.frame; f != nil {
		renderFrame(w, data.Action, data.Users, data.CanDeny, f)
		return
	}
	renderPage(w, http.StatusOK, "choice", data)
}

// renderFrame shows qrconnect's embedded page, the content of wxLogin.js's
// iframe. Its form posts with the target self_redirect asks for, so that
// the redirect to redirect_uri moves the frame (true) or the top window.
func renderFrame(w http.ResponseWriter, action string, users []userButton, canDeny bool, f *frameParams) {
	data := struct {
		Title, Prompt, Deny, Action, Target, Style, SelfRedirect string
		Href                                                     template.URL
		Users                                                    []userButton
		CanDeny, Stylelite, English                              bool
	}{
		Title: "微信登录", Prompt: "使用微信扫一扫登录 · choose the test user whose phone scans", Deny: "拒绝",
		Action: action, Target: "_top", Style: f.style, SelfRedirect: strconv.FormatBool(f.selfRedirect),
		// Checked by validStyleHref: https, or inline CSS.
		Href:  template.URL(f.href),
		Users: users, CanDeny: canDeny, Stylelite: f.stylelite, English: f.english,
	}
	if f.english {
		data.Title, data.Prompt, data.Deny = "WeChat login", "Scan with WeChat: choose the test user whose phone scans", "Deny"
	}
	if f.selfRedirect {
		data.Target = "_self"
	}
	renderPage(w, http.StatusOK, "qrframe", data)
}

// renderTopRedirect answers an embedded login that completed without a
// click in the frame: a script moves the top window to target, with a link
// for a top window that refuses. The page's CSP allows that script alone.
func renderTopRedirect(w http.ResponseWriter, target string) {
	nonce := randString(22, alnum)
	w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'nonce-"+nonce+"'")
	renderPage(w, http.StatusOK, "topredirect", struct{ Target, Nonce string }{target, nonce})
}

func (p *Platform) handleQRPage(w http.ResponseWriter, r *http.Request) {
	now := p.now()
	p.mu.Lock()
	t := p.qrIDs[r.PathValue("id")]
	var tc ticket
	if t != nil {
		tc = *t
	}
	p.mu.Unlock()
	if t == nil || tc.expired(now) {
		http.NotFound(w, r)
		return
	}
	base := p.baseURL(r)
	renderPage(w, http.StatusOK, "qr", struct {
		Image, Scene, AppID, Ticket, Action, Phone string
		Users                                      []userButton
	}{
		Image:  base + "/cgi-bin/showqrcode?ticket=" + url.QueryEscape(tc.ticket),
		Scene:  tc.scene,
		AppID:  tc.appID,
		Ticket: tc.ticket,
		Action: base + "/sandbox/scan",
		Phone:  base + "/sandbox/phone?appid=" + url.QueryEscape(tc.appID),
		Users:  p.userButtons(),
	})
}
