package middleware

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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
// store.ErrNotFound when the scene is gone. Once ctx has ended it begins no
// transition: the push it belongs to has been answered (see applyPush).
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
		if err := ctx.Err(); err != nil {
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
