package middleware

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/wechat-login/caddy-wechat-login/internal/session"
	"github.com/wechat-login/caddy-wechat-login/middleware/store"
	"github.com/wechat-login/caddy-wechat-login/wechat"
)

// Codes exchanged in the Official Account chat.
//
// A QR login is completed, or ended, by a six-digit code that the chat
// reply gives to the person who scanned, and only that person can use it:
//
//   - with ConfirmInChat, the reply to the scan carries a confirmation code;
//     the login completes only when the scanner sends that code back. A "1"
//     or "yes" (the everyday answers to any Official Account menu) confirms
//     nothing, and a few wrong codes refuse the login;
//   - after every QR login, the reply carries a "not me" code; the scanner
//     sending it back ends that login at once: a login not yet picked up by
//     its browser becomes "denied", a session already issued is revoked.
//
// Codes are looked up per scanner (openid), so somebody else's message is
// never taken for the scanner's, and WeChat's retries of a push (same
// MsgId) get the answer the first delivery got.

const (
	// chatCodeLen is the length of confirmation and "not me" codes.
	chatCodeLen = 6
	// maxConfirmTries is how many wrong codes a scanner may send before the
	// login waiting for their confirmation is refused.
	maxConfirmTries = 5
)

// Chat texts of the code exchanges. They are not configurable: they carry
// the codes, and the "not me" offer is a safety feature.
const (
	confirmCodeLine = "回复确认码 %[1]s 完成登录。\nReply %[1]s to confirm."
	notMeOffer      = "不是你本人？回复 %[1]s 立即退出这次登录。\nNot you? Reply %[1]s to end this login now."
	notMeDone       = "这次登录已经结束，登录的浏览器不能再使用它。\nThat login has been ended: the browser it was made in is logged out."
	wrongCodeReply  = "确认码不对，还可以再试 %[1]d 次。\nThat is not the confirmation code; %[1]d tries left."
	tooManyTries    = "确认码错误次数过多，这次登录已被拒绝。\nToo many wrong codes: this login has been refused."
)

// randomCode returns chatCodeLen random decimal digits.
func randomCode() string {
	n, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported systems
	}
	return fmt.Sprintf("%06d", n.Int64())
}

// loginCodes are the secrets a scan draws for its login: the session id to
// issue, the "not me" code and, with ConfirmInChat, the confirmation code.
type loginCodes struct {
	SID, NotMe, Confirm string
}

func (m *Middleware) newLoginCodes() loginCodes {
	c := loginCodes{SID: session.NewID(), NotMe: randomCode()}
	if m.cfg.ConfirmInChat {
		c.Confirm = randomCode()
		for c.Confirm == c.NotMe {
			c.Confirm = randomCode()
		}
	}
	return c
}

// chatCode returns the code a chat message holds: six digits, ASCII or
// full-width (as Chinese input methods type them), with surrounding spaces
// ignored. Anything else is no code.
func chatCode(content string) (string, bool) {
	s := strings.TrimSpace(content)
	var b strings.Builder
	for _, r := range s {
		d, ok := asciiDigit(r)
		if !ok {
			return "", false
		}
		b.WriteByte(d)
		if b.Len() > chatCodeLen {
			return "", false
		}
	}
	if b.Len() != chatCodeLen {
		return "", false
	}
	return b.String(), true
}

// asciiDigit returns the ASCII digit r is, ASCII or full-width (as Chinese
// input methods type digits).
func asciiDigit(r rune) (byte, bool) {
	switch {
	case r >= '0' && r <= '9':
		return byte(r), true
	case r >= '０' && r <= '９':
		return byte('0' + (r - '０')), true
	}
	return 0, false
}

