package middleware

import (
	"context"

	"github.com/wechat-login/caddy-wechat-login/internal/fanout"
)

// Notifier wakes the browsers waiting on a scene when its state changes. The
// in-process default serves one instance; a shared one (Redis pub/sub) lets
// the instance that receives WeChat's push wake a browser waiting on another.
type Notifier interface {
	// Subscribe registers interest in topic. The returned channel receives a
	// value for every Publish of topic that happens after Subscribe returns
	// (coalesced: several publishes may give one value). cancel releases the
	// subscription and must be called.
	//
	// The middleware subscribes to each scene it creates and may hold that
	// subscription until the scene expires (up to 16,384 at once), so that
	// the browser's first wait needs no read of the store: Subscribe should
	// be a local registration, as it is in the Redis store (one channel
	// subscribed at start), not a round trip.
	Subscribe(topic string) (ch <-chan struct{}, cancel func())

	// Publish wakes every current subscriber of topic.
	Publish(ctx context.Context, topic string) error
}

// LocalNotifier is an in-process Notifier. Its zero value is ready to use.
type LocalNotifier struct {
	subs fanout.Set
}

// Subscribe implements Notifier.
func (n *LocalNotifier) Subscribe(topic string) (<-chan struct{}, func()) {
	return n.subs.Subscribe(topic)
}

// Publish implements Notifier. It never blocks on a slow subscriber.
func (n *LocalNotifier) Publish(_ context.Context, topic string) error {
	n.subs.Wake(topic)
	return nil
}

// Waiting returns how many subscriptions are open, for metrics and tests.
func (n *LocalNotifier) Waiting() int { return n.subs.Len() }
