package caddymodule

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"

	"github.com/caddyserver/caddy/v2"

	"github.com/wechat-login/caddy-wechat-login/middleware"
	"github.com/wechat-login/caddy-wechat-login/middleware/bigcachestore"
	"github.com/wechat-login/caddy-wechat-login/middleware/store"
	"github.com/wechat-login/caddy-wechat-login/wechat"
)

// pool holds the state that outlives a config reload. It is the one piece of
// package-level state, as Caddy's usage pools are meant to be.
var pool = caddy.NewUsagePool()

// sharedState is what every config with the same app and store shares: a
// reload that only changes, say, the site name keeps pending logins, revoked
// sessions, waiting browsers and the cached access token.
type sharedState struct {
	store    store.Store
	notifier *middleware.LocalNotifier
	sandbox  *sandbox // only for sandbox configurations

	mu    sync.Mutex
	token *wechat.TokenCache
}

func newSharedState(cfg middleware.Config, withSandbox bool) (*sharedState, error) {
	st := &sharedState{notifier: &middleware.LocalNotifier{}}
	if withSandbox {
		sb, err := newSandbox(cfg)
		if err != nil {
			return nil, err
		}
		st.sandbox = sb
	}
	s, err := bigcachestore.New(bigcachestore.Config{})
	if err != nil {
		return nil, fmt.Errorf("create store: %w", err)
	}
	st.store = s
	return st, nil
}

// tokens returns the access token cache for cfg's app, creating it lazily (no
// network call happens until a token is needed).
func (s *sharedState) tokens(cfg middleware.Config) wechat.TokenSource {
	if cfg.TokenSource != nil {
		return cfg.TokenSource
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token == nil {
		s.token = wechat.ReuseTokenSource(wechat.StableTokenSource(cfg.AppID, cfg.AppSecret, cfg.Endpoint, cfg.HTTPClient), 0)
	}
	return s.token
}

// Destruct implements caddy.Destructor: the last config using the state is
// gone.
func (s *sharedState) Destruct() error {
	return s.store.Close()
}

// poolKey names the shared state by what it depends on: the app (and its
// secret, so a new secret gets a new token cache) and WeChat's address.
// Cosmetic settings are left out so editing them keeps logins in flight.
func poolKey(cfg middleware.Config) string {
	h := sha256.New()
	for _, part := range []string{cfg.AppID, cfg.AppSecret, cfg.Endpoint.API, cfg.Endpoint.Open, cfg.Endpoint.MP} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return "wechat_login:" + hex.EncodeToString(h.Sum(nil)[:16])
}

var _ caddy.Destructor = (*sharedState)(nil)
