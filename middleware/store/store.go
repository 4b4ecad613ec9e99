// Package store defines the byte-level storage contract that the login
// middleware keeps its short-lived state in: pending login scenes, push
// dedupe markers, OAuth states and session revocations.
//
// Backends only move bytes with a time to live. Everything that has meaning
// (scene states, identities, expiry policy) lives in the middleware, so a new
// backend is small and one conformance suite (package storetest) proves it.
package store

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned for a key that is missing or whose TTL has run out.
// A store never returns a nil value with a nil error.
var ErrNotFound = errors.New("store: key not found")

// ErrExists is returned by Create when the key is already present.
var ErrExists = errors.New("store: key already exists")

// ErrChanged is returned by Update when the stored value is no longer the one
// the caller read: somebody else changed it first.
var ErrChanged = errors.New("store: value changed concurrently")

// Store is a key/value store with per-key expiry. All methods are safe for
// concurrent use. Keys are at most 200 bytes of printable ASCII; values are
// small (a few hundred bytes).
//
// Errors other than ErrNotFound and ErrExists mean the backend itself failed
// (unreachable, timed out); callers report those as "temporarily unavailable".
type Store interface {
	// Create stores value under key only if key is absent (or expired),
	// with the given time to live. It returns ErrExists otherwise.
	Create(ctx context.Context, key string, value []byte, ttl time.Duration) error

	// Get returns the value stored under key, or ErrNotFound.
	Get(ctx context.Context, key string) ([]byte, error)

	// Update replaces the value of an existing key, keeping its remaining
	// time to live, but only if the current value still equals old (a
	// compare-and-swap, so that state transitions cannot be lost or applied
	// twice). It returns ErrNotFound if the key is missing or expired and
	// ErrChanged if the value differs from old.
	Update(ctx context.Context, key string, old, value []byte) error

	// Take atomically returns the value stored under key and deletes it, so
	// that of any number of concurrent callers exactly one gets the value and
	// the others get ErrNotFound.
	Take(ctx context.Context, key string) ([]byte, error)

	// Delete removes key. Deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error

	// Close releases the store's resources and stops its background work.
	Close() error
}

// Counter is implemented by stores that can count across every instance
// that shares them (Redis). The middleware uses it, when the store has it,
// for rate limits that hold for a whole cluster rather than per instance.
type Counter interface {
	// Incr adds one to the counter under key, creating it with the given
	// time to live if absent (the time to live is not extended by later
	// increments), and returns the new count.
	Incr(ctx context.Context, key string, ttl time.Duration) (int64, error)
}

// PairCounter is implemented by Counters that can count two events in one
// round trip to a shared backend (Redis: a script). The middleware uses it,
// when the store has it, for the two counts a new login code takes: the
// client address's, then the whole site's.
type PairCounter interface {
	Counter
	// IncrIfWithin does Incr(ctx, first, ttl) and then, only if the count
	// it returned is at most limit, Incr(ctx, second, ttl), as one atomic
	// step where the backend allows. secondN is 0 when second was not
	// counted. On an error, either count may or may not have been made.
	IncrIfWithin(ctx context.Context, first string, limit int64, second string, ttl time.Duration) (firstN, secondN int64, err error)
	// Uncount takes back one count an Incr made under key, if key still
	// exists (it never creates it).
	Uncount(ctx context.Context, key string) error
}

// Durable is implemented by stores that never drop an entry before its time
// to live runs out and keep their entries across restarts: Redis with an
// eviction policy of noeviction and append-only persistence. The middleware
// keeps session revocations in such a store, where every instance sees
// them; with any other store it keeps them itself, where nothing evicts
// them (middleware.Config.RevocationFile).
type Durable interface {
	// Durable reports whether the store keeps that promise.
	Durable() bool
}

// Broadcaster is implemented by stores that every instance shares and that
// can also tell every instance when something changed (Redis pub/sub). The
// middleware wakes browsers waiting on one instance through it when a push
// for their login reaches another; with a store that is not a Broadcaster,
// notifications stay in the process, which is right only for a store that
// is not shared either.
type Broadcaster interface {
	// Subscribe registers interest in topic: the channel receives a value
	// (coalesced) after each later Publish of topic, on any instance.
	// cancel releases the subscription and must be called.
	Subscribe(topic string) (ch <-chan struct{}, cancel func())

	// Publish wakes the subscribers of topic on every instance.
	Publish(ctx context.Context, topic string) error
}

// PublishCreator is implemented by Broadcasters that can send a Publish
// and a Create together, in one round trip to a shared backend. The
// middleware uses it, when the store is its notifier, for what ends a
// login scan: waking the browser, then storing the push's dedupe marker.
type PublishCreator interface {
	// PublishThenCreate does Publish(ctx, topic) and then Create(ctx, key,
	// value, ttl), and returns their errors as those methods would: the
	// Create is made whether or not the Publish failed.
	PublishThenCreate(ctx context.Context, topic, key string, value []byte, ttl time.Duration) (publishErr, createErr error)
}

