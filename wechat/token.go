package wechat

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

// Token is an Official Account access_token.
type Token struct {
	// Value is the token itself. It is a credential: never log it.
	Value string
	// ExpiresAt is when WeChat stops accepting it. The zero time means the
	// source did not say.
	ExpiresAt time.Time
}

// TokenSource supplies access tokens. Implementations must be safe for
// concurrent use.
type TokenSource interface {
	// Token returns a token that is valid now.
	Token(ctx context.Context) (Token, error)
}

// TokenSourceFunc adapts a function to TokenSource.
type TokenSourceFunc func(ctx context.Context) (Token, error)

// Token calls f.
func (f TokenSourceFunc) Token(ctx context.Context) (Token, error) { return f(ctx) }

// tokenResponse is the answer of cgi-bin/stable_token and of a remote token
// service.
type tokenResponse struct {
	apiStatus
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
}

// maxTokenLen bounds accepted tokens. WeChat asks for 512 bytes of storage;
// the slack allows for growth without accepting garbage of any size.
const maxTokenLen = 2048

// toToken validates a token answer. start is when the request was sent, so
// the computed expiry errs on the early side.
func (r *tokenResponse) toToken(path string, start time.Time) (Token, error) {
	if r.AccessToken == "" {
		return Token{}, fmt.Errorf("wechat: %s: response has no access_token", path)
	}
	if len(r.AccessToken) > maxTokenLen {
		return Token{}, fmt.Errorf("wechat: %s: access_token longer than %d bytes", path, maxTokenLen)
	}
	if r.ExpiresIn <= 0 || r.ExpiresIn > 365*24*3600 {
		return Token{}, fmt.Errorf("wechat: %s: implausible expires_in %d", path, r.ExpiresIn)
	}
	return Token{Value: r.AccessToken, ExpiresAt: start.Add(time.Duration(r.ExpiresIn) * time.Second)}, nil
}

func checkCredentials(appID, secret string) error {
	if err := checkOpaque("app ID", appID, 128); err != nil {
		return err
	}
	return checkOpaque("app secret", secret, 256)
}

// StableTokenSource fetches tokens from cgi-bin/stable_token in normal mode
// (force_refresh false). WeChat hands every caller the same live token, so
// any number of servers can use this without coordinating, and it does not
// disturb tokens obtained from cgi-bin/token. It never forces a refresh:
// WeChat allows only 20 a day. The secret travels in the POST body, not the
// URL. Every call goes to WeChat; wrap it in ReuseTokenSource. A nil hc means
// a client with a 10-second timeout that does not follow redirects.
func StableTokenSource(appID, secret string, ep Endpoint, hc *http.Client) TokenSource {
	const path = "cgi-bin/stable_token"
	return TokenSourceFunc(func(ctx context.Context) (Token, error) {
		if err := checkCredentials(appID, secret); err != nil {
			return Token{}, err
		}
		body := struct {
			GrantType    string `json:"grant_type"`
			AppID        string `json:"appid"`
			Secret       string `json:"secret"`
			ForceRefresh bool   `json:"force_refresh"`
		}{"client_credential", appID, secret, false}
		var resp tokenResponse
		start := time.Now()
		req := newAPIRequest(http.MethodPost, ep.withDefaults().API, path, nil, body)
		if err := doJSON(ctx, httpClientOrDefault(hc), req, &resp); err != nil {
			return Token{}, err
		}
		return resp.toToken(path, start)
	})
}

// RemoteTokenSource fetches tokens from a company's central token service.
// It is the supported choice for an account whose token is already managed
// by such a service: one process fetches tokens from cgi-bin/token, where
// each new token retires the previous one, and everything else asks that
// process. Wrapped in ReuseTokenSource, it goes into Client.Tokens, and the
// Client then needs no AppSecret.
//
// The service's contract: GET serviceURL answers HTTP 200 with the JSON
// object {"access_token":"...","expires_in":N}, where N is the token's
// remaining lifetime in seconds. It may instead answer
// {"errcode":E,"errmsg":"..."} with a non-zero E, which becomes an *Error.
// Any other status or body is a failure. Authenticate to the service through
// hc (a Transport that adds a header, or mutual TLS), or with credentials in
// the URL (user info or query); error text names only the service's host and
// path. Every call goes to the service; wrap it in ReuseTokenSource. A nil hc
// means a client with a 10-second timeout that does not follow redirects.
func RemoteTokenSource(serviceURL string, hc *http.Client) TokenSource {
	return TokenSourceFunc(func(ctx context.Context) (Token, error) {
		u, err := url.Parse(serviceURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return Token{}, errors.New("wechat: remote token source: service URL must be an absolute http(s) URL")
		}
		name := "token service " + u.Host + u.EscapedPath()
		query := u.Query()
		u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = "", false, "", ""
		req := apiRequest{method: http.MethodGet, name: name, url: u.String(), query: query}
		var resp tokenResponse
		start := time.Now()
		if err := doJSON(ctx, httpClientOrDefault(hc), req, &resp); err != nil {
			return Token{}, err
		}
		return resp.toToken(name, start)
	})
}

