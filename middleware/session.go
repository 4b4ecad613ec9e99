package middleware

import (
	"fmt"
	"net/http"
	"strings"
	"time"

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

// isHTTPS reports whether the browser reached us over HTTPS.
func (m *Middleware) isHTTPS(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	trusted := m.cfg.TrustForwardedProto || m.cfg.TrustedProxy != nil && m.cfg.TrustedProxy(r)
	return trusted && strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
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
	apps := []string{m.cfg.AppID}
	if m.cfg.OpenAppID != "" {
		apps = append(apps, m.cfg.OpenAppID)
	}
	m.sessions = session.New(session.Config{
		Cookie:      sessionCookie,
		Cookies:     m.cookies,
		TTL:         m.cfg.SessionTTL,
		AppIDs:      apps,
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
