package wechattest

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"image"
	"image/jpeg"
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
	if apiErr == nil {
		apiErr = p.takeQRQuota(tok.appID)
	}
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
	t.id = newQRID()
	t.url = qrURLPrefix + t.id
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

// takeQRQuota checks that appID's account type may create parametric QR
// codes and counts the call against its daily quota.
func (p *Platform) takeQRQuota(appID string) *apiError {
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.apps[appID]
	if a == nil || !a.Account.canCreateQR() {
		return errCode(48001)
	}
	limit := p.qrQuota
	if limit == 0 {
		limit = qrDailyQuota
		if a.Account == TestAccount {
			limit = testQRDailyQuota
		}
	}
	c := p.qrCalls[appID]
	if c == nil {
		c = &dailyCount{}
		p.qrCalls[appID] = c
	}
	if !c.take(now, limit) {
		return errCode(45009)
	}
	return nil
}

// qrURLPrefix is where WeChat's QR code urls point.
const qrURLPrefix = "http://weixin.qq.com/q/"

// newQRID returns the last path segment of a QR code url in one of the two
// shapes WeChat uses: 20 characters, as in the documentation's example
// "kZgfwMTm72WWPkovabbI", or the newer 22 starting with "02", as in
// "02mGJbopxacSG1xRUj1z1M". Their tickets are 70 and 72 bytes long, whose
// base64 ends in "==" and in no padding at all: both occur, so clients
// that mishandle either show it.
func newQRID() string {
	var b [1]byte
	_, _ = rand.Read(b[:])
	if b[0]&1 == 0 {
		return randString(20, alnum)
	}
	return "02" + randString(20, alnum)
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

// encodeTicket builds a ticket laid out like WeChat's: standard base64 of
// a binary record that embeds the url (NUL-terminated), the creation time
// and the lifetime (0 for permanent codes), both little-endian:
//
//	81 01 r1 r2 len 00 00 00 00 00 00 00 01 urllen "url" 00 02 04 <created> 03 04 <ttl>
//
// where len counts the bytes from the 01 on and urllen includes the NUL.
// r1 and r2 are random; half of the tickets get an r1 that base64 writes
// as "+", so that a ticket put into a URL unescaped fails often.
func encodeTicket(u string, created time.Time, ttl time.Duration) string {
	var rnd [3]byte
	_, _ = rand.Read(rnd[:])
	if rnd[2]&1 == 0 {
		// The low 6 bits of byte 2 are the 4th base64 character: 62 is '+'.
		rnd[0] = rnd[0]&0xc0 | 62
	}
	var tail bytes.Buffer
	tail.Write([]byte{0x01, byte(len(u) + 1)})
	tail.WriteString(u)
	tail.Write([]byte{0x00, 0x02, 0x04})
	_ = binary.Write(&tail, binary.LittleEndian, uint32(created.Unix()))
	tail.Write([]byte{0x03, 0x04})
	_ = binary.Write(&tail, binary.LittleEndian, uint32(ttl/time.Second))

	var b bytes.Buffer
	b.Write([]byte{0x81, 0x01, rnd[0], rnd[1], byte(tail.Len()), 0, 0, 0, 0, 0, 0, 0})
	b.Write(tail.Bytes())
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
	img, err := qrJPEG(t.url)
	if err != nil {
		http.Error(w, "cannot render QR code", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	// WeChat's own header, "jpg" rather than the registered "jpeg".
	h.Set("Content-Type", "image/jpg")
	h.Set("Cache-Control", "max-age=604800")
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Length", strconv.Itoa(len(img)))
	if r.Method == http.MethodGet {
		_, _ = w.Write(img)
	}
}

// qrImageSize is the side of WeChat's QR images, in pixels.
const qrImageSize = 430

// qrJPEG renders text as a QR code in a 430×430 JPEG like WeChat's: black
// modules on white, with a quiet zone of at least four modules.
func qrJPEG(text string) ([]byte, error) {
	c, err := qr.Encode(text, qr.M)
	if err != nil {
		return nil, err
	}
	scale, off := qrLayout(c.Size)
	img := image.NewGray(image.Rect(0, 0, qrImageSize, qrImageSize))
	for i := range img.Pix {
		img.Pix[i] = 0xff
	}
	for y := range c.Size {
		for x := range c.Size {
			if !c.Black(x, y) {
				continue
			}
			for dy := range scale {
				row := img.Pix[(off+y*scale+dy)*img.Stride:]
				for dx := range scale {
					row[off+x*scale+dx] = 0
				}
			}
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// qrLayout returns the pixels per module and the offset of the first module
// for a code of size modules, centred in the image with a quiet zone.
func qrLayout(size int) (scale, off int) {
	scale = max(1, qrImageSize/(size+8))
	return scale, (qrImageSize - size*scale) / 2
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
