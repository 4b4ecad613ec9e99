package middleware

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
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
}

// bindingRecord is what the browser-binding cookie seals: the scene this
// browser asked for. Only the browser holding it can learn the scene's state
// or redeem it.
type bindingRecord struct {
	Scene string `json:"scene"`
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
	raw, err := st.Get(ctx, sceneKey(id))
	if err != nil {
		return sceneRecord{}, nil, err
	}
	var rec sceneRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return sceneRecord{}, nil, fmt.Errorf("decode scene: %w", err)
	}
	if rec.ExpiresAt <= m.cfg.Now().Unix() {
		return sceneRecord{}, nil, store.ErrNotFound
	}
	return rec, raw, nil
}

// qrResponse is the JSON answer of POST {prefix}/qr.
type qrResponse struct {
	Scene     string    `json:"scene"`
	QRImage   string    `json:"qr_image"`
	QRContent string    `json:"qr_content"`
	ExpiresAt time.Time `json:"expires_at"`
	ExpiresIn int64     `json:"expires_in"`
	PollURL   string    `json:"poll_url"`
	EventsURL string    `json:"events_url"`
}

func (m *Middleware) qrResponse(id string, rec sceneRecord) qrResponse {
	q := "?scene=" + id
	exp := time.Unix(rec.ExpiresAt, 0).UTC()
	return qrResponse{
		Scene:     id,
		QRImage:   m.cfg.Prefix + "/qr.svg" + q,
		QRContent: rec.QRURL,
		ExpiresAt: exp,
		ExpiresIn: int64(exp.Sub(m.cfg.Now()) / time.Second),
		PollURL:   m.cfg.Prefix + "/poll" + q,
		EventsURL: m.cfg.Prefix + "/events" + q,
	}
}

// handleCreateQR serves POST {prefix}/qr: a new login scene with its QR code,
// bound to this browser.
func (m *Middleware) handleCreateQR(w http.ResponseWriter, r *http.Request) {
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

	// The same browser asking again while its scene is still pending gets
	// that scene back: no new WeChat call, no new quota spent.
	if b, ok := m.binding(r); ok {
		rec, _, err := m.loadScene(ctx, b.Scene)
		if err == nil && rec.State == StatePending && rec.ExpiresAt-m.cfg.Now().Unix() >= 30 {
			writeJSON(w, http.StatusOK, m.qrResponse(b.Scene, rec))
			return
		}
	}

	if ok, retry := m.allowQR(ctx, m.clientKey(r)); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(retry)))
		writeError(w, http.StatusTooManyRequests, "too many login codes requested from this address; try again later")
		return
	}
	if ok, retry := m.allowQRCeiling(ctx); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(retry)))
		writeError(w, http.StatusServiceUnavailable, "this site is creating too many login codes right now; try again in a minute")
		return
	}

	id := randomHex(sceneIDLen / 2)
	qr, err := m.wc.CreateTempQR(ctx, id, m.cfg.SceneTTL)
	if err != nil {
		m.wechatFailure(w, "create QR ticket", err)
		return
	}
	ttl := m.cfg.SceneTTL
	if qr.ExpiresIn > 0 && qr.ExpiresIn < ttl {
		ttl = qr.ExpiresIn
	}
	rec := sceneRecord{
		State:     StatePending,
		Ticket:    qr.Ticket,
		QRURL:     qr.URL,
		Next:      next,
		ExpiresAt: m.cfg.Now().Add(ttl).Unix(),
		Client:    useragent.Describe(r.UserAgent()) + ", " + m.cfg.ClientIP(r),
	}
	raw, err := json.Marshal(rec)
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
	m.log.Debug("login scene created", zap.String("scene", id[:8]))
	m.metrics.SceneCreated()
	writeJSON(w, http.StatusOK, m.qrResponse(id, rec))
}

func (m *Middleware) setBinding(w http.ResponseWriter, r *http.Request, scene string, exp time.Time) error {
	payload, err := json.Marshal(bindingRecord{Scene: scene})
	if err != nil {
		return err
	}
	return m.cookies.Set(w, r, bindingCookie, payload, exp, exp.Sub(m.cfg.Now())+time.Minute)
}

