package middleware

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/wechat-login/caddy-wechat-login/middleware/store"
	"github.com/wechat-login/caddy-wechat-login/wechat"
)

// confirmScene moves a pending scene to confirmed with the scanner's
// identity, once. WeChat retries a push it got no answer to in time, so the
// same scan can arrive up to three times: the retries get the same reply and
// change nothing. A different user scanning an already-confirmed code
// changes nothing either: the first scan wins.
//
// A retry is told apart by the push's dedupe marker, which is stored only
// once everything the scan does is done (finishScan; or, with a store that
// can, in one atomic step with the transition and the wake-up), and by the scene's
// ScanKey, stored with the transition itself. A marker means the first
// attempt finished and only its answer was lost: the retry gets the stored
// answer. No marker, and a scene moved by this very push (ScanKey), means
// an attempt made the transition but did not finish, or is still finishing:
// the retry finishes it. Neither means no attempt made the transition, and
// the retry does the whole work.
//
// A code login's chat message moves its scene the same way; marker names
// the push (dedupeKey for scans, chatReplyKey for messages).
func (m *Middleware) confirmScene(ctx context.Context, scene string, ev *wechat.Event, marker string) pushResult {
	res, pre, done := m.spliceScan(ctx, scene, ev, marker)
	if done {
		return res
	}
	mark := storedValue{err: store.ErrNotFound} // as spliceScan found it
	if pre == nil {
		mark, pre = m.markerAndScene(ctx, marker, scene)
	}
	if v, err := mark.value, mark.err; err == nil {
		return m.markedReply(v)
	} else if !errors.Is(err, store.ErrNotFound) {
		return pushResult{failure: fmt.Errorf("check push dedupe: %w", err)}
	}

	// The login's codes are drawn now. When the scan completes the login at
	// once, its "not me" code must work before the reply offers it; if the
	// scan turns out not to change the scene, the unused code is removed.
	codes := m.newLoginCodes()
	var arm *sceneCreate // the "not me" code, armed with the transition
	if !m.cfg.ConfirmInChat {
		if arm = m.notMeWrite(ev.FromUserName, scene, codes, m.cfg.Now().Add(m.cfg.SceneTTL)); arm != nil {
			arm.failed = func(err error) {
				m.log.Warn("cannot record the login's not-me code; the chat reply will not offer one", zap.Error(err))
				codes.NotMe = ""
			}
			arm.then = m.followupWrite(scene, marker)
		} else {
			codes.NotMe = m.offerNotMe(ctx, ev.FromUserName, scene, codes, m.cfg.Now().Add(m.cfg.SceneTTL))
		}
	}
	var refused string // why the scene was left as it is
	unionID, fetched := "", false
	rec, changed, err := m.updateSceneWith(ctx, scene, pre, arm, func(rec *sceneRecord) bool {
		switch {
		case ev.Ticket != "" && rec.Ticket != "" && ev.Ticket != rec.Ticket:
			refused = "mismatch"
		case (rec.Code != "") != (ev.MsgType == "text"):
			refused = "mismatch" // a code login's scene takes messages, a QR login's scans

		case rec.State != StatePending && rec.OpenID == ev.FromUserName:
			refused = "duplicate"
		case rec.State != StatePending:
			refused = "conflict"
		default:
			if (m.cfg.FetchUnionID || m.cfg.UserID == "unionid") && !fetched {
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
	// The unused code is removed only when the scene is known not to carry
	// it: after a failed update (the deadline, a store error) the transition
	// may still have landed, with this code in it.
	// An arm sent with the transition was made only if the transition was
	// tried.
	if !changed && (err == nil || errors.Is(err, store.ErrNotFound)) && !m.cfg.ConfirmInChat && codes.NotMe != "" && (arm == nil || arm.made) {
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
			switch {
			case rec.State != StateScanned && rec.State != StateConfirmed:
				return pushResult{reply: m.cfg.ExpiredReply}
			case rec.ScanKey == marker:
				return m.finishScan(ctx, scene, rec, marker, nil)
			}
			return pushResult{reply: m.scanReply(rec)} // another scan of the same code
		case "mismatch":
			m.log.Warn("scan ticket does not match the scene's ticket; ignored", zap.String("scene", scene[:8]))
		default:
			m.log.Warn("second scanner for an already scanned login code; first scan kept", zap.String("scene", scene[:8]))
		}
		m.metrics.Scan(refused)
		return pushResult{reply: m.cfg.ExpiredReply}
	}

	var sent *sceneFollowup
	if arm != nil && arm.then != nil && arm.then.sent {
		sent = arm.then
	}
	return m.scanLanded(ctx, scene, ev, rec, marker, sent)
}

// markedReply answers a copy of a push whose dedupe marker, holding v,
// says the first copy finished: with the answer that copy got.
func (m *Middleware) markedReply(v []byte) pushResult {
	m.metrics.DuplicatePush()
	if len(v) > 1 {
		return pushResult{reply: string(v)} // the answer the first copy got
	}
	return pushResult{reply: m.loginReply()}
}

// scanLanded reports a scan push ev that moved scene to rec, and finishes
// it (see finishScan).
func (m *Middleware) scanLanded(ctx context.Context, scene string, ev *wechat.Event, rec sceneRecord, marker string, sent *sceneFollowup) pushResult {
	m.log.Info("login code scanned", zap.String("scene", scene[:8]), zap.String("openid", logID(ev.FromUserName)), zap.String("event", ev.Event))
	m.metrics.Scan(rec.State)
	return m.finishScan(ctx, scene, rec, marker, sent)
}

// scanReply is the chat reply to a scan that moved the scene to rec.
func (m *Middleware) scanReply(rec sceneRecord) string {
	if rec.State == StateScanned {
		return m.confirmPrompt(rec)
	}
	return m.loginReplyFor(rec)
}

// finishScan does what follows the transition the scan push named by marker
// made: with ConfirmInChat, the scanner's confirmation is awaited; the
// browser waiting on the scene is woken; last, the dedupe marker, holding
// the reply (codes and all), lets later copies of the push be answered the
// same way even after the scene is redeemed. Every step may be done again by
// a copy of the push. A push whose context ended on the way is answered 503
// though its transition stands, so that WeChat's retry finishes the steps
// that were cut short. sent, when not nil, holds the wake-up and marker
// already sent with the transition (sceneFollowup); they are not sent
// again.
func (m *Middleware) finishScan(ctx context.Context, scene string, rec sceneRecord, marker string, sent *sceneFollowup) pushResult {
	reply := m.scanReply(rec)
	if rec.State == StateScanned {
		m.awaitConfirmation(ctx, scene, rec)
	}
	var err error
	if sent != nil {
		err = sent.err
	} else {
		err = m.notifyThenMark(ctx, scene, marker, []byte(reply))
	}
	if err != nil && !errors.Is(err, store.ErrExists) {
		// A store failure is harmless: the scene record answers later
		// copies while it exists. The deadline is answered 503 below.
		m.log.Warn("cannot record push dedupe marker", zap.Error(err))
	}
	if err := ctx.Err(); err != nil {
		return pushResult{failure: fmt.Errorf("scan recorded but not finished in time: %w", err)}
	}
	return pushResult{reply: reply}
}

// updateScene applies change to a scene's record with compare-and-swap,
// reading it again when somebody else changed it first, so that no
// transition is lost or applied twice. change edits the record and reports
// whether it should be stored; it may run more than once. updateScene
// returns the record as stored (or as found, when change declined) and
// store.ErrNotFound when the scene is gone. Once ctx has ended it stores
// nothing, but an update in flight at that moment may still land (see
// deadlineStore): its error then does not say the scene is unchanged.
func (m *Middleware) updateScene(ctx context.Context, scene string, change func(*sceneRecord) bool) (sceneRecord, bool, error) {
	return m.updateSceneWith(ctx, scene, nil, nil, change)
}

// updateSceneWith is updateScene that takes its first reading of the
// scene from pre, when not nil, and sends arm, when not nil, together with
// its first write (see sceneCreate).
func (m *Middleware) updateSceneWith(ctx context.Context, scene string, pre *storedValue, arm *sceneCreate, change func(*sceneRecord) bool) (sceneRecord, bool, error) {
	for range 5 {
		var rec sceneRecord
		var raw []byte
		var err error
		if pre != nil {
			rec, raw, err = m.sceneFromStored(pre.value, pre.err)
			pre = nil
		} else {
			rec, raw, err = m.loadSceneFrom(ctx, m.pushStore(), scene)
		}
		if err != nil {
			return sceneRecord{}, false, err
		}
		if !change(&rec) {
			return rec, false, nil
		}
		updated, err := encodeScene(rec)
		if err != nil {
			return sceneRecord{}, false, err
		}
		if arm != nil {
			a := arm
			arm = nil
			var createErr error
			createErr, err = m.createThenUpdate(ctx, a, sceneKey(scene), raw, updated, rec)
			if errors.Is(err, store.ErrNotAttempted) {
				a.failed(createErr)
				continue // read and change again, without it
			}
			a.made = true
		} else {
			err = m.pushStore().Update(ctx, sceneKey(scene), raw, updated)
		}
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
func confirmKey(openID string) string { return digestKey("confirm:", openID) }

// awaitConfirmation remembers which scene the scanner's confirmation code
// is for: the QR code they scanned last.
func (m *Middleware) awaitConfirmation(ctx context.Context, scene string, rec sceneRecord) {
	ttl := time.Unix(rec.ExpiresAt, 0).Sub(m.cfg.Now())
	if ttl < time.Second {
		return
	}
	key := confirmKey(rec.OpenID)
	st := m.pushStore()
	_ = st.Delete(ctx, key)
	if err := st.Create(ctx, key, []byte(scene), ttl); err != nil && !errors.Is(err, store.ErrExists) {
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

func (m *Middleware) loginReply() string { return m.withSiteName(m.cfg.LoginReply) }

// withSiteName puts SiteName in a configured chat text where it has a %s.
func (m *Middleware) withSiteName(text string) string {
	if strings.Contains(text, "%") {
		return fmt.Sprintf(text, m.cfg.SiteName)
	}
	return text
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