func sameCode(a, b string) bool {
	return len(a) == chatCodeLen && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// notMeKey names the "not me" record of one scanner's code.
func notMeKey(openID, code string) string { return digestKey("notme:", openID+"|"+code) }

// digestKey names a store record by prefix and the first 128 bits of the
// SHA-256 of what it is about, so that store keys (visible in a key listing
// or a Redis MONITOR) never spell openids or codes.
func digestKey(prefix, about string) string {
	sum := sha256.Sum256([]byte(about))
	return prefix + hex.EncodeToString(sum[:16])
}

// notMeRecord is what a "not me" code ends: the login's scene and the
// session id it is (or will be) issued under.
type notMeRecord struct {
	Scene string `json:"scene"`
	SID   string `json:"sid"`
	// Exp is the latest the session can expire (unix seconds).
	Exp int64 `json:"exp"`
	// Ended is set once the code was used, so the first use alone is
	// counted and logged.
	Ended bool `json:"ended,omitempty"`
}

// armNotMe records a login's "not me" code before the scanner is told of it.
// sceneExp is the latest the scene can be redeemed; the session it becomes
// lasts SessionTTL from then at most. The record is kept for that long, but
// no longer than SessionTTL and a minute from now (the embedded store takes
// nothing longer): a browser normally redeems its login within seconds.
// Recording the same code again is not an error.
func (m *Middleware) armNotMe(ctx context.Context, openID, scene string, codes loginCodes, sceneExp time.Time) error {
	w, err := m.notMeCreate(openID, scene, codes, sceneExp)
	if err != nil {
		return err
	}
	err = m.pushStore().Create(ctx, w.key, w.value, w.ttl)
	if err != nil && !errors.Is(err, store.ErrExists) {
		return fmt.Errorf("record not-me code: %w", err)
	}
	return nil
}

// notMeCreate is the store write that arms a login's "not me" code (see
// armNotMe).
func (m *Middleware) notMeCreate(openID, scene string, codes loginCodes, sceneExp time.Time) (*sceneCreate, error) {
	exp := sceneExp.Add(m.cfg.SessionTTL)
	raw, err := json.Marshal(notMeRecord{Scene: scene, SID: codes.SID, Exp: exp.Unix()})
	if err != nil {
		return nil, err
	}
	ttl := min(exp.Sub(m.cfg.Now()), m.cfg.SessionTTL+time.Minute)
	if ttl < time.Second {
		ttl = time.Second
	}
	return &sceneCreate{key: notMeKey(openID, codes.NotMe), value: raw, ttl: ttl}, nil
}

// offerNotMe arms the login's "not me" code and returns it, or returns ""
// when it cannot be recorded (a store that refuses such a long time to live,
// or is down): the reply then offers no code rather than one that would not
// work.
func (m *Middleware) offerNotMe(ctx context.Context, openID, scene string, codes loginCodes, sceneExp time.Time) string {
	if err := m.armNotMe(ctx, openID, scene, codes, sceneExp); err != nil {
		m.log.Warn("cannot record the login's not-me code; the chat reply will not offer one", zap.Error(err))
		return ""
	}
	return codes.NotMe
}

// disarmNotMe removes a "not me" record that was never handed out.
func (m *Middleware) disarmNotMe(ctx context.Context, openID, code string) {
	if err := m.pushStore().Delete(ctx, notMeKey(openID, code)); err != nil {
		m.log.Warn("cannot remove an unused not-me code", zap.Error(err))
	}
}

// loginReplyFor is the chat reply after a completed QR login: the configured
// text and the login's "not me" offer.
func (m *Middleware) loginReplyFor(rec sceneRecord) string {
	if rec.NotMeCode == "" {
		return m.loginReply()
	}
	return m.loginReply() + "\n" + fmt.Sprintf(notMeOffer, rec.NotMeCode)
}

// confirmPrompt asks the scanner to confirm with the login's code. A custom
// ConfirmReply that does not place the code (%[3]s) gets it on a line of its
// own.
func (m *Middleware) confirmPrompt(rec sceneRecord) string {
	f := m.cfg.ConfirmReply
	if strings.Contains(f, "%[3]") {
		return fmt.Sprintf(f, m.cfg.SiteName, rec.Client, rec.ConfirmCode)
	}
	return fmt.Sprintf(f, m.cfg.SiteName, rec.Client) + "\n" + fmt.Sprintf(confirmCodeLine, rec.ConfirmCode)
}

// chatReplyKey identifies one chat message, for answering WeChat's retries
// of it (same MsgId) the same way.
func chatReplyKey(ev *wechat.Event) string {
	h := sha256.New()
	for _, s := range []string{ev.FromUserName, strconv.FormatInt(ev.CreateTime, 10), strconv.FormatInt(ev.MsgID, 10), ev.Content} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return "chat:" + hex.EncodeToString(h.Sum(nil)[:16])
}

// handleChatCode answers a text message that is one of its sender's codes,
// or, with code login, a try at a login code. It reports false for any
// other message, which then goes on like any message would.
func (m *Middleware) handleChatCode(ctx context.Context, ev *wechat.Event) (pushResult, bool) {
	if !validOpenID(ev.FromUserName) {
		return pushResult{}, false
	}
	code, isChatCode := chatCode(ev.Content)
	attempt, isLoginCode := "", false
	if !isChatCode && m.cfg.enabled(MethodCode) {
		attempt, isLoginCode = loginCodeAttempt(ev.Content)
	}
	if !isChatCode && !isLoginCode {
		return pushResult{}, false
	}
	marker := chatReplyKey(ev)
	if v, err := m.pushStore().Get(ctx, marker); err == nil {
		m.metrics.DuplicatePush()
		return pushResult{reply: string(v)}, true
	} else if !errors.Is(err, store.ErrNotFound) {
		return pushResult{failure: fmt.Errorf("check chat dedupe: %w", err)}, true
	}

	var res pushResult
	var handled bool
	switch {
	case isLoginCode:
		res, handled = m.loginByCode(ctx, ev, attempt, marker), true
	default:
		res, handled = m.endByCode(ctx, ev.FromUserName, code)
	}
	if !handled && m.cfg.ConfirmInChat {
		res, handled = m.confirmByReply(ctx, ev, code)
	}
	if handled && res.failure == nil && res.reply != "" {
		if err := m.pushStore().Create(ctx, marker, []byte(res.reply), dedupeTTL); err != nil && !errors.Is(err, store.ErrExists) {
			m.log.Warn("cannot record chat dedupe marker", zap.Error(err))
		}
	}
	return res, handled
}

// endByCode ends the login whose "not me" code the scanner sent: its session
// id is revoked (whether or not its browser picked it up yet) and a scene
// still waiting to be redeemed becomes denied. It reports false when code is
// none of the sender's "not me" codes.
func (m *Middleware) endByCode(ctx context.Context, openID, code string) (pushResult, bool) {
	key := notMeKey(openID, code)
	raw, err := m.pushStore().Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return pushResult{}, false
	}
	if err != nil {
		return pushResult{failure: fmt.Errorf("look up not-me code: %w", err)}, true
	}
	var rec notMeRecord
	if err := json.Unmarshal(raw, &rec); err != nil || rec.SID == "" {
		return pushResult{failure: fmt.Errorf("decode not-me code: %w", err)}, true
	}
	// Revoke first: from here on the session is dead wherever the race with
	// the redeeming browser ends. A session issued by now, or in the moment
	// before the scene is denied below, expires SessionTTL after that at
	// the latest (and never after rec.Exp).
	until := m.cfg.Now().Add(m.cfg.SessionTTL + 30*time.Second)
	if exp := time.Unix(rec.Exp, 0); exp.Before(until) {
		until = exp
	}
	if err := m.sessions.Revoke(ctx, rec.SID, until); err != nil {
		return pushResult{failure: err}, true
	}
	if validSceneID(rec.Scene) {
		_, changed, err := m.updateScene(ctx, rec.Scene, func(s *sceneRecord) bool {
			if s.SID != rec.SID || s.OpenID != openID || s.State == StateDenied {
				return false
			}
			s.State = StateDenied
			return true
		})
		switch {
		case errors.Is(err, store.ErrNotFound):
			// Redeemed (the revocation took care of it) or expired.
		case err != nil:
			return pushResult{failure: fmt.Errorf("deny scene: %w", err)}, true
		case changed:
			m.notify(ctx, rec.Scene)
		}
	}
	if !rec.Ended {
		rec.Ended = true
		if updated, err := json.Marshal(rec); err == nil && m.pushStore().Update(ctx, key, raw, updated) == nil {
			m.log.Info("login ended from the chat (not me)", zap.String("openid", logID(openID)))
			m.metrics.Scan(StateDenied)
		}
	}
	return pushResult{reply: notMeDone}, true
}