// defaultEarly is how long before expiry ReuseTokenSource replaces a token
// when it is given no other margin.
const defaultEarly = time.Minute

// fetchTimeout bounds one upstream fetch shared by many callers. It is
// independent of any single caller's context, so one impatient caller does
// not fail the fetch for everyone waiting on it.
const fetchTimeout = 30 * time.Second

// TokenCache is a TokenSource that keeps the last token from an underlying
// source and coalesces concurrent fetches into one. Create it with
// ReuseTokenSource.
type TokenCache struct {
	// Now is the clock; nil means time.Now. Set it before first use.
	Now func() time.Time

	src   TokenSource
	early time.Duration
	group singleflight.Group
	// cur is the cached token; nil when there is none. Readers never lock,
	// and Invalidate swaps out exactly the entry it inspected.
	cur atomic.Pointer[cacheEntry]
}

type cacheEntry struct {
	tok       Token
	refreshAt time.Time // zero: no known expiry
}

// ReuseTokenSource returns a cache over src. A cached token is served until
// early before its ExpiresAt (at most half its lifetime early, so short-lived
// tokens are still reused); early <= 0 means one minute. Concurrent callers
// on a cold or stale cache share a single fetch, and share its failure too;
// a failure is not cached, so the next call tries again. If an early refresh
// fails while the cached token has not yet expired, that token is served
// instead. A token without an ExpiresAt is kept until invalidated.
func ReuseTokenSource(src TokenSource, early time.Duration) *TokenCache {
	if early <= 0 {
		early = defaultEarly
	}
	return &TokenCache{src: src, early: early}
}

func (c *TokenCache) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *TokenCache) cached() (Token, bool) {
	e := c.cur.Load()
	if e == nil || (!e.refreshAt.IsZero() && !c.now().Before(e.refreshAt)) {
		return Token{}, false
	}
	return e.tok, true
}

// Token returns the cached token, or fetches one. A caller whose ctx ends
// stops waiting; the shared fetch goes on for the others.
func (c *TokenCache) Token(ctx context.Context) (Token, error) {
	if t, ok := c.cached(); ok {
		return t, nil
	}
	if c.src == nil {
		return Token{}, errors.New("wechat: token cache has no source")
	}
	ch := c.group.DoChan("token", func() (any, error) {
		// Another fetch may have finished between the check above and
		// joining this group.
		if t, ok := c.cached(); ok {
			return t, nil
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fetchTimeout)
		defer cancel()
		t, err := c.src.Token(fctx)
		if err != nil {
			// An early refresh failed while the cached token still works:
			// keep serving it (the next call tries the refresh again) so a
			// brief WeChat outage does not become ours.
			if e := c.cur.Load(); e != nil && c.now().Before(e.tok.ExpiresAt) {
				return e.tok, nil
			}
			return Token{}, err
		}
		if err := c.store(t); err != nil {
			return Token{}, err
		}
		return t, nil
	})
	select {
	case <-ctx.Done():
		return Token{}, fmt.Errorf("wechat: waiting for access token: %w", ctx.Err())
	case r := <-ch:
		if r.Err != nil {
			return Token{}, r.Err
		}
		return r.Val.(Token), nil
	}
}

func (c *TokenCache) store(t Token) error {
	if t.Value == "" {
		return errors.New("wechat: token source returned an empty token")
	}
	now := c.now()
	var refreshAt time.Time
	if !t.ExpiresAt.IsZero() {
		life := t.ExpiresAt.Sub(now)
		if life <= 0 {
			return errors.New("wechat: token source returned an expired token")
		}
		refreshAt = t.ExpiresAt.Add(-min(c.early, life/2))
	}
	c.cur.Store(&cacheEntry{tok: t, refreshAt: refreshAt})
	return nil
}

// Invalidate drops the cached token if its value is stale. A caller that saw
// WeChat reject an old token therefore cannot evict a newer one that another
// caller has already fetched.
func (c *TokenCache) Invalidate(stale string) {
	if e := c.cur.Load(); e != nil && stale != "" && e.tok.Value == stale {
		c.cur.CompareAndSwap(e, nil)
	}
}

var _ Invalidator = (*TokenCache)(nil)
