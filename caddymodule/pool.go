package caddymodule

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/wechat-login/caddy-wechat-login/internal/revocation"
	"github.com/wechat-login/caddy-wechat-login/middleware"
	"github.com/wechat-login/caddy-wechat-login/middleware/bigcachestore"
	"github.com/wechat-login/caddy-wechat-login/middleware/redisstore"
	"github.com/wechat-login/caddy-wechat-login/middleware/store"
	"github.com/wechat-login/caddy-wechat-login/wechat"
)

// pool holds the state that outlives a config reload. The usage pools are
// this package's only package-level state, as Caddy's usage pools are meant
// to be.
var pool = caddy.NewUsagePool()

// revocationPool holds the file-backed logout lists of the embedded store,
// one per file, across reloads.
var revocationPool = caddy.NewUsagePool()

// sharedState is what every config with the same app and store shares: a
// reload that only changes, say, the site name keeps pending logins, revoked
// sessions, waiting browsers and the cached access token.
type sharedState struct {
	store    store.Store
	notifier middleware.Notifier
	closers  []func() error // released by Destruct, in order
	sandbox  *sandbox       // only for sandbox configurations

	mu    sync.Mutex
	token *wechat.TokenCache
}

// storeConfig is what selects and addresses the store, resolved.
type storeConfig struct {
	kind        string // "memory" or "redis"
	redisURL    string
	redisPrefix string
	// revocationFile is the memory store's file of logouts, absolute; empty
	// for the default, which depends on the app.
	revocationFile string
}

// storeConfig resolves the store options; Validate has checked how they
// combine.
func (h *Handler) storeConfig(repl *caddy.Replacer) (storeConfig, error) {
	sc := storeConfig{kind: h.Store, redisPrefix: h.RedisPrefix}
	if sc.kind == "" {
		sc.kind = "memory"
	}
	if sc.kind == "redis" {
		url, err := repl.ReplaceOrErr(h.RedisURL, true, true)
		if err != nil {
			return sc, fmt.Errorf("redis_url: %w", err)
		}
		sc.redisURL = url
		return sc, nil
	}
	if h.RevocationFile != "" {
		path, err := repl.ReplaceOrErr(h.RevocationFile, true, true)
		if err != nil {
			return sc, fmt.Errorf("revocation_file: %w", err)
		}
		if sc.revocationFile, err = filepath.Abs(path); err != nil {
			return sc, fmt.Errorf("revocation_file: %w", err)
		}
	}
	return sc, nil
}

// maxSessionTTL bounds session_ttl, so that the embedded store, which must
// keep revocations as long as sessions last, can be sized once.
const maxSessionTTL = 30 * 24 * time.Hour

// embeddedPendingLogins is how many pending logins the embedded store
// keeps without evicting any: a million (BenchmarkMillionPendingScenes).
const embeddedPendingLogins = 1_000_000

// embeddedReservedLogins is how many of them the store makes room for at
// once, at the least: the pending logins a qr_ceiling allows (QR codes a
// minute, times the minutes a login stays pending), up to all of them.
// More would be heap from the first login on, and the garbage collector
// lets as much garbage again pile up before it collects: made for the whole
// million at once (about 350 MB), a Caddy that answered 60 MB before its
// first login answered 440 MB under load after it. The default qr_ceiling
// allows a few hundred pending logins; a site that raises it to a million
// gets its million made at once, not by doubling queues.
const embeddedReservedLogins = 16_384

// embeddedStoreConfig is the embedded store's configuration for cfg: room
// for embeddedPendingLogins entries, of which what cfg's QR ceiling allows
// (at least embeddedReservedLogins) is made at once for the class of the
// scenes' time to live; and revocations' times to live up to the longest
// session.
func embeddedStoreConfig(cfg middleware.Config) bigcachestore.Config {
	sceneTTL := cfg.SceneTTL
	if sceneTTL <= 0 {
		sceneTTL = 5 * time.Minute
	}
	minutes := int(sceneTTL/time.Minute) + 1
	reserve := embeddedReservedLogins
	if c := cfg.QRCeiling; c > 0 {
		// The inner min keeps the product from overflowing.
		reserve = max(reserve, min(min(c, embeddedPendingLogins)*minutes, embeddedPendingLogins))
	}
	return bigcachestore.Config{
		MaxEntries:     embeddedPendingLogins,
		ReserveTTL:     sceneTTL,
		ReserveEntries: reserve,
		MaxTTL:         maxSessionTTL + time.Hour,
	}
}

