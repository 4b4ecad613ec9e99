package middleware

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/wechat-login/caddy-wechat-login/internal/ratelimit"
	"github.com/wechat-login/caddy-wechat-login/middleware/store"
)

// clientKey is the key per-client limits count r under.
func (m *Middleware) clientKey(r *http.Request) string {
	return ratelimit.ClientKey(m.cfg.ClientIP(r))
}

func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Limits on browsers waiting for a login to change (long-polls and event
// streams). Each holds a connection and a goroutine for up to a minute or
// more; without a bound, one address could hold thousands.
const (
	// maxWaitersPerScene allows a few tabs of one browser, not a crowd.
	maxWaitersPerScene = 4
	// defaultMaxWaiters bounds one instance; Config.MaxWaiting changes it.
	defaultMaxWaiters = 20_000
)

// waiters counts the browsers waiting per scene and in all.
type waiters struct {
	max   int
	total atomic.Int64

	mu      sync.Mutex
	byScene map[string]int
}

// acquire reserves a waiting slot for scene, or returns the reason for
// refusing ("scene" or "instance"). Every slot acquired is released once
// with release.
func (w *waiters) acquire(scene string) (refused string) {
	if w.total.Add(1) > int64(w.max) {
		w.total.Add(-1)
		return "instance"
	}
	w.mu.Lock()
	if w.byScene[scene] >= maxWaitersPerScene {
		w.mu.Unlock()
		w.total.Add(-1)
		return "scene"
	}
	if w.byScene == nil {
		w.byScene = make(map[string]int)
	}
	w.byScene[scene]++
	w.mu.Unlock()
	return ""
}

// release gives back a slot acquire reserved for scene.
func (w *waiters) release(scene string) {
	w.mu.Lock()
	if w.byScene[scene]--; w.byScene[scene] <= 0 {
		delete(w.byScene, scene)
	}
	w.mu.Unlock()
	w.total.Add(-1)
}

// startWaiting reserves a waiting slot for scene, or answers 429 itself and
// returns false. A caller that got true calls stopWaiting once, when it
// stops waiting.
func (m *Middleware) startWaiting(w http.ResponseWriter, scene string) bool {
	if refused := m.waiters.acquire(scene); refused != "" {
		m.metrics.Limited("waiters_" + refused)
		w.Header().Set("Retry-After", strconv.Itoa(5))
		if refused == "scene" {
			writeError(w, http.StatusTooManyRequests, "too many tabs are waiting for this login code")
		} else {
			writeError(w, http.StatusTooManyRequests, "too many browsers are waiting right now; try again in a moment")
		}
		return false
	}
	m.metrics.Waiting(1)
	return true
}

// stopWaiting releases the slot startWaiting reserved.
func (m *Middleware) stopWaiting(scene string) {
	m.waiters.release(scene)
	m.metrics.Waiting(-1)
}

// creationCeiling bounds the login scenes of one kind (QR codes, login
// codes) created a minute, whatever the client addresses: by this
// instance's token bucket and, with a store that counts across instances,
// by a count shared by the whole cluster.
type creationCeiling struct {
	bucket *ratelimit.Limiter
	name   string // the shared per-minute count's name
	limit  int64  // per minute
	metric string // the limited_total label of a refusal
}

func newCreationCeiling(perMinute int, name, metric string, now func() time.Time) creationCeiling {
	return creationCeiling{
		bucket: ratelimit.New(float64(perMinute)/60, perMinute, ratelimit.WithClock(now), ratelimit.WithMaxKeys(1)),
		name:   name,
		limit:  int64(perMinute),
		metric: metric,
	}
}

// ceilingFor returns the ceiling of the scenes made for method.
func (m *Middleware) ceilingFor(method string) creationCeiling {
	if method == MethodCode {
		return m.codeCeiling
	}
	return m.qrCeiling
}

// allowCreation applies allowQR's limits for the client address ip and
// then method's ceiling (allowCeiling's), spending each count exactly when
// calling those two in turn would: the ceiling's not at all when the
// address is refused. addrOK false means the address was refused,
// ceilingOK false the ceiling; retry is how long until the refusal ends.
// When the store can make both shared counts in one round trip
// (store.PairCounter: Redis), it does; otherwise it calls the two.
func (m *Middleware) allowCreation(ctx context.Context, ip string, method string) (addrOK, ceilingOK bool, retry time.Duration) {
	c := m.ceilingFor(method)
	pc, ok := m.store.(store.PairCounter)
	if !ok {
		if ok, retry := m.allowQR(ctx, ip); !ok {
			return false, false, retry
		}
		ok, retry := m.allowCeiling(ctx, c)
		return true, ok, retry
	}
	if ok, retry := m.qrLimiter.Allow(ip); !ok {
		return false, false, retry
	}
	// As ratelimit.InWindow counts, both in one round trip.
	now := m.cfg.Now()
	start := now.Truncate(time.Minute)
	suffix := ":" + strconv.FormatInt(start.Unix(), 10)
	untilNext := start.Add(time.Minute).Sub(now)
	addrLimit := int64(math.Ceil(m.cfg.QRRateLimit))
	addrN, ceilingN, err := pc.IncrIfWithin(ctx, qrAddrName(ip)+suffix, addrLimit, c.name+suffix, time.Minute+10*time.Second)
	if err != nil {
		m.log.Warn("cannot count QR creations in the store", zap.Error(err))
		addrN, ceilingN = 0, 0
	}
	if addrN > addrLimit {
		return false, false, untilNext
	}
	if ok, retry := c.bucket.Allow(""); !ok {
		// Calling the two in turn, the shared ceiling would not have been
		// counted: take back its count.
		if ceilingN > 0 {
			if err := pc.Uncount(ctx, c.name+suffix); err != nil {
				m.log.Warn("cannot take back a QR creation count in the store", zap.Error(err))
			}
		}
		m.metrics.Limited(c.metric)
		return true, false, retry
	}
	if ceilingN > c.limit {
		m.metrics.Limited(c.metric)
		return true, false, untilNext
	}
	return true, true, 0
}

// qrAddrName is the name the shared per-minute count of QR creations by
// the client address ip is kept under.
func qrAddrName(ip string) string {
	sum := sha256.Sum256([]byte(ip))
	return "rl:qr:" + hex.EncodeToString(sum[:12])
}

// allowQR applies the QR creation limits for one client address: this
// instance's token bucket (the burst), and, when the store can count across
// instances, the per-minute rate for the whole cluster, so that adding
// instances does not multiply what one address may spend of WeChat's quota.
func (m *Middleware) allowQR(ctx context.Context, ip string) (bool, time.Duration) {
	if ok, retry := m.qrLimiter.Allow(ip); !ok {
		return false, retry
	}
	return m.allowThisMinute(ctx, qrAddrName(ip), int64(math.Ceil(m.cfg.QRRateLimit)))
}

// allowCeiling applies a ceiling on the scenes created by this instance
// and, with a store that counts across instances, by the whole cluster: no
// number of client addresses may create more a minute (for QR codes, spend
// more of the account's daily qrcode/create quota than Config.QRCeiling).
func (m *Middleware) allowCeiling(ctx context.Context, c creationCeiling) (bool, time.Duration) {
	ok, retry := c.bucket.Allow("")
	if ok {
		ok, retry = m.allowThisMinute(ctx, c.name, c.limit)
	}
	if !ok {
		m.metrics.Limited(c.metric)
	}
	return ok, retry
}

// allowThisMinute counts one event under name for the current minute in a
// store that counts across instances, and reports whether the count is
// within limit (or else how long until the minute ends). Without such a
// store, or when it cannot count, it allows: the instance's own buckets
// still apply, and a store outage shows up on the scene write right after
// this anyway.
func (m *Middleware) allowThisMinute(ctx context.Context, name string, limit int64) (bool, time.Duration) {
	counter, shared := m.store.(store.Counter)
	if !shared {
		return true, 0
	}
	ok, retry, err := ratelimit.InWindow(ctx, counter, name, limit, time.Minute, m.cfg.Now())
	if err != nil {
		m.log.Warn("cannot count QR creations in the store", zap.Error(err))
		return true, 0
	}
	return ok, retry
}

func retryAfterSeconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	return max(s, 1)
}
