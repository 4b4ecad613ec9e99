// Package bigcachestore is the embedded store.Store: pending logins and
// other short-lived state kept in the process's memory with
// github.com/allegro/bigcache/v3, which keeps its entries out of sight of
// the garbage collector.
//
// bigcache is a cache with few guarantees, so the store adds the ones a
// login flow needs:
//
//   - Exact expiry. bigcache has one LifeWindow for all entries and its Get
//     does not check it. The store keeps each entry's absolute deadline next
//     to the value and treats an entry past it as absent.
//   - Never another key's value. bigcache keys entries by a 64-bit hash and
//     overwrites on collision. The store hashes keys with hash/maphash and
//     a random seed per store, so outsiders cannot craft colliding keys, and
//     it keeps the full key inside each entry and checks it on every read.
//     Should two live keys still collide, the older one reads as absent and
//     Stats.Collisions counts it.
//   - Atomic Create, Update and Take within the process, through mutexes
//     striped by the same keyed hash.
//   - Room for Config.MaxEntries. bigcache evicts the oldest entries when a
//     shard is full, long before they expire, and as a FIFO byte queue it
//     does not reclaim the bytes of overwritten or deleted entries until
//     they reach the head of the queue. The store sizes bigcache so that an
//     entry is evicted early only after about 4 × MaxEntries writes of
//     Config.ValueSize bytes have followed its own last write: MaxEntries
//     pending logins, each created and updated three times within the TTL,
//     fit. An evicted entry reads as absent, never as wrong data, and
//     Stats.Evictions counts it.
//   - Silence. bigcache's verbose mode logs colliding keys; it is off and
//     its logger discards everything.
//
// What it does not give: the state lives in one process. It is lost on
// restart and not shared between instances, so a WeChat push or an OAuth
// callback that reaches another instance finds nothing. Use the Redis store
// for more than one instance.
//
// Memory is allocated as entries arrive, and bigcache does not give it back
// while the store is open. Stats.LimitBytes (about 170 MB with the
// defaults) bounds bigcache's queues, not the process: the queues grow by
// doubling, and the copies they leave behind are garbage the Go runtime
// holds on to for a while. Under a sustained flood of the largest entries
// an anonymous request can create (OAuth states with a 1 KB return
// address), a Caddy with the default store measured about 430 MB resident,
// up from 60 MB, and stayed there while the store evicted (make flood;
// BENCHMARKS.md). Once full, the store evicts its oldest entries; evictions
// are counted in Stats.Evictions.
package bigcachestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allegro/bigcache/v3"

	"github.com/wechat-login/caddy-wechat-login/middleware/store"
)

// Defaults for the zero Config.
const (
	DefaultMaxEntries = 100_000
	DefaultMaxTTL     = 30 * time.Minute
	DefaultValueSize  = 300
)

// Limits on what callers store. The store.Store contract promises small
// keys and values; the limits keep one misbehaving caller from filling the
// cache with a few huge entries.
const (
	maxKeyLen   = 200
	maxValueLen = 64 << 10
)

// Sizing assumptions; see sizeCache.
const (
	writesPerEntry      = 4    // create, then up to three updates
	typicalKeyLen       = 64   // "prefix:" plus a 43-character scene
	entriesPerShardGoal = 4096 // fewer, fuller shards spread more evenly
	maxShards           = 64
	initialPerShard     = 64 // entries' worth of memory allocated up front
	numStripes          = 256
	maxPooledBuf        = 4 << 10
)

// Config configures a Store. The zero value is usable.
type Config struct {
	// MaxEntries is how many live entries (pending logins, push dedupe
	// markers, OAuth states) the store must hold without evicting any.
	// Default DefaultMaxEntries.
	MaxEntries int

	// MaxTTL is the longest time to live callers use; Create with a
	// longer one fails. Default DefaultMaxTTL.
	MaxTTL time.Duration

	// ValueSize is the typical size of a value in bytes, for sizing.
	// Default DefaultValueSize.
	ValueSize int

	// Now returns the current time. Default time.Now; tests set a fake
	// clock. It is called from many goroutines at once. bigcache's own
	// cleanup, which drops entries MaxTTL after their last write, runs on
	// the real clock whatever Now says.
	Now func() time.Time
}

