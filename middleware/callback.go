package middleware

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/wechat-login/caddy-wechat-login/middleware/store"
	"github.com/wechat-login/caddy-wechat-login/wechat"
)

// pushBudget bounds the work done for one push. WeChat gives up after five
// seconds and shows the user "this account cannot serve you right now"; an
// honest failure before then is better, and lets its retry succeed.
const pushBudget = 4 * time.Second

// dedupeTTL outlives WeChat's retries (three attempts, five seconds apart)
// and the push freshness window.
const dedupeTTL = 15 * time.Minute

// handleCallback serves WeChat's server URL: the GET verification handshake
// and POSTed pushes.
func (m *Middleware) handleCallback(w http.ResponseWriter, r *http.Request, next http.Handler) {
	switch r.Method {
	case http.MethodGet:
		m.handleVerify(w, r)
	case http.MethodPost:
		m.handlePush(w, r, next)
	default:
		methodNotAllowed(w, "GET, POST")
	}
}

// singleParams returns the named query parameters, insisting that each
// appears at most once: a repeated parameter is a sign of tampering, and
// which copy a parser picks is not something to leave to chance.
func singleParams(r *http.Request, names ...string) (map[string]string, error) {
	q := r.URL.Query()
	out := make(map[string]string, len(names))
	for _, n := range names {
		switch len(q[n]) {
		case 0:
		case 1:
			out[n] = q[n][0]
		default:
			return nil, fmt.Errorf("parameter %s repeated", n)
		}
	}
	return out, nil
}

// checkSigned validates the signature, timestamp and nonce every WeChat
// request carries. It returns the HTTP status and reason for a rejection.
func (m *Middleware) checkSigned(p map[string]string) (int, string) {
	sig, ts, nonce := p["signature"], p["timestamp"], p["nonce"]
	if sig == "" || ts == "" || nonce == "" {
		return http.StatusBadRequest, "missing signature, timestamp or nonce"
	}
	if len(nonce) > 64 || len(sig) != 40 {
		return http.StatusForbidden, "bad signature"
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sec <= 0 {
		return http.StatusBadRequest, "malformed timestamp"
	}
	if !m.fresh(sec) {
		m.metrics.PushRejected("stale")
		return http.StatusForbidden, "stale timestamp"
	}
	if !wechat.CheckSignature(sig, m.cfg.Token, ts, nonce) {
		m.metrics.PushRejected("signature")
		return http.StatusForbidden, "bad signature"
	}
	return 0, ""
}

func (m *Middleware) fresh(unix int64) bool {
	d := m.cfg.Now().Sub(time.Unix(unix, 0))
	return d <= m.cfg.PushMaxAge && d >= -m.cfg.PushMaxAge
}

// handleVerify answers WeChat's URL verification: echo echostr when the
// signature is right. For Official Accounts the handshake is plaintext even
// in safe mode.
func (m *Middleware) handleVerify(w http.ResponseWriter, r *http.Request) {
	p, err := singleParams(r, "signature", "timestamp", "nonce", "echostr")
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	if status, reason := m.checkSigned(p); status != 0 {
		writeText(w, status, reason)
		return
	}
	// WeChat's echostr is a long decimal number; anything that is not a
	// plain token is refused rather than reflected.
	echo := p["echostr"]
	if echo == "" || len(echo) > 128 || strings.ContainsFunc(echo, func(c rune) bool {
		return !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '_' || c == '+' || c == '/' || c == '=')
	}) {
		writeText(w, http.StatusBadRequest, "bad echostr")
		return
	}
	writeText(w, http.StatusOK, echo)
}

// pushResult is what processing a push decided to answer.
type pushResult struct {
	reply   string // chat text for a passive reply; empty means "success"
	pass    bool   // hand the push to the wrapped handler
	failure error  // could not record the outcome: let WeChat retry
}

