// Package redisstore keeps the login middleware's short-lived state in
// Redis, so that every instance of a cluster sees the same pending logins,
// push dedupe markers, OAuth states and revocations, and provides a
// Notifier over Redis pub/sub so that the instance that receives WeChat's
// push wakes the browser waiting on another instance.
//
// Each store.Store operation is one Redis command, so each is atomic on
// the server:
//
//	Create  SET key value NX with PX (or EX) ttl
//	Get     GET key
//	Update  a Lua script: GET, compare, SET KEEPTTL
//	Take    GETDEL key
//	Delete  DEL key
//
// It needs Redis 6.2 or later (GETDEL). Every key gets a time to live, so
// an eviction policy of noeviction or volatile-* is safe; allkeys-* lets
// Redis drop pending logins early under memory pressure.
//
// Replication is asynchronous: after a failover a write the old primary
// acknowledged may be lost, and a login in flight then reads as expired;
// it never reads as someone else's.
package redisstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wechat-login/caddy-wechat-login/middleware/store"
)

// DefaultPrefix is put in front of every key when New is given an empty
// prefix, so that the store can share a Redis database with other users.
const DefaultPrefix = "wechat_login:"

// Limits on what callers store, the same as the embedded store's, so that
// switching backends changes no behaviour.
const (
	maxKeyLen   = 200
	maxValueLen = 64 << 10
)

// Client settings Open uses unless the URL sets them. Go-redis's
// defaults (5 s timeouts, three retries, five dial attempts each) make a
// call to a dead or hung Redis take many seconds; the middleware would
// rather answer "temporarily unavailable" at once.
const (
	urlDialTimeout  = time.Second
	urlReadTimeout  = time.Second
	urlWriteTimeout = time.Second
	urlPoolTimeout  = 2 * time.Second
	// No retries: go-redis already checks a pooled connection before it
	// reuses it, and a retried SET NX or GETDEL whose first answer was
	// lost gives a wrong answer (ErrExists, ErrNotFound) instead of an
	// error. In go-redis, -1 means none; 0 means the default of three.
	urlMaxRetries    = -1
	urlDialerRetries = 1
)

// compareAndSwap replaces the value of KEYS[1] with ARGV[2] if it equals
// ARGV[1], keeping the key's remaining time to live (KEEPTTL). It returns
// 0 if the key is missing, 1 if the value differs, 2 after the swap.
// Lua strings are byte strings, so the comparison is exact for any value.
var compareAndSwap = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if not cur then
	return 0
end
if cur ~= ARGV[1] then
	return 1
