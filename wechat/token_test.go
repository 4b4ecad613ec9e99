package wechat_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat"
)

// fakeClock is a settable clock for TokenCache.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// countingSource mints "tok1", "tok2", ... valid for life from clock's now.
type countingSource struct {
	clock *fakeClock
	life  time.Duration
	calls atomic.Int32
}

func (s *countingSource) Token(context.Context) (wechat.Token, error) {
	n := s.calls.Add(1)
	return wechat.Token{Value: fmt.Sprintf("tok%d", n), ExpiresAt: s.clock.Now().Add(s.life)}, nil
}

func mustToken(t *testing.T, ts wechat.TokenSource) string {
	t.Helper()
	tok, err := ts.Token(context.Background())
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	return tok.Value
}

// TestTokenCacheColdCacheOneFetch: 1,000 concurrent callers on a cold cache
// cause exactly one upstream request, and all get its token.
func TestTokenCacheColdCacheOneFetch(t *testing.T) {
	t.Parallel()
	var upstream atomic.Int32
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstream.Add(1)
		<-release
		fmt.Fprint(w, `{"access_token":"shared-token","expires_in":7200}`)
	}))
	defer srv.Close()
	cache := wechat.ReuseTokenSource(wechat.StableTokenSource(testAppID, testSecret, wechat.Endpoint{API: srv.URL}, srv.Client()), 0)

	const callers = 1000
	var (
		wg      sync.WaitGroup
		started sync.WaitGroup
		got     = make([]string, callers)
		errs    = make([]error, callers)
	)
	started.Add(callers)
	for i := range callers {
		wg.Go(func() {
			started.Done()
			tok, err := cache.Token(context.Background())
			got[i], errs[i] = tok.Value, err
		})
	}
	started.Wait()
	// Let stragglers reach the cache while the single fetch is held open,
	// then release it.
	time.Sleep(20 * time.Millisecond)
	close(release)
	wg.Wait()

	if n := upstream.Load(); n != 1 {
		t.Errorf("upstream requests = %d, want 1", n)
	}
	for i := range callers {
		if errs[i] != nil || got[i] != "shared-token" {
			t.Fatalf("caller %d got (%q, %v)", i, got[i], errs[i])
		}
	}
}

func TestTokenCacheExpiry(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		life      time.Duration
		early     time.Duration
		refreshAt time.Duration // after the fetch
	}{
		{"default early", 2 * time.Hour, 0, 2*time.Hour - wechat.DefaultEarly},
		{"custom early", 2 * time.Hour, 5 * time.Minute, 2*time.Hour - 5*time.Minute},
		// With 5 minutes left (stable_token's minimum) and a 5-minute
		// margin, the token would never be reused; half its life is used.
		{"short-lived token", 5 * time.Minute, 5 * time.Minute, 150 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clock := newFakeClock()
			src := &countingSource{clock: clock, life: tt.life}
			cache := wechat.ReuseTokenSource(src, tt.early)
			cache.Now = clock.Now

			if got := mustToken(t, cache); got != "tok1" {
				t.Fatalf("first token = %q", got)
			}
			clock.Advance(tt.refreshAt - time.Second)
			if got := mustToken(t, cache); got != "tok1" {
				t.Fatalf("token 1 s before refresh = %q, want tok1", got)
			}
			clock.Advance(time.Second)
			if got := mustToken(t, cache); got != "tok2" {
				t.Fatalf("token at refresh time = %q, want tok2", got)
			}
			if n := src.calls.Load(); n != 2 {
				t.Errorf("source calls = %d, want 2", n)
			}
		})
	}
}