func (m *Middleware) handlePush(w http.ResponseWriter, r *http.Request, next http.Handler) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, wechat.MaxPushBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			m.metrics.PushRejected("too_large")
			writeText(w, http.StatusRequestEntityTooLarge, "push too large")
			return
		}
		writeText(w, http.StatusBadRequest, "cannot read push")
		return
	}
	p, err := singleParams(r, "signature", "timestamp", "nonce", "openid", "encrypt_type", "msg_signature")
	if err != nil {
		m.metrics.PushRejected("malformed")
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	if status, reason := m.checkSigned(p); status != 0 {
		writeText(w, status, reason)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, _ := mime.ParseMediaType(ct); strings.Contains(mt, "json") {
			writeText(w, http.StatusUnsupportedMediaType, "pushes must be XML")
			return
		}
	}

	plain, replyCrypter, status, reason := m.openPush(body, p)
	if status != 0 {
		writeText(w, status, reason)
		return
	}
	ev, err := wechat.ParseEvent(plain)
	if err != nil {
		m.metrics.PushRejected("malformed")
		writeText(w, http.StatusBadRequest, "malformed push XML")
		return
	}
	if !m.fresh(ev.CreateTime) {
		m.metrics.PushRejected("stale")
		writeText(w, http.StatusForbidden, "stale push")
		return
	}
	if replyCrypter == nil {
		if status, reason := m.checkPlainReuse(r.Context(), p, body); status != 0 {
			writeText(w, status, reason)
			return
		}
	}

	ctx, cancel := context.WithTimeout(r.Context(), pushBudget)
	defer cancel()
	done := make(chan pushResult, 1)
	go func() { done <- m.processPush(ctx, ev) }()
	var res pushResult
	select {
	case res = <-done:
	case <-ctx.Done():
		res = pushResult{failure: ctx.Err()}
	}

	switch {
	case res.failure != nil:
		m.log.Error("push not processed; WeChat will retry", zap.Error(res.failure))
		writeText(w, http.StatusServiceUnavailable, "temporarily unavailable")
	case res.pass && next != nil && m.cfg.PassThroughPushes:
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		next.ServeHTTP(w, r)
	case res.reply == "":
		writeText(w, http.StatusOK, "success")
	default:
		m.writeReply(w, ev, res.reply, replyCrypter, p["nonce"])
	}
}

// openPush authenticates and, when encrypted, decrypts a push body, and
// returns the Crypter to encrypt a reply with (nil for a plaintext push). Which
// mode is required comes from our configuration, never from the request:
// with an EncodingAESKey configured, a push without a valid msg_signature over
// its ciphertext is rejected, because the URL signature alone does not cover
// the body.
func (m *Middleware) openPush(body []byte, p map[string]string) (plain []byte, reply *wechat.Crypter, status int, reason string) {
	et, hasET := p["encrypt_type"]
	wantEncrypted := m.crypter != nil && (!m.cfg.AllowPlaintextPushes || hasET)
	if !wantEncrypted {
		if hasET && et != "raw" {
			m.metrics.PushRejected("mode")
			return nil, nil, http.StatusBadRequest, "encrypted push, but no EncodingAESKey is configured"
		}
		return body, nil, 0, ""
	}
	if et != "aes" || p["msg_signature"] == "" {
		m.metrics.PushRejected("mode")
		return nil, nil, http.StatusForbidden, "encrypted push required"
	}
	env, err := wechat.ParseEnvelope(body)
	if err != nil {
		m.metrics.PushRejected("malformed")
		return nil, nil, http.StatusBadRequest, "malformed encrypted push"
	}
	plain, reply, err = m.crypter.DecryptForReply(p["msg_signature"], p["timestamp"], p["nonce"], env.Encrypt)
	switch {
	case errors.Is(err, wechat.ErrSignatureMismatch):
		m.metrics.PushRejected("signature")
		return nil, nil, http.StatusForbidden, "bad msg_signature"
	case errors.Is(err, wechat.ErrAppIDMismatch):
		m.metrics.PushRejected("appid")
		return nil, nil, http.StatusForbidden, "push for another app"
	case err != nil:
		m.metrics.PushRejected("decrypt")
		return nil, nil, http.StatusBadRequest, "cannot decrypt push"
	}
	return plain, reply, 0, ""
}

