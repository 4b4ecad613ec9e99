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
	"net"
	"net/http"
	"net/textproto"
	"strings"
	"time"

	"github.com/wechat-login/caddy-wechat-login/internal/cookieseal"
)

// Cookies reads and writes sealed cookies. Over HTTPS their names get the
// __Host- prefix, which makes browsers refuse them unless Secure, Path=/
// and host-only: no sibling subdomain can plant or overwrite them.
//
// Cookies made by Shared are the exception: on a request for a host under
// their domain they are set for that whole domain, so that every subdomain
// shares them, and over HTTPS their names get the __Secure- prefix, the
// strongest a cookie with a Domain can have.
type Cookies struct {
	codec *cookieseal.Codec
	https func(*http.Request) bool
	now   func() time.Time
	// domain is the parent domain of Shared cookies, "" for host-only
	// ones; host returns the request's host name to check against it.
	domain string
	host   func(*http.Request) string
}

// rememberedCookies is how many opened cookie values Cookies keep, so that
// a session's cookie is decrypted once rather than on every request: the
// browsers active at once on a busy instance, in about 1.6 MB. A session
// beyond them costs a decryption per request, as every one did before.
const rememberedCookies = 4096

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
	return &Cookies{codec: codec.Remembering(rememberedCookies), https: https, now: now}, nil
}

// Shared returns Cookies like c, with the same keys, whose cookies are
// set for domain (Domain=domain) on requests whose host, as host reports
// it, is domain or one of its subdomains. On any other host they stay
// host-only, as c's are: a cookie is never set for a domain the request
// is not under, which browsers would refuse anyway.
//
// A host-only cookie and a shared one seal under different names over
// HTTPS (__Host- against __Secure-), so neither opens as the other.
func (c *Cookies) Shared(domain string, host func(*http.Request) string) *Cookies {
	s := *c
	s.domain, s.host = strings.ToLower(domain), host
	return &s
}

// shared reports whether the cookies of this request are set for the
// parent domain.
func (c *Cookies) shared(r *http.Request) bool {
	return c.domain != "" && UnderDomain(c.host(r), c.domain)
}

// UnderDomain reports whether host is domain itself or a name under it.
// Both are host names without a port; an IP address is under no domain.
func UnderDomain(host, domain string) bool {
	if host == "" || domain == "" || net.ParseIP(strings.Trim(host, "[]")) != nil {
		return false
	}
	host = strings.ToLower(host)
	return host == domain || strings.HasSuffix(host, "."+domain)
}

// Name is the name the cookie called base has on this request.
func (c *Cookies) Name(r *http.Request, base string) string {
	return c.pick(r, base, "__Host-"+base, "__Secure-"+base)
}

// pick returns, of a cookie's three possible names (plain, __Host- and
// __Secure-), the one it has on this request: callers that read a cookie
// on every request compute the names once.
func (c *Cookies) pick(r *http.Request, plain, host, secure string) string {
	switch {
	case !c.https(r):
		return plain
	case c.shared(r):
		return secure
	}
	return host
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
// with, or browsers keep the original. A shared cookie's host-only
// counterpart, left from before the domain was configured, goes too: a
// logout must not leave a session behind.
func (c *Cookies) Clear(w http.ResponseWriter, r *http.Request, base string) {
	http.SetCookie(w, c.cookie(r, c.Name(r, base), "", -1))
	if c.shared(r) {
		own := *c
		own.domain = ""
		http.SetCookie(w, own.cookie(r, own.Name(r, base), "", -1))
	}
}

// Open returns the payload of the cookie called base, or nil when the
// request has none that opens (absent, forged, expired or sealed under
// another name). Over plain HTTP a shared cookie and a host-only one have
// the same name, and a browser may send both; the first that opens counts.
func (c *Cookies) Open(r *http.Request, base string) []byte {
	payload, _ := c.appendOpen(nil, r, c.Name(r, base), c.now())
	return payload
}

// appendOpen is Open for the cookie named name (as Name gives it) at the
// time now, appending the payload to dst. It reports whether a cookie opened; if
// none did, dst comes back unchanged. It reads the Cookie header lines
// itself, as net/http does, instead of through Request.CookiesNamed, which
// allocates a slice and a Cookie for every match.
func (c *Cookies) appendOpen(dst []byte, r *http.Request, name string, now time.Time) ([]byte, bool) {
	for _, line := range r.Header["Cookie"] {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			k, v, _ := strings.Cut(textproto.TrimString(part), "=")
			if textproto.TrimString(k) != name {
				continue
			}
			// A value in double quotes counts without them, as net/http
			// reads it; any byte a cookie value may not hold makes the
			// base64 decoding of the seal fail.
			if len(v) > 1 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			if v == "" {
				continue
			}
			if out, err := c.codec.AppendOpen(dst, name, v, now); err == nil {
				return out, true
			}
		}
	}
	return dst, false
}

// Present reports whether the request carries the cookie called base at
// all, whether or not it opens.
func (c *Cookies) Present(r *http.Request, base string) bool {
	_, err := r.Cookie(c.Name(r, base))
	return err == nil
}

func (c *Cookies) cookie(r *http.Request, name, value string, maxAge int) *http.Cookie {
	ck := &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     "/",
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   c.https(r),
		SameSite: http.SameSiteLaxMode,
	}
	if c.shared(r) {
		ck.Domain = c.domain
	}
	return ck
}