end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 2
`)

// Results of compareAndSwap.
const (
	casMissing = 0
	casChanged = 1
	casSwapped = 2
)

// Store is a store.Store in Redis. Create it with New or Open.
type Store struct {
	client    redis.UniversalClient
	prefix    string
	ownClient bool

	notifyOnce sync.Once
	notify     *notifier // started by the first Subscribe or Publish

	closeOnce sync.Once
	closeErr  error
}

var (
	_ store.Store       = (*Store)(nil)
	_ store.Counter     = (*Store)(nil)
	_ store.Broadcaster = (*Store)(nil)
	_ store.Durable     = (*Store)(nil)
)

// New returns a Store that keeps its keys in client under prefix
// (DefaultPrefix if empty). The client stays the caller's: Close does not
// close it, and its timeouts bound how long a call to an unreachable Redis
// takes, so set them short (see Open).
func New(client redis.UniversalClient, prefix string) *Store {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Store{client: client, prefix: prefix}
}

// Open connects to the Redis at rawURL and returns a Store that owns
// the connection: Close closes it. The URL is redis://[[user]:password@]
// host[:port][/db] or rediss:// for TLS, with go-redis's query parameters
// (dial_timeout, read_timeout, max_retries, ...). Timeouts it leaves unset
// are one second and calls are not retried, so that a call to a dead or
// hung Redis fails within about a second. Open does not contact Redis.
func Open(rawURL, prefix string) (*Store, error) {
	client, err := NewClient(rawURL)
	if err != nil {
		return nil, err
	}
	s := New(client, prefix)
	s.ownClient = true
	return s, nil
}

// NewClient parses rawURL as Open does and returns a client with the
// same fail-fast settings, for callers that share one client between a
// Store and a Notifier. Error messages never include the URL, which may
// hold a password.
func NewClient(rawURL string) (*redis.Client, error) {
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		// go-redis quotes parts of the URL in some errors; keep them out.
		return nil, errors.New("redisstore: invalid Redis URL (want redis://[[user]:password@]host[:port][/db] or rediss://...)")
	}
	if opt.DialTimeout == 0 {
		opt.DialTimeout = urlDialTimeout
	}
	if opt.ReadTimeout == 0 {
		opt.ReadTimeout = urlReadTimeout
	}
	if opt.WriteTimeout == 0 {
		opt.WriteTimeout = urlWriteTimeout
	}
	if opt.PoolTimeout == 0 {
		opt.PoolTimeout = urlPoolTimeout
	}
	if opt.MaxRetries == 0 {
		opt.MaxRetries = urlMaxRetries
	}
	opt.DialerRetries = urlDialerRetries
	// Let a caller's deadline cut a call short too.
	opt.ContextTimeoutEnabled = true
	return redis.NewClient(opt), nil
}

// key returns the Redis key for a store key.
func (s *Store) key(key string) (string, error) {
	if len(key) > maxKeyLen {
		return "", fmt.Errorf("redisstore: key of %d bytes is longer than %d", len(key), maxKeyLen)
	}
	return s.prefix + key, nil
}

func checkValue(value []byte) error {
	if len(value) > maxValueLen {
		return fmt.Errorf("redisstore: value of %d bytes is longer than %d", len(value), maxValueLen)
	}
	return nil
}

// backendError wraps an error from Redis with the operation that failed.
// Neither keys nor values go into it: keys hold scene IDs and states.
func backendError(op string, err error) error {
	return fmt.Errorf("redisstore: %s: %w", op, err)
}

// Create stores value under key with the given time to live if key is
// absent or expired, and returns store.ErrExists otherwise. ttl must be at
// least a millisecond, Redis's resolution.
//
// With a client that retries (go-redis's default, unlike Open's), a
// write Redis applied but whose answer was lost reads as store.ErrExists
// on the retry; the caller then fails safe, as for a collision.
func (s *Store) Create(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if ttl < time.Millisecond {
		return fmt.Errorf("redisstore: ttl %s is shorter than 1ms", ttl)
	}
	k, err := s.key(key)
	if err != nil {
		return err
	}
	if err := checkValue(value); err != nil {
		return err
	}
	ok, err := s.client.SetNX(ctx, k, value, ttl).Result()
	if err != nil {
		return backendError("create", err)
	}
	if !ok {
		return store.ErrExists
	}
	return nil
}

// Get returns the value stored under key, or store.ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) ([]byte, error) {
	k, err := s.key(key)
	if err != nil {
		return nil, err
	}
	v, err := s.client.Get(ctx, k).Result()
	return value(v, err, "get")
}

// Update replaces the value under key with value if it still equals old,
// keeping the key's remaining time to live. It returns store.ErrNotFound
// if key is absent or expired, and store.ErrChanged if the value differs
// from old.
func (s *Store) Update(ctx context.Context, key string, old, value []byte) error {
	k, err := s.key(key)
	if err != nil {
		return err
	}
	if err := checkValue(value); err != nil {
		return err
	}
	// A nil old is sent as the empty string; Redis has no nil values, and
	// the store treats a nil and an empty value alike.
	res, err := compareAndSwap.Run(ctx, s.client, []string{k}, old, value).Int64()
	if err != nil {
		return backendError("update", err)
	}
	switch res {
	case casSwapped:
		return nil
	case casChanged:
		return store.ErrChanged
	case casMissing:
		return store.ErrNotFound
	default:
		return fmt.Errorf("redisstore: update: unexpected script result %d", res)
	}
}

// incrWithTTL increments a counter and gives it a time to live when it is
// new, in one step, so that a crash between the two cannot leave a counter
// that never expires.
var incrWithTTL = redis.NewScript(`
local n = redis.call("INCR", KEYS[1])
if n == 1 then redis.call("PEXPIRE", KEYS[1], ARGV[1]) end
return n`)

// Incr implements store.Counter: one atomic round trip for every instance
// sharing this Redis.
func (s *Store) Incr(ctx context.Context, key string, ttl time.Duration) (int64, error) {
	if ttl < time.Millisecond {
		return 0, fmt.Errorf("redisstore: ttl %s is shorter than 1ms", ttl)
	}
	k, err := s.key(key)
	if err != nil {
		return 0, err
	}
	n, err := incrWithTTL.Run(ctx, s.client, []string{k}, ttl.Milliseconds()).Int64()
	if err != nil {
		return 0, backendError("incr", err)
	}
	return n, nil
}

// Take returns the value stored under key and deletes it, in one GETDEL.
// Of concurrent callers exactly one gets the value; the others get
// store.ErrNotFound.
func (s *Store) Take(ctx context.Context, key string) ([]byte, error) {
	k, err := s.key(key)
	if err != nil {
		return nil, err
	}
	v, err := s.client.GetDel(ctx, k).Result()
	return value(v, err, "take")
}

// value turns a string reply into the store's result: a fresh, non-nil
// slice, or store.ErrNotFound for redis.Nil.
func value(v string, err error, op string) ([]byte, error) {
	switch {
	case errors.Is(err, redis.Nil):
		return nil, store.ErrNotFound
	case err != nil:
		return nil, backendError(op, err)
	}
	// Copy: go-redis's Bytes would alias the reply string.
	b := make([]byte, len(v))
	copy(b, v)
	return b, nil
}

// Delete removes key. Deleting an absent key is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	k, err := s.key(key)
	if err != nil {
		return err
	}
	if err := s.client.Del(ctx, k).Err(); err != nil {
		return backendError("delete", err)
	}
	return nil
}

// Durable reports that revocations may be kept in Redis: the middleware then
// shares them between every instance. It is as true as the server's
// configuration makes it: the README lists what Redis needs (no eviction,
// append-only persistence).
func (s *Store) Durable() bool { return true }

// Subscribe implements store.Broadcaster: the returned channel receives a
// value for each later Publish of topic on any instance sharing this Redis
// and prefix (and once after every reconnect, so that waiters re-read what
// they wait on). The first call subscribes to Redis in the background;
// until Redis confirms, only this instance's Publish calls wake it.
func (s *Store) Subscribe(topic string) (<-chan struct{}, func()) {
	return s.notifications().Subscribe(topic)
}

// Publish implements store.Broadcaster: it wakes the subscribers of topic
// on this instance at once and on every other instance through Redis.
func (s *Store) Publish(ctx context.Context, topic string) error {
	return s.notifications().Publish(ctx, topic)
}

// Waiting returns how many subscriptions are open on this instance.
func (s *Store) Waiting() int {
	return s.notifications().Waiting()
}

func (s *Store) notifications() *notifier {
	s.notifyOnce.Do(func() { s.notify = startNotifier(s.client, s.prefix) })
	return s.notify
}

// Close stops the notification subscription, if one was started, and
// closes the Redis client if the Store created it (Open); a client passed
// to New is left open for its owner. Close is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.notifyOnce.Do(func() {}) // no notifier starts after Close
		if s.notify != nil {
			s.closeErr = s.notify.Close()
		}
		if s.ownClient {
			if err := s.client.Close(); err != nil {
				s.closeErr = errors.Join(s.closeErr, fmt.Errorf("redisstore: close: %w", err))
			}
		}
	})
	return s.closeErr
}
