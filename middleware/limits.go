package middleware

import (
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
)

// clientKey is the key per-client limits count under: the address itself
// for IPv4, and the /64 prefix for IPv6, since one host or one customer of
// an ISP usually holds a whole /64 and could otherwise take a fresh bucket
// with every address in it. IPv4-mapped IPv6 addresses count as IPv4.
// Anything that is not an address is used as it is.
func clientKey(addr string) string {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	ip = ip.Unmap()
	if ip.Is4() {
		return ip.String()
	}
	p, _ := ip.WithZone("").Prefix(64)
	return p.String()
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

// acquire reserves a waiting slot for scene. It returns a release function,
// or the reason for refusing ("scene" or "instance").
func (w *waiters) acquire(scene string) (release func(), refused string) {
	if w.total.Add(1) > int64(w.max) {
		w.total.Add(-1)
		return nil, "instance"
	}
	w.mu.Lock()
	if w.byScene[scene] >= maxWaitersPerScene {
		w.mu.Unlock()
		w.total.Add(-1)
		return nil, "scene"
	}
	if w.byScene == nil {
		w.byScene = make(map[string]int)
	}
	w.byScene[scene]++
	w.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			w.mu.Lock()
			if w.byScene[scene]--; w.byScene[scene] <= 0 {
				delete(w.byScene, scene)
			}
			w.mu.Unlock()
			w.total.Add(-1)
		})
	}, ""
}

// startWaiting reserves a waiting slot for scene, or answers 429 itself.
func (m *Middleware) startWaiting(w http.ResponseWriter, scene string) (func(), bool) {
	release, refused := m.waiters.acquire(scene)
	if refused != "" {
		m.metrics.Limited("waiters_" + refused)
		w.Header().Set("Retry-After", strconv.Itoa(5))
		if refused == "scene" {
			writeError(w, http.StatusTooManyRequests, "too many tabs are waiting for this login code")
		} else {
			writeError(w, http.StatusTooManyRequests, "too many browsers are waiting right now; try again in a moment")
		}
		return nil, false
	}
	m.metrics.Waiting(1)
	return func() {
		release()
		m.metrics.Waiting(-1)
	}, true
}
