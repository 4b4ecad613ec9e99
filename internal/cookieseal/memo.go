package cookieseal

import (
	"sync"
	"time"
)

// Remembering returns a Codec with c's keys that remembers up to n values
// it opened, with their payloads and expiries, and opens them again from
// memory: a session cookie comes back with every request of its browser,
// and its decoding and decryption are most of what checking it costs.
//
// What it answers is exactly what opening again would: a value is
// remembered only once it was authenticated under the cookie name it was
// sealed for, it answers for that name alone, and its expiry is checked
// against now on every use. The keys never change for a Codec, so nothing
// else can. Invalid values are never remembered, so junk cannot push out
// the values in use. When full, a new value takes the place of an
// arbitrary one; forgetting costs only the next opening's decryption.
//
// The payloads are kept in the clear in the process's memory, as the
// cookie values that open them are.
func (c *Codec) Remembering(n int) *Codec {
	if n < 1 {
		return &Codec{keys: c.keys}
	}
	return &Codec{keys: c.keys, memo: &openedMemo{max: n, entries: make(map[string]opened, n)}}
}

// openedMemo is the memory of a remembering Codec, keyed by the value.
type openedMemo struct {
	max     int
	mu      sync.RWMutex
	entries map[string]opened
}

// opened is a value that opened: under name, until exp (Unix seconds),
// to payload, which is never changed once stored.
type opened struct {
	name    string
	exp     int64
	payload []byte
}

// lookup appends the payload of value, opened earlier under name, to dst.
// found is false when value is not remembered under name; err is
// ErrExpired when it is, but has expired.
func (m *openedMemo) lookup(dst []byte, name, value string, now time.Time) (out []byte, found bool, err error) {
	m.mu.RLock()
	e, ok := m.entries[value]
	m.mu.RUnlock()
	if !ok || e.name != name {
		return dst, false, nil
	}
	if now.Unix() >= e.exp {
		m.mu.Lock()
		if cur, ok := m.entries[value]; ok && cur.exp == e.exp {
			delete(m.entries, value)
		}
		m.mu.Unlock()
		return dst, true, ErrExpired
	}
	return append(dst, e.payload...), true, nil
}

// remember stores what value opened to. value is copied: it is usually a
// slice of a request's whole Cookie header.
func (m *openedMemo) remember(name, value string, exp int64, payload []byte) {
	e := opened{name: name, exp: exp, payload: append([]byte(nil), payload...)}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.entries[value]; !ok && len(m.entries) >= m.max {
		for k := range m.entries { // map order: an arbitrary entry
			delete(m.entries, k)
			break
		}
	}
	m.entries[string([]byte(value))] = e
}

// size is the number of values remembered.
func (m *openedMemo) size() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.entries)
}
