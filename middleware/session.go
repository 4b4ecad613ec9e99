package middleware

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/wechat-login/caddy-wechat-login/internal/oauthflow"
	"github.com/wechat-login/caddy-wechat-login/internal/revocation"
	"github.com/wechat-login/caddy-wechat-login/internal/session"
	"github.com/wechat-login/caddy-wechat-login/middleware/store"
)

// Cookie names (before the __Host- prefix they get over HTTPS).
const (
	sessionCookie = "wechat_session"
	// bindingCookie binds a QR login scene to the browser that created it.
	bindingCookie = "wechat_scene"
)

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

// isHTTPS reports whether the browser reached us over HTTPS: as
// PublicOrigin says when set, since a proxy in front may speak plain HTTP
// to us.
func (m *Middleware) isHTTPS(r *http.Request) bool {
	if m.cfg.PublicOrigin != "" {
		return strings.HasPrefix(m.cfg.PublicOrigin, "https://")
	}
	if r.TLS != nil {
		return true
	}
	// The header first: it is cheap to read, and without it whether the
	// peer is trusted does not matter (TrustedProxy may walk the context).
	proto := r.Header["X-Forwarded-Proto"]
	if len(proto) == 0 || !strings.EqualFold(proto[0], "https") {
		return false
	}
	return m.cfg.TrustForwardedProto || m.cfg.TrustedProxy != nil && m.cfg.TrustedProxy(r)
}

// setUpSessions builds the cookie jar and the session manager. A logout
// must hold for as long as the session it ends could still be valid, so
// revocations never go where entries can be evicted early: into a store
// that promises not to (store.Durable: Redis, shared by every instance),
// into the list given in Config.Revocations, or into a list of the
// middleware's own, persisted to Config.RevocationFile when one is named.
func (m *Middleware) setUpSessions() error {
	var err error
	if m.cookies, err = session.NewCookies(m.cfg.SessionKeys, m.isHTTPS, m.cfg.Now); err != nil {
		return fmt.Errorf("middleware: SessionKeys: %w", err)
	}
	var revocations session.Revocations
	if d, ok := m.store.(store.Durable); m.cfg.Revocations == nil && ok && d.Durable() {
		revocations = session.StoreRevocations(m.store, m.cfg.Now)
	} else {
		list := m.cfg.Revocations
		if list == nil {
			l, err := revocation.Open(m.cfg.RevocationFile, m.cfg.Now)
			if err != nil {
				return fmt.Errorf("middleware: RevocationFile: %w", err)
			}
			if m.cfg.RevocationFile == "" {
				m.log.Warn("logouts are kept in memory only and are forgotten on restart; set RevocationFile (Caddy: revocation_file) or use a shared store")
			}
			list, m.ownRevocations = l, l
		}
		revocations = session.ListRevocations(list)
	}
	var apps []string
	for _, id := range []string{m.cfg.AppID, m.cfg.OpenAppID} {
		if id != "" {
			apps = append(apps, id)
		}
	}
	// Only the session is shared with the subdomains: the login-binding
	// cookies belong to the host where the login happens.
	sessionCookies := m.cookies
	if m.cfg.CookieDomain != "" {
		sessionCookies = m.cookies.Shared(m.cfg.CookieDomain, m.requestHost)
	}
	m.sessions = session.New(session.Config{
		Cookie:  sessionCookie,
		Cookies: sessionCookies,
		TTL:     m.cfg.SessionTTL,
		Refresh: m.cfg.SessionRefresh,
		MaxAge:  m.cfg.SessionMaxAge,
		AppIDs:  apps,
		// A site with a LoginHost has no app of its own: every session it
		// issues comes from a handoff, sealed with the shared key.
		AnyApp:      m.cfg.LoginHost != "",
		Revocations: revocations,
		Now:         m.cfg.Now,
	})
	return nil
}

// identityOf is the identity a session stands for.
func identityOf(rec session.Record) Identity {
	return Identity{
		AppID: rec.AppID, OpenID: rec.OpenID, UnionID: rec.UnionID, Method: rec.Method,
		Nickname: rec.Nickname, AvatarURL: rec.AvatarURL, LoginAt: rec.LoginAt, ExpiresAt: rec.ExpiresAt,
	}
}

// startSession logs id in on the response, under the session id sid, or a
// fresh one when sid is empty.
func (m *Middleware) startSession(w http.ResponseWriter, r *http.Request, id Identity, sid string) error {
	_, err := m.sessions.Issue(w, r, session.Record{
		ID: sid, AppID: id.AppID, OpenID: id.OpenID, UnionID: id.UnionID, Method: id.Method,
		Nickname: id.Nickname, AvatarURL: id.AvatarURL,
	})
	return err
}

// refreshSession issues the session's cookie again when
// Config.SessionRefresh says it is due, and returns the session as it now
// stands. A cookie that cannot be sealed leaves the session as it was: still
// valid, only not extended.
func (m *Middleware) refreshSession(w http.ResponseWriter, r *http.Request, rec session.Record) session.Record {
	next, _, err := m.sessions.Refresh(w, r, rec)
	if err != nil {
		m.log.Warn("cannot refresh session", zap.Error(err))
		return rec
	}
	return next
}

// endSession logs the request's browser out: its session, if it has one, is
// revoked until the latest it could be valid, and the cookie is cleared.
// When the store fails, it answers the request itself and returns false.
func (m *Middleware) endSession(w http.ResponseWriter, r *http.Request) bool {
	rec, err := m.sessions.Get(r)
	switch {
	case err == nil:
		if err := m.sessions.RevokeRecord(r.Context(), rec); err != nil {
			m.storeFailure(w, "revoke session", err)
			return false
		}
		m.log.Info("logout", zap.String("openid", logID(rec.OpenID)))
		m.metrics.Logout()
	case !errors.Is(err, session.ErrNone):
		m.storeFailure(w, "check session", err)
		return false
	}
	m.sessions.Clear(w, r)
	return true
}

// stripOwnCookies removes the middleware's cookies from the request's Cookie
// header when Config.StripSessionCookie asks for it, so that the wrapped
// handler never holds them. The other cookies stay as the browser sent
// them; a header left with none is removed.
func (m *Middleware) stripOwnCookies(r *http.Request) {
	if !m.cfg.StripSessionCookie {
		return
	}
	lines := r.Header["Cookie"]
	var kept []string
	changed := false
	for _, line := range lines {
		var pairs []string
		for pair := range strings.SplitSeq(line, ";") {
			pair = strings.TrimSpace(pair)
			name, _, _ := strings.Cut(pair, "=")
			if isOwnCookie(strings.TrimSpace(name)) {
				changed = true
				continue
			}
			if pair != "" {
				pairs = append(pairs, pair)
			}
		}
		if len(pairs) > 0 {
			kept = append(kept, strings.Join(pairs, "; "))
		}
	}
	switch {
	case !changed:
	case len(kept) == 0:
		delete(r.Header, "Cookie")
	default:
		r.Header["Cookie"] = kept
	}
}

// isOwnCookie reports whether a cookie name is one of the middleware's, in
// any of the forms it can take: plain over HTTP, __Host- over HTTPS, and
// __Secure- when shared with subdomains (CookieDomain).
func isOwnCookie(name string) bool {
	if n, ok := strings.CutPrefix(name, "__Host-"); ok {
		name = n
	} else if n, ok := strings.CutPrefix(name, "__Secure-"); ok {
		name = n
	}
	switch name {
	case sessionCookie, bindingCookie, oauthflow.Cookie, handoffCookie:
		return true
	}
	return false
}
