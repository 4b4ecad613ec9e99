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
//     it keeps a second 64-bit hash of the key, under a seed of its own,
//     inside each entry and checks it on every read: two keys are confused
//     only if they agree on 128 bits of secretly seeded hash, where keeping
//     the key itself would cost every entry some 40 bytes more. Should two
//     live keys collide on the first hash, the older one reads as absent
//     and Stats.Collisions counts it.
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
//   - Memory that follows the entries' own lifetimes. bigcache frees the
//     bytes of an entry only once its one LifeWindow has passed since the
//     entry was written, so a cache whose LifeWindow covers the longest
//     time to live (a session's "not me" code: days) would keep every
//     five-minute login for days, and fill up with them. The store keeps
//     entries in classes by time to live, each a bigcache of its own whose
//     LifeWindow is the longest time to live of its class: 2 minutes, 8,
//     32, and so on by fours up to Config.MaxTTL. An entry's bytes are freed
//     at most four times its time to live (or 2 minutes) after its last
//     write, and long-lived entries never hold up the queue of short ones.
//   - Silence. bigcache's verbose mode logs colliding keys; it is off and
//     its logger discards everything.
//
// What it does not give: the state lives in one process. It is lost on
// restart and not shared between instances, so a WeChat push or an OAuth
// callback that reaches another instance finds nothing. Use the Redis store
// for more than one instance.
//
// Memory: a class is created when the first entry of its time to live
// arrives. With Config.MaxEntries set, its queues are allocated at once for
// that many entries written once, so filling it does not copy queues that
// grow by doubling (each copy is garbage the Go runtime holds on to for a
// while); memory the entries have not yet been written to is reserved, not
// resident. Queues grow beyond that (or, by default, from a small start)
// up to Stats.LimitBytes (about 140 MB per class with the defaults), and
// bigcache does not give queue memory back while the store is open. Once
// a class is full, it evicts its oldest entries; evictions are counted in
// Stats.Evictions.
package bigcachestore

import (
	"bytes"
	"context"
	"encoding/binary"
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
	entriesPerShardGoal = 4096 // fewer, fuller shards spread more evenly
	maxShards           = 64
	// indexHint is the number of entries per shard bigcache's index maps
	// are made for at first; they grow in small steps, unlike the queues.
	indexHint    = 64
	numStripes   = 256
	maxPooledBuf = 4 << 10
)

// Classes by time to live: class i holds the entries whose time to live is
// at most firstClassTTL × classFactor^i.
const (
	firstClassTTL = 2 * time.Minute
	classFactor   = 4
	maxClasses    = 16
)

// Config configures a Store. The zero value is usable.
type Config struct {
	// MaxEntries is how many live entries (pending logins, push dedupe
	// markers, OAuth states) the store must hold without evicting any.
	// Default DefaultMaxEntries.
	//
	// When it is set, each class of time to live allocates its queues for
	// MaxEntries entries written once as soon as it is created: memory
	// reserved, not resident until entries fill it, but counted by the Go
	// garbage collector as heap, which lets other garbage grow as much
	// before a collection. Without it, the queues start small and grow by
	// doubling, and each copy they leave behind is garbage resident for a
	// while: the right choice for a store that stays small, the wrong one
	// for a store that must hold a million entries.
	MaxEntries int

	// ReserveTTL, when MaxEntries is set, limits what is made at once to
	// the class holding entries of this time to live (pending logins, in
	// the Caddy module): the other classes start small and grow up to the
	// same limit when used, so that classes of a few entries (OAuth states,
	// push dedupe markers) do not each take MaxEntries' worth of heap.
	// Zero: every class is made for MaxEntries at once.
	ReserveTTL time.Duration

	// ReserveEntries, when MaxEntries is set, is how many entries the
	// classes made at once are made for, if fewer than MaxEntries: their
	// queues then grow by doubling beyond it, up to the same limit. What
	// is made at once is heap from the start, and the garbage collector
	// lets as much garbage again pile up before it collects: in a process
	// that serves other traffic too (Caddy), a reservation for a million
	// entries made at the first login keeps some hundreds of megabytes of
	// garbage resident. Zero: MaxEntries.
	ReserveEntries int

	// MaxTTL is the longest time to live callers use; Create with a
	// longer one fails. Default DefaultMaxTTL. It costs nothing by itself:
	// entries are freed by their own time to live (see the package
	// documentation).
	MaxTTL time.Duration

	// ValueSize is the typical size of a value in bytes, for sizing.
	// Default DefaultValueSize.
	ValueSize int

	// Now returns the current time. Default time.Now; tests set a fake
	// clock. It is called from many goroutines at once. bigcache's own
	// cleanup, which frees entries their class's window after their last
	// write, runs on the real clock whatever Now says.
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

	// AllocatedBytes is the memory bigcache has allocated for entries,
	// resident or only reserved.
	AllocatedBytes int

	// LimitBytes is the most AllocatedBytes will grow to with the classes
	// of time to live in use so far.
	LimitBytes int

	// Classes is the number of classes of time to live in use.
	Classes int
}

