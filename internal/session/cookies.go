// Package session keeps logins in sealed cookies: how the cookies are named
// and flagged, how they are sealed, what a session cookie holds, and how a
// session is ended before it expires.
//
// Nothing about a session is stored on the server while it is valid; what
// the server keeps is the list of sessions ended early (Revocations), which
// is consulted on every request.
package session

import (
	"fmt"
	"net/http"
	"time"

	"github.com/wechat-login/caddy-wechat-login/internal/cookieseal"
)

// Cookies reads and writes sealed cookies. Over HTTPS their names get the
// __Host- prefix, which makes browsers refuse them unless Secure, Path=/
// and host-only: no sibling subdomain can plant or overwrite them.
type Cookies struct {
	codec *cookieseal.Codec
	https func(*http.Request) bool
	now   func() time.Time
}

// NewCookies returns Cookies sealed with keys derived from the configured
// session keys (the first seals, all open), so the raw configured secret is
// never used directly. https reports whether a request reached the site
// over HTTPS.
func NewCookies(keys [][]byte, https func(*http.Request) bool, now func() time.Time) (*Cookies, error) {
	derived := make([][]byte, len(keys))
	for i, k := range keys {
		derived[i] = cookieseal.DeriveKey(k, "wechat_login cookies v1")
	}
	codec, err := cookieseal.New(derived...)
	if err != nil {
		return nil, err
	}
	return &Cookies{codec: codec, https: https, now: now}, nil
}

// Name is the name the cookie called base has on this request.
func (c *Cookies) Name(r *http.Request, base string) string {
	if c.https(r) {
		return "__Host-" + base
	}
	return base
}

// Set seals payload, valid until expires, into the cookie called base,
// which the browser keeps for maxAge.
func (c *Cookies) Set(w http.ResponseWriter, r *http.Request, base string, payload []byte, expires time.Time, maxAge time.Duration) error {
	name := c.Name(r, base)
	value, err := c.codec.Seal(name, payload, expires)
	if err != nil {
		return fmt.Errorf("seal cookie %s: %w", base, err)
	}
	http.SetCookie(w, c.cookie(r, name, value, int(maxAge/time.Second)))
	return nil
}

// Clear expires the cookie called base with the attributes it was set
// with, or browsers keep the original.
func (c *Cookies) Clear(w http.ResponseWriter, r *http.Request, base string) {
	http.SetCookie(w, c.cookie(r, c.Name(r, base), "", -1))
}

// Open returns the payload of the cookie called base, or nil when the
// request has none that opens (absent, forged, expired or sealed under
// another name).
func (c *Cookies) Open(r *http.Request, base string) []byte {
	name := c.Name(r, base)
	ck, err := r.Cookie(name)
	if err != nil || ck.Value == "" {
		return nil
	}
	payload, err := c.codec.Open(name, ck.Value, c.now())
	if err != nil {
		return nil
	}
	return payload
}

// Present reports whether the request carries the cookie called base at
// all, whether or not it opens.
func (c *Cookies) Present(r *http.Request, base string) bool {
	_, err := r.Cookie(c.Name(r, base))
	return err == nil
}

func (c *Cookies) cookie(r *http.Request, name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     "/",
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   c.https(r),
		SameSite: http.SameSiteLaxMode,
	}
}
