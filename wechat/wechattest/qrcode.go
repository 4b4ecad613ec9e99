package wechattest

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"rsc.io/qr"
)

// ticket is a parametric QR code.
type ticket struct {
	ticket    string
	id        string // the last path segment of url
	url       string
	appID     string
	action    string
	scene     string // decimal scene_id or scene_str
	sceneID   int64  // for numeric scenes
	created   time.Time
	expires   time.Time // zero for permanent codes
	permanent bool
}

func (t *ticket) expired(now time.Time) bool { return !t.permanent && !now.Before(t.expires) }

// qrRequest is the JSON body of qrcode/create. The scene fields stay raw so
// that a wrongly typed scene gives 40053 rather than 40052.
type qrRequest struct {
	ExpireSeconds *int64 `json:"expire_seconds"`
	ActionName    string `json:"action_name"`
	ActionInfo    *struct {
		Scene *struct {
			SceneID  json.RawMessage `json:"scene_id"`
			SceneStr json.RawMessage `json:"scene_str"`
		} `json:"scene"`
	} `json:"action_info"`
}

type qrAnswer struct {
	Ticket        string `json:"ticket"`
	ExpireSeconds int64  `json:"expire_seconds,omitempty"`
	URL           string `json:"url"`
}

func (p *Platform) handleQRCreate(w http.ResponseWriter, r *http.Request) {
	if !requireMethod(w, r, http.MethodPost) {
		return
	}
	tok, apiErr := p.checkToken(r.URL.Query().Get("access_token"), basicToken, stableToken)
	if apiErr != nil {
		writeAPIError(w, apiErr)
		return
	}
	body, apiErr := readBody(w, r)
	if apiErr != nil {
		writeAPIError(w, apiErr)
		return
	}
	t, ttl, apiErr := parseQRRequest(body)
	if apiErr != nil {
		writeAPIError(w, apiErr)
		return
	}
	t.appID = tok.appID
	t.created = p.now()
	t.expires = t.created.Add(ttl)
	t.id = randString(22, alnum)
	t.url = p.baseURL(r) + "/q/" + t.id
	t.ticket = encodeTicket(t.url, t.created, ttl)

	p.mu.Lock()
	p.pruneLocked(t.created)
	p.tickets[t.ticket] = t
	p.qrIDs[t.id] = t
	p.mu.Unlock()

	ans := qrAnswer{Ticket: t.ticket, URL: t.url}
	if !t.permanent {
		ans.ExpireSeconds = int64(ttl / time.Second)
	}
	writeJSON(w, http.StatusOK, ans)
}

// parseQRRequest validates a qrcode/create body. It returns a ticket
// holding the action and the scene, and the lifetime of temporary codes.
func parseQRRequest(body []byte) (*ticket, time.Duration, *apiError) {
	var req qrRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, 0, errCode(40052)
	}
	t := &ticket{action: req.ActionName}
	numeric := false
	switch req.ActionName {
	case "QR_SCENE":
		numeric = true
	case "QR_STR_SCENE":
	case "QR_LIMIT_SCENE":
		numeric, t.permanent = true, true
	case "QR_LIMIT_STR_SCENE":
		t.permanent = true
	default:
		return nil, 0, errCode(40052)
	}

	switch {
	case req.ActionInfo == nil || req.ActionInfo.Scene == nil:
		// WeChat accepts a body without the "scene" level and uses scene 0.
		t.scene = "0"
	case numeric:
		// A JSON number only: strings, fractions and negatives fail here.
		id, err := strconv.ParseUint(string(req.ActionInfo.Scene.SceneID), 10, 32)
		if err != nil || id == 0 || (t.permanent && id > 100000) {
			return nil, 0, errCode(40053)
		}
		t.sceneID = int64(id)
		t.scene = strconv.FormatUint(id, 10)
	default:
		var s string
		raw := req.ActionInfo.Scene.SceneStr
		if len(raw) == 0 || json.Unmarshal(raw, &s) != nil || s == "" || len(s) > 64 {
			return nil, 0, errCode(40053)
		}
		t.scene = s
	}

	if t.permanent {
		return t, 0, nil
	}
	secs := int64(defaultQRTTL)
	if e := req.ExpireSeconds; e != nil && *e > 0 {
		secs = min(*e, maxQRTTL)
	}
	return t, time.Duration(secs) * time.Second, nil
}

// encodeTicket builds an opaque ticket shaped like WeChat's: base64 of a
// small binary record that embeds the url, the creation time and the
// lifetime. Its length makes the base64 always end in "==".
func encodeTicket(u string, created time.Time, ttl time.Duration) string {
	var b bytes.Buffer
	b.Write([]byte{0x81, 0x01})
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	b.Write(rnd[:4])
	b.Write([]byte{0x3c, 0, 0, 0, 0, 0, 0, 0, 0x01, byte(len(u))})
	b.WriteString(u)
	b.Write([]byte{0x02, 0x04})
	_ = binary.Write(&b, binary.LittleEndian, uint32(created.Unix()))
	b.Write([]byte{0x03, 0x04})
	_ = binary.Write(&b, binary.LittleEndian, uint32(ttl/time.Second))
	// Pad with random bytes to a length of 3k+1, which base64 ends in "==".
	b.Write(rnd[4 : 4+(4-b.Len()%3)%3])
	return base64.StdEncoding.EncodeToString(b.Bytes())
}

// liveTicket returns the ticket with the given value if it exists and has
// not expired.
func (p *Platform) liveTicket(v string) *ticket {
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.tickets[v]
	if t == nil || t.expired(now) {
		return nil
	}
	return t
}

func (p *Platform) handleShowQR(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	t := p.liveTicket(r.URL.Query().Get("ticket"))
	if t == nil {
		http.NotFound(w, r)
		return
	}
	png, err := qrPNG(t.url)
	if err != nil {
		http.Error(w, "cannot render QR code", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "image/png")
	h.Set("Cache-Control", "max-age=604800")
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Length", strconv.Itoa(len(png)))
	if r.Method == http.MethodGet {
		_, _ = w.Write(png)
	}
}

// qrPNG renders text as a QR code PNG.
func qrPNG(text string) ([]byte, error) {
	c, err := qr.Encode(text, qr.M)
	if err != nil {
		return nil, err
	}
	c.Scale = 6
	return c.PNG(), nil
}

// resolveTicket finds a ticket of appID (any app when empty) from a ticket,
// a QR url, or a scene value, preferring the newest ticket for a scene.
// p.mu must be held.
func (p *Platform) resolveTicketLocked(appID, ref string) *ticket {
	if t := p.tickets[ref]; t != nil {
		return t
	}
	if i := strings.LastIndex(ref, "/q/"); i >= 0 {
		return p.qrIDs[ref[i+len("/q/"):]]
	}
	var best *ticket
	for _, t := range p.tickets {
		if t.scene == ref && (appID == "" || t.appID == appID) && (best == nil || t.created.After(best.created)) {
			best = t
		}
	}
	return best
}