// TestTokenCacheInvalidate: compare-and-invalidate. Dropping a stale value
// never evicts the newer token.
func TestTokenCacheInvalidate(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	src := &countingSource{clock: clock, life: 2 * time.Hour}
	cache := wechat.ReuseTokenSource(src, 0)
	cache.Now = clock.Now

	if got := mustToken(t, cache); got != "tok1" {
		t.Fatalf("token = %q", got)
	}
	cache.Invalidate("not-the-cached-one")
	cache.Invalidate("")
	if got := mustToken(t, cache); got != "tok1" {
		t.Fatalf("after unrelated Invalidate: token = %q, want tok1", got)
	}
	cache.Invalidate("tok1")
	if got := mustToken(t, cache); got != "tok2" {
		t.Fatalf("after Invalidate(tok1): token = %q, want tok2", got)
	}
	// A second caller that also saw tok1 fail reports it late.
	cache.Invalidate("tok1")
	if got := mustToken(t, cache); got != "tok2" {
		t.Fatalf("late stale Invalidate evicted the new token: got %q", got)
	}
	if n := src.calls.Load(); n != 2 {
		t.Errorf("source calls = %d, want 2", n)
	}
}

// TestTokenCacheFailureShared: concurrent callers share one failed fetch;
// the failure is not cached.
func TestTokenCacheFailureShared(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	release := make(chan struct{})
	boom := errors.New("upstream down")
	src := wechat.TokenSourceFunc(func(ctx context.Context) (wechat.Token, error) {
		if calls.Add(1) == 1 {
			<-release
			return wechat.Token{}, boom
		}
		return wechat.Token{Value: "good", ExpiresAt: time.Now().Add(time.Hour)}, nil
	})
	cache := wechat.ReuseTokenSource(src, 0)

	const callers = 50
	errs := make(chan error, callers)
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			_, err := cache.Token(context.Background())
			errs <- err
		})
	}
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	close(release)
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if errors.Is(err, boom) {
			failed++
		}
	}
	// Callers that arrived after the failed fetch ended start a new one
	// and succeed; all callers that joined the first share its error.
	if failed == 0 {
		t.Error("no caller saw the failure")
	}
	if got := mustToken(t, cache); got != "good" {
		t.Errorf("after a failure the next call got %q, want a fresh fetch", got)
	}
	if n := calls.Load(); n > 2 {
		t.Errorf("source calls = %d, want at most 2", n)
	}
}

// TestTokenCacheCallerCancel: a caller that gives up does not fail the
// shared fetch for the others.
func TestTokenCacheCallerCancel(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var calls atomic.Int32
	src := wechat.TokenSourceFunc(func(ctx context.Context) (wechat.Token, error) {
		calls.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
			return wechat.Token{}, ctx.Err()
		}
		return wechat.Token{Value: "slow", ExpiresAt: time.Now().Add(time.Hour)}, nil
	})
	cache := wechat.ReuseTokenSource(src, 0)

	ctx, cancel := context.WithCancel(context.Background())
	impatient := make(chan error, 1)
	go func() {
		_, err := cache.Token(ctx)
		impatient <- err
	}()
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	patient := make(chan string, 1)
	go func() {
		tok, _ := cache.Token(context.Background())
		patient <- tok.Value
	}()
	cancel()
	if err := <-impatient; !errors.Is(err, context.Canceled) {
		t.Errorf("canceled caller got %v, want context.Canceled", err)
	}
	close(release)
	if got := <-patient; got != "slow" {
		t.Errorf("patient caller got %q, want slow", got)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("source calls = %d, want 1", n)
	}
}

