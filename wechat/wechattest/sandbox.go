package wechattest

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// sandboxUser is a test user as /sandbox/users lists it.
type sandboxUser struct {
	Name     string   `json:"name"`
	Nickname string   `json:"nickname"`
	Snapshot bool     `json:"snapshot"`
	Follows  []string `json:"follows"` // AppIDs of followed Official Accounts
}

// sandboxApp is an app as /sandbox/users lists it: never its secrets.
type sandboxApp struct {
	AppID      string `json:"appid"`
	Kind       string `json:"kind"`
	Account    string `json:"account,omitempty"` // AccountType of an Official Account
	OriginalID string `json:"original_id,omitempty"`
	Mode       string `json:"mode,omitempty"`
}

func (p *Platform) handleSandboxUsers(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		sandboxError(w, http.StatusMethodNotAllowed, "use GET")
		return
	}
	p.mu.Lock()
	var ans struct {
		Users []sandboxUser `json:"users"`
		Apps  []sandboxApp  `json:"apps"`
	}
	ans.Users, ans.Apps = []sandboxUser{}, []sandboxApp{}
	for _, a := range p.apps {
		sa := sandboxApp{AppID: a.AppID, Kind: "website_app"}
		if a.Kind == OfficialAccount {
			sa.Kind, sa.OriginalID, sa.Mode = "official_account", a.OriginalID, a.Mode.String()
			sa.Account = a.Account.String()
		}
		ans.Apps = append(ans.Apps, sa)
	}
	for _, name := range p.order {
		u := p.users[name]
		su := sandboxUser{Name: u.Name, Nickname: u.Nickname, Snapshot: u.Snapshot, Follows: []string{}}
		for id, a := range p.apps {
			if a.Kind == OfficialAccount && p.peekFollowLocked(subject{id, name}).subscribed {
				su.Follows = append(su.Follows, id)
			}
		}
		ans.Users = append(ans.Users, su)
	}
	p.mu.Unlock()
	slices.SortFunc(ans.Apps, func(a, b sandboxApp) int { return strings.Compare(a.AppID, b.AppID) })
	for i := range ans.Users {
		slices.Sort(ans.Users[i].Follows)
	}
	sandboxJSON(w, http.StatusOK, ans)
}

// scanRequest is the body of POST /sandbox/scan.
type scanRequest struct {
	Ticket   string `json:"ticket"` // ticket, QR url or scene
	User     string `json:"user"`
	AppID    string `json:"appid"`
	NoFollow bool   `json:"nofollow"` // stay on the account page
}

// deliveryView is a Delivery as the sandbox shows it.
type deliveryView struct {
	AppID    string        `json:"appid"`
	Event    string        `json:"event"`
	EventKey string        `json:"event_key"`
	Status   string        `json:"status"`
	Problem  string        `json:"problem,omitempty"`
	Reply    string        `json:"reply,omitempty"`
	Chat     string        `json:"chat,omitempty"` // what the user's chat shows
	Attempts []attemptView `json:"attempts"`
}

type attemptView struct {
	Status     int    `json:"status"`
	Error      string `json:"error,omitempty"`
	DurationMS int64  `json:"duration_ms"`
}

func viewOf(d *Delivery) deliveryView {
	v := deliveryView{
		AppID:    d.AppID,
		Event:    d.Event.Event,
		EventKey: d.Event.EventKey,
		Status:   string(d.Status),
		Problem:  d.Problem,
		Attempts: []attemptView{},
	}
	if d.Event.Event == "" {
		v.Event = d.Event.MsgType
	}
	if d.Reply != nil {
		v.Reply = d.Reply.Content
	}
	v.Chat = d.ChatText()
	for _, a := range d.Attempts {
		av := attemptView{Status: a.Status, DurationMS: a.Duration.Milliseconds()}
		if a.Err != nil {
			av.Error = a.Err.Error()
		}
		v.Attempts = append(v.Attempts, av)
	}
	return v
}

