package middleware

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// pendingPoll returns a handler with one pending login scene and a request
// polling it from the browser that created it.
func pendingPoll(b *testing.B) (http.Handler, *http.Request) {
	b.Helper()
	fake := wechattest.NewServer(wechattest.Config{})
	b.Cleanup(fake.Close)
	cfg := validConfig()
	cfg.Endpoint = fake.Endpoint()
	m, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = m.Close() })
	if err := fake.AddApp(wechattest.App{AppID: testAppID, AppSecret: testSecret, Token: testToken}); err != nil {
		b.Fatal(err)
	}
	h := m.Handler(http.NotFoundHandler())

	create := httptest.NewRequest(http.MethodPost, "http://example.com/wechat/qr", strings.NewReader(url.Values{"next": {"/"}}.Encode()))
	create.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, create)
	if w.Code != http.StatusOK {
		b.Fatalf("POST /wechat/qr: %d %s", w.Code, w.Body)
	}
	var qr struct {
		PollURL string `json:"poll_url"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &qr); err != nil {
		b.Fatal(err)
	}
	poll := httptest.NewRequest(http.MethodGet, "http://example.com"+qr.PollURL, nil)
	for _, c := range w.Result().Cookies() {
		poll.AddCookie(c)
	}
	return h, poll
}

// discardWriter is a ResponseWriter that keeps the status and drops the
// body.
type discardWriter struct {
	header http.Header
	status int
}

func (d *discardWriter) Header() http.Header         { return d.header }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(status int)      { d.status = status }

// BenchmarkPollPending measures one poll of a pending login scene without
// wait, the request every waiting login page repeats: the whole request
// through the middleware (query, binding cookie, store, answer), to a
// writer that discards the body.
func BenchmarkPollPending(b *testing.B) {
	h, r := pendingPoll(b)
	w := &discardWriter{header: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.header)
		h.ServeHTTP(w, r)
		if w.status != http.StatusOK {
			b.Fatalf("poll: %d", w.status)
		}
	}
}

// BenchmarkPollPendingParallel is BenchmarkPollPending from every core at
// once, each with its own scene, as many browsers polling would.
func BenchmarkPollPendingParallel(b *testing.B) {
	h, r := pendingPoll(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := &discardWriter{header: http.Header{}}
		r := r.Clone(r.Context())
		for pb.Next() {
			clear(w.header)
			h.ServeHTTP(w, r)
			if w.status != http.StatusOK {
				b.Errorf("poll: %d", w.status)
				return
			}
		}
	})
}

// FuzzParseSceneQuery: the scene routes read their parameters as
// url.ParseQuery would.
func FuzzParseSceneQuery(f *testing.F) {
	for _, q := range []string{
		"", "scene=0123456789abcdef0123456789abcdef", "scene=a&wait=25", "wait=1&scene=x&scene=y",
		"scene", "scene=&wait=", "a=1&&scene=b", "scene=a;b", "scene=%61", "wait=+1", "scene=a=b",
	} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		want, _ := url.ParseQuery(raw)
		got := parseSceneQuery(raw)
		if got.scenes != len(want["scene"]) || got.scene != want.Get("scene") ||
			got.waits != len(want["wait"]) || got.wait != want.Get("wait") {
			t.Fatalf("parseSceneQuery(%q) = %+v, url.ParseQuery gives %v", raw, got, want)
		}
	})
}

// TestBindingScene: the binding cookie's payload is read without the JSON
// decoder when it has the form setBinding writes, and as JSON otherwise.
func TestBindingScene(t *testing.T) {
	id := "0123456789abcdef0123456789abcdef"
	written, _ := json.Marshal(bindingRecord{Scene: id})
	for _, tc := range []struct {
		payload string
		want    string
		ok      bool
	}{
		{string(written), id, true},
		{`{ "scene" : "` + id + `" }`, id, true},
		{`{"scene":"` + strings.ToUpper(id) + `"}`, "", false},
		{`{"scene":"` + id[1:] + `g"}`, "", false},
		{`{"scene":"` + id + `"`, "", false},
		{"", "", false},
	} {
		got, ok := bindingScene([]byte(tc.payload))
		if ok != tc.ok || string(got) != tc.want {
			t.Errorf("bindingScene(%q) = %q, %v; want %q, %v", tc.payload, got, ok, tc.want, tc.ok)
		}
	}
}