// confirmByReply handles a code sent by someone whose scan waits for their
// confirmation: the login's own code completes it, another code counts as a
// wrong try, and maxConfirmTries of those refuse the login. Only the person
// who scanned can confirm, and only the code they scanned last. It reports
// false when the sender has no scan waiting.
func (m *Middleware) confirmByReply(ctx context.Context, ev *wechat.Event, code string) (pushResult, bool) {
	openID := ev.FromUserName
	raw, err := m.pushStore().Get(ctx, confirmKey(openID))
	if errors.Is(err, store.ErrNotFound) {
		return pushResult{}, false
	}
	if err != nil {
		return pushResult{failure: fmt.Errorf("look up pending confirmation: %w", err)}, true
	}
	scene := string(raw)
	if !validSceneID(scene) {
		return pushResult{}, false
	}
	rec, _, err := m.loadSceneFrom(ctx, m.pushStore(), scene)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return pushResult{reply: m.cfg.ExpiredReply}, true
	case err != nil:
		return pushResult{failure: fmt.Errorf("load scene: %w", err)}, true
	case rec.OpenID != openID || rec.State != StateScanned:
		return pushResult{}, false
	}
	if !sameCode(code, rec.ConfirmCode) {
		return m.wrongConfirmation(ctx, scene, openID), true
	}

	// The "not me" code must work before the reply that offers it is sent.
	notMe := m.offerNotMe(ctx, openID, scene, loginCodes{SID: rec.SID, NotMe: rec.NotMeCode}, time.Unix(rec.ExpiresAt, 0))
	rec, changed, err := m.updateScene(ctx, scene, func(s *sceneRecord) bool {
		if s.OpenID != openID || s.State != StateScanned || !sameCode(code, s.ConfirmCode) {
			return false
		}
		s.State, s.NotMeCode = StateConfirmed, notMe
		return true
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return pushResult{reply: m.cfg.ExpiredReply}, true
	case err != nil:
		return pushResult{failure: fmt.Errorf("confirm scene: %w", err)}, true
	case !changed && rec.OpenID == openID && rec.State == StateConfirmed:
		return pushResult{reply: m.loginReplyFor(rec)}, true // a concurrent copy of this message won
	case !changed:
		return pushResult{reply: m.cfg.ExpiredReply}, true
	}
	// The code is spent: the scanner's later messages are ordinary again.
	_ = m.pushStore().Delete(ctx, confirmKey(openID))
	m.notify(ctx, scene)
	m.log.Info("login confirmed in chat", zap.String("scene", scene[:8]), zap.String("openid", logID(openID)))
	m.metrics.Scan("confirmed")
	return pushResult{reply: m.loginReplyFor(rec)}, true
}

