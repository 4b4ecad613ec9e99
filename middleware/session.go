package middleware

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/wechat-login/caddy-wechat-login/internal/cookieseal"
	"github.com/wechat-login/caddy-wechat-login/middleware/store"
)

// Cookie names. Over HTTPS they get the __Host- prefix, which makes browsers
// refuse them unless Secure, Path=/ and host-only: no sibling subdomain can
// plant or overwrite them.
const (
	sessionCookie = "wechat_session"
	bindingCookie = "wechat_login"
)

// errNoSession means the request carries no valid, unrevoked session.
var errNoSession = errors.New("no session")

// sessionRecord is what the session cookie seals.
type sessionRecord struct {
	SID string
	Identity
}

// sessionFormat is the first byte of an encoded session record.
const sessionFormat = 1

// encode writes the record in a compact binary form: it is decoded on every
// request, and JSON (with its time parsing) cost more than the decryption.
func (s sessionRecord) encode() []byte {
	b := make([]byte, 0, 160)
	b = append(b, sessionFormat)
	b = binary.AppendVarint(b, s.LoginAt.Unix())
	b = binary.AppendVarint(b, s.ExpiresAt.Unix())
	for _, f := range []string{s.SID, s.AppID, s.OpenID, s.UnionID, s.Method, s.Nickname, s.AvatarURL} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	return b
}

// decodeSession reverses encode. The input was authenticated by the cookie
// seal, but is still parsed defensively.
func decodeSession(b []byte) (sessionRecord, bool) {
	var s sessionRecord
	if len(b) == 0 || b[0] != sessionFormat {
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
	for _, f := range []*string{&s.SID, &s.AppID, &s.OpenID, &s.UnionID, &s.Method, &s.Nickname, &s.AvatarURL} {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return s, false
		}
		*f, b = string(b[n:n+int(l)]), b[n+int(l):]
	}
	return s, len(b) == 0
}

