package redisstore

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/wechat-login/caddy-wechat-login/internal/fanout"
)

// notifyChannel is the Redis channel, after the prefix, that carries every
// topic. One channel subscribed once at start-up means that subscribing to
// a topic is a local map insert, in effect the moment Subscribe returns,
// with no round trip to Redis per waiting browser.
const notifyChannel = "notify"

// notifier wakes waiters across instances through Redis pub/sub: it is what
// makes a Store a store.Broadcaster. A Store starts one on first use and
// closes it with itself.
//
// Every instance subscribes to one Redis channel, prefix+"notify"; Publish
// sends the topic as the message, and each instance wakes its own
// subscribers of that topic. Publish also wakes the publishing instance's
// subscribers directly, so they do not depend on the round trip.
//
// Guarantee: a Publish that starts after Subscribe has returned wakes the
// subscriber, on any instance, as long as both instances' connections to
// Redis stay up. Redis does not queue messages for a subscriber that is
// disconnected, so a message sent while an instance's subscription
// connection is down is lost; go-redis reconnects and resubscribes by
// itself, and the notifier then wakes all its subscribers once, so that
// each re-reads the state it waits on instead of missing a change. A wake
// is therefore a hint to re-read, never a promise that anything changed.
type notifier struct {
	client  redis.UniversalClient
	channel string
	pubsub  *redis.PubSub
	done    chan struct{} // closed when run returns

	local fanout.Set // this instance's subscribers

	mu     sync.Mutex
	closed bool // set by Close, for startNotifier's background start

	closeOnce sync.Once
	closeErr  error
}

// subscribeNotifier subscribes to the notification channel under prefix
// (DefaultPrefix if empty) and waits until Redis confirms the subscription,
// or ctx ends. It fails if Redis cannot be reached. The client stays the
// caller's; the notifier holds one pub/sub connection of its own.
func subscribeNotifier(ctx context.Context, client redis.UniversalClient, prefix string) (*notifier, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	channel := prefix + notifyChannel
	ps := client.Subscribe(ctx, channel)
	// The confirmation arrives before any message on the channel, so once
	// it has, every later PUBLISH reaches this connection.
	reply, err := ps.Receive(ctx)
	if err == nil {
		if sub, ok := reply.(*redis.Subscription); !ok || sub.Kind != "subscribe" || sub.Channel != channel {
			err = fmt.Errorf("unexpected reply %T to SUBSCRIBE", reply)
		}
	}
	if err != nil {
		_ = ps.Close()
		return nil, fmt.Errorf("redisstore: subscribe to notifications: %w", err)
	}
	n := &notifier{
		client:  client,
		channel: channel,
		pubsub:  ps,
		done:    make(chan struct{}),
	}
	// go-redis runs the receive loop, with reconnects and health checks,
	// in goroutines that end when the PubSub is closed; it then closes
	// this channel, which ends run. Close does both and waits.
	go n.run(ps.ChannelWithSubscriptions())
	return n, nil
}

// startNotifier is subscribeNotifier for servers that must start while Redis is
// down: it returns at once and subscribes in the background, retrying until
// Redis answers (go-redis reconnects by itself). Until the subscription is
// confirmed, only this instance's own Publish calls wake its subscribers;
// when it is (and after every reconnect), all local subscribers are woken
// once so that each re-reads what it waits on.
func startNotifier(client redis.UniversalClient, prefix string) *notifier {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	n := &notifier{
		client:  client,
		channel: prefix + notifyChannel,
		done:    make(chan struct{}),
	}
	go func() {
		// Subscribe dials once; if that fails, the channel's receive loop
		// keeps reconnecting and resubscribes.
		ps := n.client.Subscribe(context.Background(), n.channel)
		n.mu.Lock()
		n.pubsub = ps
		closed := n.closed
		n.mu.Unlock()
		if closed {
			_ = ps.Close()
			close(n.done)
			return
		}
		n.run(ps.ChannelWithSubscriptions())
	}()
	return n
}

// run fans messages from Redis out to local subscribers until msgs is
// closed.
func (n *notifier) run(msgs <-chan any) {
	defer close(n.done)
	for msg := range msgs {
		switch msg := msg.(type) {
		case *redis.Message:
			if msg.Channel == n.channel {
				n.local.Wake(msg.Payload)
			}
		case *redis.Subscription:
			// subscribeNotifier consumed the first confirmation, so this is a
			// resubscription after a reconnect (or startNotifier's first
			// one): messages sent before it are lost, so everyone re-reads.
			if msg.Kind == "subscribe" {
				n.local.WakeAll()
			}
		}
	}
}

// Subscribe registers interest in topic; the returned channel receives a
// value (coalesced) for each later Publish of topic on any instance, and
// once after every reconnect to Redis. cancel releases the subscription
// and must be called. After Close, only Publish on this instance wakes it.
func (n *notifier) Subscribe(topic string) (<-chan struct{}, func()) {
	return n.local.Subscribe(topic)
}

// Publish wakes the subscribers of topic on this instance at once and on
// every instance through Redis. An error means the other instances may
// not have been told; this instance's subscribers were woken regardless.
func (n *notifier) Publish(ctx context.Context, topic string) error {
	n.local.Wake(topic)
	if err := n.client.Publish(ctx, n.channel, topic).Err(); err != nil {
		return fmt.Errorf("redisstore: publish notification: %w", err)
	}
	return nil
}

// Waiting returns how many subscriptions are open, for metrics and tests.
func (n *notifier) Waiting() int { return n.local.Len() }

// Close unsubscribes, closes the pub/sub connection and waits for the
// receive goroutines to end. It does not close the client. It is safe to
// call more than once.
func (n *notifier) Close() error {
	n.closeOnce.Do(func() {
		n.mu.Lock()
		n.closed = true
		ps := n.pubsub
		n.mu.Unlock()
		var err error
		if ps != nil {
			err = ps.Close()
		}
		<-n.done
		if err != nil && !errors.Is(err, redis.ErrClosed) {
			n.closeErr = fmt.Errorf("redisstore: close notifier: %w", err)
		}
	})
	return n.closeErr
}
