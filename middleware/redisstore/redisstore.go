// Package redisstore keeps the login middleware's short-lived state in
// Redis, so that every instance of a cluster sees the same pending logins,
// push dedupe markers, OAuth states and revocations, and provides a
// Notifier over Redis pub/sub so that the instance that receives WeChat's
// push wakes the browser waiting on another instance.
//
// Each store.Store operation is one Redis command on one key, so each is
// atomic on the server:
//
//	Create  SET key value NX with PX (or EX) ttl
//	Get     GET key
//	Update  a Lua script on KEYS[1]: GET, compare, SET KEEPTTL
//	Incr    a Lua script on KEYS[1]: INCR, and PEXPIRE if new
//	Take    GETDEL key
//	Delete  DEL key
//
// It needs Redis 6.2 or later (GETDEL). Every key gets a time to live, so
// an eviction policy of noeviction or volatile-* is safe; allkeys-* lets
// Redis drop pending logins early under memory pressure.
//
// The same holds on a Redis Cluster, with unchanged key names: no command
// or script touches two keys, so no keys need to share a hash slot, and
// nothing lists keys (SCAN, KEYS). Notifications use plain PUBLISH and
// SUBSCRIBE on one channel: a Cluster forwards every PUBLISH to all its
// nodes, so subscribers on any node hear it (sharded pub/sub would send
// every notification to the one node that owns the channel's slot, and
// needs Redis 7). A node that is down makes its slots' keys unreachable
// until it is back; calls on them fail as backend errors, and the other
// nodes' keys keep working.
//
// Replication is asynchronous: after a failover a write the old primary
// acknowledged may be lost, and a login in flight then reads as expired
// (never as someone else's), a logout as undone. A Store that Open makes
// for Sentinel therefore waits for a replica to acknowledge each write
// (WAIT; see Open). A Cluster replica that takes over can still lose the
// last writes.
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
	// RESP2. With RESP3, go-redis checks every connection for pending push
	// notifications before each command (an extra read on the socket);
	// the store uses none of what RESP3 adds, and pub/sub has its own
	// connection either way. A URL's protocol=3 still chooses RESP3.
	urlProtocol = 2
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

	// waitReplicas is how many replicas must acknowledge a write within
	// waitTimeout before the Store reports it done (Open's wait_replicas);
	// zero for none.
	waitReplicas int
	waitTimeout  time.Duration

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

	_ store.PublishCreator = (*Store)(nil)
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
// the connection: Close closes it. Open does not contact Redis. The URL is
// one of
//
//	redis://[[user]:password@]host[:port][/db]        one server
//	rediss://...                                      the same over TLS
//	unix://[[user]:password@]/path/to/socket[?db=N]   one server, local socket
//	redis-sentinel://[[user]:password@]host[:port][,host[:port]...][/db]?master_name=NAME
//	redis-cluster://[[user]:password@]host[:port][,host[:port]...]
//
// with rediss-sentinel:// and rediss-cluster:// for TLS. A Sentinel URL
// lists Sentinels (port 26379 unless given) and names the primary they
// watch; its password is Redis's, and sentinel_username and
// sentinel_password give the Sentinels' own if they require one. A
// Cluster URL lists any of the cluster's nodes (port 6379 unless given);
// the client learns the others from them. Every form takes go-redis's
// query parameters (dial_timeout, read_timeout, max_retries, ...; see
// redis.ParseURL, redis.ParseFailoverURL, redis.ParseClusterURL).
//
// Timeouts the URL leaves unset are one second and commands are not sent
// twice, so that a call to a dead or hung Redis fails within about a
// second instead of being retried into a wrong answer.
//
// Replication is asynchronous: a write the primary acknowledged can be
// missing from the replica a failover promotes. So that every write the
// Store reports done survives a failover, each write is followed, on the
// same connection, by WAIT for wait_replicas replicas (default 1 for
// redis-sentinel://, 0 otherwise) for at most wait_timeout (default half
// the read timeout); if fewer acknowledge it, the call fails as a backend
// error, the write applied on the primary but not promised. With
// wait_replicas=1, a primary without a replica in sync therefore refuses
// logins; give it two replicas, or set wait_replicas=0 to trade that for
// the risk of losing the last writes in a failover. wait_replicas is not
// supported with redis-cluster://.
func Open(rawURL, prefix string) (*Store, error) {
	opt, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	s := New(opt.newClient(), prefix)
	s.ownClient = true
	s.waitReplicas, s.waitTimeout = opt.waitReplicas, opt.waitTimeout
	return s, nil
}

