package middleware

import (
	"net/http"
	"strings"

	"github.com/wechat-login/caddy-wechat-login/internal/oauthflow"
	"github.com/wechat-login/caddy-wechat-login/internal/ratelimit"
	"github.com/wechat-login/caddy-wechat-login/internal/session"
	"github.com/wechat-login/caddy-wechat-login/wechat"
)

// Per-address limits on starting OAuth flows: generous for people (a few
// tabs, a few retries), tight enough that nobody fills the store with
// states.
const (
	oauthStartsPerMinute = 30
	oauthStartBurst      = 10
)

// newOAuthFlows wires the OAuth login flows (web authorization inside
// WeChat, and website login; see internal/oauthflow for their design) to
// this middleware's store, cookies, pages and sessions.
func (m *Middleware) newOAuthFlows() *oauthflow.Flows {
	app := func(id, secret string) *wechat.OAuthApp {
		return &wechat.OAuthApp{
			AppID:      id,
			AppSecret:  secret,
			Endpoint:   m.cfg.Endpoint,
			HTTPClient: m.wc.HTTPClient, // cfg.HTTPClient, observed by the metrics
		}
	}
	cfg := oauthflow.Config{
		Prefix:    m.cfg.Prefix,
		Scope:     m.cfg.OAuthScope,
		Store:     m.store,
		Cookies:   m.cookies,
		Redirects: m.redirects,
		Page:      m.page,
		Limiter:   ratelimit.New(oauthStartsPerMinute/60, oauthStartBurst, ratelimit.WithClock(m.cfg.Now)),
		ClientKey: m.clientKey,
		Origin:    m.origin,
		LoginURL:  m.loginURL,
		LoggedIn: func(r *http.Request) bool {
			_, err := m.sessions.Get(r)
			return err == nil
		},
		Allowed: func(openid, unionid string) bool {
			return m.allowed(Identity{OpenID: openid, UnionID: unionid})
		},
		Login: func(w http.ResponseWriter, r *http.Request, rec session.Record) error {
			return m.startSession(w, r, identityOf(rec), "")
		},
		RequireUnionID: m.cfg.UserID == "unionid",
		Metrics:        m.metrics,
		Log:            m.log,
		Now:            m.cfg.Now,
	}
	if m.cfg.enabled(MethodOAuth) {
		cfg.InWeChat = app(m.cfg.AppID, m.cfg.AppSecret)
	}
	if m.cfg.enabled(MethodOpen) {
		cfg.Website = app(m.cfg.OpenAppID, m.cfg.OpenAppSecret)
		cfg.Frame = wechat.FrameOptions{Style: m.cfg.OpenFrameStyle, Href: m.cfg.OpenFrameCSS}
	}
	return oauthflow.New(cfg)
}

// origin is this site's origin as the browser sees it: PublicOrigin when
// set, so that redirect_uris never depend on the Host a proxy passed.
func (m *Middleware) origin(r *http.Request) string {
	if m.cfg.PublicOrigin != "" {
		return m.cfg.PublicOrigin
	}
	scheme := "http"
	if m.isHTTPS(r) {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// frameSources are what the login page may frame for embedded website
// login: WeChat's page origin, derived from the configured endpoint, and
// this site's own OAuth callback, where WeChat sends the frame after the
// scan. An endpoint that is a path on this site (the Caddy module's
// sandbox) is allowed as that path's prefix on this origin.
func (m *Middleware) frameSources(r *http.Request) []string {
	origin := m.origin(r)
	wechatPages := m.cfg.Endpoint.PageOrigin()
	if wechatPages == "" {
		wechatPages = origin + strings.TrimRight(m.cfg.Endpoint.Authorize, "/") + "/connect/"
	}
	return []string{wechatPages, origin + m.cfg.Prefix + "/oauth/callback"}
}