func TestTokenCacheRejectsBadTokens(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	tests := []struct {
		name string
		tok  wechat.Token
		want string
	}{
		{"empty", wechat.Token{ExpiresAt: clock.Now().Add(time.Hour)}, "empty token"},
		{"already expired", wechat.Token{Value: "x", ExpiresAt: clock.Now()}, "expired token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cache := wechat.ReuseTokenSource(wechat.TokenSourceFunc(func(context.Context) (wechat.Token, error) {
				return tt.tok, nil
			}), 0)
			cache.Now = clock.Now
			_, err := cache.Token(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestTokenCacheNoExpiry: a token without ExpiresAt stays until invalidated.
func TestTokenCacheNoExpiry(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	var calls atomic.Int32
	cache := wechat.ReuseTokenSource(wechat.TokenSourceFunc(func(context.Context) (wechat.Token, error) {
		return wechat.Token{Value: fmt.Sprint("t", calls.Add(1))}, nil
	}), 0)
	cache.Now = clock.Now
	mustToken(t, cache)
	clock.Advance(365 * 24 * time.Hour)
	if got := mustToken(t, cache); got != "t1" {
		t.Errorf("token = %q, want t1", got)
	}
	cache.Invalidate("t1")
	if got := mustToken(t, cache); got != "t2" {
		t.Errorf("token after Invalidate = %q, want t2", got)
	}
}

// TestStableTokenSourceRequest pins the stable_token request: POST JSON, the
// secret only in the body, and force_refresh false.
func TestStableTokenSourceRequest(t *testing.T) {
	t.Parallel()
	var gotBody map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/cgi-bin/stable_token" || r.URL.RawQuery != "" {
			t.Errorf("request %s %s", r.Method, r.URL)
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type = %q", ct)
		}
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &gotBody); err != nil {
			t.Errorf("body %q: %v", b, err)
		}
		fmt.Fprint(w, `{"access_token":"stable","expires_in":600}`)
	}))
	defer srv.Close()
	before := time.Now()
	tok, err := wechat.StableTokenSource(testAppID, testSecret, wechat.Endpoint{API: srv.URL + "/"}, nil).Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"grant_type": "client_credential", "appid": testAppID, "secret": testSecret, "force_refresh": false}
	if fmt.Sprint(gotBody) != fmt.Sprint(want) {
		t.Errorf("body = %v, want %v", gotBody, want)
	}
	if tok.Value != "stable" {
		t.Errorf("Value = %q", tok.Value)
	}
	if exp := before.Add(600 * time.Second); tok.ExpiresAt.Before(exp) || tok.ExpiresAt.After(exp.Add(5*time.Second)) {
		t.Errorf("ExpiresAt = %v, want about %v", tok.ExpiresAt, exp)
	}
}

func TestRemoteTokenSource(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if r.Method != http.MethodGet || r.URL.Path != "/v1/token" || r.URL.Query().Get("app") != "oa" ||
			!ok || user != "svc" || pass != testSecret {
			t.Errorf("request %s %s (basic auth %v)", r.Method, r.URL.Path, ok)
		}
		fmt.Fprint(w, `{"access_token":"central","expires_in":3600}`)
	}))
	defer srv.Close()
	u := strings.Replace(srv.URL, "http://", "http://svc:"+testSecret+"@", 1) + "/v1/token?app=oa"
	tok, err := wechat.RemoteTokenSource(u, nil).Token(context.Background())
	if err != nil || tok.Value != "central" || time.Until(tok.ExpiresAt) < 3590*time.Second {
		t.Fatalf("Token = %+v, %v", tok, err)
	}
}

func TestTokenAnswerValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		body string
		want string
	}{
		{`{}`, "no access_token"},
		{`{"access_token":"x"}`, "expires_in"},
		{`{"access_token":"x","expires_in":-5}`, "expires_in"},
		{`{"access_token":"` + strings.Repeat("x", 4096) + `","expires_in":7200}`, "longer than"},
		{`{"access_token":7,"expires_in":7200}`, "decode response"},
		{`null`, "no access_token"},
	}
	for _, tt := range tests {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, tt.body)
		}))
		_, err := wechat.StableTokenSource(testAppID, testSecret, wechat.Endpoint{API: srv.URL}, nil).Token(context.Background())
		srv.Close()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("body %.40s: err = %v, want %q", tt.body, err, tt.want)
		}
	}
}

