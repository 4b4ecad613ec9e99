package middleware

import (
	"context"
	"net/http"
	"net/textproto"
	"time"

	"github.com/wechat-login/caddy-wechat-login/internal/session"
)

// Login methods, as found in Identity.Method and the X-WeChat-Login-Method
// header.
const (
	MethodQR    = "qr"    // Official Account parametric QR code
	MethodOAuth = "oauth" // web authorization inside WeChat's browser
	MethodOpen  = "open"  // Open Platform website login
	MethodCode  = "code"  // a code the site shows, sent to the Official Account in chat
)

// Identity headers set on requests passed to the wrapped handler. Copies sent
// by the client are always removed first.
const (
	HeaderOpenID      = "X-WeChat-OpenID"
	HeaderUnionID     = "X-WeChat-UnionID"
	HeaderAppID       = "X-WeChat-AppID"
	HeaderLoginMethod = "X-WeChat-Login-Method"
)

// User headers, set on requests passed to the wrapped handler with
// Config.UserHeaders: the names other authentication proxies (oauth2-proxy,
// Authelia, nginx auth_request setups) pass the user in, each carrying the
// user's Config.UserID. Copies sent by the client are always removed, with
// or without the option.
const (
	HeaderForwardedUser   = "X-Forwarded-User"
	HeaderAuthRequestUser = "X-Auth-Request-User"
	HeaderRemoteUser      = "Remote-User"
)

// userHeaders are the user headers, in the spelling stripIdentityHeaders
// compares names in: lower case, with '-' standing for any character that
// is not a letter or a digit.
var userHeaders = [...]string{"x-forwarded-user", "x-auth-request-user", "remote-user"}

// Identity is the logged-in WeChat user.
type Identity struct {
	AppID   string `json:"app_id"`
	OpenID  string `json:"openid"`
	UnionID string `json:"unionid,omitempty"`
	// Method is how the user logged in: MethodQR, MethodCode, MethodOAuth
	// or MethodOpen.
	Method string `json:"login_method"`
	// Nickname and AvatarURL are only known after snsapi_userinfo consent.
	Nickname  string    `json:"nickname,omitempty"`
	AvatarURL string    `json:"avatar_url,omitempty"`
	LoginAt   time.Time `json:"login_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

type identityKey struct{}

// identityContext is the context ContextWithIdentity returns: the parent
// and the identity in one allocation, where context.WithValue would take
// one for its context and another for the boxed Identity.
type identityContext struct {
	context.Context
	id Identity
}

// Value answers identityKey{} with a pointer to the identity (no copy, no
// allocation) and hands every other key to the parent.
func (c *identityContext) Value(key any) any {
	if _, ok := key.(identityKey); ok {
		return &c.id
	}
	return c.Context.Value(key)
}

func (c *identityContext) String() string { return "middleware.ContextWithIdentity" }

// ContextWithIdentity returns a copy of ctx carrying id.
func ContextWithIdentity(ctx context.Context, id Identity) context.Context {
	return &identityContext{Context: ctx, id: id}
}

// IdentityFromContext returns the identity the middleware put on a request's
// context, and whether there is one.
func IdentityFromContext(ctx context.Context) (Identity, bool) {
	if c, ok := ctx.(*identityContext); ok {
		return c.id, true
	}
	if p, ok := ctx.Value(identityKey{}).(*Identity); ok {
		return *p, true
	}
	return Identity{}, false
}

// The identity and user headers as http.Header.Set would key them (net/http
// canonicalises "WeChat" to "Wechat"), worked out once rather than on every
// request.
var (
	keyOpenID          = textproto.CanonicalMIMEHeaderKey(HeaderOpenID)
	keyUnionID         = textproto.CanonicalMIMEHeaderKey(HeaderUnionID)
	keyAppID           = textproto.CanonicalMIMEHeaderKey(HeaderAppID)
	keyLoginMethod     = textproto.CanonicalMIMEHeaderKey(HeaderLoginMethod)
	keyForwardedUser   = textproto.CanonicalMIMEHeaderKey(HeaderForwardedUser)
	keyAuthRequestUser = textproto.CanonicalMIMEHeaderKey(HeaderAuthRequestUser)
	keyRemoteUser      = textproto.CanonicalMIMEHeaderKey(HeaderRemoteUser)
)

// setIdentityHeaders replaces any client-sent identity headers with id's,
// and adds the user headers when Config.UserHeaders asks for them.
func (m *Middleware) setIdentityHeaders(h http.Header, id Identity) {
	stripIdentityHeaders(h)
	m.addIdentityHeaders(h, id)
}

// addIdentityHeaders sets id's identity headers (and user headers, when
// Config.UserHeaders asks for them) in h, which stripIdentityHeaders has
// already cleared of them. Each header gets a one-value slice as
// http.Header.Set would give it, all cut from one allocation.
func (m *Middleware) addIdentityHeaders(h http.Header, id Identity) {
	// Never the openid for a missing unionid: the application would take
	// it for a unionid.
	user := ""
	if m.cfg.UserHeaders {
		user = id.OpenID
		if m.cfg.UserID == "unionid" {
			user = id.UnionID
		}
	}
	n := 3
	if id.UnionID != "" {
		n++
	}
	if user != "" {
		n += 3
	}
	vals := make([]string, n)
	i := 0
	set := func(k, v string) {
		vals[i] = v
		h[k] = vals[i : i+1 : i+1]
		i++
	}
	set(keyOpenID, id.OpenID)
	set(keyAppID, id.AppID)
	set(keyLoginMethod, id.Method)
	if id.UnionID != "" {
		set(keyUnionID, id.UnionID)
	}
	if user != "" {
		set(keyForwardedUser, user)
		set(keyAuthRequestUser, user)
		set(keyRemoteUser, user)
	}
}

// stripIdentityHeaders removes every header in the X-WeChat- namespace and
// every user header, in any spelling: CGI, PHP and many frameworks read
// "X_WeChat_OpenID" and "X.WeChat.OpenID" as the same variable as
// X-WeChat-OpenID (HTTP_X_WECHAT_OPENID), and "Remote_User" as Remote-User,
// and net/http does not canonicalise names with underscores or dots, so
// deleting the canonical names alone is not enough.
func stripIdentityHeaders(h http.Header) {
	for k := range h {
		if isIdentityHeaderName(k) || isUserHeaderName(k) {
			delete(h, k)
		}
	}
}

// isUserHeaderName reports whether a header name reads as one of the user
// headers once letters are lower-cased and every other character is taken
// as a separator.
func isUserHeaderName(k string) bool {
	for _, want := range userHeaders {
		if len(k) == len(want) && sameSpelling(k, want) {
			return true
		}
	}
	return false
}

// sameSpelling reports whether k reads as want, a lower-case name of the
// same length whose '-' stand for any character but a letter or a digit.
func sameSpelling(k, want string) bool {
	for i := 0; i < len(want); i++ {
		c := k[i]
		if want[i] == '-' {
			if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
				return false
			}
			continue
		}
		if c|0x20 != want[i] {
			return false
		}
	}
	return true
}

// isIdentityHeaderName reports whether a header name reads as
// "x-wechat-…" once letters are lower-cased and every other character is
// taken as a separator.
func isIdentityHeaderName(k string) bool {
	const ns = "x-wechat-"
	return len(k) >= len(ns) && sameSpelling(k[:len(ns)], ns)
}

// logID shortens an openid (or any identifier) for logs: enough to correlate
// lines, not enough to identify the user elsewhere.
func logID(s string) string { return session.LogID(s) }
