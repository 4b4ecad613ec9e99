package middleware

import (
	"encoding/json"
	"errors"
	"net/http"

	"go.uber.org/zap"

	"github.com/wechat-login/caddy-wechat-login/wechat"
)

// wechatFailure answers a request whose WeChat call failed: 503 for the user,
// a precise line for the operator (the error text never holds secrets).
func (m *Middleware) wechatFailure(w http.ResponseWriter, what string, err error) {
	var werr *wechat.Error
	fields := []zap.Field{zap.String("call", what), zap.Error(err)}
	if errors.As(err, &werr) {
		fields = append(fields, zap.Int("errcode", werr.Code))
	}
	m.log.Error("WeChat call failed", fields...)
	m.metrics.WeChatFailure(what)
	switch {
	case wechat.IsRateLimited(err):
		w.Header().Set("Retry-After", "60")
		writeError(w, http.StatusServiceUnavailable, "WeChat is refusing more login codes right now; try again later")
	case wechat.IsIPNotWhitelisted(err):
		writeError(w, http.StatusServiceUnavailable, "WeChat login is misconfigured on this site (server address not allowed by WeChat)")
	default:
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "WeChat is unavailable; try again in a moment")
	}
}

func (m *Middleware) storeFailure(w http.ResponseWriter, what string, err error) {
	m.log.Error("store failure", zap.String("op", what), zap.Error(err))
	w.Header().Set("Retry-After", "5")
	writeError(w, http.StatusServiceUnavailable, "login is temporarily unavailable; try again in a moment")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, reason string) {
	writeJSON(w, status, map[string]string{"error": reason})
}

func writeText(w http.ResponseWriter, status int, body string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeError(w, http.StatusMethodNotAllowed, "method not allowed")
}