// isHTTPS reports whether the browser reached us over HTTPS.
func (m *Middleware) isHTTPS(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	trusted := m.cfg.TrustForwardedProto || m.cfg.TrustedProxy != nil && m.cfg.TrustedProxy(r)
	return trusted && strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

func (m *Middleware) cookieName(r *http.Request, base string) string {
	if m.isHTTPS(r) {
		return "__Host-" + base
	}
	return base
}

func (m *Middleware) setCookie(w http.ResponseWriter, r *http.Request, base, value string, maxAge time.Duration) {
	http.SetCookie(w, &http.Cookie{
		Name:     m.cookieName(r, base),
		Value:    value,
		Path:     "/",
		MaxAge:   int(maxAge / time.Second),
		HttpOnly: true,
		Secure:   m.isHTTPS(r),
		SameSite: http.SameSiteLaxMode,
	})
}

// clearCookie expires a cookie with the same attributes it was set with, or
// browsers keep the original.
func (m *Middleware) clearCookie(w http.ResponseWriter, r *http.Request, base string) {
	http.SetCookie(w, &http.Cookie{
		Name:     m.cookieName(r, base),
		Value:    "",
		Path:     "/",
		MaxAge:   -1,
		HttpOnly: true,
		Secure:   m.isHTTPS(r),
		SameSite: http.SameSiteLaxMode,
	})
}

// openCookie returns the opened payload of a sealed cookie, or nil.
func (m *Middleware) openCookie(r *http.Request, base string) []byte {
	name := m.cookieName(r, base)
	c, err := r.Cookie(name)
	if err != nil || c.Value == "" {
		return nil
	}
	payload, err := m.seal.Open(name, c.Value, m.cfg.Now())
	if err != nil {
		return nil
	}
	return payload
}

// issueSession starts a new session for id: a fresh session id every time,
// so nothing from before the login (a binding cookie, an old session) is
// promoted into it.
func (m *Middleware) issueSession(w http.ResponseWriter, r *http.Request, id Identity) error {
	return m.issueSessionWithID(w, r, id, randomHex(16))
}

// issueSessionWithID is issueSession under a session id chosen beforehand:
// a QR login draws it when the scan is confirmed, so that the scanner's
// "not me" can revoke the session.
func (m *Middleware) issueSessionWithID(w http.ResponseWriter, r *http.Request, id Identity, sid string) error {
	now := m.cfg.Now()
	id.LoginAt = now.Truncate(time.Second)
	id.ExpiresAt = id.LoginAt.Add(m.cfg.SessionTTL)
	payload := sessionRecord{SID: sid, Identity: id}.encode()
	name := m.cookieName(r, sessionCookie)
	value, err := m.seal.Seal(name, payload, id.ExpiresAt)
	if err != nil {
		return fmt.Errorf("seal session: %w", err)
	}
	m.setCookie(w, r, sessionCookie, value, m.cfg.SessionTTL)
	return nil
}

// session returns the request's session. It returns errNoSession when there
// is none (or it was revoked) and another error when the store cannot be
// asked about revocation: then the caller must fail closed.
func (m *Middleware) session(r *http.Request) (sessionRecord, error) {
	payload := m.openCookie(r, sessionCookie)
	if payload == nil {
		return sessionRecord{}, errNoSession
	}
	rec, ok := decodeSession(payload)
	if !ok || rec.SID == "" || rec.OpenID == "" || !m.ownApp(rec.AppID) {
		return sessionRecord{}, errNoSession
	}
	if !rec.ExpiresAt.After(m.cfg.Now()) {
		return sessionRecord{}, errNoSession
	}
	revoked, err := m.isRevoked(r.Context(), rec.SID)
	if err != nil {
		return sessionRecord{}, err
	}
	if revoked {
		return sessionRecord{}, errNoSession
	}
	return rec, nil
}

// RevocationList keeps ended sessions until they would have expired anyway.
// Config.Revocations takes one; the Caddy module passes a file-backed list
// that outlives configuration reloads.
type RevocationList interface {
	// Revoke records that the session is ended until the given time, and
	// returns only once that record is as durable as the list can make it.
	Revoke(sessionID string, until time.Time) error
	// Revoked reports whether the session was revoked.
	Revoked(sessionID string) bool
}

// revocations is where the middleware keeps logouts: a store every instance
// shares (Redis), or a list of this instance's own that nothing evicts.
type revocations interface {
	revoke(ctx context.Context, sid string, until time.Time) error
	revoked(ctx context.Context, sid string) (bool, error)
}

// storeRevocations keeps revocations in a durable, shared store.
type storeRevocations struct {
	s   store.Store
	now func() time.Time
}

// ownApp reports whether a session's app is one this middleware logs users
// in with. Sites of different apps may share a session key (the sandbox's
// do); a cookie from one must not open the other, whose openids mean
// different people.
func (m *Middleware) ownApp(appID string) bool {
	return appID == m.cfg.AppID || appID != "" && appID == m.cfg.OpenAppID
}

func revocationKey(sid string) string { return "revoked:" + sid }

func (r storeRevocations) revoke(ctx context.Context, sid string, until time.Time) error {
	err := r.s.Create(ctx, revocationKey(sid), []byte{1}, until.Sub(r.now()))
	if err != nil && !errors.Is(err, store.ErrExists) {
		return err
	}
	return nil
}

func (r storeRevocations) revoked(ctx context.Context, sid string) (bool, error) {
	_, err := r.s.Get(ctx, revocationKey(sid))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	}
	return false, err
}

// listRevocations keeps revocations in a RevocationList.
type listRevocations struct{ l RevocationList }

func (r listRevocations) revoke(_ context.Context, sid string, until time.Time) error {
	return r.l.Revoke(sid, until)
}

func (r listRevocations) revoked(_ context.Context, sid string) (bool, error) {
	return r.l.Revoked(sid), nil
}

func (m *Middleware) isRevoked(ctx context.Context, sid string) (bool, error) {
	revoked, err := m.revocations.revoked(ctx, sid)
	if err != nil {
		return false, fmt.Errorf("check session revocation: %w", err)
	}
	return revoked, nil
}

// revoke marks a session as ended until it would have expired anyway (and
// a minute more, for clocks that disagree).
func (m *Middleware) revoke(ctx context.Context, rec sessionRecord) error {
	until := rec.ExpiresAt.Add(time.Minute)
	if !until.After(m.cfg.Now().Add(time.Minute)) {
		return nil
	}
	if err := m.revocations.revoke(ctx, rec.SID, until); err != nil {
		return fmt.Errorf("revoke session: %w", err)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it panics rather than return short)
	return hex.EncodeToString(b)
}

// newSealer derives the cookie-sealing keys from the configured session keys,
// so the raw configured secret is never used directly.
func newSealer(keys [][]byte) (*cookieseal.Codec, error) {
	derived := make([][]byte, len(keys))
	for i, k := range keys {
		derived[i] = cookieseal.DeriveKey(k, "wechat_login cookies v1")
	}
	return cookieseal.New(derived...)
}
