package middleware

import (
	"context"
	"sync"
)

// Notifier wakes the browsers waiting on a scene when its state changes. The
// in-process default serves one instance; a shared one (Redis pub/sub) lets
// the instance that receives WeChat's push wake a browser waiting on another.
type Notifier interface {
	// Subscribe registers interest in topic. The returned channel receives a
	// value for every Publish of topic that happens after Subscribe returns
	// (coalesced: several publishes may give one value). cancel releases the
	// subscription and must be called.
	Subscribe(topic string) (ch <-chan struct{}, cancel func())

	// Publish wakes every current subscriber of topic.
	Publish(ctx context.Context, topic string) error
}

// LocalNotifier is an in-process Notifier. Its zero value is ready to use.
type LocalNotifier struct {
	mu   sync.Mutex
	subs map[string]map[chan struct{}]struct{}
}

// Subscribe implements Notifier.
func (n *LocalNotifier) Subscribe(topic string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	n.mu.Lock()
	if n.subs == nil {
		n.subs = make(map[string]map[chan struct{}]struct{})
	}
	set := n.subs[topic]
	if set == nil {
		set = make(map[chan struct{}]struct{})
		n.subs[topic] = set
	}
	set[ch] = struct{}{}
	n.mu.Unlock()

	var once sync.Once
	return ch, func() {
		once.Do(func() {
			n.mu.Lock()
			defer n.mu.Unlock()
			if set := n.subs[topic]; set != nil {
				delete(set, ch)
				if len(set) == 0 {
					delete(n.subs, topic)
				}
			}
		})
	}
}

// Publish implements Notifier. It never blocks on a slow subscriber: each
// subscriber has a one-slot buffer, and a pending wake-up already covers the
// new one.
func (n *LocalNotifier) Publish(_ context.Context, topic string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for ch := range n.subs[topic] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	return nil
}

// Waiting returns how many subscriptions are open, for metrics and tests.
func (n *LocalNotifier) Waiting() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	total := 0
	for _, set := range n.subs {
		total += len(set)
	}
	return total
}