// wrongConfirmation counts a wrong code against the scan waiting for the
// sender's confirmation, and refuses the login at maxConfirmTries.
func (m *Middleware) wrongConfirmation(ctx context.Context, scene, openID string) pushResult {
	rec, changed, err := m.updateScene(ctx, scene, func(s *sceneRecord) bool {
		if s.OpenID != openID || s.State != StateScanned {
			return false
		}
		s.ConfirmTries++
		if s.ConfirmTries >= maxConfirmTries {
			s.State = StateDenied
		}
		return true
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return pushResult{reply: m.cfg.ExpiredReply}
	case err != nil:
		return pushResult{failure: fmt.Errorf("count confirmation try: %w", err)}
	case !changed:
		return pushResult{reply: m.cfg.ExpiredReply}
	case rec.State == StateDenied:
		_ = m.pushStore().Delete(ctx, confirmKey(openID))
		m.notify(ctx, scene)
		m.log.Warn("login refused after too many wrong confirmation codes", zap.String("scene", scene[:8]), zap.String("openid", logID(openID)))
		m.metrics.Scan(StateDenied)
		return pushResult{reply: tooManyTries}
	}
	return pushResult{reply: fmt.Sprintf(wrongCodeReply, maxConfirmTries-rec.ConfirmTries)}
}
