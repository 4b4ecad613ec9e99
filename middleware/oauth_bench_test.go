package middleware

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkOAuthStart measures what a WeChat browser costs the site before
// it leaves for WeChat: a state stored, a sealed binding cookie, a redirect.
func BenchmarkOAuthStart(b *testing.B) {
	mw, err := New(Config{AppID: testAppID, AppSecret: testSecret, PushToken: testToken, SessionKeys: [][]byte{testSessionKey}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = mw.Close() })
	h := mw.Handler(http.NotFoundHandler())
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodGet, "/p", nil)
		r.Header.Set("User-Agent", uaIOSWeChat)
		r.Header.Set("Accept", "text/html")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusFound {
			b.Fatalf("status %d", w.Code)
		}
	}
}

// BenchmarkOAuthCallbackRefused measures the cheapest refusal, a callback
// whose state this browser does not hold: no WeChat call, one store read.
func BenchmarkOAuthCallbackRefused(b *testing.B) {
	mw, err := New(Config{AppID: testAppID, AppSecret: testSecret, PushToken: testToken, SessionKeys: [][]byte{testSessionKey}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = mw.Close() })
	h := mw.Handler(http.NotFoundHandler())
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodGet, "/wechat/oauth/callback?code=abc&state=0123456789abcdef0123456789abcdef", nil)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusBadRequest {
			b.Fatalf("status %d", w.Code)
		}
	}
}