// Stats are counters for metrics.
type Stats struct {
	// Entries is the number of entries bigcache holds, including expired
	// and collided ones it has not cleaned up yet.
	Entries int

	// Evictions counts entries dropped before they expired, to make room.
	Evictions uint64

	// Collisions counts reads that found another key's entry under the
	// same hash.
	Collisions uint64

	// AllocatedBytes is the memory bigcache has allocated for entries.
	AllocatedBytes int

	// LimitBytes is the most AllocatedBytes will grow to.
	LimitBytes int
}

// Store is a store.Store in the process's memory. Create it with New.
type Store struct {
	cache  *bigcache.BigCache
	hash   func(key string) uint64
	now    func() time.Time
	maxTTL time.Duration
	limit  int

	stripes [numStripes]sync.Mutex

	// bufs holds *[]byte buffers for encoding entries; bigcache copies
	// what it is given, so they are reused at once.
	bufs sync.Pool

	evictions  atomic.Uint64
	collisions atomic.Uint64
	closeOnce  sync.Once
}

var _ store.Store = (*Store)(nil)

// New returns a Store for cfg. Close it to stop its background cleaner.
func New(cfg Config) (*Store, error) {
	seed := maphash.MakeSeed()
	return newStore(cfg, func(key string) uint64 { return maphash.String(seed, key) })
}

// newStore is New with the key hash supplied, so tests can force
// collisions.
func newStore(cfg Config, hash func(string) uint64) (*Store, error) {
	switch {
	case cfg.MaxEntries < 0:
		return nil, fmt.Errorf("bigcachestore: MaxEntries %d is negative", cfg.MaxEntries)
	case cfg.MaxTTL < 0:
		return nil, fmt.Errorf("bigcachestore: MaxTTL %s is negative", cfg.MaxTTL)
	case cfg.ValueSize < 0 || cfg.ValueSize > maxValueLen:
		return nil, fmt.Errorf("bigcachestore: ValueSize %d is outside [0, %d]", cfg.ValueSize, maxValueLen)
	}
	if cfg.MaxEntries == 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.MaxTTL == 0 {
		cfg.MaxTTL = DefaultMaxTTL
	}
	if cfg.ValueSize == 0 {
		cfg.ValueSize = DefaultValueSize
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}

	s := &Store{hash: hash, now: cfg.Now, maxTTL: cfg.MaxTTL}
	shards, limitMB, writeSize := sizeCache(cfg.MaxEntries, cfg.ValueSize)
	s.limit = limitMB << 20
	bcfg := bigcache.Config{
		Shards: shards,
		// bigcache's own expiry counts whole seconds from an entry's last
		// write; it must never come before ours.
		LifeWindow: cfg.MaxTTL.Truncate(time.Second) + 2*time.Second,
		// The cleaner frees queue space of entries past LifeWindow.
		CleanWindow:        time.Second,
		MaxEntriesInWindow: shards * initialPerShard,
		MaxEntrySize:       writeSize,
		HardMaxCacheSize:   limitMB,
		Hasher:             cacheKeyHasher{},
		Verbose:            false,
		Logger:             discardLogger{},
		OnRemoveWithReason: s.onRemove,
	}.OnRemoveFilterSet(bigcache.NoSpace)

	// bigcache's cleaner stops when the context is cancelled or the cache
	// is closed. Cancelling makes it print a line to stdout, so the store
	// stops it with Close alone and passes a context that never ends.
	cache, err := bigcache.New(context.Background(), bcfg)
	if err != nil {
		return nil, fmt.Errorf("bigcachestore: %w", err)
	}
	s.cache = cache
	return s, nil
}