// checkPlainReuse binds a plaintext push's signed query to its body. The
// URL signature covers only token, timestamp and nonce, so whoever saw one
// push URL (in an access log, a proxy, a trace) could post any body under
// it while the timestamp is fresh. The first body seen under a signed query
// is remembered: WeChat's retries (same URL, same bytes) go on and are
// answered as the first delivery was; any other body is refused. The
// freshness window makes a query useless after PushMaxAge, so it is
// remembered for a little over twice that (clocks may differ either way).
func (m *Middleware) checkPlainReuse(ctx context.Context, p map[string]string, body []byte) (int, string) {
	q := sha256.Sum256([]byte(p["signature"] + "|" + p["timestamp"] + "|" + p["nonce"]))
	key := "pushurl:" + hex.EncodeToString(q[:16])
	sum := sha256.Sum256(body)
	ttl := 2*m.cfg.PushMaxAge + time.Minute
	for range 2 {
		err := m.store.Create(ctx, key, sum[:], ttl)
		if err == nil {
			return 0, ""
		}
		if !errors.Is(err, store.ErrExists) {
			m.log.Error("cannot record plaintext push URL; WeChat will retry", zap.Error(err))
			return http.StatusServiceUnavailable, "temporarily unavailable"
		}
		seen, err := m.store.Get(ctx, key)
		switch {
		case err == nil && bytes.Equal(seen, sum[:]):
			return 0, "" // a retry of the same push
		case err == nil:
			m.metrics.PushRejected("replay")
			m.log.Warn("plaintext push URL reused with another body; refused")
			return http.StatusForbidden, "push URL already used for another body"
		case errors.Is(err, store.ErrNotFound):
			continue // expired between the two calls
		default:
			m.log.Error("cannot check plaintext push URL; WeChat will retry", zap.Error(err))
			return http.StatusServiceUnavailable, "temporarily unavailable"
		}
	}
	return http.StatusServiceUnavailable, "temporarily unavailable"
}

// processPush applies a verified push. Login scans confirm their scene;
// everything else is acknowledged or passed on.
func (m *Middleware) processPush(ctx context.Context, ev *wechat.Event) pushResult {
	kind := ev.Kind()
	if ev.MsgType == "text" {
		if res, handled := m.handleChatCode(ctx, ev); handled {
			return res
		}
	}
	scene, ok := ev.LoginScene()
	if !ok || (kind != wechat.EventSubscribe && kind != wechat.EventScan) {
		return pushResult{pass: true}
	}
	if !validOpenID(ev.FromUserName) {
		m.log.Warn("login scan with a malformed FromUserName ignored")
		return pushResult{}
	}
	if !validSceneID(scene) {
		// A scan of some other parametric code of this account (a poster,
		// a campaign): not ours to answer.
		return pushResult{pass: true}
	}
	return m.confirmScene(ctx, scene, ev)
}

