package middleware

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/wechat-login/caddy-wechat-login/internal/qrsvg"
	"github.com/wechat-login/caddy-wechat-login/internal/useragent"
	"github.com/wechat-login/caddy-wechat-login/middleware/store"
)

// Scene states, as reported by the poll and events routes.
const (
	StatePending   = "pending"
	StateScanned   = "scanned"
	StateConfirmed = "confirmed"
	StateExpired   = "expired"
	StateDenied    = "denied"
)

// sceneRecord is a login scene as kept in the store under sceneKey(id).
type sceneRecord struct {
	State     string `json:"state"`
	Ticket    string `json:"ticket"`
	QRURL     string `json:"url"`
	Next      string `json:"next"`
	ExpiresAt int64  `json:"exp"` // unix seconds
	// Client describes the browser that asked (family and address), for
	// the confirmation message.
	Client  string `json:"client,omitempty"`
	OpenID  string `json:"openid,omitempty"`
	UnionID string `json:"unionid,omitempty"`
	// ScanKey identifies the push that confirmed the scene, so WeChat's
	// retries of that push are recognised and answered the same way.
	ScanKey string `json:"scan,omitempty"`
	// SID is the id of the session the scene is redeemed for, chosen at the
	// scan so that the scanner's "not me" can revoke it.
	SID string `json:"sid,omitempty"`
	// NotMeCode ends the login when the scanner replies with it;
	// ConfirmCode (with ConfirmInChat) completes it. ConfirmTries counts the
	// scanner's wrong confirmation codes.
	NotMeCode    string `json:"notme,omitempty"`
	ConfirmCode  string `json:"ccode,omitempty"`
	ConfirmTries int    `json:"ctries,omitempty"`
	// Code is the login code of a code login (MethodCode), which the user
	// sends to the account in chat; empty for a QR login.
	Code string `json:"code,omitempty"`
}

// method is the login method the scene was made for.
func (r *sceneRecord) method() string {
	if r.Code != "" {
		return MethodCode
	}
	return MethodQR
}

// A scene record is read on every poll and every wake-up of every browser
// waiting on it, and held in the store for every QR code shown, so it is
// kept in a compact binary form rather than JSON:
//
//	format  1 byte, sceneFormat
//	state   1 byte, an index in sceneStates
//	exp     varint, ExpiresAt
//	tries   uvarint, ConfirmTries
//	present uvarint, bit i set when string field i is not empty
//	then each present string field, in sceneRecord.strings order:
//	        uvarint length, bytes
//
// The ticket and the QR code's URL, the largest fields, are packed when
// they have WeChat's form, and their length word is 4×n + form:
//
//	ticket form 0: n bytes, the ticket
//	       form 1: n bytes, the bytes the ticket's standard base64 spells
//	URL    form 0: n bytes, the URL
//	       form 1: n bytes, the URL after wechatQRPrefix
//	       form 2: none, the URL is the n bytes at offset o (uvarint,
//	               after the length) of the ticket's bytes, where WeChat
//	               puts it
//
// A pending scene of WeChat's takes about 120 bytes, its JSON 330. The
// state and the expiry come first, so a poll learns them without decoding
// the rest. Records written as JSON by earlier versions (their first byte
// is '{') are still read: a login in flight during an upgrade completes,
// and its record is rewritten in this form at its next change.
const sceneFormat = 0x01

// sceneStates maps the stored state byte to the state; 0 is no state.
var sceneStates = [...]string{1: StatePending, 2: StateScanned, 3: StateConfirmed, 4: StateDenied, 5: StateExpired}

func stateCode(state string) (byte, bool) {
	for i, s := range sceneStates {
		if i > 0 && s == state {
			return byte(i), true
		}
	}
	return 0, false
}

// sceneStringFields is the number of string fields a record carries.
const sceneStringFields = 11

// strings lists the record's string fields in their stored order. New
// fields go at the end.
func (r *sceneRecord) strings() [sceneStringFields]*string {
	return [...]*string{&r.Ticket, &r.QRURL, &r.Next, &r.Client, &r.OpenID, &r.UnionID, &r.ScanKey, &r.SID, &r.NotMeCode, &r.ConfirmCode, &r.Code}
}

// wechatQRPrefix begins the URL of every QR code WeChat makes.
const wechatQRPrefix = "http://weixin.qq.com/q/"

// The fields that are packed, and their forms.
const (
	ticketField = 0
	qrURLField  = 1

	formRaw      = 0
	formBase64   = 1 // ticket
	formPrefixed = 1 // URL
	formInTicket = 2 // URL
)

