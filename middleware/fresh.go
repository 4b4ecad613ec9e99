package middleware

import (
	"sync"
)

// maxFreshScenes bounds the scenes an instance watches from their creation
// (see freshScenes): a few seconds of logins at any realistic rate, and
// about 2 MB at most. Beyond it the oldest watch is dropped, and that
// scene's browser reads the store first, as every browser would without
// the watch.
const maxFreshScenes = 16384

// freshScenes holds, for the scenes this instance made lately, a
// subscription to the scene's changes made before its answer was sent.
//
// The browser that made a scene waits on it next (a long-poll or an event
// stream), and with one instance, sticky sessions or luck, it does so here.
// Every change of a scene is published after it is stored, and a
// subscription hears every publish made after it began; so while its
// subscription has not been woken, the scene is still as it was made,
// pending, and the browser's first wait starts without reading the store.
// With a shared store that is one round trip less per login. A wake-up
// for any reason (a change, a reconnect of the notifier) means "read",
// as it does for every waiting browser.
//
// Each subscription goes to the first waiting request for its scene, which
// cancels it as it would its own; those never claimed are cancelled when
// they expire or make room for newer ones.
type freshScenes struct {
	mu   sync.Mutex
	byID map[string]freshScene
	// queue holds the ids in the order they came, oldest first, including
	// ids already claimed, which are skipped as they reach the front.
	queue []string
	max   int
}

type freshScene struct {
	wake   <-chan struct{}
	cancel func()
	exp    int64 // the scene's ExpiresAt
}

// add watches the scene id, which expires at exp (unix seconds), through
// n. now is the current time in unix seconds.
func (f *freshScenes) add(n Notifier, id string, exp, now int64) {
	wake, cancel := n.Subscribe(sceneKey(id))
	var drop []func()
	f.mu.Lock()
	if f.byID == nil {
		f.byID = make(map[string]freshScene)
	}
	limit := f.max
	if limit <= 0 {
		limit = maxFreshScenes
	}
	for len(f.queue) > 0 {
		e, ok := f.byID[f.queue[0]]
		if ok && e.exp > now && len(f.byID) < limit {
			break
		}
		if ok {
			delete(f.byID, f.queue[0])
			drop = append(drop, e.cancel)
		}
		f.queue[0] = ""
		f.queue = f.queue[1:]
	}
	if prev, ok := f.byID[id]; ok { // never for a random id; harmless if so
		drop = append(drop, prev.cancel)
	}
	f.byID[id] = freshScene{wake: wake, cancel: cancel, exp: exp}
	f.queue = append(f.queue, id)
	if len(f.queue) > 4*limit {
		// Claimed ids behind a live one: keep only those still watched.
		kept := make([]string, 0, len(f.byID))
		for _, q := range f.queue {
			if _, ok := f.byID[q]; ok {
				kept = append(kept, q)
			}
		}
		f.queue = kept
	}
	f.mu.Unlock()
	for _, c := range drop {
		c()
	}
}

// claim hands over the watch of scene id, if there is one and the scene
// has not expired by now: its subscription (which the caller must cancel)
// and whether the scene is unchanged since it was made. Only the first
// claim gets it.
func (f *freshScenes) claim(id string, now int64) (w freshScene, unchanged, ok bool) {
	f.mu.Lock()
	w, ok = f.byID[id]
	if ok {
		delete(f.byID, id)
	}
	f.mu.Unlock()
	if !ok {
		return freshScene{}, false, false
	}
	if w.exp <= now {
		w.cancel()
		return freshScene{}, false, false
	}
	select {
	case <-w.wake:
		return w, false, true // changed, or told to read again
	default:
		return w, true, true
	}
}

// close cancels every watch.
func (f *freshScenes) close() {
	f.mu.Lock()
	all := f.byID
	f.byID, f.queue = nil, nil
	f.mu.Unlock()
	for _, w := range all {
		w.cancel()
	}
}

// subscribeScene subscribes a waiting request to scene id's changes: the
// scene's watch from its creation when this instance has it, else a new
// subscription. unchanged reports that the scene is known to be pending,
// without a read; exp is then its ExpiresAt.
func (m *Middleware) subscribeScene(id string) (wake <-chan struct{}, cancel func(), unchanged bool, exp int64) {
	if w, unchanged, ok := m.fresh.claim(id, m.cfg.Now().Unix()); ok {
		return w.wake, w.cancel, unchanged, w.exp
	}
	wake, cancel = m.notifier.Subscribe(sceneKey(id))
	return wake, cancel, false, 0
}
