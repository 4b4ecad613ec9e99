// Package ratelimit is an in-memory, per-key token-bucket rate limiter with
// bounded memory, for keys such as client IP addresses.
//
// Each key has a bucket holding up to burst tokens that refills at a steady
// rate; a request spends one token. Buckets live in a map capped at a fixed
// number of keys. A bucket that has refilled completely is indistinguishable
// from a fresh one, so it is dropped as soon as it is noticed; when the cap is
// reached anyway, the least recently used bucket is evicted. There is no
// background goroutine: all housekeeping happens, a little at a time, inside
// [Limiter.Allow].
//
// Keys are used as given. Callers limiting by client address may want to key
// IPv6 clients by their /64 prefix, since one host usually controls a whole
// /64 and could otherwise rotate through fresh buckets.
package ratelimit

import (
	"math"
	"sync"
	"time"
)

// DefaultMaxKeys is the number of keys tracked when [WithMaxKeys] is not
// given. At roughly 150 bytes per key it bounds memory to a few megabytes.
const DefaultMaxKeys = 16384

// sweepPerCall is how many least recently used buckets each Allow call looks
// at for removal. A small constant keeps every call O(1).
const sweepPerCall = 2

// minRate is the slowest refill rate: one event a day. Rates below it,
// including zero, negative and NaN, are raised to it.
const minRate = 1.0 / (24 * 60 * 60)

// Option configures a [Limiter].
type Option func(*Limiter)

// WithClock makes the limiter read time from now instead of time.Now. Tests
// use it to drive the limiter with a fake clock. A nil now is ignored.
func WithClock(now func() time.Time) Option {
	return func(l *Limiter) {
		if now != nil {
			l.now = now
		}
	}
}

// WithMaxKeys caps the number of keys tracked at once (default
// [DefaultMaxKeys]). When the cap is reached, the least recently used key is
// forgotten, which hands it a fresh burst if it returns. Values below 1 are
// ignored.
func WithMaxKeys(n int) Option {
	return func(l *Limiter) {
		if n >= 1 {
			l.maxKeys = n
		}
	}
}

// Limiter limits events per key. It is safe for concurrent use.
type Limiter struct {
	rate    float64 // tokens per second
	burst   float64
	maxKeys int
	now     func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
	// lru is a sentinel of a circular doubly linked list of buckets:
	// lru.next is the most recently used, lru.prev the least.
	lru bucket
}

type bucket struct {
	key        string
	tokens     float64
	last       time.Time // when tokens was last brought up to date
	prev, next *bucket
}

// New returns a limiter that allows each key rate events per second on
// average, with bursts of up to burst events.
//
// Its arguments normally come from configuration the caller has already
// checked, so New does not fail; out-of-range values are made safe instead:
// a burst below 1 counts as 1, and a rate below one event a day (including
// zero, negative and NaN) counts as one event a day, so a misconfiguration
// limits too much rather than not at all.
func New(rate float64, burst int, opts ...Option) *Limiter {
	if !(rate >= minRate) {
		rate = minRate
	}
	l := &Limiter{
		rate:    rate,
		burst:   float64(max(burst, 1)),
		maxKeys: DefaultMaxKeys,
		now:     time.Now,
		buckets: make(map[string]*bucket),
	}
	l.lru.prev, l.lru.next = &l.lru, &l.lru
	for _, opt := range opts {
		opt(l)
	}
	return l
}

// Allow spends one token of key's bucket. It reports whether the event is
// allowed and, when it is not, how long until it would be.
func (l *Limiter) Allow(key string) (ok bool, retryAfter time.Duration) {
	now := l.now()

	l.mu.Lock()
	defer l.mu.Unlock()

	l.sweep(key, now)
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.maxKeys {
			l.remove(l.lru.prev)
		}
		b = &bucket{key: key, tokens: l.burst, last: now}
		l.buckets[key] = b
	} else {
		l.refill(b, now)
		l.unlink(b)
	}
	l.pushFront(b)

	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration(math.Ceil((1 - b.tokens) / l.rate * float64(time.Second)))
	return false, max(wait, time.Nanosecond)
}

// Len returns the number of keys currently tracked.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// refill brings b's tokens up to date at now. A clock that steps backwards
// adds nothing rather than taking tokens away.
func (l *Limiter) refill(b *bucket, now time.Time) {
	if elapsed := now.Sub(b.last); elapsed > 0 {
		b.tokens = min(l.burst, b.tokens+elapsed.Seconds()*l.rate)
		b.last = now
	}
}

// sweep drops up to sweepPerCall least recently used buckets that have
// refilled completely: forgetting them changes nothing, and it keeps memory
// proportional to recently active keys. The bucket of the key being served
// is left alone, as it would only be made again at once.
func (l *Limiter) sweep(key string, now time.Time) {
	for range sweepPerCall {
		b := l.lru.prev
		if b == &l.lru || b.key == key {
			return
		}
		l.refill(b, now)
		if b.tokens < l.burst {
			return
		}
		l.remove(b)
	}
}

func (l *Limiter) remove(b *bucket) {
	l.unlink(b)
	delete(l.buckets, b.key)
}

func (l *Limiter) unlink(b *bucket) {
	b.prev.next = b.next
	b.next.prev = b.prev
	b.prev, b.next = nil, nil
}

func (l *Limiter) pushFront(b *bucket) {
	b.prev = &l.lru
	b.next = l.lru.next
	l.lru.next.prev = b
	l.lru.next = b
}