var ticketEncoding = base64.StdEncoding.Strict()

// appendScene appends the stored form of rec to dst.
func appendScene(dst []byte, rec *sceneRecord) ([]byte, error) {
	code, ok := stateCode(rec.State)
	if !ok {
		return nil, fmt.Errorf("encode scene: unknown state %q", rec.State)
	}
	if rec.ConfirmTries < 0 {
		return nil, fmt.Errorf("encode scene: negative ConfirmTries %d", rec.ConfirmTries)
	}
	fields := rec.strings()
	var present uint64
	for i, f := range fields {
		if *f != "" {
			present |= 1 << i
		}
	}
	dst = append(dst, sceneFormat, code)
	dst = binary.AppendVarint(dst, rec.ExpiresAt)
	dst = binary.AppendUvarint(dst, uint64(rec.ConfirmTries))
	dst = binary.AppendUvarint(dst, present)
	var ticket []byte // the ticket's bytes, when packed
	for i, f := range fields {
		v := *f
		switch {
		case v == "":
		case i == ticketField:
			start := len(dst)
			if dst, ok = appendPackedTicket(dst, v); ok {
				_, n := binary.Uvarint(dst[start:])
				ticket = dst[start+n:]
			} else {
				dst = appendPacked(dst, formRaw, v)
			}
		case i == qrURLField:
			if at := strings.Index(string(ticket), v); at >= 0 {
				dst = binary.AppendUvarint(dst, uint64(len(v))<<2|formInTicket)
				dst = binary.AppendUvarint(dst, uint64(at))
			} else if rest, ok := strings.CutPrefix(v, wechatQRPrefix); ok {
				dst = appendPacked(dst, formPrefixed, rest)
			} else {
				dst = appendPacked(dst, formRaw, v)
			}
		default:
			dst = binary.AppendUvarint(dst, uint64(len(v)))
			dst = append(dst, v...)
		}
	}
	return dst, nil
}

func appendPacked(dst []byte, form uint64, v string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(v))<<2|form)
	return append(dst, v...)
}

// appendPackedTicket appends a ticket in form 1, if it has one: the bytes
// its standard base64 spells, which give back exactly the ticket.
func appendPackedTicket(dst []byte, ticket string) ([]byte, bool) {
	// The decoder skips newlines, so a ticket with one would not come
	// back the same.
	if len(ticket)%4 != 0 || strings.ContainsAny(ticket, "\r\n") {
		return dst, false
	}
	n := len(ticket) / 4 * 3
	switch {
	case strings.HasSuffix(ticket, "=="):
		n -= 2
	case strings.HasSuffix(ticket, "="):
		n--
	}
	head := binary.AppendUvarint(dst, uint64(n)<<2|formBase64)
	out, err := ticketEncoding.AppendDecode(head, []byte(ticket))
	if err != nil || len(out)-len(head) != n {
		return dst, false
	}
	return out, true
}

// encodeScene returns the stored form of rec.
func encodeScene(rec sceneRecord) ([]byte, error) {
	return appendScene(make([]byte, 0, 32+len(rec.Ticket)+len(rec.Next)+len(rec.Client)), &rec)
}

var errSceneRecord = errors.New("decode scene: malformed record")

// isLegacyScene reports whether raw is a record in the JSON form of earlier
// versions.
func isLegacyScene(raw []byte) bool { return len(raw) > 0 && raw[0] == '{' }

func decodeLegacyScene(raw []byte) (sceneRecord, error) {
	var rec sceneRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return sceneRecord{}, fmt.Errorf("decode scene: %w", err)
	}
	return rec, nil
}

// compactHead reads a compact record's state and expiry, and returns where
// the rest of it starts.
func compactHead(raw []byte) (state string, exp int64, rest int, err error) {
	if len(raw) < 3 || raw[0] != sceneFormat || raw[1] == 0 || int(raw[1]) >= len(sceneStates) {
		return "", 0, 0, errSceneRecord
	}
	exp, n := binary.Varint(raw[2:])
	if n <= 0 {
		return "", 0, 0, errSceneRecord
	}
	return sceneStates[raw[1]], exp, 2 + n, nil
}

// peekScene reads a stored record's state and expiry (unix seconds),
// decoding no more of a compact record than that.
func peekScene(raw []byte) (state string, exp int64, err error) {
	if isLegacyScene(raw) {
		rec, err := decodeLegacyScene(raw)
		return rec.State, rec.ExpiresAt, err
	}
	state, exp, _, err = compactHead(raw)
	return state, exp, err
}