func (p *Platform) handleSandboxScan(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		sandboxError(w, http.StatusMethodNotAllowed, "use POST")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	var req scanRequest
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "application/json" {
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			sandboxError(w, http.StatusBadRequest, "body is not valid JSON")
			return
		}
	} else {
		if err := r.ParseForm(); err != nil {
			sandboxError(w, http.StatusBadRequest, "body is not a valid form")
			return
		}
		req = scanRequest{
			Ticket: r.PostForm.Get("ticket"), User: r.PostForm.Get("user"), AppID: r.PostForm.Get("appid"),
			NoFollow: r.PostForm.Get("nofollow") == "1",
		}
	}
	if req.Ticket == "" || req.User == "" {
		sandboxError(w, http.StatusBadRequest, "ticket and user are required")
		return
	}
	var d *Delivery
	var err error
	if req.NoFollow {
		d, err = p.ScanWithoutFollowing(r.Context(), req.AppID, req.Ticket, req.User)
	} else {
		d, err = p.Scan(r.Context(), req.AppID, req.Ticket, req.User)
	}
	if d == nil && err == nil {
		p.accountPageAnswer(w, r, req)
		return
	}
	if d == nil {
		status := http.StatusConflict
		switch {
		case errors.Is(err, ErrUnknownUser):
			status = http.StatusBadRequest
		case errors.Is(err, ErrUnknownTicket):
			status = http.StatusNotFound
		case errors.Is(err, ErrTicketExpired):
			status = http.StatusGone
		}
		p.scanAnswer(w, r, req, status, nil, err.Error())
		return
	}
	p.scanAnswer(w, r, req, http.StatusOK, d, "")
}

// scanAnswer answers a sandbox scan with JSON, or with a page when the
// scan came from a browser form.
func (p *Platform) scanAnswer(w http.ResponseWriter, r *http.Request, req scanRequest, status int, d *Delivery, msg string) {
	if !strings.Contains(r.Header.Get("Accept"), "text/html") {
		if d == nil {
			sandboxError(w, status, msg)
			return
		}
		sandboxJSON(w, status, viewOf(d))
		return
	}
	data := scannedPage{Status: "error", Title: "扫码失败 (scan failed)", Detail: msg}
	if d != nil {
		data.Phone = phoneLink(p.baseURL(r), d.AppID, req.User)
		v := viewOf(d)
		data.Status, data.Title = v.Status, "已扫码 (scanned) as "+req.User
		data.Detail = v.Event + " " + v.EventKey + ": " + v.Status
		if v.Problem != "" {
			data.Detail += " (" + v.Problem + ")"
		}
		if v.Chat != "" {
			data.Detail += " · chat: " + v.Chat
		}
	}
	p.mu.Lock()
	if t := p.resolveTicketLocked(req.AppID, req.Ticket); t != nil {
		data.Back = p.baseURL(r) + "/q/" + t.id
	}
	p.mu.Unlock()
	renderPage(w, status, "scanned", data)
}

// accountPageAnswer answers a scan by a non-follower who stays on the
// account page: nothing was pushed; the page offers to follow.
func (p *Platform) accountPageAnswer(w http.ResponseWriter, r *http.Request, req scanRequest) {
	p.mu.Lock()
	t := p.resolveTicketLocked(req.AppID, req.Ticket)
	var appID, scene, back string
	if t != nil {
		appID, scene, back = t.appID, t.scene, p.baseURL(r)+"/q/"+t.id
	}
	p.mu.Unlock()
	if !strings.Contains(r.Header.Get("Accept"), "text/html") {
		sandboxJSON(w, http.StatusOK, map[string]any{"appid": appID, "account_page": true, "scene": scene, "status": "account page"})
		return
	}
	base := p.baseURL(r)
	renderPage(w, http.StatusOK, "scanned", scannedPage{
		Status: "account_page", Title: "公众号页面 (account page)",
		Detail: req.User + " does not follow " + appID + ": nothing was pushed. Following from here pushes subscribe with qrscene_" + scene + ".",
		Follow: &followForm{Action: base + "/sandbox/follow", AppID: appID, User: req.User},
		Phone:  phoneLink(base, appID, req.User),
		Back:   back,
	})
}

// scannedPage is the data of the "scanned" page.
type scannedPage struct {
	Status, Title, Detail, Phone, Back string
	Follow                             *followForm
}

type followForm struct{ Action, AppID, User string }

func phoneLink(base, appID, user string) string {
	return base + "/sandbox/phone?appid=" + url.QueryEscape(appID) + "&user=" + url.QueryEscape(user)
}

func (p *Platform) handleSandboxDeliveries(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		sandboxError(w, http.StatusMethodNotAllowed, "use GET")
		return
	}
	ds := p.Deliveries()
	out := make([]deliveryView, 0, len(ds))
	for i := range ds {
		out = append(out, viewOf(&ds[i]))
	}
	sandboxJSON(w, http.StatusOK, map[string]any{"deliveries": out})
}

func sandboxJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func sandboxError(w http.ResponseWriter, status int, msg string) {
	sandboxJSON(w, status, map[string]string{"error": msg})
}

// SandboxConfig configures [NewSandbox].
type SandboxConfig struct {
	// Config configures the platform.
	Config

	// Account is the type of the sandbox's Official Account. The zero
	// value, a verified service account, offers QR login (parametric QR
	// codes) and web authorization. A SubscriptionAccount offers neither:
	// users follow it and chat with it, as for a login by a code sent in
	// the chat.
	Account AccountType

	// OfficialAccount is the sandbox's Official Account. NewSandbox sets
	// its Kind and its Account (from the field above).
	OfficialAccount App

	// WebsiteApp, when its AppID is set, is registered as a website app
	// for website login (qrconnect). NewSandbox sets its Kind.
	WebsiteApp App
}

// NewSandbox returns a platform for people to try logins with: one
// Official Account of the configured type, optionally one website app, and
// the test users. Its phone page, GET /sandbox/phone, opens on that
// Official Account.
func NewSandbox(cfg SandboxConfig) (*Platform, error) {
	p, err := New(cfg.Config)
	if err != nil {
		return nil, err
	}
	oa := cfg.OfficialAccount
	oa.Kind, oa.Account = OfficialAccount, cfg.Account
	if err := p.AddApp(oa); err != nil {
		return nil, err
	}
	if cfg.WebsiteApp.AppID != "" {
		web := cfg.WebsiteApp
		web.Kind = WebsiteApp
		if err := p.AddApp(web); err != nil {
			return nil, err
		}
	}
	p.mu.Lock()
	p.sandboxApp = oa.AppID
	p.mu.Unlock()
	return p, nil
}

// phoneRequest is the body of POST /sandbox/follow and /sandbox/message.
type phoneRequest struct {
	AppID   string `json:"appid"`
	User    string `json:"user"`
	Follow  bool   `json:"follow"`  // /sandbox/follow: follow (true) or unfollow
	Content string `json:"content"` // /sandbox/message: the text to send
}

// readPhoneRequest reads a JSON or form body; it reports whether the
// request came from a browser form, which is answered with a redirect to
// the phone page.
func readPhoneRequest(w http.ResponseWriter, r *http.Request) (req phoneRequest, form bool, ok bool) {
	if r.Method != http.MethodPost {
		sandboxError(w, http.StatusMethodNotAllowed, "use POST")
		return req, false, false
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "application/json" {
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			sandboxError(w, http.StatusBadRequest, "body is not valid JSON")
			return req, false, false
		}
	} else {
		if err := r.ParseForm(); err != nil {
			sandboxError(w, http.StatusBadRequest, "body is not a valid form")
			return req, false, false
		}
		f := r.PostForm
		req = phoneRequest{AppID: f.Get("appid"), User: f.Get("user"), Follow: f.Get("follow") == "1", Content: f.Get("content")}
		form = strings.Contains(r.Header.Get("Accept"), "text/html")
	}
	if req.User == "" {
		sandboxError(w, http.StatusBadRequest, "user is required")
		return req, false, false
	}
	return req, form, true
}

// phoneStatus maps a phone error to an HTTP status.
func phoneStatus(err error) int {
	switch {
	case errors.Is(err, ErrUnknownUser):
		return http.StatusBadRequest
	case errors.Is(err, ErrUnknownApp):
		return http.StatusNotFound
	}
	return http.StatusConflict
}

func (p *Platform) handleSandboxFollow(w http.ResponseWriter, r *http.Request) {
	req, form, ok := readPhoneRequest(w, r)
	if !ok {
		return
	}
	req.AppID = p.phoneApp(req.AppID)
	var d *Delivery
	var err error
	if req.Follow {
		d, err = p.Follow(r.Context(), req.AppID, req.User)
	} else {
		d, err = p.Unfollow(r.Context(), req.AppID, req.User)
	}
	p.phoneAnswer(w, r, req, form, d, err)
}

func (p *Platform) handleSandboxMessage(w http.ResponseWriter, r *http.Request) {
	req, form, ok := readPhoneRequest(w, r)
	if !ok {
		return
	}
	if req.Content == "" || len(req.Content) > maxChatText {
		sandboxError(w, http.StatusBadRequest, fmt.Sprintf("content must be 1 to %d bytes", maxChatText))
		return
	}
	req.AppID = p.phoneApp(req.AppID)
	d, err := p.sendText(r.Context(), req.AppID, req.User, req.Content)
	p.phoneAnswer(w, r, req, form, d, err)
}