// Store is a store.Store in the process's memory. Create it with New.
type Store struct {
	hash func(key string) uint64
	// check is the second hash, kept in entries in place of the key.
	check  maphash.Seed
	now    func() time.Time
	maxTTL time.Duration
	size   sizing
	// reserveClass is the only class made for MaxEntries at once; -1:
	// every class is (Config.ReserveTTL).
	reserveClass int

	stripes [numStripes]sync.Mutex

	// bufs holds *[]byte buffers for encoding entries; bigcache copies
	// what it is given, so they are reused at once.
	bufs sync.Pool

	// classMu guards creating classes and closing.
	classMu sync.Mutex
	classes [maxClasses]*bigcache.BigCache
	closed  bool
	// inUse lists the classes created so far, for lookups without a lock;
	// it is replaced, never changed, when a class is added.
	inUse atomic.Pointer[[]*bigcache.BigCache]

	evictions  atomic.Uint64
	collisions atomic.Uint64
}

var _ store.Store = (*Store)(nil)

var errClosed = errors.New("bigcachestore: store is closed")

// New returns a Store for cfg. Close it to stop its background cleaners.
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
	case cfg.ReserveEntries < 0 || cfg.ReserveEntries > cfg.MaxEntries:
		return nil, fmt.Errorf("bigcachestore: ReserveEntries %d is outside [0, MaxEntries %d]", cfg.ReserveEntries, cfg.MaxEntries)
	}
	reserve := cfg.MaxEntries != 0
	if !reserve {
		cfg.MaxEntries = DefaultMaxEntries
	}
	reserveEntries := 0
	if reserve {
		reserveEntries = cfg.MaxEntries
		if cfg.ReserveEntries > 0 {
			reserveEntries = cfg.ReserveEntries
		}
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
	s := &Store{hash: hash, check: maphash.MakeSeed(), now: cfg.Now, maxTTL: cfg.MaxTTL, size: newSizing(cfg.MaxEntries, cfg.ValueSize, reserveEntries), reserveClass: -1}
	if reserve && cfg.ReserveTTL > 0 {
		s.reserveClass, _ = s.classOf(cfg.ReserveTTL)
	}
	s.inUse.Store(new([]*bigcache.BigCache))
	return s, nil
}

// classOf returns the class of entries that live ttl, and the longest time
// to live in it.
func (s *Store) classOf(ttl time.Duration) (int, time.Duration) {
	i, window := 0, firstClassTTL
	for window < ttl && window < s.maxTTL && i < maxClasses-1 {
		i++
		if window > math.MaxInt64/classFactor {
			window = s.maxTTL
			continue
		}
		window *= classFactor
	}
	return i, min(window, s.maxTTL)
}

// class returns the bigcache of the class for ttl, creating it if needed.
func (s *Store) class(ttl time.Duration) (*bigcache.BigCache, error) {
	i, window := s.classOf(ttl)
	s.classMu.Lock()
	defer s.classMu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	if c := s.classes[i]; c != nil {
		return c, nil
	}
	c, err := s.newClass(window, s.reserveClass < 0 || s.reserveClass == i)
	if err != nil {
		return nil, err
	}
	s.classes[i] = c
	list := append(append([]*bigcache.BigCache(nil), *s.inUse.Load()...), c)
	s.inUse.Store(&list)
	return c, nil
}