// fieldSpan is where a compact record holds a string field: the bytes
// raw[from:to] in the given form, size bytes once unpacked.
type fieldSpan struct {
	from, to, size int
	form           uint64
}

// decodeScene decodes a stored record, compact or JSON.
func decodeScene(raw []byte) (sceneRecord, error) {
	if isLegacyScene(raw) {
		return decodeLegacyScene(raw)
	}
	var rec sceneRecord
	var pos int
	var err error
	if rec.State, rec.ExpiresAt, pos, err = compactHead(raw); err != nil {
		return sceneRecord{}, err
	}
	tries, n := binary.Uvarint(raw[pos:])
	if n <= 0 || tries > math.MaxInt32 {
		return sceneRecord{}, errSceneRecord
	}
	pos += n
	present, n := binary.Uvarint(raw[pos:])
	if n <= 0 || present>>sceneStringFields != 0 {
		return sceneRecord{}, errSceneRecord
	}
	pos += n
	rec.ConfirmTries = int(tries)

	// First the fields' places and sizes, then one string that holds them
	// all, of which the fields are slices.
	var spans [sceneStringFields]fieldSpan
	total := 0
	for i := range sceneStringFields {
		if present&(1<<i) == 0 {
			continue
		}
		sp, next, ok := readSpan(raw, pos, i, spans[ticketField])
		if !ok || sp.size == 0 { // empty fields are not present
			return sceneRecord{}, errSceneRecord
		}
		spans[i], pos, total = sp, next, total+sp.size
	}
	if pos != len(raw) {
		return sceneRecord{}, errSceneRecord
	}
	var b strings.Builder
	b.Grow(total)
	for i, sp := range spans {
		switch {
		case sp.size == 0:
		case i == ticketField && sp.form == formBase64:
			var text [256]byte
			if sp.size <= len(text) {
				ticketEncoding.Encode(text[:sp.size], raw[sp.from:sp.to])
				b.Write(text[:sp.size])
			} else {
				b.WriteString(ticketEncoding.EncodeToString(raw[sp.from:sp.to]))
			}
		case i == qrURLField && sp.form == formPrefixed:
			b.WriteString(wechatQRPrefix)
			b.Write(raw[sp.from:sp.to])
		default:
			b.Write(raw[sp.from:sp.to])
		}
	}
	all, at := b.String(), 0
	for i, f := range rec.strings() {
		*f = all[at : at+spans[i].size]
		at += spans[i].size
	}
	return rec, nil
}

// readSpan reads field i of a compact record at pos, and returns where the
// next field starts.
func readSpan(raw []byte, pos, i int, ticket fieldSpan) (fieldSpan, int, bool) {
	l, n := binary.Uvarint(raw[pos:])
	if n <= 0 {
		return fieldSpan{}, 0, false
	}
	pos += n
	size, form := l, uint64(formRaw)
	if i == ticketField || i == qrURLField {
		size, form = l>>2, l&3
	}
	if i == qrURLField && form == formInTicket {
		at, n := binary.Uvarint(raw[pos:])
		if n <= 0 || ticket.form != formBase64 || at > uint64(ticket.to-ticket.from) || size > uint64(ticket.to-ticket.from)-at {
			return fieldSpan{}, 0, false
		}
		from := ticket.from + int(at)
		return fieldSpan{from: from, to: from + int(size), size: int(size), form: form}, pos + n, true
	}
	if size > uint64(len(raw)-pos) {
		return fieldSpan{}, 0, false
	}
	sp := fieldSpan{from: pos, to: pos + int(size), size: int(size), form: form}
	switch {
	case i == ticketField && form == formBase64:
		sp.size = ticketEncoding.EncodedLen(int(size))
	case i == ticketField && form != formRaw:
		return fieldSpan{}, 0, false
	case i == qrURLField && form == formPrefixed:
		sp.size += len(wechatQRPrefix)
	case i == qrURLField && form != formRaw:
		return fieldSpan{}, 0, false
	}
	return sp, sp.to, true
}

// bindingRecord is what the browser-binding cookie seals: the scene this
// browser asked for. Only the browser holding it can learn the scene's state
// or redeem it.
type bindingRecord struct {
	Scene string `json:"scene"`
}

// bindingPrefix and bindingSuffix frame a scene id in the binding cookie's
// payload as setBinding writes it.
const (
	bindingPrefix = `{"scene":"`
	bindingSuffix = `"}`
)

