package wechat_test

import (
	"context"
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

// retryServer issues tokens tok1, tok2, ... from stable_token and answers
// qrcode/create with qrAnswer(token).
type retryServer struct {
	*httptest.Server
	tokenCalls atomic.Int32
	qrCalls    atomic.Int32
}

func newRetryServer(t *testing.T, qrAnswer func(token string) string) *retryServer {
	s := &retryServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		switch r.URL.Path {
		case "/cgi-bin/stable_token":
			fmt.Fprintf(w, `{"access_token":"tok%d","expires_in":7200}`, s.tokenCalls.Add(1))
		case "/cgi-bin/qrcode/create":
			s.qrCalls.Add(1)
			fmt.Fprint(w, qrAnswer(r.URL.Query().Get("access_token")))
		default:
			t.Errorf("unexpected %s", r.URL.Path)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

const qrOK = `{"ticket":"T","url":"U","expire_seconds":60}`

// defaultClient has no Tokens: it builds the default stable_token cache.
func (s *retryServer) defaultClient() *wechat.Client {
	return &wechat.Client{AppID: testAppID, AppSecret: testSecret, Endpoint: wechat.Endpoint{API: s.URL}}
}

func TestClientRetriesOnceWithNewToken(t *testing.T) {
	t.Parallel()
	for _, code := range []int{40001, 40014, 42001} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			t.Parallel()
			s := newRetryServer(t, func(tok string) string {
				if tok == "tok1" {
					return fmt.Sprintf(`{"errcode":%d,"errmsg":"token rejected"}`, code)
				}
				return qrOK
			})
			c := s.defaultClient()
			qr, err := c.CreateTempQR(context.Background(), "s", time.Minute)
			if err != nil || qr.Ticket != "T" {
				t.Fatalf("CreateTempQR = %+v, %v", qr, err)
			}
			if a, b := s.tokenCalls.Load(), s.qrCalls.Load(); a != 2 || b != 2 {
				t.Errorf("token fetches %d, QR calls %d; want 2 and 2", a, b)
			}
			// The new token is cached: the next call needs no fetch.
			if _, err := c.CreateTempQR(context.Background(), "s", time.Minute); err != nil {
				t.Fatal(err)
			}
			if a := s.tokenCalls.Load(); a != 2 {
				t.Errorf("token fetches after a further call = %d, want 2", a)
			}
		})
	}
}

// TestClientRetryIsBounded: a token that keeps failing is retried once,
// never in a loop.
func TestClientRetryIsBounded(t *testing.T) {
	t.Parallel()
	s := newRetryServer(t, func(string) string { return `{"errcode":40001,"errmsg":"invalid credential"}` })
	_, err := s.defaultClient().CreateTempQR(context.Background(), "s", time.Minute)
	if !wechat.IsTokenInvalid(err) {
		t.Fatalf("err = %v, want a token error", err)
	}
	if a, b := s.tokenCalls.Load(), s.qrCalls.Load(); a != 2 || b != 2 {
		t.Errorf("token fetches %d, QR calls %d; want 2 and 2", a, b)
	}
	assertNoSecrets(t, err)
}

// TestClientRetryWithoutInvalidator: a source that cannot invalidate still
// gets its single retry (WeChat's rejections are not always final).
func TestClientRetryWithoutInvalidator(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	s := newRetryServer(t, func(string) string {
		if n.Add(1) == 1 {
			return `{"errcode":42001,"errmsg":"access_token expired"}`
		}
		return qrOK
	})
	if _, err := clientFor(wechat.Endpoint{API: s.URL}, nil).CreateTempQR(context.Background(), "s", time.Minute); err != nil {
		t.Fatal(err)
	}
	if n := s.qrCalls.Load(); n != 2 {
		t.Errorf("QR calls = %d, want 2", n)
	}
}

