package session

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"
)

// ErrNone means the request carries no valid, unrevoked session.
var ErrNone = errors.New("no session")

// Record is what a session cookie holds.
type Record struct {
	// ID names the session, so that it can be revoked.
	ID        string
	AppID     string
	OpenID    string
	UnionID   string
	Method    string
	Nickname  string
	AvatarURL string
	LoginAt   time.Time
	ExpiresAt time.Time
}

// format is the first byte of an encoded record.
const format = 1

// Encode writes the record in a compact binary form: it is decoded on every
// request, and JSON (with its time parsing) cost more than the decryption.
func (s Record) Encode() []byte {
	b := make([]byte, 0, 160)
	b = append(b, format)
	b = binary.AppendVarint(b, s.LoginAt.Unix())
	b = binary.AppendVarint(b, s.ExpiresAt.Unix())
	for _, f := range []string{s.ID, s.AppID, s.OpenID, s.UnionID, s.Method, s.Nickname, s.AvatarURL} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	return b
}

// Decode reverses Encode. Its input was authenticated by the cookie seal,
// but is still parsed defensively.
func Decode(b []byte) (Record, bool) {
	var s Record
	if len(b) == 0 || b[0] != format {
		return s, false
	}
	b = b[1:]
	var times [2]int64
	for i := range times {
		v, n := binary.Varint(b)
		if n <= 0 {
			return s, false
		}
		times[i], b = v, b[n:]
	}
	s.LoginAt, s.ExpiresAt = time.Unix(times[0], 0).UTC(), time.Unix(times[1], 0).UTC()
	for _, f := range []*string{&s.ID, &s.AppID, &s.OpenID, &s.UnionID, &s.Method, &s.Nickname, &s.AvatarURL} {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return s, false
		}
		*f, b = string(b[n:n+int(l)]), b[n+int(l):]
	}
	return s, len(b) == 0
}

// Revocations keeps the sessions ended before they expire. It must not
// forget one early: a forgotten logout is a session that works again.
type Revocations interface {
	// Revoke records that the session is ended until the given time, and
	// returns only once that record is as durable as it can be made.
	Revoke(ctx context.Context, id string, until time.Time) error
	// Revoked reports whether the session was revoked. An error means it
	// cannot be told, and the caller must fail closed.
	Revoked(ctx context.Context, id string) (bool, error)
}

// Config configures a Manager.
type Config struct {
	// Cookie is the base name of the session cookie.
	Cookie  string
	Cookies *Cookies
	// TTL is how long a session lasts.
	TTL time.Duration
	// AppIDs are the apps whose logins this site accepts. Sites of
	// different apps may share session keys (the sandbox's do); a cookie
	// from one must not open the other, whose openids mean different
	// people.
	AppIDs      []string
	Revocations Revocations
	Now         func() time.Time
}

// Manager issues, reads and ends sessions.
type Manager struct{ cfg Config }

// New returns a Manager for cfg, whose fields must all be set.
func New(cfg Config) *Manager { return &Manager{cfg: cfg} }

// NewID draws a session id.
func NewID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it panics rather than return short)
	return hex.EncodeToString(b)
}

// Issue starts the session rec on the response: its ID, when empty, is
// drawn fresh, so that nothing from before the login (a binding cookie, an
// old session) is promoted into it; its times are set from the clock. It
// returns the record as issued.
func (m *Manager) Issue(w http.ResponseWriter, r *http.Request, rec Record) (Record, error) {
	if rec.ID == "" {
		rec.ID = NewID()
	}
	rec.LoginAt = m.cfg.Now().Truncate(time.Second).UTC()
	rec.ExpiresAt = rec.LoginAt.Add(m.cfg.TTL)
	if err := m.cfg.Cookies.Set(w, r, m.cfg.Cookie, rec.Encode(), rec.ExpiresAt, m.cfg.TTL); err != nil {
		return Record{}, err
	}
	return rec, nil
}

// Get returns the request's session. It returns ErrNone when there is none
// (or it was revoked) and another error when revocations cannot be
// consulted: then the caller must fail closed.
func (m *Manager) Get(r *http.Request) (Record, error) {
	payload := m.cfg.Cookies.Open(r, m.cfg.Cookie)
	if payload == nil {
		return Record{}, ErrNone
	}
	rec, ok := Decode(payload)
	if !ok || rec.ID == "" || rec.OpenID == "" || rec.AppID == "" || !slices.Contains(m.cfg.AppIDs, rec.AppID) {
		return Record{}, ErrNone
	}
	if !rec.ExpiresAt.After(m.cfg.Now()) {
		return Record{}, ErrNone
	}
	revoked, err := m.cfg.Revocations.Revoked(r.Context(), rec.ID)
	if err != nil {
		return Record{}, fmt.Errorf("check session revocation: %w", err)
	}
	if revoked {
		return Record{}, ErrNone
	}
	return rec, nil
}

// Revoke ends the session id, which expires at expires, on every instance
// that shares the revocations. It is kept until the session would have
// expired anyway, and a minute more for clocks that disagree.
func (m *Manager) Revoke(ctx context.Context, id string, expires time.Time) error {
	until := expires.Add(time.Minute)
	if !until.After(m.cfg.Now().Add(time.Minute)) {
		return nil
	}
	if err := m.cfg.Revocations.Revoke(ctx, id, until); err != nil {
		return fmt.Errorf("revoke session: %w", err)
	}
	return nil
}

// Clear removes the session cookie from the browser.
func (m *Manager) Clear(w http.ResponseWriter, r *http.Request) {
	m.cfg.Cookies.Clear(w, r, m.cfg.Cookie)
}