// bindingScene returns the scene id a binding cookie's payload names, or
// false. The form setBinding writes is read without decoding JSON; any
// other spelling goes through the decoder.
func bindingScene(payload []byte) ([]byte, bool) {
	if len(payload) == len(bindingPrefix)+sceneIDLen+len(bindingSuffix) &&
		string(payload[:len(bindingPrefix)]) == bindingPrefix &&
		string(payload[len(bindingPrefix)+sceneIDLen:]) == bindingSuffix {
		id := payload[len(bindingPrefix) : len(bindingPrefix)+sceneIDLen]
		if !validSceneID(string(id)) {
			return nil, false
		}
		return id, true
	}
	var b bindingRecord
	if err := json.Unmarshal(payload, &b); err != nil || !validSceneID(b.Scene) {
		return nil, false
	}
	return []byte(b.Scene), true
}

func sceneKey(id string) string { return "scene:" + id }

// sceneIDLen is the length of a scene id: 128 random bits in hex, well inside
// WeChat's 64-character scene_str limit and plain ASCII for every parser.
const sceneIDLen = 32

func validSceneID(s string) bool {
	if len(s) != sceneIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// loadScene reads a scene that has not expired, and its stored form.
func (m *Middleware) loadScene(ctx context.Context, id string) (sceneRecord, []byte, error) {
	return m.loadSceneFrom(ctx, m.store, id)
}

// loadSceneFrom is loadScene through st (a push reads through pushStore).
func (m *Middleware) loadSceneFrom(ctx context.Context, st store.Store, id string) (sceneRecord, []byte, error) {
	return m.sceneFromStored(st.Get(ctx, sceneKey(id)))
}

// sceneFromStored is loadSceneFrom for a record already read.
func (m *Middleware) sceneFromStored(raw []byte, err error) (sceneRecord, []byte, error) {
	if err != nil {
		return sceneRecord{}, nil, err
	}
	rec, err := decodeScene(raw)
	if err != nil {
		return sceneRecord{}, nil, err
	}
	if rec.ExpiresAt <= m.cfg.Now().Unix() {
		return sceneRecord{}, nil, store.ErrNotFound
	}
	return rec, raw, nil
}

// sceneState reads the state of a scene that has not expired, and its
// expiry (unix seconds), decoding no more of the record than that.
func (m *Middleware) sceneState(ctx context.Context, id string) (string, int64, error) {
	raw, err := m.store.Get(ctx, sceneKey(id))
	if err != nil {
		return "", 0, err
	}
	state, exp, err := peekScene(raw)
	if err != nil {
		return "", 0, err
	}
	if exp <= m.cfg.Now().Unix() {
		return "", 0, store.ErrNotFound
	}
	return state, exp, nil
}

// confirmedPrefix begins every compact record of a confirmed scene.
var confirmedPrefix = []byte{sceneFormat, 3}

// pollState is sceneState for a poll, which redeems a confirmed scene:
// with a store that can (store.PrefixTaker: Redis), a confirmed scene is
// taken out of the store by the same round trip that reads it, and
// returned as taken (the caller redeems it); otherwise taken is nil, and a
// confirmed scene is left for redeem to take, as before.
func (m *Middleware) pollState(ctx context.Context, id string) (state string, taken []byte, err error) {
	pt, ok := m.store.(store.PrefixTaker)
	if !ok {
		state, _, err = m.sceneState(ctx, id)
		return state, nil, err
	}
	raw, took, err := pt.TakeIfPrefix(ctx, sceneKey(id), confirmedPrefix)
	if err != nil {
		return "", nil, err
	}
	state, exp, err := peekScene(raw)
	if err != nil {
		return "", nil, err
	}
	if exp <= m.cfg.Now().Unix() {
		// Expired, as sceneState would say; if it was taken, it is
		// gone a little before its time to live would have removed it.
		return "", nil, store.ErrNotFound
	}
	if took {
		return state, raw, nil
	}
	return state, nil, nil
}

// sceneAnswer is what the answers of POST {prefix}/qr and POST
// {prefix}/code share: the scene, its expiry and where to wait on it.
type sceneAnswer struct {
	Scene     string    `json:"scene"`
	ExpiresAt time.Time `json:"expires_at"`
	ExpiresIn int64     `json:"expires_in"`
	PollURL   string    `json:"poll_url"`
	EventsURL string    `json:"events_url"`
}

func (m *Middleware) sceneAnswer(id string, rec sceneRecord) sceneAnswer {
	q := "?scene=" + id
	exp := time.Unix(rec.ExpiresAt, 0).UTC()
	return sceneAnswer{
		Scene:     id,
		ExpiresAt: exp,
		ExpiresIn: int64(exp.Sub(m.cfg.Now()) / time.Second),
		PollURL:   m.cfg.Prefix + "/poll" + q,
		EventsURL: m.cfg.Prefix + "/events" + q,
	}
}

// qrResponse is the JSON answer of POST {prefix}/qr.
type qrResponse struct {
	sceneAnswer
	QRImage   string `json:"qr_image"`
	QRContent string `json:"qr_content"`
}

// codeResponse is the JSON answer of POST {prefix}/code.
type codeResponse struct {
	sceneAnswer
	Code string `json:"code"`
}

// handleCreateQR serves POST {prefix}/qr: a new login scene with its QR code,
// bound to this browser.
func (m *Middleware) handleCreateQR(w http.ResponseWriter, r *http.Request) {
	m.createScene(w, r, MethodQR)
}

// handleCreateCode serves POST {prefix}/code: a new login scene with its
// login code, bound to this browser (see codelogin.go).
func (m *Middleware) handleCreateCode(w http.ResponseWriter, r *http.Request) {
	m.createScene(w, r, MethodCode)
}

// createScene makes a login scene for method (MethodQR or MethodCode) and
// binds it to the browser. Both kinds share the binding cookie and the
// per-address limit: switching between them gains a browser nothing.
func (m *Middleware) createScene(w http.ResponseWriter, r *http.Request, method string) {
	if r.Method != http.MethodPost {
		methodNotAllowed(w, http.MethodPost)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, "malformed form")
		return
	}
	next, ok := m.redirects.Next(r.Form["next"])
	if !ok {
		writeError(w, http.StatusBadRequest, "invalid next: only paths on this site (or configured hosts), at most 1024 bytes, are allowed")
		return
	}
	ctx := r.Context()

	// The same browser asking again while its scene of this kind is still
	// pending gets that scene back: no new WeChat call, no new quota spent,
	// no second live code.
	if bound, ok := bindingScene(m.cookies.Open(r, bindingCookie)); ok {
		id := string(bound)
		rec, _, err := m.loadScene(ctx, id)
		if err == nil && rec.State == StatePending && rec.method() == method && rec.ExpiresAt-m.cfg.Now().Unix() >= 30 {
			m.writeScene(w, id, rec)
			return
		}
	}
	if method == MethodQR && m.qrRefused(w) {
		return
	}

	addrOK, ceilingOK, retry := m.allowCreation(ctx, m.clientKey(r), method)
	if !addrOK {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(retry)))
		writeError(w, http.StatusTooManyRequests, "too many login codes requested from this address; try again later")
		return
	}
	if !ceilingOK {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(retry)))
		writeError(w, http.StatusServiceUnavailable, "this site is creating too many login codes right now; try again in a minute")
		return
	}

	id := randomHex(sceneIDLen / 2)
	rec := sceneRecord{
		State:  StatePending,
		Next:   next,
		Client: useragent.Describe(r.UserAgent()) + ", " + m.cfg.ClientIP(r),
	}
	ttl := m.cfg.SceneTTL
	if method == MethodQR {
		qr, err := m.wc.CreateTempQR(ctx, id, m.cfg.SceneTTL)
		if err != nil {
			m.qrFailure(w, err)
			return
		}
		if qr.ExpiresIn > 0 && qr.ExpiresIn < ttl {
			ttl = qr.ExpiresIn
		}
		rec.Ticket, rec.QRURL = qr.Ticket, qr.URL
	} else {
		code, err := m.drawLoginCode(ctx, id, ttl)
		if err != nil {
			m.storeFailure(w, "create login code", err)
			return
		}
		rec.Code = code
	}
	rec.ExpiresAt = m.cfg.Now().Add(ttl).Unix()
	raw, err := encodeScene(rec)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal error")
		return
	}
	if err := m.store.Create(ctx, sceneKey(id), raw, ttl); err != nil {
		m.storeFailure(w, "create scene", err)
		return
	}
	if err := m.setBinding(w, r, id, time.Unix(rec.ExpiresAt, 0)); err != nil {
		writeError(w, http.StatusInternalServerError, "internal error")
		return
	}
	// Before the answer leaves: from here on, every change is heard.
	m.fresh.add(m.notifier, id, rec.ExpiresAt, m.cfg.Now().Unix())
	m.log.Debug("login scene created", zap.String("scene", id[:8]), zap.String("method", method))
	m.metrics.SceneCreated()
	m.writeScene(w, id, rec)
}

