package middleware

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/wechat-login/caddy-wechat-login/middleware/store"
	"github.com/wechat-login/caddy-wechat-login/wechat"
)

// notifyThenMark wakes the browser waiting on scene, as notify does, and
// then stores the push's dedupe marker through pushStore, returning the
// marker's error. When the store is the notifier and can send both at once
// (store.PublishCreator: Redis), they take one round trip instead of two.
func (m *Middleware) notifyThenMark(ctx context.Context, scene, marker string, reply []byte) error {
	pc, ok := m.store.(store.PublishCreator)
	if !ok || any(m.notifier) != any(m.store) {
		m.notify(ctx, scene)
		return m.pushStore().Create(ctx, marker, reply, dedupeTTL)
	}
	// Held to the push's deadline as pushStore's calls are.
	pubErr, err := untilDone(ctx, func() (error, error) {
		return pc.PublishThenCreate(ctx, sceneKey(scene), marker, reply, dedupeTTL)
	})
	if pubErr != nil {
		m.log.Warn("cannot notify waiting browser", zap.Error(pubErr))
	}
	return err
}

// storedValue is the result of a store read made ahead of its use.
type storedValue struct {
	value []byte
	err   error
}

// markerAndScene reads a push's dedupe marker and, when the store can read
// both in one round trip (store.MultiGetter: Redis), the scene's record
// too, for updateSceneWith; otherwise scene is nil and the scene is read
// when it is needed, as before.
func (m *Middleware) markerAndScene(ctx context.Context, marker, scene string) (mark storedValue, sc *storedValue) {
	mg, ok := m.store.(store.MultiGetter)
	if !ok {
		v, err := m.pushStore().Get(ctx, marker)
		return storedValue{v, err}, nil
	}
	// Held to the push's deadline as pushStore's calls are.
	got, err := untilDone(ctx, func() ([]storedValue, error) {
		vals, errs := mg.GetMany(ctx, marker, sceneKey(scene))
		return []storedValue{{vals[0], errs[0]}, {vals[1], errs[1]}}, nil
	})
	if err != nil {
		return storedValue{nil, err}, nil
	}
	return got[0], &got[1]
}

// sceneCreate is a Create that updateSceneWith sends with its first write
// of the scene, in one round trip when the store can (store.CreateUpdater:
// Redis): the login's "not me" code, armed as the scan lands.
type sceneCreate struct {
	key   string
	value []byte
	ttl   time.Duration
	// failed is called when the Create failed, and with it the write it
	// went with; the scene is then read and changed again without it.
	failed func(error)
	// made reports that the Create was sent (its key may now exist).
	made bool
	// then, when not nil, goes with the write too (see sceneFollowup).
	then *sceneFollowup
}

// sceneFollowup is what follows a scan's transition when the scan
// completes the login: waking the browser and storing the push's dedupe
// marker, holding the reply. When the store is the notifier and can send
// them with the transition (store.CreateUpdateFollower: Redis), all go in
// one round trip; finishScan then does not send them again.
type sceneFollowup struct {
	scene, marker string
	// reply is the chat reply to the scan that moved the scene to rec.
	reply func(rec sceneRecord) []byte
	// sent reports that the transition was made and these with it; err is
	// then the marker's error, as notifyThenMark would return it.
	sent bool
	err  error
}

// followupWrite returns the followup for a scan of scene, pushed as
// marker, to send with its transition, or nil when the store cannot.
func (m *Middleware) followupWrite(scene, marker string) *sceneFollowup {
	if _, ok := m.store.(store.CreateUpdateFollower); !ok || any(m.notifier) != any(m.store) {
		return nil
	}
	return &sceneFollowup{scene: scene, marker: marker, reply: func(rec sceneRecord) []byte { return []byte(m.scanReply(rec)) }}
}

// notMeWrite returns the write arming a login's "not me" code, for
// updateSceneWith to send with the scan's transition, or nil when the
// store cannot send them together (or the write cannot be made): the code
// is then armed first, by offerNotMe, as before.
func (m *Middleware) notMeWrite(openID, scene string, codes loginCodes, sceneExp time.Time) *sceneCreate {
	if _, ok := m.store.(store.CreateUpdater); !ok {
		return nil
	}
	w, err := m.notMeCreate(openID, scene, codes, sceneExp)
	if err != nil {
		return nil
	}
	return w
}