// phoneAnswer answers a follow or a message: JSON describing the delivery,
// or for a browser form a redirect back to the phone page, which shows the
// chat.
func (p *Platform) phoneAnswer(w http.ResponseWriter, r *http.Request, req phoneRequest, form bool, d *Delivery, err error) {
	if d == nil && err != nil {
		sandboxError(w, phoneStatus(err), err.Error())
		return
	}
	if form {
		http.Redirect(w, r, phoneLink(p.baseURL(r), req.AppID, req.User), http.StatusSeeOther)
		return
	}
	sandboxJSON(w, http.StatusOK, viewOf(d))
}

// phoneApp returns appID, or when it is empty the Official Account the
// phone page opens on: the sandbox's, else the first (by AppID) that has a
// callback URL.
func (p *Platform) phoneApp(appID string) string {
	if appID != "" {
		return appID
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sandboxApp != "" {
		return p.sandboxApp
	}
	ids := p.phoneAppsLocked()
	if len(ids) == 0 {
		return ""
	}
	return ids[0]
}

// phoneAppsLocked returns the AppIDs of the Official Accounts a phone can
// talk to, sorted. p.mu must be held.
func (p *Platform) phoneAppsLocked() []string {
	var ids []string
	for id, a := range p.apps {
		if a.Kind == OfficialAccount && a.CallbackURL != "" {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// chatLine is one line of the phone page's chat.
type chatLine struct{ From, Text string }

// maxChatLines is how much of a chat the phone page shows.
const maxChatLines = 50

func (p *Platform) handleSandboxPhone(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		sandboxError(w, http.StatusMethodNotAllowed, "use GET")
		return
	}
	q := r.URL.Query()
	base := p.baseURL(r)
	appID := p.phoneApp(q.Get("appid"))
	user := q.Get("user")
	users := p.Users()
	if user == "" && len(users) > 0 {
		user = users[0].Name
	}
	type link struct{ Name, AppID, Link string }
	data := struct {
		User, Nickname, AppID, Account, Page, FollowAction, MessageAction string
		Following                                                         bool
		MaxText                                                           int
		Users, Apps                                                       []link
		Chat                                                              []chatLine
	}{User: user, Nickname: user, FollowAction: base + "/sandbox/follow", MessageAction: base + "/sandbox/message", MaxText: maxChatText}
	for _, u := range users {
		data.Users = append(data.Users, link{Name: u.Name, Link: phoneLink(base, appID, u.Name)})
		if u.Name == user && u.Nickname != "" {
			data.Nickname = u.Nickname
		}
	}

	p.mu.Lock()
	known := p.users[user] != nil
	ids := p.phoneAppsLocked()
	a := p.apps[appID]
	if a != nil && slices.Contains(ids, appID) {
		f := p.peekFollowLocked(subject{appID, user})
		data.AppID, data.Account, data.Following = appID, a.Account.String(), f.subscribed
		if f.page != nil && !f.subscribed {
			data.Page = f.page.scene
		}
	}
	p.mu.Unlock()
	if !known {
		sandboxError(w, http.StatusNotFound, "unknown user")
		return
	}
	if len(ids) > 1 {
		for _, id := range ids {
			data.Apps = append(data.Apps, link{AppID: id, Link: phoneLink(base, id, user)})
		}
	}
	if data.AppID != "" {
		data.Chat = p.chat(data.AppID, openID(data.AppID, user))
	}
	renderPage(w, http.StatusOK, "phone", data)
}

// chat returns the latest lines of a user's chat with an account, from the
// delivery log: the user's messages and actions, and what the chat showed
// for each.
func (p *Platform) chat(appID, openid string) []chatLine {
	var lines []chatLine
	p.logMu.Lock()
	p.log.each(func(d *Delivery) {
		if d.AppID != appID || d.Event.FromUserName != openid {
			return
		}
		switch d.Event.MsgType {
		case "text":
			lines = append(lines, chatLine{"me", d.Event.Content})
		case "event":
			lines = append(lines, chatLine{"event", strings.TrimSpace(d.Event.Event + " " + d.Event.EventKey)})
		default:
			lines = append(lines, chatLine{"me", "[" + d.Event.MsgType + "]"})
		}
		if t := d.ChatText(); t != "" {
			lines = append(lines, chatLine{"account", t})
		}
	})
	p.logMu.Unlock()
	if len(lines) > maxChatLines {
		lines = lines[len(lines)-maxChatLines:]
	}
	return lines
}