// writeScene answers a scene creation: the QR code's or the login code's
// JSON, after the scene's kind.
func (m *Middleware) writeScene(w http.ResponseWriter, id string, rec sceneRecord) {
	answer := m.sceneAnswer(id, rec)
	if rec.Code != "" {
		writeJSON(w, http.StatusOK, codeResponse{answer, rec.Code})
		return
	}
	writeJSON(w, http.StatusOK, qrResponse{answer, m.cfg.Prefix + "/qr.svg?scene=" + id, rec.QRURL})
}

func (m *Middleware) setBinding(w http.ResponseWriter, r *http.Request, scene string, exp time.Time) error {
	payload, err := json.Marshal(bindingRecord{Scene: scene})
	if err != nil {
		return err
	}
	return m.cookies.Set(w, r, bindingCookie, payload, exp, exp.Sub(m.cfg.Now())+time.Minute)
}

// sceneQuery is what the scene routes read from the query string.
type sceneQuery struct {
	scene  string
	scenes int // how many scene parameters there are
	wait   string
	waits  int
}

// parseSceneQuery reads the scene and wait parameters as url.ParseQuery
// would, in one pass. Queries with escapes or semicolons, which no page of
// ours sends, go through url.ParseQuery itself.
func parseSceneQuery(raw string) sceneQuery {
	var q sceneQuery
	if needsQueryDecoder(raw) {
		v, _ := url.ParseQuery(raw)
		q.scenes, q.waits = len(v["scene"]), len(v["wait"])
		q.scene, q.wait = v.Get("scene"), v.Get("wait")
		return q
	}
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		key, value, _ := strings.Cut(pair, "=")
		switch key {
		case "scene":
			if q.scenes++; q.scenes == 1 {
				q.scene = value
			}
		case "wait":
			if q.waits++; q.waits == 1 {
				q.wait = value
			}
		}
	}
	return q
}

