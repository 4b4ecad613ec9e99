// Package revocation keeps the list of ended sessions for a single instance:
// in memory, where nothing evicts an entry before the session it ends would
// have expired, and, when given a file, on disk, so that a restart keeps every
// logout.
//
// A logout that can be undone is a hole in an auth product, so the list
// trades nothing for it: every Revoke is written and synced to the file
// before it returns (logouts are rare; an fsync each is cheap next to the
// request), and on Open the file is read back, expired entries dropped and
// the rest rewritten in one atomic rename. A torn last record (the process
// died mid-write) is the only thing ever discarded: its Revoke had not
// returned.
//
// The file holds no session ids, only a SHA-256 prefix of each and its
// expiry.
//
// One process owns a file at a time; instances that share logins share a
// Redis store instead.
package revocation

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// magic starts every file, so a wrong path is refused rather than
// overwritten.
var magic = []byte("wechat_login revocations v1\n")

const (
	idLen     = 16
	recordLen = idLen + 8
	// sweepEvery bounds how often Revoke walks the map for expired entries.
	sweepEvery = time.Minute
)

type id [idLen]byte

func hashID(s string) id {
	sum := sha256.Sum256([]byte(s))
	return id(sum[:idLen])
}

// List is a set of revoked ids with expiry. It is safe for concurrent use.
type List struct {
	now func() time.Time

	mu        sync.RWMutex
	ids       map[id]int64 // unix seconds until which the id stays revoked
	f         *os.File     // nil: memory only
	path      string
	lastSweep time.Time
	closed    bool
	// version counts the Revokes that added or extended an entry. checked
	// remembers session ids found not revoked, each with the version it was
	// found at: an answer from before a later Revoke is never used, so the
	// SHA-256 is worked out once a session and version rather than once a
	// request. Sweeps only remove expired entries, which cannot make a
	// remembered "not revoked" wrong. Both are guarded by mu.
	version uint64
	checked map[string]uint64
}

// maxChecked bounds checked; when full it is emptied and filled again.
const maxChecked = 1 << 14

// Open returns the list kept in the file at path, creating the file (and its
// directory) if needed. An empty path keeps the list in memory only. now is
// the clock (nil means time.Now).
func Open(path string, now func() time.Time) (*List, error) {
	if now == nil {
		now = time.Now
	}
	l := &List{now: now, ids: make(map[id]int64), path: path, lastSweep: now()}
	if path == "" {
		return l, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("revocation: %w", err)
	}
	if err := l.load(); err != nil {
		return nil, err
	}
	if err := l.compact(); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("revocation: %w", err)
	}
	l.f = f
	return l, nil
}

// load reads the file's live records into the map.
func (l *List) load() error {
	f, err := os.Open(l.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("revocation: %w", err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	head := make([]byte, len(magic))
	n, err := io.ReadFull(r, head)
	if n == 0 && errors.Is(err, io.EOF) {
		return nil // created, never written
	}
	if err != nil || !bytes.Equal(head, magic) {
		return fmt.Errorf("revocation: %s is not a revocation list; refusing to overwrite it", l.path)
	}
	now := l.now().Unix()
	var rec [recordLen]byte
	for {
		if _, err := io.ReadFull(r, rec[:]); err != nil {
			// io.EOF: done; io.ErrUnexpectedEOF: a torn last record,
			// whose Revoke never returned.
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil
			}
			return fmt.Errorf("revocation: read %s: %w", l.path, err)
		}
		until := int64(binary.BigEndian.Uint64(rec[idLen:]))
		if until > now {
			k := id(rec[:idLen])
			l.ids[k] = max(l.ids[k], until)
		}
	}
}

// compact rewrites the file with the live entries only, atomically.
func (l *List) compact() error {
	tmp, err := os.CreateTemp(filepath.Dir(l.path), ".revocations-*")
	if err != nil {
		return fmt.Errorf("revocation: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	w := bufio.NewWriter(tmp)
	_, _ = w.Write(magic)
	for k, until := range l.ids {
		_, _ = w.Write(record(k, until))
	}
	err = errors.Join(w.Flush(), tmp.Sync(), tmp.Close())
	if err == nil {
		err = os.Rename(tmp.Name(), l.path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(l.path))
	}
	if err != nil {
		return fmt.Errorf("revocation: rewrite %s: %w", l.path, err)
	}
	return nil
}

func record(k id, until int64) []byte {
	b := make([]byte, recordLen)
	copy(b, k[:])
	binary.BigEndian.PutUint64(b[idLen:], uint64(until))
	return b
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return err
	}
	return nil
}

// ErrClosed is returned by Revoke after Close.
var ErrClosed = errors.New("revocation: list closed")

// Revoke records that sessionID is ended until the given time. It returns
// only once the record is on disk (for a file-backed list).
func (l *List) Revoke(sessionID string, until time.Time) error {
	k, u := hashID(sessionID), until.Unix()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	now := l.now()
	if u <= now.Unix() {
		return nil
	}
	if l.f != nil {
		if _, err := l.f.Write(record(k, u)); err != nil {
			return fmt.Errorf("revocation: write: %w", err)
		}
		if err := l.f.Sync(); err != nil {
			return fmt.Errorf("revocation: sync: %w", err)
		}
	}
	l.ids[k] = max(l.ids[k], u)
	l.version++
	if now.Sub(l.lastSweep) >= sweepEvery {
		l.lastSweep = now
		for k, until := range l.ids {
			if until <= now.Unix() {
				delete(l.ids, k)
			}
		}
	}
	return nil
}

// Revoked reports whether sessionID was revoked and the revocation still
// holds.
func (l *List) Revoked(sessionID string) bool {
	l.mu.RLock()
	if len(l.ids) == 0 {
		// Nothing revoked (or everything swept): no need to hash.
		l.mu.RUnlock()
		return false
	}
	v := l.version
	if seen, ok := l.checked[sessionID]; ok && seen == v {
		l.mu.RUnlock()
		return false
	}
	until, ok := l.ids[hashID(sessionID)]
	l.mu.RUnlock()
	if ok {
		return until > l.now().Unix()
	}
	l.mu.Lock()
	if l.version == v {
		if l.checked == nil || len(l.checked) >= maxChecked {
			l.checked = make(map[string]uint64)
		}
		// A copy: the caller's string may share its memory with more
		// than the id.
		l.checked[strings.Clone(sessionID)] = v
	}
	l.mu.Unlock()
	return false
}

// Len is the number of entries held, including expired ones not yet swept.
func (l *List) Len() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return len(l.ids)
}

// Close closes the file. The list still answers Revoked; Revoke fails.
func (l *List) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if l.f != nil {
		return l.f.Close()
	}
	return nil
}