func TestClientNoRetryOnOtherErrors(t *testing.T) {
	t.Parallel()
	for _, code := range []int{-1, 40164, 45009, 40053} {
		s := newRetryServer(t, func(string) string { return fmt.Sprintf(`{"errcode":%d,"errmsg":"x"}`, code) })
		_, err := s.defaultClient().CreateTempQR(context.Background(), "s", time.Minute)
		if got, _ := wechat.ErrorCode(err); got != code {
			t.Errorf("errcode %d: err = %v", code, err)
		}
		if a, b := s.tokenCalls.Load(), s.qrCalls.Load(); a != 1 || b != 1 {
			t.Errorf("errcode %d: token fetches %d, QR calls %d; want 1 and 1", code, a, b)
		}
	}
}

// TestClientRefetchFails: when the replacement token cannot be had, both
// failures are reported, and WeChat's token error stays recognisable.
func TestClientRefetchFails(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	cache := wechat.ReuseTokenSource(wechat.TokenSourceFunc(func(context.Context) (wechat.Token, error) {
		if calls.Add(1) == 1 {
			return wechat.Token{Value: testAccessToken, ExpiresAt: time.Now().Add(time.Hour)}, nil
		}
		return wechat.Token{}, &wechat.Error{Code: 40164, Msg: "invalid ip", Path: "cgi-bin/stable_token"}
	}), 0)
	s := newRetryServer(t, func(string) string { return `{"errcode":40001,"errmsg":"invalid credential"}` })
	c := &wechat.Client{Endpoint: wechat.Endpoint{API: s.URL}, Tokens: cache}
	_, err := c.CreateTempQR(context.Background(), "s", time.Minute)
	if err == nil || !strings.Contains(err.Error(), "fetching a new token failed") {
		t.Fatalf("err = %v", err)
	}
	if !wechat.IsTokenInvalid(err) {
		t.Errorf("IsTokenInvalid = false for %v", err)
	}
	assertNoSecrets(t, err)
}

// TestClientConcurrentRejectionsRefetchOnce: two calls rejected with the
// same token both invalidate it, yet only one new token is fetched
// (compare-and-invalidate plus the shared fetch).
func TestClientConcurrentRejectionsRefetchOnce(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		waiting = 0
		both    = make(chan struct{})
	)
	s := newRetryServer(t, func(tok string) string {
		if tok != "tok1" {
			return qrOK
		}
		// Hold both tok1 calls until both arrived, so both fail together.
		mu.Lock()
		waiting++
		if waiting == 2 {
			close(both)
		}
		mu.Unlock()
		<-both
		return `{"errcode":40001,"errmsg":"invalid credential"}`
	})
	c := s.defaultClient()
	if _, err := c.AccessToken(context.Background()); err != nil { // warm: tok1
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for range 2 {
		wg.Go(func() {
			_, err := c.CreateTempQR(context.Background(), "s", time.Minute)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if a := s.tokenCalls.Load(); a != 2 {
		t.Errorf("token fetches = %d, want 2", a)
	}
}

func TestClientAccessTokenErrors(t *testing.T) {
	t.Parallel()
	boom := errors.New("no token for you")
	c := &wechat.Client{Tokens: wechat.TokenSourceFunc(func(context.Context) (wechat.Token, error) { return wechat.Token{}, boom })}
	if _, err := c.CreateTempQR(context.Background(), "s", time.Minute); !errors.Is(err, boom) {
		t.Errorf("err = %v, want the token source's error", err)
	}
	c = &wechat.Client{Tokens: wechat.TokenSourceFunc(func(context.Context) (wechat.Token, error) { return wechat.Token{}, nil })}
	if _, err := c.AccessToken(context.Background()); err == nil {
		t.Error("empty token accepted")
	}
}

// TestClientRetryStartsClean: fields of the rejected answer do not leak
// into the retried call's result.
func TestClientRetryStartsClean(t *testing.T) {
	t.Parallel()
	s := newRetryServer(t, func(tok string) string {
		if tok == "tok1" {
			return `{"errcode":40001,"errmsg":"invalid credential","expire_seconds":5}`
		}
		return `{"ticket":"T","url":"U"}`
	})
	qr, err := s.defaultClient().CreateTempQR(context.Background(), "s", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if qr.ExpiresIn != time.Minute {
		t.Errorf("ExpiresIn = %v, want 1m0s (not the rejected answer's 5s)", qr.ExpiresIn)
	}
}