// NewUniversalClient parses rawURL as Open does and returns a client with
// the same fail-fast settings, for callers that share one client between
// Stores: a *redis.Client for one server or a Sentinel group, a
// *redis.ClusterClient for a Cluster. wait_replicas is checked but is
// the Store's to apply: a Store made by New does not wait for replicas.
// Error messages never include the password.
func NewUniversalClient(rawURL string) (redis.UniversalClient, error) {
	opt, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	return opt.newClient(), nil
}

// NewClient is NewUniversalClient for the URL forms whose client is a
// *redis.Client: one server (redis://, rediss://, unix://) or a Sentinel
// group (redis-sentinel://). A Cluster URL is an error: use
// NewUniversalClient.
func NewClient(rawURL string) (*redis.Client, error) {
	opt, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	if opt.cluster != nil {
		return nil, errors.New("redisstore: NewClient cannot return a Cluster client; use NewUniversalClient for redis-cluster:// URLs")
	}
	return opt.newNodeClient(), nil
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

// errNotReplicated is the backend error of a write Redis applied but too
// few replicas acknowledged in time: a failover may lose it.
var errNotReplicated = errors.New("fewer replicas than wait_replicas acknowledged the write in time")

// replicated runs the write command that write builds and, if the Store
// waits for replicas, WAIT right behind it on the same connection (a
// pipeline of the two: WAIT counts the replicas that have every write of
// its connection). The write's own result is in the command write
// returns; replicated returns only the verdict on replication: nil, the
// WAIT's error, or errNotReplicated.
func (s *Store) replicated(ctx context.Context, write func(redis.Cmdable) redis.Cmder) error {
	if s.waitReplicas <= 0 {
		write(s.client)
		return nil
	}
	pipe := s.client.Pipeline()
	write(pipe)
	// Pipeliner has no Wait method. The WAIT timeout is shorter than the
	// read timeout (parseURL checks), so its answer arrives in time.
	wait := pipe.Do(ctx, "wait", s.waitReplicas, s.waitTimeout.Milliseconds())
	_, _ = pipe.Exec(ctx) // each command holds its own error
	n, err := wait.Int64()
	if err != nil {
		return err
	}
	if n < int64(s.waitReplicas) {
		return fmt.Errorf("%w (%d of %d within %s)", errNotReplicated, n, s.waitReplicas, s.waitTimeout)
	}
	return nil
}

// script runs sc on c: with go-redis's EVALSHA-then-EVAL, or, in a
// pipeline, where a NOSCRIPT answer comes too late to fall back, with
// EVAL.
func script(ctx context.Context, c redis.Cmdable, sc *redis.Script, keys []string, args ...any) *redis.Cmd {
	if _, ok := c.(redis.Pipeliner); ok {
		return sc.Eval(ctx, c, keys, args...)
	}
	return sc.Run(ctx, c, keys, args...)
}

// backendError wraps an error from Redis with the operation that failed.
// Neither keys nor values go into it: keys hold scene IDs and states.
func backendError(op string, err error) error {
	var sent mayHaveRun
	if errors.As(err, &sent) {
		err = sent.err
	}
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
	var set *redis.BoolCmd
	waitErr := s.replicated(ctx, func(c redis.Cmdable) redis.Cmder {
		set = c.SetNX(ctx, k, value, ttl)
		return set
	})
	ok, err := set.Result()
	switch {
	case err != nil:
		return backendError("create", err)
	case !ok:
		return store.ErrExists // nothing was written
	case waitErr != nil:
		return backendError("create", waitErr)
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
	var cas *redis.Cmd
	waitErr := s.replicated(ctx, func(c redis.Cmdable) redis.Cmder {
		cas = script(ctx, c, compareAndSwap, []string{k}, old, value)
		return cas
	})
	res, err := cas.Int64()
	if err != nil {
		return backendError("update", err)
	}
	switch res {
	case casSwapped:
		if waitErr != nil {
			return backendError("update", waitErr)
		}
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
	var incr *redis.Cmd
	waitErr := s.replicated(ctx, func(c redis.Cmdable) redis.Cmder {
		incr = script(ctx, c, incrWithTTL, []string{k}, ttl.Milliseconds())
		return incr
	})
	n, err := incr.Int64()
	if err == nil {
		err = waitErr
	}
	if err != nil {
		return 0, backendError("incr", err)
	}
	return n, nil
}

// Take returns the value stored under key and deletes it, in one GETDEL.
// Of concurrent callers exactly one gets the value; the others get
// store.ErrNotFound. When the Store waits for replicas and they do not
// confirm the delete, Take fails as a backend error and puts the value
// back, with its remaining time to live, for a later Take.
func (s *Store) Take(ctx context.Context, key string) ([]byte, error) {
	k, err := s.key(key)
	if err != nil {
		return nil, err
	}
	var getdel *redis.StringCmd
	var pttl *redis.DurationCmd
	waitErr := s.replicated(ctx, func(c redis.Cmdable) redis.Cmder {
		if _, ok := c.(redis.Pipeliner); ok {
			pttl = c.PTTL(ctx, k) // to put the value back, below
		}
		getdel = c.GetDel(ctx, k)
		return getdel
	})
	res, err := getdel.Result()
	v, err := value(res, err, "take")
	if err == nil && waitErr != nil {
		// The delete may not survive a failover, so the value is not
		// handed out: a failover could let it be taken a second time. It
		// goes back instead, for the caller's retry to take once a replica
		// can confirm, rather than be lost. Nobody else has it: GETDEL
		// gave it to this call alone, and a Take in between found nothing.
		if ttl, terr := pttl.Result(); terr == nil && ttl >= time.Millisecond {
			if rerr := s.client.SetNX(ctx, k, res, ttl).Err(); rerr != nil {
				waitErr = fmt.Errorf("%w; putting the value back: %w", waitErr, rerr)
			}
		}
		return nil, backendError("take", waitErr)
	}
	return v, err
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
	var del *redis.IntCmd
	waitErr := s.replicated(ctx, func(c redis.Cmdable) redis.Cmder {
		del = c.Del(ctx, k)
		return del
	})
	if err := del.Err(); err != nil {
		return backendError("delete", err)
	}
	if waitErr != nil {
		return backendError("delete", waitErr)
	}
	return nil
}

// PublishThenCreate implements store.PublishCreator: the PUBLISH of
// Publish and the SET NX of Create (and WAIT, when the Store waits for
// replicas) go to Redis in one pipeline, one round trip. On a Cluster,
// where PUBLISH and the key may live on different nodes, they are two
// calls.
func (s *Store) PublishThenCreate(ctx context.Context, topic, key string, value []byte, ttl time.Duration) (publishErr, createErr error) {
	if _, cluster := s.client.(*redis.ClusterClient); cluster {
		return s.Publish(ctx, topic), s.Create(ctx, key, value, ttl)
	}
	if ttl < time.Millisecond {
		return s.Publish(ctx, topic), fmt.Errorf("redisstore: ttl %s is shorter than 1ms", ttl)
	}
	k, err := s.key(key)
	if err == nil {
		err = checkValue(value)
	}
	if err != nil {
		return s.Publish(ctx, topic), err
	}
	n := s.notifications()
	n.local.Wake(topic)
	pipe := s.client.Pipeline()
	pub := pipe.Publish(ctx, n.channel, topic)
	set := pipe.SetNX(ctx, k, value, ttl)
	var wait *redis.Cmd
	if s.waitReplicas > 0 {
		wait = pipe.Do(ctx, "wait", s.waitReplicas, s.waitTimeout.Milliseconds())
	}
	_, _ = pipe.Exec(ctx) // each command holds its own error
	if err := pub.Err(); err != nil {
		publishErr = fmt.Errorf("redisstore: publish notification: %w", err)
	}
	ok, err := set.Result()
	switch {
	case err != nil:
		return publishErr, backendError("create", err)
	case !ok:
		return publishErr, store.ErrExists
	case wait != nil:
		if n, err := wait.Int64(); err != nil {
			return publishErr, backendError("create", err)
		} else if n < int64(s.waitReplicas) {
			return publishErr, backendError("create", fmt.Errorf("%w (%d of %d within %s)", errNotReplicated, n, s.waitReplicas, s.waitTimeout))
		}
	}
	return publishErr, nil
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
