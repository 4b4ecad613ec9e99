package wechattest

import (
	"bytes"
	"html/template"
	"net/http"
	"net/url"
)

// The pages are small and self-contained: no scripts, no external assets,
// so they work inside any sandbox and under a strict CSP.
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
{{end}}</form></main>
</body></html>{{end}}

{{define "scanned"}}{{template "head" "wechattest scan"}}
<main data-page="scanned" data-status="{{.Status}}"><h1>{{.Title}}</h1><p>{{.Detail}}</p>
{{if .Back}}<p><a href="{{.Back}}">返回 (back)</a></p>{{end}}</main>
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
	renderPage(w, http.StatusOK, "choice", data)
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
		Image, Scene, AppID, Ticket, Action string
		Users                               []userButton
	}{
		Image:  base + "/cgi-bin/showqrcode?ticket=" + url.QueryEscape(tc.ticket),
		Scene:  tc.scene,
		AppID:  tc.appID,
		Ticket: tc.ticket,
		Action: base + "/sandbox/scan",
		Users:  p.userButtons(),
	})
}