func newSharedState(cfg middleware.Config, sc storeConfig, withSandbox bool) (*sharedState, error) {
	st := &sharedState{}
	if withSandbox {
		sb, err := newSandbox(cfg)
		if err != nil {
			return nil, err
		}
		st.sandbox = sb
	}
	switch sc.kind {
	case "redis":
		// Nothing here contacts Redis: Caddy must start (and `caddy
		// validate` must pass) while Redis is down, and logins then answer
		// 503 until it is back.
		s, err := redisstore.Open(sc.redisURL, sc.redisPrefix)
		if err != nil {
			return nil, err
		}
		st.store = s // and its notifier: a store.Broadcaster
		st.closers = []func() error{s.Close}
	default:
		s, err := bigcachestore.New(embeddedStoreConfig(cfg))
		if err != nil {
			return nil, fmt.Errorf("create store: %w", err)
		}
		st.store = s
		// One notifier for every config of this state, so a reload keeps
		// the browsers waiting.
		st.notifier = &middleware.LocalNotifier{}
		embeddedStores.add(s)
		st.closers = []func() error{func() error { embeddedStores.remove(s); return nil }, s.Close}
	}
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
		// Token fetches are WeChat calls like any other: counted in the
		// same metrics.
		hc := middleware.ObservedClient(cfg.HTTPClient, promMetrics{})
		s.token = wechat.ReuseTokenSource(wechat.StableTokenSource(cfg.AppID, cfg.AppSecret, cfg.Endpoint, hc), 0)
	}
	return s.token
}

// Destruct implements caddy.Destructor: the last config using the state is
// gone.
func (s *sharedState) Destruct() error {
	var errs []error
	for _, c := range s.closers {
		errs = append(errs, c())
	}
	return errors.Join(errs...)
}

// revocations returns the file-backed list of logouts for the memory
// store, kept in path (absolute), or by default in a file per app under
// Caddy's data directory. It is pooled by file path, so a reload, and every
// site of this process that names the same file, share one list: two lists
// appending to one file would lose records when either rewrites it.
func (h *Handler) revocations(path, appID string) (middleware.RevocationList, error) {
	if path == "" {
		var err error
		path, err = filepath.Abs(filepath.Join(caddy.AppDataDir(), "wechat_login", "revocations-"+fileSafe(appID)))
		if err != nil {
			return nil, fmt.Errorf("revocation_file: %w", err)
		}
	}
	h.revKey = "wechat_login_revocations:" + path
	v, _, err := revocationPool.LoadOrNew(h.revKey, func() (caddy.Destructor, error) {
		l, err := revocation.Open(path, nil)
		if err != nil {
			return nil, err
		}
		return revocationList{l}, nil
	})
	if err != nil {
		h.revKey = ""
		return nil, fmt.Errorf("revocation_file: %w", err)
	}
	return v.(revocationList).List, nil
}

// revocationList lets the usage pool close the file when the last config
// using it is gone.
type revocationList struct{ *revocation.List }

func (l revocationList) Destruct() error { return l.Close() }

// fileSafe keeps the letters, digits, '-' and '_' of s, for a file name.
func fileSafe(s string) string {
	b := []byte(s)
	out := b[:0]
	for _, c := range b {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		return "default"
	}
	return string(out)
}

// poolKey names the shared state by what it depends on: the app (and its
// secret, so a new secret gets a new token cache), WeChat's address and the
// store. Cosmetic settings are left out so editing them keeps logins in
// flight.
func poolKey(cfg middleware.Config, sc storeConfig) string {
	h := sha256.New()
	for _, part := range []string{cfg.AppID, cfg.AppSecret, cfg.Endpoint.API, cfg.Endpoint.Authorize, cfg.Endpoint.MP, sc.kind, sc.redisURL, sc.redisPrefix} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return "wechat_login:" + hex.EncodeToString(h.Sum(nil)[:16])
}

var _ caddy.Destructor = (*sharedState)(nil)