// createThenUpdate sends a's Create and then the scene's Update, which
// changes it to rec, in one round trip (store.CreateUpdater), with a.then
// when there is one (store.CreateUpdateFollower), held to the push's
// deadline as pushStore's calls are. When ctx ends first, both errors are
// ctx.Err(): outcome unknown.
func (m *Middleware) createThenUpdate(ctx context.Context, a *sceneCreate, key string, old, value []byte, rec sceneRecord) (createErr, updateErr error) {
	cu, ok := m.store.(store.CreateUpdater)
	if !ok {
		return errors.New("store cannot create and update together"), store.ErrNotAttempted
	}
	f, follow := m.store.(store.CreateUpdateFollower)
	follow = follow && a.then != nil
	errs, err := untilDone(ctx, func() ([4]error, error) {
		if follow {
			c, u, p, t := f.CreateThenUpdateThen(ctx, a.key, a.value, a.ttl, key, old, value, store.Followup{
				Topic: sceneKey(a.then.scene), Key: a.then.marker, Value: a.then.reply(rec), TTL: dedupeTTL,
			})
			return [4]error{c, u, p, t}, nil
		}
		c, u := cu.CreateThenUpdate(ctx, a.key, a.value, a.ttl, key, old, value)
		return [4]error{c, u, store.ErrNotAttempted, store.ErrNotAttempted}, nil
	})
	if err != nil {
		return err, err
	}
	createErr, updateErr = errs[0], errs[1]
	if follow && !errors.Is(errs[3], store.ErrNotAttempted) {
		a.then.sent, a.then.err = true, errs[3]
		if errs[2] != nil {
			m.log.Warn("cannot notify waiting browser", zap.Error(errs[2]))
		}
	}
	if createErr != nil && !errors.Is(createErr, store.ErrExists) && !errors.Is(updateErr, store.ErrNotAttempted) {
		m.log.Warn("not-me code recorded with the scan, but not confirmed", zap.Error(createErr))
	}
	return createErr, updateErr
}

// spliceScan makes the whole of a QR scan that completes a login in one
// round trip, when the store can and is the notifier (store.Splicer:
// Redis): the push's dedupe marker checked, the pending scene moved to
// confirmed with the scanner's fields, the "not me" code armed, the
// browser woken and the marker stored, without reading the scene first.
// The scene's record says, in its first bytes, that it is the pending
// scene of the push's ticket (scanSplice); any other record is left as it
// is and handed back. It covers what the change in confirmScene would do
// with such a scene, and only scans that need nothing else first (no
// unionid to fetch, no confirmation in chat).
//
// done reports that the push is answered with res. Otherwise found, when
// not nil, is the scene's record as read, with no marker, for the general
// way; when nil, nothing was read.
func (m *Middleware) spliceScan(ctx context.Context, scene string, ev *wechat.Event, marker string) (res pushResult, found *storedValue, done bool) {
	sp, ok := m.store.(store.Splicer)
	if !ok || any(m.notifier) != any(m.store) || ev.Ticket == "" || ev.MsgType == "text" ||
		m.cfg.ConfirmInChat || m.cfg.FetchUnionID || m.cfg.UserID == "unionid" {
		return pushResult{}, nil, false
	}
	codes := m.newLoginCodes()
	arm, err := m.notMeCreate(ev.FromUserName, scene, codes, m.cfg.Now().Add(m.cfg.SceneTTL))
	if err != nil {
		return pushResult{}, nil, false
	}
	rec := sceneRecord{State: StateConfirmed, OpenID: ev.FromUserName, ScanKey: marker, SID: codes.SID, NotMeCode: codes.NotMe}
	prefix, head, tail, ok := scanSplice(ev.Ticket, &rec)
	if !ok {
		return pushResult{}, nil, false
	}
	reply := m.loginReplyFor(rec)
	// Held to the push's deadline as pushStore's calls are.
	type outcome struct {
		res store.SpliceResult
		err error
	}
	got, err := untilDone(ctx, func() (outcome, error) {
		res, err := sp.Splice(ctx, store.Splice{
			Guard: marker, Key: sceneKey(scene), Prefix: prefix, Head: head, Tail: tail,
			Create: store.Entry{Key: arm.key, Value: arm.value, TTL: arm.ttl},
			Then:   store.Followup{Topic: sceneKey(scene), Key: marker, Value: []byte(reply), TTL: dedupeTTL},
		})
		return outcome{res, err}, nil
	})
	if err == nil {
		err = got.err
	}
	switch {
	case errors.Is(err, store.ErrNotAttempted):
		return pushResult{}, nil, false
	case errors.Is(err, store.ErrNotFound):
		m.metrics.Scan("expired")
		return pushResult{reply: m.cfg.ExpiredReply}, nil, true
	case err != nil:
		// The scan may have landed: WeChat's retry finds its marker, or
		// the scene moved by this very push, and finishes it.
		return pushResult{failure: fmt.Errorf("confirm scene: %w", err)}, nil, true
	case got.res.Guarded != nil:
		return m.markedReply(got.res.Guarded), nil, true
	case !got.res.Spliced:
		return pushResult{}, &storedValue{value: got.res.Found}, false
	}
	return m.scanLanded(ctx, scene, ev, rec, marker, &sceneFollowup{sent: true, err: got.res.ThenErr}), nil, true
}