// sizeCache derives bigcache's shard count and size limit (in MiB) from
// the number of entries to keep, and returns the bytes one write of a
// typical entry takes in bigcache's queue.
func sizeCache(maxEntries, valueSize int) (shards, limitMB, writeSize int) {
	// Queue header (uvarint length), bigcache's header (timestamp, hash,
	// key length), the 8-byte cache key, then our entry.
	writeSize = 2 + 18 + 8 + entryHeaderSize + typicalKeyLen + valueSize

	shards = 1
	for shards < maxShards && shards*2*entriesPerShardGoal <= maxEntries {
		shards *= 2
	}
	// The hash spreads entries over shards like balls into bins; five
	// standard deviations of headroom keep the fullest shard within its
	// share.
	perShard := float64((maxEntries + shards - 1) / shards)
	perShard += 5*math.Sqrt(perShard) + 16
	total := perShard * writesPerEntry * float64(writeSize) * float64(shards)
	limitMB = int(math.Ceil(total / (1 << 20)))
	return shards, limitMB, writeSize
}

// slot returns the bigcache key for key and the mutex that serialises
// writes to it. Keys that collide share both.
func (s *Store) slot(key string) (cacheKey string, stripe *sync.Mutex) {
	h := s.hash(key)
	var b [8]byte
	for i := range b {
		b[i] = byte(h >> (8 * i))
	}
	// bigcache picks shards by the low bits; stripes use the high ones.
	return string(b[:]), &s.stripes[(h>>32)%numStripes]
}

// load returns the live entry for key stored under cacheKey, if any.
func (s *Store) load(cacheKey, key string, now int64) (decodedEntry, bool, error) {
	b, err := s.cache.Get(cacheKey)
	if errors.Is(err, bigcache.ErrEntryNotFound) {
		return decodedEntry{}, false, nil
	}
	if err != nil {
		return decodedEntry{}, false, fmt.Errorf("bigcachestore: read: %w", err)
	}
	e, err := decodeEntry(b)
	if err != nil {
		return decodedEntry{}, false, err
	}
	if string(e.key) != key {
		s.collisions.Add(1)
		return decodedEntry{}, false, nil
	}
	return e, e.liveAt(now), nil
}

func checkKey(key string) error {
	if len(key) > maxKeyLen {
		return fmt.Errorf("bigcachestore: key of %d bytes is longer than %d", len(key), maxKeyLen)
	}
	return nil
}

func checkValue(value []byte) error {
	if len(value) > maxValueLen {
		return fmt.Errorf("bigcachestore: value of %d bytes is longer than %d", len(value), maxValueLen)
	}
	return nil
}

// Create stores value under key with the given time to live if key is
// absent or expired, and returns store.ErrExists otherwise. ttl must be
// positive and at most Config.MaxTTL.
//
// The context is not used: the store never waits for I/O.
func (s *Store) Create(_ context.Context, key string, value []byte, ttl time.Duration) error {
	if ttl <= 0 || ttl > s.maxTTL {
		return fmt.Errorf("bigcachestore: ttl %s is outside (0, %s]", ttl, s.maxTTL)
	}
	if err := checkKey(key); err != nil {
		return err
	}
	if err := checkValue(value); err != nil {
		return err
	}
	cacheKey, mu := s.slot(key)
	mu.Lock()
	defer mu.Unlock()
	now := s.now().UnixNano()
	if _, ok, err := s.load(cacheKey, key, now); err != nil {
		return err
	} else if ok {
		return store.ErrExists
	}
	return s.write(cacheKey, key, now+int64(ttl), value)
}

// Get returns a copy of the value stored under key, or store.ErrNotFound.
func (s *Store) Get(_ context.Context, key string) ([]byte, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	// No stripe lock: bigcache reads and writes an entry atomically, and
	// Get changes nothing.
	cacheKey, _ := s.slot(key)
	e, ok, err := s.load(cacheKey, key, s.now().UnixNano())
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, store.ErrNotFound
	}
	// bigcache copies on read, so the value is the caller's already.
	return e.value, nil
}