// needsQueryDecoder reports whether raw has an escape or a semicolon.
func needsQueryDecoder(raw string) bool {
	for i := 0; i < len(raw); i++ {
		switch raw[i] {
		case '%', '+', ';':
			return true
		}
	}
	return false
}

// boundScene checks the ?scene= parameter against the browser's binding and
// answers the request itself when they do not match. It returns the query
// it read.
func (m *Middleware) boundScene(w http.ResponseWriter, r *http.Request) (sceneQuery, bool) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, http.MethodGet)
		return sceneQuery{}, false
	}
	q := parseSceneQuery(r.URL.RawQuery)
	if q.scenes != 1 || !validSceneID(q.scene) {
		writeError(w, http.StatusBadRequest, "missing or malformed scene")
		return sceneQuery{}, false
	}
	bound, ok := bindingScene(m.cookies.Open(r, bindingCookie))
	if !ok || string(bound) != q.scene {
		writeError(w, http.StatusForbidden, "this login code belongs to another browser")
		return sceneQuery{}, false
	}
	return q, true
}

// handleQRImage serves GET {prefix}/qr.svg?scene=…: the QR code, rendered by
// us from the ticket's content URL, so no request goes to WeChat's image host.
func (m *Middleware) handleQRImage(w http.ResponseWriter, r *http.Request) {
	q, ok := m.boundScene(w, r)
	if !ok {
		return
	}
	rec, _, err := m.loadScene(r.Context(), q.scene)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "login code expired")
		return
	}
	if err != nil {
		m.storeFailure(w, "load scene", err)
		return
	}
	if rec.QRURL == "" {
		writeError(w, http.StatusNotFound, "this login has a code, not a QR code")
		return
	}
	svg, err := qrsvg.SVG(rec.QRURL)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "cannot render QR code")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "image/svg+xml")
	h.Set("Cache-Control", "private, no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(svg)
}

// pollResponse is the JSON answer of GET {prefix}/poll.
type pollResponse struct {
	Status   string `json:"status"`
	Redirect string `json:"redirect,omitempty"`
	// Reason says why a login was denied when it is not the allowlist.
	Reason string `json:"reason,omitempty"`
}

// ReasonNoUnionID is the poll answer's reason for a login denied because
// the site knows people by unionid (Config.UserID) and WeChat gave none.
const ReasonNoUnionID = "no_unionid"

// statusAnswers are the poll answers and status events that carry a state
// alone, encoded once: almost every poll gets one of them.
var statusAnswers = func() map[string]statusAnswer {
	a := make(map[string]statusAnswer, len(sceneStates))
	for _, state := range sceneStates[1:] {
		body, err := json.Marshal(pollResponse{Status: state})
		if err != nil {
			panic(err)
		}
		a[state] = statusAnswer{
			poll:  append(body, '\n'), // as writeJSON's encoder ends it
			event: []byte("event: status\ndata: " + string(body) + "\n\n"),
		}
	}
	return a
}()

