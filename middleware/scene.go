package middleware

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
