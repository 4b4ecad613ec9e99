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
	"sync"
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
	// LoginAt is when the user logged in. A refresh keeps it, so that
	// Config.MaxAge can bound the session however often it is refreshed.
	LoginAt time.Time
	// IssuedAt is when this cookie was issued: at the login, or at the
	// latest refresh.
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// The first byte of an encoded record says its layout. formatV1 records
// (LoginAt, ExpiresAt) were written before sessions could be refreshed;
// they are still read, with IssuedAt = LoginAt, so that the cookies
// browsers hold stay valid.
const (
	formatV1 = 1
	formatV2 = 2 // LoginAt, IssuedAt, ExpiresAt
)

// Encode writes the record in a compact binary form: it is decoded on every
// request, and JSON (with its time parsing) cost more than the decryption.
func (s Record) Encode() []byte {
	b := make([]byte, 0, 168)
	b = append(b, formatV2)
	b = binary.AppendVarint(b, s.LoginAt.Unix())
	b = binary.AppendVarint(b, s.IssuedAt.Unix())
	b = binary.AppendVarint(b, s.ExpiresAt.Unix())
	for _, f := range []string{s.ID, s.AppID, s.OpenID, s.UnionID, s.Method, s.Nickname, s.AvatarURL} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	return b
}

// Decode reverses Encode, and reads the older formatV1 too. Its input was
// authenticated by the cookie seal, but is still parsed defensively.
func Decode(b []byte) (Record, bool) {
	var s Record
	if len(b) == 0 || b[0] != formatV1 && b[0] != formatV2 {
		return s, false
	}
	v1 := b[0] == formatV1
	b = b[1:]
	var times [3]int64
	n := len(times)
	if v1 {
		n = 2
	}
	for i := range n {
		v, l := binary.Varint(b)
		if l <= 0 {
			return s, false
		}
		times[i], b = v, b[l:]
	}
	if v1 {
		// Issued at the login: no refresh existed.
		times[2], times[1] = times[1], times[0]
	}
	s.LoginAt, s.IssuedAt, s.ExpiresAt = time.Unix(times[0], 0).UTC(), time.Unix(times[1], 0).UTC(), time.Unix(times[2], 0).UTC()
	// The fields share one string, copied from b at once: one allocation
	// instead of one a field. The length prefixes between them come along
	// unused.
	text, at := string(b), 0
	for _, f := range []*string{&s.ID, &s.AppID, &s.OpenID, &s.UnionID, &s.Method, &s.Nickname, &s.AvatarURL} {
		l, n := binary.Uvarint(b[at:])
		if n <= 0 || l > uint64(len(b)-at-n) {
			return s, false
		}
		at += n
		*f, at = text[at:at+int(l)], at+int(l)
	}
	return s, at == len(b)
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
	// TTL is how long a session lasts from its login, or from its latest
	// refresh.
	TTL time.Duration
	// Refresh, when positive, is how long after a cookie was issued a use
	// of it issues it again (Manager.Refresh), for TTL from then, under the
	// same session id and login time. It must be shorter than TTL.
	Refresh time.Duration
	// MaxAge bounds a session from its login, however often it is
	// refreshed: no refresh carries it further and Get refuses a session
	// older than this. At least TTL; zero means TTL.
	MaxAge time.Duration
	// AppIDs are the apps whose logins this site accepts. Sites of
	// different apps may share session keys (the sandbox's do); a cookie
	// from one must not open the other, whose openids mean different
	// people.
	AppIDs []string
	// AnyApp accepts sessions of any app instead: for a site whose logins
	// are all handed over by a login host it trusts (see Handoffs), which
	// need not know that host's apps.
	AnyApp      bool
	Revocations Revocations
	// Now is the clock, the same as Cookies'.
	Now func() time.Time
}

// Manager issues, reads and ends sessions.
type Manager struct {
	cfg Config
	// names are the cookie's names over plain HTTP, with __Host- and with
	// __Secure-, made once rather than on every request.
	names [3]string
}

// New returns a Manager for cfg, whose fields must all be set.
func New(cfg Config) *Manager {
	return &Manager{cfg: cfg, names: [3]string{cfg.Cookie, "__Host-" + cfg.Cookie, "__Secure-" + cfg.Cookie}}
}

// openBuffers hold session cookies' payloads while they are decoded, which
// copies out what it keeps.
var openBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

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
	now := m.now()
	rec.LoginAt, rec.IssuedAt = now, now
	rec.ExpiresAt = m.expiry(now, now)
	if err := m.set(w, r, rec, now); err != nil {
		return Record{}, err
	}
	return rec, nil
}