type statusAnswer struct{ poll, event []byte }

// writeStatus answers a poll with state alone, as writeJSON would.
func writeStatus(w http.ResponseWriter, state string) {
	a, ok := statusAnswers[state]
	if !ok {
		writeJSON(w, http.StatusOK, pollResponse{Status: state})
		return
	}
	h := w.Header()
	// One allocation for the three values, not one each.
	v := [...]string{"application/json; charset=utf-8", "no-store", "nosniff"}
	h["Content-Type"], h["Cache-Control"], h["X-Content-Type-Options"] = v[0:1:1], v[1:2:2], v[2:3:3]
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(a.poll)
}

// handlePoll serves GET {prefix}/poll?scene=…[&wait=seconds]. With wait, it
// holds the request until the scene changes or the wait ends. The first
// "confirmed" answer redeems the scene and carries the session cookie.
//
// A waiting poll costs its request's goroutine and nothing else that runs:
// a subscription (a channel) and one timer.
func (m *Middleware) handlePoll(w http.ResponseWriter, r *http.Request) {
	q, ok := m.boundScene(w, r)
	if !ok {
		return
	}
	id := q.scene
	wait, err := m.parseWait(q.waits, q.wait)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx := r.Context()

	var wake <-chan struct{}
	var deadline <-chan time.Time
	unchanged := false // the scene is known to be pending, unread
	if wait > 0 {
		// Subscribe before reading, so a change between the read and the
		// wait is not missed.
		if !m.startWaiting(w, id) {
			return
		}
		defer m.stopWaiting(id)
		ch, cancel, fresh, _ := m.subscribeScene(id)
		defer cancel()
		wake, unchanged = ch, fresh
		timer := time.NewTimer(wait)
		defer timer.Stop()
		deadline = timer.C
	}
	first := ""
	for {
		state, taken, err := StatePending, []byte(nil), error(nil)
		if unchanged {
			unchanged = false
		} else {
			state, taken, err = m.pollState(ctx, id)
		}
		switch {
		case errors.Is(err, store.ErrNotFound):
			writeStatus(w, StateExpired)
			return
		case err != nil:
			m.storeFailure(w, "load scene", err)
			return
		}
		if taken != nil {
			m.redeemRecord(w, r, taken)
			return
		}
		if state == StateConfirmed {
			m.redeem(w, r, id)
			return
		}
		if first == "" {
			first = state
		}
		// Answer at once without wait, and on any change (pending →
		// scanned) with it.
		if wait <= 0 || state != first {
			writeStatus(w, state)
			return
		}
		select {
		case <-wake:
		case <-deadline:
			writeStatus(w, state)
			return
		case <-ctx.Done():
			return
		case <-m.done:
			writeStatus(w, state)
			return
		}
	}
}

func (m *Middleware) parseWait(n int, v string) (time.Duration, error) {
	switch n {
	case 0:
		return 0, nil
	case 1:
	default:
		return 0, errors.New("wait given more than once")
	}
	secs, err := strconv.Atoi(v)
	if err != nil || secs < 0 {
		return 0, errors.New("wait must be a whole number of seconds")
	}
	d := time.Duration(secs) * time.Second
	return min(d, m.cfg.LongPollTimeout), nil
}

// redeem takes a confirmed scene out of the store (exactly one caller can)
// and turns it into a session for this browser.
func (m *Middleware) redeem(w http.ResponseWriter, r *http.Request, id string) {
	raw, err := m.store.Take(r.Context(), sceneKey(id))
	if errors.Is(err, store.ErrNotFound) {
		// Somebody redeemed it first (another tab of this browser).
		writeStatus(w, StateExpired)
		return
	}
	if err != nil {
		m.storeFailure(w, "redeem scene", err)
		return
	}
	m.redeemRecord(w, r, raw)
}

