package middleware

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// TestServeOrRefuse: for an adapter, ServeOrRefuse hands refused requests
// back as *AccessError without writing a byte, so the adapter's own error
// handling can answer them; everything else it answers itself, and
// WriteAccessError answers refusals the way ServeNext and Handler do.
func TestServeOrRefuse(t *testing.T) {
	env := newEnv(t, wechattest.Safe)
	name, value := env.loginAs(env.browser(), "alice")
	// The same site after alice was taken off its allowlist.
	cfg := env.cfg
	cfg.AllowedOpenIDs, cfg.Store = []string{"nobody"}, env.mw.store
	mw, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mw.Close() })
	reached := false
	next := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached = true })

	serve := func(path, accept, cookie string) (*httptest.ResponseRecorder, *AccessError) {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		r.Header.Set("Accept", accept)
		if cookie != "" {
			r.AddCookie(&http.Cookie{Name: name, Value: cookie})
		}
		w := httptest.NewRecorder()
		return w, mw.ServeOrRefuse(w, r, next)
	}
	for _, tc := range []struct {
		name, accept, cookie string
		status               int
		login                bool
	}{
		{"API client without a session", "application/json", "", http.StatusUnauthorized, true},
		{"API client not allowed", "application/json", value, http.StatusForbidden, false},
		{"browser not allowed", "text/html", value, http.StatusForbidden, false},
	} {
		w, denied := serve("/data?x=1", tc.accept, tc.cookie)
		if denied == nil || denied.Status != tc.status {
			t.Fatalf("%s: ServeOrRefuse returned %v, want a %d refusal", tc.name, denied, tc.status)
		}
		if tc.login != (denied.LoginURL == "/wechat/login?next=%2Fdata%3Fx%3D1") {
			t.Fatalf("%s: login URL %q", tc.name, denied.LoginURL)
		}
		if w.Body.Len() != 0 || len(w.Header()) != 0 || w.Code != http.StatusOK && w.Code != 0 || w.Flushed {
			t.Fatalf("%s: ServeNext wrote %d %v %q before returning the refusal", tc.name, w.Code, w.Header(), w.Body)
		}
		// The built-in answer, as Handler gives it.
		w = httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, "/data?x=1", nil)
		r.Header.Set("Accept", tc.accept)
		mw.WriteAccessError(w, r, denied)
		if w.Code != tc.status {
			t.Fatalf("%s: WriteAccessError answered %d", tc.name, w.Code)
		}
		if tc.accept == "text/html" != strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") {
			t.Fatalf("%s: built-in answer is %s", tc.name, w.Header().Get("Content-Type"))
		}
	}
	// Not refusals: a browser without a session is sent to log in, and the
	// middleware's own routes are answered.
	if w, denied := serve("/data", "text/html", ""); denied != nil || w.Code != http.StatusFound {
		t.Fatalf("browser without a session: %v, %d", denied, w.Code)
	}
	if w, denied := serve("/wechat/userinfo", "application/json", ""); denied != nil || w.Code != http.StatusUnauthorized {
		t.Fatalf("own route: %v, %d", denied, w.Code)
	}
	if reached {
		t.Fatal("a refused request reached the protected handler")
	}
}