// newClass creates the bigcache of a class whose longest time to live is
// window; reserve makes its queues at once for as many entries as sizing
// says, or else they start small.
func (s *Store) newClass(window time.Duration, reserve bool) (*bigcache.BigCache, error) {
	z := s.size
	if !reserve {
		z.initialPerShard = indexHint
	}
	bcfg := bigcache.Config{
		Shards: z.shards,
		// bigcache's own expiry counts whole seconds from an entry's last
		// write; it must never come before ours.
		LifeWindow: window.Truncate(time.Second) + 2*time.Second,
		// The cleaner frees queue space of entries past LifeWindow.
		CleanWindow: time.Second,
		// bigcache makes each shard's queue indexHint × MaxEntrySize bytes
		// and its index maps for indexHint entries: a reserved queue is
		// thus made for the shard's share of entries at once, the maps
		// grow.
		MaxEntriesInWindow: z.shards * indexHint,
		MaxEntrySize:       (z.initialPerShard*z.writeSize + indexHint - 1) / indexHint,
		HardMaxCacheSize:   z.limitMB,
		Hasher:             cacheKeyHasher{},
		Verbose:            false,
		Logger:             discardLogger{},
		OnRemoveWithReason: s.onRemove,
	}.OnRemoveFilterSet(bigcache.NoSpace)

	// bigcache's cleaner stops when the context is cancelled or the cache
	// is closed. Cancelling makes it print a line to stdout, so the store
	// stops it with Close alone and passes a context that never ends.
	c, err := bigcache.New(context.Background(), bcfg)
	if err != nil {
		return nil, fmt.Errorf("bigcachestore: %w", err)
	}
	return c, nil
}

// sizing is how every class's bigcache is sized.
type sizing struct {
	shards  int
	limitMB int // per class
	// writeSize is the bytes one write of a typical entry takes in a
	// queue; initialPerShard is the entries a shard's queue is made for.
	writeSize, initialPerShard int
}

// newSizing sizes the classes for maxEntries; reserveEntries, if not zero, makes their queues
// for that many entries from the start.
func newSizing(maxEntries, valueSize, reserveEntries int) sizing {
	shards, limitMB, writeSize := sizeCache(maxEntries, valueSize)
	z := sizing{shards: shards, limitMB: limitMB, writeSize: writeSize, initialPerShard: indexHint}
	if reserveEntries > 0 {
		z.initialPerShard = max(indexHint, int(math.Ceil(shardShare(reserveEntries, shards))))
	}
	return z
}

// sizeCache derives bigcache's shard count and size limit (in MiB) from
// the number of entries to keep, and returns the bytes one write of a
// typical entry takes in bigcache's queue.
func sizeCache(maxEntries, valueSize int) (shards, limitMB, writeSize int) {
	// Queue header (uvarint length), bigcache's header (timestamp, hash,
	// key length), the 8-byte cache key, then our entry with the key's
	// digest.
	writeSize = 2 + 18 + 8 + entryHeaderSize + len(digest{}) + valueSize

	shards = 1
	for shards < maxShards && shards*2*entriesPerShardGoal <= maxEntries {
		shards *= 2
	}
	total := shardShare(maxEntries, shards) * writesPerEntry * float64(writeSize) * float64(shards)
	limitMB = int(math.Ceil(total / (1 << 20)))
	return shards, limitMB, writeSize
}

