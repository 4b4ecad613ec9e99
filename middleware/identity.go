package middleware

import (
	"context"
	"net/http"
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

// ContextWithIdentity returns a copy of ctx carrying id.
func ContextWithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// IdentityFromContext returns the identity the middleware put on a request's
// context, and whether there is one.
func IdentityFromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// setIdentityHeaders replaces any client-sent identity headers with id's,
// and adds the user headers when Config.UserHeaders asks for them.
func (m *Middleware) setIdentityHeaders(h http.Header, id Identity) {
	stripIdentityHeaders(h)
	h.Set(HeaderOpenID, id.OpenID)
	h.Set(HeaderAppID, id.AppID)
	h.Set(HeaderLoginMethod, id.Method)
	if id.UnionID != "" {
		h.Set(HeaderUnionID, id.UnionID)
	}
	if !m.cfg.UserHeaders {
		return
	}
	// Never the openid for a missing unionid: the application would take
	// it for a unionid.
	user := id.OpenID
	if m.cfg.UserID == "unionid" {
		user = id.UnionID
	}
	if user == "" {
		return
	}
	for _, k := range []string{HeaderForwardedUser, HeaderAuthRequestUser, HeaderRemoteUser} {
		h.Set(k, user)
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
