package caddymodule

import (
	"errors"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/wechat-login/caddy-wechat-login/middleware/bigcachestore"
)

// The collectors are created once and registered with every config's
// registry: Caddy makes a new registry per config load, and collectors made
// per load would restart from zero after each reload.
var (
	scenesCreated = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "wechat_login", Name: "scenes_created_total",
		Help: "Login scenes created: QR codes and login codes.",
	})
	scans = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "wechat_login", Name: "scans_total",
		Help: "Login QR scans and login-code messages pushed by WeChat, by outcome (confirmed, scanned, expired, conflict, mismatch, denied, wrong_code).",
	}, []string{"outcome"})
	duplicatePushes = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "wechat_login", Name: "duplicate_pushes_total",
		Help: "Pushes WeChat sent again (retries) that changed nothing.",
	})
	pushRejections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "wechat_login", Name: "push_rejections_total",
		Help: "Pushes rejected, by reason (signature, stale, mode, malformed, decrypt, appid, too_large, replay: a plaintext push URL reused with another body).",
	}, []string{"reason"})
	logins = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "wechat_login", Name: "logins_total",
		Help: "Sessions issued, by login method.",
	}, []string{"method"})
	loginsDenied = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "wechat_login", Name: "logins_denied_total",
		Help: "Logins refused by the allowlists, by login method.",
	}, []string{"method"})
	logouts = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "wechat_login", Name: "logouts_total",
		Help: "Sessions ended by logout.",
	})
	wechatFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "wechat_login", Name: "wechat_failures_total",
		Help: "Failed calls to WeChat, by call.",
	}, []string{"call"})

	wechatCalls = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy", Subsystem: "wechat_login", Name: "wechat_api_duration_seconds",
		Help:    "Calls to WeChat's API by endpoint and outcome (ok, errcode_N, http_N, transport_error), with their latency.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"endpoint", "outcome"})
	waiting = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "wechat_login", Name: "waiting_browsers",
		Help: "Browsers waiting on a login QR code (long-poll or event stream).",
	})

	limited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "wechat_login", Name: "limited_total",
		Help: "Requests refused by a limit: qr_ceiling (QR codes per minute for the whole site), code_ceiling (login codes per minute), code_guess (a WeChat user locked out after wrong login codes), waiters_scene, waiters_instance.",
	}, []string{"limit"})
	misconfigured = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "wechat_login", Name: "misconfigured_total",
		Help: "WeChat refusals only a change of setup cures, by reason (qr_not_allowed, ip_not_whitelisted, ip_needs_confirmation, ip_rejected, bad_app_secret, bad_app_id, push_key_mismatch, push_plaintext, …): each means users cannot log in.",
	}, []string{"reason"})
	evictions = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "wechat_login", Name: "store_evictions_total",
		Help: "Entries the embedded store dropped before they expired, to make room (pending logins and OAuth states; never logouts).",
	}, embeddedStores.evictions)

	storeBytes = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "wechat_login", Name: "store_allocated_bytes",
		Help: "Memory the embedded store has allocated for its queues, resident or only reserved. It grows, up to a limit for each class of time to live in use, and is not given back while the store is open; the resident part grows as the reserved queues are first written through.",
	}, embeddedStores.allocated)

	allCollectors = []prometheus.Collector{
		scenesCreated, scans, duplicatePushes, pushRejections, logins, loginsDenied, logouts, wechatFailures,
		wechatCalls, waiting, limited, evictions, misconfigured, storeBytes,
	}
)

// promMetrics implements middleware.Metrics on the package's collectors.
type promMetrics struct{}

func newMetrics(ctx caddy.Context, log *zap.Logger) promMetrics {
	if reg := ctx.GetMetricsRegistry(); reg != nil {
		for _, c := range allCollectors {
			if err := reg.Register(c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if !errors.As(err, &are) {
					log.Warn("cannot register metric", zap.Error(err))
				}
			}
		}
	}
	return promMetrics{}
}

func (promMetrics) SceneCreated()              { scenesCreated.Inc() }
func (promMetrics) Scan(outcome string)        { scans.WithLabelValues(outcome).Inc() }
func (promMetrics) DuplicatePush()             { duplicatePushes.Inc() }
func (promMetrics) PushRejected(reason string) { pushRejections.WithLabelValues(reason).Inc() }
func (promMetrics) Login(method string)        { logins.WithLabelValues(method).Inc() }
func (promMetrics) LoginDenied(method string)  { loginsDenied.WithLabelValues(method).Inc() }
func (promMetrics) Logout()                    { logouts.Inc() }
func (promMetrics) WeChatFailure(call string)  { wechatFailures.WithLabelValues(call).Inc() }
func (promMetrics) Waiting(delta int)          { waiting.Add(float64(delta)) }
func (promMetrics) Limited(what string)        { limited.WithLabelValues(what).Inc() }
func (promMetrics) WeChatCall(endpoint, outcome string, took time.Duration) {
	wechatCalls.WithLabelValues(endpoint, outcome).Observe(took.Seconds())
}

// Misconfigured implements middleware.MisconfigurationMetrics.
func (promMetrics) Misconfigured(reason string) { misconfigured.WithLabelValues(reason).Inc() }

// embeddedStores tracks the embedded stores of this process for the
// evictions counter, which must only ever grow: a store's count is kept when
// the store is closed.
var embeddedStores = &storeSet{live: make(map[*bigcachestore.Store]struct{})}

type storeSet struct {
	mu   sync.Mutex
	live map[*bigcachestore.Store]struct{}
	gone uint64
}

func (s *storeSet) add(st *bigcachestore.Store) {
	s.mu.Lock()
	s.live[st] = struct{}{}
	s.mu.Unlock()
}

// remove forgets st, keeping its evictions; call it before closing st.
func (s *storeSet) remove(st *bigcachestore.Store) {
	s.mu.Lock()
	if _, ok := s.live[st]; ok {
		delete(s.live, st)
		s.gone += st.Stats().Evictions
	}
	s.mu.Unlock()
}

func (s *storeSet) evictions() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.gone
	for st := range s.live {
		n += st.Stats().Evictions
	}
	return float64(n)
}

func (s *storeSet) allocated() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for st := range s.live {
		n += st.Stats().AllocatedBytes
	}
	return float64(n)
}
