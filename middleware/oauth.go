package middleware

import "net/http"

// handleOAuthStart serves GET {prefix}/oauth/start?next=…[&method=open].
func (m *Middleware) handleOAuthStart(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotFound, "not implemented yet")
}

// handleOAuthCallback serves GET {prefix}/oauth/callback.
func (m *Middleware) handleOAuthCallback(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotFound, "not implemented yet")
}

// oauthAutoRedirect sends a browser inside WeChat (MicroMessenger in the
// User-Agent) straight into in-WeChat authorization when that method is
// enabled, and reports whether it did.
func (m *Middleware) oauthAutoRedirect(w http.ResponseWriter, r *http.Request, next string) bool {
	return false
}