// redeemRecord turns a scene record just taken out of the store into a
// session for this browser.
func (m *Middleware) redeemRecord(w http.ResponseWriter, r *http.Request, raw []byte) {
	rec, err := decodeScene(raw)
	if err != nil || rec.State != StateConfirmed || rec.OpenID == "" {
		status := StateExpired
		if rec.State == StateDenied {
			status = StateDenied // the scanner said "not me" a moment ago
		}
		writeStatus(w, status)
		return
	}
	m.cookies.Clear(w, r, bindingCookie)
	method := rec.method()
	id2 := Identity{AppID: m.cfg.AppID, OpenID: rec.OpenID, UnionID: rec.UnionID, Method: method}
	if m.cfg.UserID == "unionid" && id2.UnionID == "" {
		// Never the openid in its place (see Config.UserID): the page
		// says why from the reason.
		m.log.Info("login refused: WeChat gave no unionid", zap.String("openid", logID(rec.OpenID)))
		m.metrics.LoginDenied(method)
		writeJSON(w, http.StatusOK, pollResponse{Status: StateDenied, Reason: ReasonNoUnionID})
		return
	}
	if !m.allowed(id2) {
		m.log.Info("login refused by allowlist", zap.String("openid", logID(rec.OpenID)))
		m.metrics.LoginDenied(method)
		writeStatus(w, StateDenied)
		return
	}
	// The session id was drawn at the scan, so the scanner's "not me" can
	// end this session (scenes stored by older versions have none).
	if err := m.startSession(w, r, id2, rec.SID); err != nil {
		writeError(w, http.StatusInternalServerError, "internal error")
		return
	}
	m.log.Info("login", zap.String("method", method), zap.String("openid", logID(rec.OpenID)))
	m.metrics.Login(method)
	next := rec.Next
	if next == "" {
		next = "/"
	}
	writeJSON(w, http.StatusOK, pollResponse{Status: StateConfirmed, Redirect: next})
}

// sseKeepalive is how often an idle event stream gets a comment line, so
// that proxies do not close it.
const sseKeepalive = 15 * time.Second

// handleEvents serves GET {prefix}/events?scene=… as Server-Sent Events: one
// "status" event now and one on every change, until a final state. The
// browser then calls poll once to redeem a confirmed scene (an event stream
// cannot set cookies after it started).
//
// Like a waiting poll, a stream costs its request's goroutine, a
// subscription and one timer, which serves both the keepalive and the
// scene's expiry.
func (m *Middleware) handleEvents(w http.ResponseWriter, r *http.Request) {
	q, ok := m.boundScene(w, r)
	if !ok {
		return
	}
	id := q.scene
	// Servers wrap the ResponseWriter (Caddy does); the controller finds the
	// flusher underneath.
	rc := http.NewResponseController(w)
	ctx := r.Context()
	if !m.startWaiting(w, id) {
		return
	}
	defer m.stopWaiting(id)
	wake, cancel, unchanged, freshExp := m.subscribeScene(id)
	defer cancel()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, "retry: 2000\n\n")
	if err := rc.Flush(); err != nil {
		m.log.Warn("event stream cannot be flushed; the page falls back to polling", zap.Error(err))
		return
	}
	flush := func() { _ = rc.Flush() }

	timer := time.NewTimer(sseKeepalive)
	defer timer.Stop()
	nextKeepalive := time.Now().Add(sseKeepalive)
	var expiry time.Time // on the real clock, which timers run on
	var last string
	for {
		status, exp, err := StatePending, freshExp, error(nil)
		if unchanged {
			unchanged = false
		} else {
			status, exp, err = m.sceneState(ctx, id)
		}
		switch {
		case errors.Is(err, store.ErrNotFound):
			status = StateExpired
		case err != nil:
			m.log.Warn("store failure while streaming scene events", zap.Error(err))
			_, _ = io.WriteString(w, "event: error\ndata: {\"error\":\"temporarily unavailable\"}\n\n")
			flush()
			return
		}
		if status != last {
			if a, ok := statusAnswers[status]; ok {
				_, _ = w.Write(a.event)
			} else {
				data, _ := json.Marshal(pollResponse{Status: status})
				_, _ = fmt.Fprintf(w, "event: status\ndata: %s\n\n", data)
			}
			flush()
			last = status
		}
		if status != StatePending && status != StateScanned {
			return
		}
		if expiry.IsZero() {
			expiry = time.Now().Add(time.Unix(exp, 0).Sub(m.cfg.Now()) + time.Second)
			resetTimer(timer, nextKeepalive, expiry)
		}
		select {
		case <-wake:
		case now := <-timer.C:
			if !now.Before(nextKeepalive) {
				_, _ = io.WriteString(w, ": keepalive\n\n")
				flush()
				nextKeepalive = now.Add(sseKeepalive)
			}
			resetTimer(timer, nextKeepalive, expiry)
		case <-ctx.Done():
			return
		case <-m.done:
			return
		}
	}
}

// resetTimer sets t for the earlier of a and b.
func resetTimer(t *time.Timer, a, b time.Time) {
	if b.Before(a) {
		a = b
	}
	t.Reset(time.Until(a))
}

// loginURL is where unauthenticated browsers are sent.
func (m *Middleware) loginURL(next string) string {
	return m.cfg.Prefix + "/login?next=" + url.QueryEscape(next)
}