// TestTokenSourceLocalValidation: bad credentials or URLs fail without a
// request and without echoing the value.
func TestTokenSourceLocalValidation(t *testing.T) {
	t.Parallel()
	ep := wechat.Endpoint{API: "http://127.0.0.1:1"} // nothing listens there
	tests := []struct {
		name string
		src  wechat.TokenSource
	}{
		{"stable, no app ID", wechat.StableTokenSource("", testSecret, ep, nil)},
		{"stable, no secret", wechat.StableTokenSource(testAppID, "", ep, nil)},
		{"stable, secret with newline", wechat.StableTokenSource(testAppID, testSecret+"\n", ep, nil)},
		{"remote, relative URL", wechat.RemoteTokenSource("/token?key="+testSecret, nil)},
		{"remote, bad scheme", wechat.RemoteTokenSource("ftp://x/"+testSecret, nil)},
	}
	for _, tt := range tests {
		_, err := tt.src.Token(context.Background())
		if err == nil {
			t.Errorf("%s: no error", tt.name)
			continue
		}
		if strings.Contains(err.Error(), "send request") {
			t.Errorf("%s: a request was attempted: %v", tt.name, err)
		}
		assertNoSecrets(t, err)
	}
}

func TestTokenCacheNilSource(t *testing.T) {
	t.Parallel()
	if _, err := wechat.ReuseTokenSource(nil, 0).Token(context.Background()); err == nil {
		t.Error("no error from a cache without a source")
	}
}

// BenchmarkTokenCacheHit measures the per-call cost of a warm cache under
// parallel load, which every API call pays.
func BenchmarkTokenCacheHit(b *testing.B) {
	cache := wechat.ReuseTokenSource(staticTokens, 0)
	if _, err := cache.Token(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if _, err := cache.Token(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestTokenCacheServesValidTokenWhenRefreshFails: inside the early-refresh
// window a failed refresh falls back to the still-valid token; once it has
// expired, the failure is reported.
func TestTokenCacheServesValidTokenWhenRefreshFails(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	var calls atomic.Int32
	boom := errors.New("upstream down")
	cache := wechat.ReuseTokenSource(wechat.TokenSourceFunc(func(context.Context) (wechat.Token, error) {
		if calls.Add(1) == 1 {
			return wechat.Token{Value: "t1", ExpiresAt: clock.Now().Add(time.Hour)}, nil
		}
		return wechat.Token{}, boom
	}), 10*time.Minute)
	cache.Now = clock.Now
	mustToken(t, cache)

	clock.Advance(55 * time.Minute) // past the refresh point, before expiry
	if got := mustToken(t, cache); got != "t1" {
		t.Errorf("during the refresh window got %q, want t1", got)
	}
	if got := mustToken(t, cache); got != "t1" {
		t.Errorf("second call got %q, want t1", got)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("source calls = %d, want 3 (each call retries the refresh)", n)
	}
	clock.Advance(5 * time.Minute) // expired now
	if _, err := cache.Token(context.Background()); !errors.Is(err, boom) {
		t.Errorf("after expiry: err = %v, want the fetch error", err)
	}
}

// TestTokenCacheNoFallbackAfterInvalidate: a token WeChat rejected is never
// served as the fallback of a failed fetch.
func TestTokenCacheNoFallbackAfterInvalidate(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	boom := errors.New("upstream down")
	cache := wechat.ReuseTokenSource(wechat.TokenSourceFunc(func(context.Context) (wechat.Token, error) {
		if calls.Add(1) == 1 {
			return wechat.Token{Value: "t1", ExpiresAt: time.Now().Add(time.Hour)}, nil
		}
		return wechat.Token{}, boom
	}), 0)
	mustToken(t, cache)
	cache.Invalidate("t1")
	if tok, err := cache.Token(context.Background()); !errors.Is(err, boom) {
		t.Errorf("after Invalidate: got (%q, %v), want the fetch error", tok.Value, err)
	}
}
