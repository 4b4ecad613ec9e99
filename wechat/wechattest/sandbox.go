package wechattest

import (
	"encoding/json"
	"errors"
	"mime"
	"net/http"
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
	Ticket string `json:"ticket"` // ticket, QR url or scene
	User   string `json:"user"`
	AppID  string `json:"appid"`
}

// deliveryView is a Delivery as the sandbox shows it.
type deliveryView struct {
	AppID    string        `json:"appid"`
	Event    string        `json:"event"`
	EventKey string        `json:"event_key"`
	Status   string        `json:"status"`
	Problem  string        `json:"problem,omitempty"`
	Reply    string        `json:"reply,omitempty"`
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
		req = scanRequest{Ticket: r.PostForm.Get("ticket"), User: r.PostForm.Get("user"), AppID: r.PostForm.Get("appid")}
	}
	if req.Ticket == "" || req.User == "" {
		sandboxError(w, http.StatusBadRequest, "ticket and user are required")
		return
	}
	d, err := p.Scan(r.Context(), req.AppID, req.Ticket, req.User)
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
	data := struct{ Status, Title, Detail, Back string }{Status: "error", Title: "扫码失败 (scan failed)", Detail: msg}
	if d != nil {
		v := viewOf(d)
		data.Status, data.Title = v.Status, "已扫码 (scanned) as "+req.User
		data.Detail = v.Event + " " + v.EventKey + ": " + v.Status
		if v.Problem != "" {
			data.Detail += " (" + v.Problem + ")"
		}
		if v.Reply != "" {
			data.Detail += " · reply: " + v.Reply
		}
	}
	p.mu.Lock()
	if t := p.resolveTicketLocked(req.AppID, req.Ticket); t != nil {
		data.Back = p.baseURL(r) + "/q/" + t.id
	}
	p.mu.Unlock()
	renderPage(w, status, "scanned", data)
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