// MultiGetter is implemented by stores that can read several keys in one
// round trip to a shared backend (Redis: a pipeline of GETs). The middleware
// uses it, when the store has it, to read a push's dedupe marker and its
// scene together.
type MultiGetter interface {
	// GetMany does Get(ctx, key) for each key, and returns each value and
	// error at the key's index, as Get would have.
	GetMany(ctx context.Context, keys ...string) ([][]byte, []error)
}

// CreateUpdater is implemented by stores that can make a Create and then
// an Update in one round trip to a shared backend. The middleware uses it,
// when the store has it, for a login scan: arming the login's "not me"
// code, then moving its scene.
type CreateUpdater interface {
	// CreateThenUpdate does Create(ctx, createKey, createValue, ttl) and
	// then, only if that succeeded or returned ErrExists, Update(ctx, key,
	// old, value), as one atomic step where the backend allows. It returns
	// their errors as those methods would; when the Create failed
	// otherwise, no Update was made and updateErr is ErrNotAttempted.
	CreateThenUpdate(ctx context.Context, createKey string, createValue []byte, ttl time.Duration, key string, old, value []byte) (createErr, updateErr error)
}

// Followup is what CreateThenUpdateThen does once its Update has swapped
// the value: Publish(ctx, Topic), then Create(ctx, Key, Value, TTL).
type Followup struct {
	Topic string
	Key   string
	Value []byte
	TTL   time.Duration
}

// CreateUpdateFollower is implemented by CreateUpdaters that are also the
// Broadcaster and can, in the same round trip, follow a successful Update
// with a Publish and a Create. The middleware uses it, when the store is
// its notifier, for a scan that completes a login: arming the "not me"
// code, moving the scene, waking the browser and storing the push's dedupe
// marker, all at once.
type CreateUpdateFollower interface {
	CreateUpdater
	// CreateThenUpdateThen does CreateThenUpdate and then, only if the
	// Update swapped the value (updateErr is nil), the Publish and the
	// Create of then, as one atomic step where the backend allows. It
	// returns the four errors as those methods would; when the Update did
	// not swap the value, neither Publish nor Create was made, and
	// publishErr and thenErr are ErrNotAttempted.
	CreateThenUpdateThen(ctx context.Context, createKey string, createValue []byte, ttl time.Duration, key string, old, value []byte, then Followup) (createErr, updateErr, publishErr, thenErr error)
}

// ErrNotAttempted is CreateThenUpdate's updateErr when the Create failed
// and the Update was therefore not made.
var ErrNotAttempted = errors.New("store: not attempted")

// PrefixTaker is implemented by stores that can read a key and, if its
// value begins with a given prefix, delete it, atomically and in one round
// trip (Redis: a script). The middleware uses it, when the store has it,
// for a poll: read the scene, and redeem it at once if it is confirmed.
type PrefixTaker interface {
	// TakeIfPrefix returns the value stored under key, or ErrNotFound. If
	// the value begins with prefix, it is deleted as Take would delete it
	// (of concurrent callers exactly one gets it with taken true) and taken
	// is true; otherwise the key is left as it is.
	TakeIfPrefix(ctx context.Context, key string, prefix []byte) (value []byte, taken bool, err error)
}

// Entry is a key, a value and its time to live, for a Create made as part
// of another call.
type Entry struct {
	Key   string
	Value []byte
	TTL   time.Duration
}

// Splice is a change of one key's value that the backend decides and makes
// itself, so that the caller need not read the value first (see Splicer).
type Splice struct {
	// Guard names a key whose presence stops the splice: nothing is done
	// and its value is returned.
	Guard string
	// Key's value, if it begins with Prefix, becomes Head, then the rest
	// of the value after Prefix, then Tail; its time to live is kept.
	Key                string
	Prefix, Head, Tail []byte
	// Create is made, as Create would make it, just before the value is
	// changed, and only then. Its key existing already does not stop the
	// change.
	Create Entry
	// Then follows the change: Publish(ctx, Then.Topic), then Create(ctx,
	// Then.Key, Then.Value, Then.TTL).
	Then Followup
}

// SpliceResult is what a Splice found and did. Exactly one of Guarded,
// Found and Spliced is set.
type SpliceResult struct {
	// Guarded is the Guard's value, when it existed.
	Guarded []byte
	// Found is the value, when it did not begin with Prefix.
	Found []byte
	// Spliced reports that the value was changed, with the Create and the
	// Then. CreateErr and ThenErr are then their errors as Create would
	// return them (nil or ErrExists).
	Spliced            bool
	CreateErr, ThenErr error
}

// Splicer is implemented by Broadcasters that can make a Splice in one
// round trip to a shared backend, atomically (Redis: a script). The
// middleware uses it, when the store is its notifier, for a QR scan that
// completes a login: the push's dedupe marker checked (Guard), the pending
// scene moved (its record begins with bytes known from the push alone), the
// login's "not me" code armed (Create), the browser woken and the marker
// stored (Then), all at once and without reading the scene first.
type Splicer interface {
	// Splice returns ErrNotFound when Key is missing (and Guard too), and
	// ErrNotAttempted, having done nothing, when the backend cannot make
	// this splice in one step (a Redis Cluster, whose keys may live on
	// different nodes; arguments it would refuse). Any other error means
	// the backend failed, and the splice may or may not have been made.
	Splice(ctx context.Context, s Splice) (SpliceResult, error)
}