// Refresh issues rec's cookie again, under the same session id and login
// time, when Config.Refresh has passed since it was issued and
// Config.MaxAge leaves room for a later expiry. It returns the session as
// it now stands, and whether the cookie was issued again. rec must come
// from Get.
func (m *Manager) Refresh(w http.ResponseWriter, r *http.Request, rec Record) (Record, bool, error) {
	if m.cfg.Refresh <= 0 {
		return rec, false, nil
	}
	now := m.now()
	if now.Sub(rec.IssuedAt) < m.cfg.Refresh {
		return rec, false, nil
	}
	exp := m.expiry(rec.LoginAt, now)
	if !exp.After(rec.ExpiresAt) {
		return rec, false, nil
	}
	next := rec
	next.IssuedAt, next.ExpiresAt = now, exp
	if err := m.set(w, r, next, now); err != nil {
		return rec, false, err
	}
	return next, true, nil
}

// set writes rec's cookie, which the browser keeps until rec expires.
func (m *Manager) set(w http.ResponseWriter, r *http.Request, rec Record, now time.Time) error {
	return m.cfg.Cookies.Set(w, r, m.cfg.Cookie, rec.Encode(), rec.ExpiresAt, rec.ExpiresAt.Sub(now))
}

// now is the clock to the second, the precision of a record.
func (m *Manager) now() time.Time { return m.cfg.Now().Truncate(time.Second).UTC() }

// maxAge is Config.MaxAge, defaulted.
func (m *Manager) maxAge() time.Duration { return max(m.cfg.MaxAge, m.cfg.TTL) }

// expiry is when a session logged in at login and issued at issued
// expires: TTL after issued, but never past the absolute bound.
func (m *Manager) expiry(login, issued time.Time) time.Time {
	exp, bound := issued.Add(m.cfg.TTL), login.Add(m.maxAge())
	if bound.Before(exp) {
		return bound
	}
	return exp
}

// latestExpiry is the latest the session rec can be valid, whatever
// refreshes are still to come.
func (m *Manager) latestExpiry(rec Record) time.Time {
	if bound := rec.LoginAt.Add(m.maxAge()); m.cfg.Refresh > 0 && bound.After(rec.ExpiresAt) {
		return bound
	}
	return rec.ExpiresAt
}

// Get returns the request's session. It returns ErrNone when there is none
// (or it was revoked) and another error when revocations cannot be
// consulted: then the caller must fail closed.
func (m *Manager) Get(r *http.Request) (Record, error) {
	// One reading of the clock serves the seal's expiry and the record's:
	// the Cookies share the Manager's clock.
	now := m.cfg.Now()
	bp := openBuffers.Get().(*[]byte)
	payload, opened := m.cfg.Cookies.appendOpen((*bp)[:0], r, m.cfg.Cookies.pick(r, m.names[0], m.names[1], m.names[2]), now)
	var rec Record
	ok := opened
	if opened {
		rec, ok = Decode(payload)
	}
	clear(payload) // the plaintext does not linger in the pool
	*bp = payload[:0]
	openBuffers.Put(bp)
	if !opened {
		return Record{}, ErrNone
	}
	if !ok || rec.ID == "" || rec.OpenID == "" || rec.AppID == "" || !m.cfg.AnyApp && !slices.Contains(m.cfg.AppIDs, rec.AppID) {
		return Record{}, ErrNone
	}
	if !rec.ExpiresAt.After(now) || !rec.LoginAt.Add(m.maxAge()).After(now) {
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

// Revoke ends the session id, which expires at expires as far as the
// caller knows, on every instance that shares the revocations. A refresh
// may have moved, or may yet move, that expiry later by up to MaxAge - TTL,
// and every refreshed cookie carries the same id, so the revocation is kept
// that much longer. RevokeRecord, for a caller that holds the session,
// keeps it no longer than needed.
func (m *Manager) Revoke(ctx context.Context, id string, expires time.Time) error {
	if m.cfg.Refresh > 0 {
		expires = expires.Add(m.maxAge() - m.cfg.TTL)
	}
	return m.revokeUntil(ctx, id, expires)
}

// RevokeRecord ends the session rec, as Revoke does, until the latest it
// could be valid: its expiry, or with refresh, MaxAge after its login,
// however many copies of its cookie exist and whichever of them is
// refreshed.
func (m *Manager) RevokeRecord(ctx context.Context, rec Record) error {
	return m.revokeUntil(ctx, rec.ID, m.latestExpiry(rec))
}

// revokeUntil keeps the revocation of id until expires, and a minute more
// for clocks that disagree.
func (m *Manager) revokeUntil(ctx context.Context, id string, expires time.Time) error {
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