// confirmScene moves a pending scene to confirmed with the scanner's
// identity, once. WeChat retries a push it got no answer to, so the same scan
// can arrive up to three times: the retries get the same reply and change
// nothing. A different user scanning an already-confirmed code changes
// nothing either: the first scan wins.
func (m *Middleware) confirmScene(ctx context.Context, scene string, ev *wechat.Event) pushResult {
	marker := dedupeKey(ev)
	if v, err := m.store.Get(ctx, marker); err == nil {
		m.metrics.DuplicatePush()
		if len(v) > 1 {
			return pushResult{reply: string(v)} // the answer the first copy got
		}
		return pushResult{reply: m.loginReply()}
	} else if !errors.Is(err, store.ErrNotFound) {
		return pushResult{failure: fmt.Errorf("check push dedupe: %w", err)}
	}

	// The login's codes are drawn now. When the scan completes the login at
	// once, its "not me" code must work before the reply offers it; if the
	// scan turns out not to change the scene, the unused code is removed.
	codes := m.newLoginCodes()
	if !m.cfg.ConfirmInChat {
		codes.NotMe = m.offerNotMe(ctx, ev.FromUserName, scene, codes, m.cfg.Now().Add(m.cfg.SceneTTL))
	}
	var refused string // why the scene was left as it is
	unionID, fetched := "", false
	rec, changed, err := m.updateScene(ctx, scene, func(rec *sceneRecord) bool {
		switch {
		case ev.Ticket != "" && rec.Ticket != "" && ev.Ticket != rec.Ticket:
			refused = "mismatch"
		case rec.State != StatePending && rec.OpenID == ev.FromUserName:
			refused = "duplicate"
		case rec.State != StatePending:
			refused = "conflict"
		default:
			if m.cfg.FetchUnionID && !fetched {
				unionID, fetched = m.lookupUnionID(ctx, ev.FromUserName), true
			}
			rec.State = StateConfirmed
			if m.cfg.ConfirmInChat {
				rec.State = StateScanned
			}
			rec.OpenID, rec.UnionID, rec.ScanKey = ev.FromUserName, unionID, marker
			rec.SID, rec.NotMeCode, rec.ConfirmCode, rec.ConfirmTries = codes.SID, codes.NotMe, codes.Confirm, 0
			return true
		}
		return false
	})
	if !changed && !m.cfg.ConfirmInChat && codes.NotMe != "" {
		m.disarmNotMe(ctx, ev.FromUserName, codes.NotMe)
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		m.metrics.Scan("expired")
		return pushResult{reply: m.cfg.ExpiredReply}
	case err != nil:
		return pushResult{failure: fmt.Errorf("confirm scene: %w", err)}
	case !changed:
		switch refused {
		case "duplicate":
			m.metrics.DuplicatePush()
			switch rec.State {
			case StateScanned:
				return pushResult{reply: m.confirmPrompt(rec)}
			case StateConfirmed:
				return pushResult{reply: m.loginReplyFor(rec)}
			}
			return pushResult{reply: m.cfg.ExpiredReply}
		case "mismatch":
			m.log.Warn("scan ticket does not match the scene's ticket; ignored", zap.String("scene", scene[:8]))
		default:
			m.log.Warn("second scanner for an already scanned login code; first scan kept", zap.String("scene", scene[:8]))
		}
		m.metrics.Scan(refused)
		return pushResult{reply: m.cfg.ExpiredReply}
	}

	reply := m.loginReplyFor(rec)
	if rec.State == StateScanned {
		reply = m.confirmPrompt(rec)
	}
	// The transition is done; the marker (holding the reply, codes and
	// all) lets later retries be answered the same way even after the
	// scene is redeemed. Its failure is harmless: the scene record answers
	// them while it exists.
	if err := m.store.Create(ctx, marker, []byte(reply), dedupeTTL); err != nil && !errors.Is(err, store.ErrExists) {
		m.log.Warn("cannot record push dedupe marker", zap.Error(err))
	}
	m.notify(ctx, scene)
	m.log.Info("login code scanned", zap.String("scene", scene[:8]), zap.String("openid", logID(ev.FromUserName)), zap.String("event", ev.Event))
	if rec.State == StateScanned {
		m.awaitConfirmation(ctx, scene, rec)
		m.metrics.Scan("scanned")
		return pushResult{reply: reply}
	}
	m.metrics.Scan("confirmed")
	return pushResult{reply: reply}
}