// binding returns the scene this browser is bound to, if any.
func (m *Middleware) binding(r *http.Request) (bindingRecord, bool) {
	payload := m.cookies.Open(r, bindingCookie)
	if payload == nil {
		return bindingRecord{}, false
	}
	var b bindingRecord
	if err := json.Unmarshal(payload, &b); err != nil || !validSceneID(b.Scene) {
		return bindingRecord{}, false
	}
	return b, true
}

// boundScene checks the ?scene= parameter against the browser's binding and
// answers the request itself when they do not match.
func (m *Middleware) boundScene(w http.ResponseWriter, r *http.Request) (string, bool) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, http.MethodGet)
		return "", false
	}
	q := r.URL.Query()
	if len(q["scene"]) != 1 || !validSceneID(q.Get("scene")) {
		writeError(w, http.StatusBadRequest, "missing or malformed scene")
		return "", false
	}
	id := q.Get("scene")
	b, ok := m.binding(r)
	if !ok || b.Scene != id {
		writeError(w, http.StatusForbidden, "this login code belongs to another browser")
		return "", false
	}
	return id, true
}

// handleQRImage serves GET {prefix}/qr.svg?scene=…: the QR code, rendered by
// us from the ticket's content URL, so no request goes to WeChat's image host.
func (m *Middleware) handleQRImage(w http.ResponseWriter, r *http.Request) {
	id, ok := m.boundScene(w, r)
	if !ok {
		return
	}
	rec, _, err := m.loadScene(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "login code expired")
		return
	}
	if err != nil {
		m.storeFailure(w, "load scene", err)
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
}

