package middleware

import (
	"context"

	"go.uber.org/zap"

	"github.com/wechat-login/caddy-wechat-login/middleware/store"
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