// Update replaces the value under key with value if it still equals old,
// keeping the entry's deadline. It returns store.ErrNotFound if key is
// absent or expired, and store.ErrChanged if the value differs from old.
func (s *Store) Update(_ context.Context, key string, old, value []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if err := checkValue(value); err != nil {
		return err
	}
	cacheKey, mu := s.slot(key)
	mu.Lock()
	defer mu.Unlock()
	e, ok, err := s.load(cacheKey, key, s.now().UnixNano())
	if err != nil {
		return err
	}
	if !ok {
		return store.ErrNotFound
	}
	if !bytes.Equal(e.value, old) {
		return store.ErrChanged
	}
	return s.write(cacheKey, key, e.expires, value)
}

// Take returns the value stored under key and deletes it. Of concurrent
// callers exactly one gets the value; the others get store.ErrNotFound.
func (s *Store) Take(_ context.Context, key string) ([]byte, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	cacheKey, mu := s.slot(key)
	mu.Lock()
	defer mu.Unlock()
	e, ok, err := s.load(cacheKey, key, s.now().UnixNano())
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, store.ErrNotFound
	}
	if err := s.del(cacheKey); err != nil {
		return nil, err
	}
	return e.value, nil
}

// Delete removes key. Deleting an absent key is not an error.
func (s *Store) Delete(_ context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	cacheKey, mu := s.slot(key)
	mu.Lock()
	defer mu.Unlock()
	// Expired entries are deleted too, but never another key's entry
	// under the same hash.
	b, err := s.cache.Get(cacheKey)
	if errors.Is(err, bigcache.ErrEntryNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("bigcachestore: read: %w", err)
	}
	e, err := decodeEntry(b)
	if err != nil {
		return err
	}
	if string(e.key) != key {
		s.collisions.Add(1)
		return nil
	}
	return s.del(cacheKey)
}

// write stores key's entry under cacheKey.
func (s *Store) write(cacheKey, key string, expires int64, value []byte) error {
	buf, _ := s.bufs.Get().(*[]byte)
	if buf == nil {
		buf = new([]byte)
	}
	*buf = appendEntry((*buf)[:0], key, expires, value)
	err := s.cache.Set(cacheKey, *buf)
	// Keep typical buffers only; an occasional large value should not pin
	// its buffer.
	if cap(*buf) <= maxPooledBuf {
		s.bufs.Put(buf)
	}
	if err != nil {
		return fmt.Errorf("bigcachestore: write: %w", err)
	}
	return nil
}

func (s *Store) del(cacheKey string) error {
	// The entry may have been evicted since it was read; it is gone
	// either way.
	if err := s.cache.Delete(cacheKey); err != nil && !errors.Is(err, bigcache.ErrEntryNotFound) {
		return fmt.Errorf("bigcachestore: delete: %w", err)
	}
	return nil
}

// onRemove counts entries bigcache drops for lack of space while they are
// still live. bigcache calls it with a shard locked.
func (s *Store) onRemove(_ string, entry []byte, reason bigcache.RemoveReason) {
	if reason != bigcache.NoSpace {
		return
	}
	if expires, ok := entryExpiry(entry); ok && s.now().UnixNano() < expires {
		s.evictions.Add(1)
	}
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	return Stats{
		Entries:        s.cache.Len(),
		Evictions:      s.evictions.Load(),
		Collisions:     s.collisions.Load(),
		AllocatedBytes: s.cache.Capacity(),
		LimitBytes:     s.limit,
	}
}

// Close stops the store's background cleaner. It is safe to call more than
// once; the store must not be used afterwards.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() { err = s.cache.Close() })
	if err != nil {
		return fmt.Errorf("bigcachestore: close: %w", err)
	}
	return nil
}

// cacheKeyHasher undoes slot's encoding: bigcache is handed the keyed hash
// itself as its key, so its hash is the key's bytes.
type cacheKeyHasher struct{}

func (cacheKeyHasher) Sum64(cacheKey string) uint64 {
	var h uint64
	for i := 0; i < len(cacheKey) && i < 8; i++ {
		h |= uint64(cacheKey[i]) << (8 * i)
	}
	return h
}

// discardLogger keeps bigcache quiet whatever its settings: what it would
// log includes keys.
type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}