// handlePoll serves GET {prefix}/poll?scene=…[&wait=seconds]. With wait, it
// holds the request until the scene changes or the wait ends. The first
// "confirmed" answer redeems the scene and carries the session cookie.
func (m *Middleware) handlePoll(w http.ResponseWriter, r *http.Request) {
	id, ok := m.boundScene(w, r)
	if !ok {
		return
	}
	wait, err := m.parseWait(r.URL.Query()["wait"])
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx := r.Context()

	var wake <-chan struct{}
	if wait > 0 {
		// Subscribe before reading, so a change between the read and the
		// wait is not missed.
		done, ok := m.startWaiting(w, id)
		if !ok {
			return
		}
		defer done()
		ch, cancel := m.notifier.Subscribe(sceneKey(id))
		defer cancel()
		wake = ch
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	first := ""
	for {
		rec, _, err := m.loadScene(ctx, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			writeJSON(w, http.StatusOK, pollResponse{Status: StateExpired})
			return
		case err != nil:
			m.storeFailure(w, "load scene", err)
			return
		}
		if rec.State == StateConfirmed {
			m.redeem(w, r, id)
			return
		}
		if first == "" {
			first = rec.State
		}
		// Answer at once without wait, and on any change (pending →
		// scanned) with it.
		if wait <= 0 || rec.State != first {
			writeJSON(w, http.StatusOK, pollResponse{Status: rec.State})
			return
		}
		select {
		case <-wake:
		case <-deadline.C:
			writeJSON(w, http.StatusOK, pollResponse{Status: rec.State})
			return
		case <-ctx.Done():
			return
		case <-m.done:
			writeJSON(w, http.StatusOK, pollResponse{Status: rec.State})
			return
		}
	}
}

func (m *Middleware) parseWait(v []string) (time.Duration, error) {
	switch len(v) {
	case 0:
		return 0, nil
	case 1:
	default:
		return 0, errors.New("wait given more than once")
	}
	n, err := strconv.Atoi(v[0])
	if err != nil || n < 0 {
		return 0, errors.New("wait must be a whole number of seconds")
	}
	d := time.Duration(n) * time.Second
	return min(d, m.cfg.LongPollTimeout), nil
}

// redeem takes a confirmed scene out of the store (exactly one caller can)
// and turns it into a session for this browser.
func (m *Middleware) redeem(w http.ResponseWriter, r *http.Request, id string) {
	raw, err := m.store.Take(r.Context(), sceneKey(id))
	if errors.Is(err, store.ErrNotFound) {
		// Somebody redeemed it first (another tab of this browser).
		writeJSON(w, http.StatusOK, pollResponse{Status: StateExpired})
		return
	}
	if err != nil {
		m.storeFailure(w, "redeem scene", err)
		return
	}
	var rec sceneRecord
	if err := json.Unmarshal(raw, &rec); err != nil || rec.State != StateConfirmed || rec.OpenID == "" {
		status := StateExpired
		if rec.State == StateDenied {
			status = StateDenied // the scanner said "not me" a moment ago
		}
		writeJSON(w, http.StatusOK, pollResponse{Status: status})
		return
	}
	m.cookies.Clear(w, r, bindingCookie)
	id2 := Identity{AppID: m.cfg.AppID, OpenID: rec.OpenID, UnionID: rec.UnionID, Method: MethodQR}
	if !m.allowed(id2) {
		m.log.Info("login refused by allowlist", zap.String("openid", logID(rec.OpenID)))
		m.metrics.LoginDenied(MethodQR)
		writeJSON(w, http.StatusOK, pollResponse{Status: StateDenied})
		return
	}
	// The session id was drawn at the scan, so the scanner's "not me" can
	// end this session (scenes stored by older versions have none).
	if err := m.startSession(w, r, id2, rec.SID); err != nil {
		writeError(w, http.StatusInternalServerError, "internal error")
		return
	}
	m.log.Info("login", zap.String("method", MethodQR), zap.String("openid", logID(rec.OpenID)))
	m.metrics.Login(MethodQR)
	next := rec.Next
	if next == "" {
		next = "/"
	}
	writeJSON(w, http.StatusOK, pollResponse{Status: StateConfirmed, Redirect: next})
}

// handleEvents serves GET {prefix}/events?scene=… as Server-Sent Events: one
// "status" event now and one on every change, until a final state. The
// browser then calls poll once to redeem a confirmed scene (an event stream
// cannot set cookies after it started).
func (m *Middleware) handleEvents(w http.ResponseWriter, r *http.Request) {
	id, ok := m.boundScene(w, r)
	if !ok {
		return
	}
	// Servers wrap the ResponseWriter (Caddy does); the controller finds the
	// flusher underneath.
	rc := http.NewResponseController(w)
	ctx := r.Context()
	done, ok := m.startWaiting(w, id)
	if !ok {
		return
	}
	defer done()
	wake, cancel := m.notifier.Subscribe(sceneKey(id))
	defer cancel()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_, _ = fmt.Fprint(w, "retry: 2000\n\n")
	if err := rc.Flush(); err != nil {
		m.log.Warn("event stream cannot be flushed; the page falls back to polling", zap.Error(err))
		return
	}
	flush := func() { _ = rc.Flush() }

	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	var last string
	var expiry *time.Timer
	for {
		rec, _, err := m.loadScene(ctx, id)
		status := rec.State
		switch {
		case errors.Is(err, store.ErrNotFound):
			status = StateExpired
		case err != nil:
			m.log.Warn("store failure while streaming scene events", zap.Error(err))
			_, _ = fmt.Fprint(w, "event: error\ndata: {\"error\":\"temporarily unavailable\"}\n\n")
			flush()
			return
		}
		if status != last {
			data, _ := json.Marshal(pollResponse{Status: status})
			_, _ = fmt.Fprintf(w, "event: status\ndata: %s\n\n", data)
			flush()
			last = status
		}
		if status != StatePending && status != StateScanned {
			return
		}
		if expiry == nil {
			expiry = time.NewTimer(time.Unix(rec.ExpiresAt, 0).Sub(m.cfg.Now()) + time.Second)
			defer expiry.Stop()
		}
		select {
		case <-wake:
		case <-expiry.C:
		case <-keepalive.C:
			_, _ = fmt.Fprint(w, ": keepalive\n\n")
			flush()
		case <-ctx.Done():
			return
		case <-m.done:
			return
		}
	}
}

// loginURL is where unauthenticated browsers are sent.
func (m *Middleware) loginURL(next string) string {
	return m.cfg.Prefix + "/login?next=" + url.QueryEscape(next)
}