// shardShare is how many entries one shard must hold. The hash spreads
// entries over shards like balls into bins; five standard deviations of
// headroom keep the fullest shard within its share.
func shardShare(maxEntries, shards int) float64 {
	perShard := float64((maxEntries + shards - 1) / shards)
	return perShard + 5*math.Sqrt(perShard) + 16
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

// digest is what an entry keeps to tell its key from others under the
// same cacheKey.
type digest [8]byte

func (s *Store) digest(key string) digest {
	var d digest
	binary.LittleEndian.PutUint64(d[:], maphash.String(s.check, key))
	return d
}

// find returns the live entry for key stored under cacheKey, if any, and
// the class holding it. An entry lives in one class at a time: Create
// writes only where no class holds a live entry for the key.
func (s *Store) find(cacheKey string, d digest, now int64) (*bigcache.BigCache, decodedEntry, error) {
	for _, c := range *s.inUse.Load() {
		b, err := c.Get(cacheKey)
		if errors.Is(err, bigcache.ErrEntryNotFound) {
			continue
		}
		if err != nil {
			return nil, decodedEntry{}, fmt.Errorf("bigcachestore: read: %w", err)
		}
		e, err := decodeEntry(b)
		if err != nil {
			return nil, decodedEntry{}, err
		}
		if string(e.key) != string(d[:]) {
			s.collisions.Add(1)
			continue
		}
		if e.liveAt(now) {
			return c, e, nil
		}
	}
	return nil, decodedEntry{}, nil
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
	c, err := s.class(ttl)
	if err != nil {
		return err
	}
	cacheKey, mu := s.slot(key)
	mu.Lock()
	defer mu.Unlock()
	now := s.now().UnixNano()
	d := s.digest(key)
	if held, _, err := s.find(cacheKey, d, now); err != nil {
		return err
	} else if held != nil {
		return store.ErrExists
	}
	return s.write(c, cacheKey, d, now+int64(ttl), value)
}

// Get returns a copy of the value stored under key, or store.ErrNotFound.
func (s *Store) Get(_ context.Context, key string) ([]byte, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	// No stripe lock: bigcache reads and writes an entry atomically, and
	// Get changes nothing.
	cacheKey, _ := s.slot(key)
	c, e, err := s.find(cacheKey, s.digest(key), s.now().UnixNano())
	if err != nil {
		return nil, err
	}
	if c == nil {
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
	d := s.digest(key)
	c, e, err := s.find(cacheKey, d, s.now().UnixNano())
	if err != nil {
		return err
	}
	if c == nil {
		return store.ErrNotFound
	}
	if !bytes.Equal(e.value, old) {
		return store.ErrChanged
	}
	// The deadline stays, so the entry stays in its class.
	return s.write(c, cacheKey, d, e.expires, value)
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
	c, e, err := s.find(cacheKey, s.digest(key), s.now().UnixNano())
	if err != nil {
		return nil, err
	}
	if c == nil {
		return nil, store.ErrNotFound
	}
	if err := del(c, cacheKey); err != nil {
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
	// Expired entries are deleted too, in every class, but never another
	// key's entry under the same hash.
	d := s.digest(key)
	for _, c := range *s.inUse.Load() {
		b, err := c.Get(cacheKey)
		if errors.Is(err, bigcache.ErrEntryNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("bigcachestore: read: %w", err)
		}
		e, err := decodeEntry(b)
		if err != nil {
			return err
		}
		if string(e.key) != string(d[:]) {
			s.collisions.Add(1)
			continue
		}
		if err := del(c, cacheKey); err != nil {
			return err
		}
	}
	return nil
}

// write stores the entry of the key with digest d under cacheKey in class
// c.
func (s *Store) write(c *bigcache.BigCache, cacheKey string, d digest, expires int64, value []byte) error {
	buf, _ := s.bufs.Get().(*[]byte)
	if buf == nil {
		buf = new([]byte)
	}
	*buf = appendEntry((*buf)[:0], string(d[:]), expires, value)
	err := c.Set(cacheKey, *buf)
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

func del(c *bigcache.BigCache, cacheKey string) error {
	// The entry may have been evicted since it was read; it is gone
	// either way.
	if err := c.Delete(cacheKey); err != nil && !errors.Is(err, bigcache.ErrEntryNotFound) {
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
	st := Stats{Evictions: s.evictions.Load(), Collisions: s.collisions.Load()}
	for _, c := range *s.inUse.Load() {
		st.Entries += c.Len()
		st.AllocatedBytes += c.Capacity()
		st.LimitBytes += s.size.limitMB << 20
		st.Classes++
	}
	return st
}

// Close stops the store's background cleaners. It is safe to call more
// than once; the store must not be used afterwards.
func (s *Store) Close() error {
	s.classMu.Lock()
	defer s.classMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	for _, c := range *s.inUse.Load() {
		errs = append(errs, c.Close())
	}
	if err := errors.Join(errs...); err != nil {
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