// updateScene applies change to a scene's record with compare-and-swap,
// reading it again when somebody else changed it first, so that no
// transition is lost or applied twice. change edits the record and reports
// whether it should be stored; it may run more than once. updateScene
// returns the record as stored (or as found, when change declined) and
// store.ErrNotFound when the scene is gone.
func (m *Middleware) updateScene(ctx context.Context, scene string, change func(*sceneRecord) bool) (sceneRecord, bool, error) {
	for range 5 {
		rec, raw, err := m.loadScene(ctx, scene)
		if err != nil {
			return sceneRecord{}, false, err
		}
		if !change(&rec) {
			return rec, false, nil
		}
		updated, err := json.Marshal(rec)
		if err != nil {
			return sceneRecord{}, false, err
		}
		err = m.store.Update(ctx, sceneKey(scene), raw, updated)
		if errors.Is(err, store.ErrChanged) {
			continue
		}
		if err != nil {
			return sceneRecord{}, false, err
		}
		return rec, true, nil
	}
	return sceneRecord{}, false, errors.New("too much contention")
}

func (m *Middleware) notify(ctx context.Context, scene string) {
	if err := m.notifier.Publish(ctx, sceneKey(scene)); err != nil {
		m.log.Warn("cannot notify waiting browser", zap.Error(err))
	}
}

// confirmKey names, per scanner, the scene waiting for their confirmation.
func confirmKey(openID string) string {
	sum := sha256.Sum256([]byte(openID))
	return "confirm:" + hex.EncodeToString(sum[:16])
}

// awaitConfirmation remembers which scene the scanner's confirmation code
// is for: the QR code they scanned last.
func (m *Middleware) awaitConfirmation(ctx context.Context, scene string, rec sceneRecord) {
	ttl := time.Unix(rec.ExpiresAt, 0).Sub(m.cfg.Now())
	if ttl < time.Second {
		return
	}
	key := confirmKey(rec.OpenID)
	_ = m.store.Delete(ctx, key)
	if err := m.store.Create(ctx, key, []byte(scene), ttl); err != nil && !errors.Is(err, store.ErrExists) {
		m.log.Warn("cannot record the pending confirmation", zap.Error(err))
	}
}

// lookupUnionID asks WeChat for the follower's unionid. A failure leaves the
// identity without one rather than failing the login.
func (m *Middleware) lookupUnionID(ctx context.Context, openID string) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	f, err := m.wc.FollowerInfo(ctx, openID)
	if err != nil {
		m.log.Warn("cannot fetch unionid; continuing without it", zap.String("openid", logID(openID)), zap.Error(err))
		m.metrics.WeChatFailure("user info")
		return ""
	}
	return f.UnionID
}

func (m *Middleware) loginReply() string {
	if strings.Contains(m.cfg.LoginReply, "%") {
		return fmt.Sprintf(m.cfg.LoginReply, m.cfg.SiteName)
	}
	return m.cfg.LoginReply
}

// dedupeKey identifies one push. WeChat's rule for events is FromUserName +
// CreateTime; Event and EventKey are added because CreateTime has only
// second resolution.
func dedupeKey(ev *wechat.Event) string {
	h := sha256.New()
	for _, s := range []string{ev.FromUserName, strconv.FormatInt(ev.CreateTime, 10), ev.Event, ev.EventKey} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return "push:" + hex.EncodeToString(h.Sum(nil)[:16])
}

// writeReply sends a passive text reply, encrypted (with the push's own key)
// when the push was.
func (m *Middleware) writeReply(w http.ResponseWriter, ev *wechat.Event, text string, crypter *wechat.Crypter, nonce string) {
	now := m.cfg.Now()
	reply := wechat.TextReply(ev.FromUserName, ev.ToUserName, text, now)
	if crypter != nil {
		var err error
		reply, err = crypter.EncryptReply(reply, strconv.FormatInt(now.Unix(), 10), nonce)
		if err != nil {
			m.log.Error("cannot encrypt passive reply", zap.Error(err))
			writeText(w, http.StatusOK, "success")
			return
		}
	}
	w.Header().Set("Content-Type", "application/xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(reply)
}

// validOpenID accepts what WeChat issues: 28 characters of [A-Za-z0-9_-]
// today; a little slack for the future.
func validOpenID(s string) bool {
	if len(s) < 6 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
