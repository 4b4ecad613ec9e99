package middleware

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/middleware/bigcachestore"
	"github.com/wechat-login/caddy-wechat-login/middleware/store"
)

// testClock is a clock the test moves; the store's background work reads it
// too.
type testClock struct{ nanos atomic.Int64 }

func newTestClock(t time.Time) *testClock {
	c := &testClock{}
	c.nanos.Store(t.UnixNano())
	return c
}

func (c *testClock) Now() time.Time          { return time.Unix(0, c.nanos.Load()) }
func (c *testClock) Set(t time.Time)         { c.nanos.Store(t.UnixNano()) }
func (c *testClock) Advance(d time.Duration) { c.nanos.Add(int64(d)) }

// recordingList is a RevocationList that remembers how long each logout is
// to be kept.
type recordingList struct {
	mu    sync.Mutex
	until map[string]time.Time
}

func (l *recordingList) Revoke(id string, until time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.until == nil {
		l.until = map[string]time.Time{}
	}
	l.until[id] = until
	return nil
}

func (l *recordingList) Revoked(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.until[id]
	return ok
}

func (l *recordingList) Until(id string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.until[id]
}

// gatewayMiddleware is a middleware for the gateway options, with no WeChat
// behind it: sessions are issued directly (issueSession).
func gatewayMiddleware(t *testing.T, mutate func(*Config)) *Middleware {
	t.Helper()
	cfg := validConfig()
	cfg.SiteName = "Gateway"
	cfg.Revocations = &recordingList{}
	if mutate != nil {
		mutate(&cfg)
	}
	mw, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = mw.Close() })
	return mw
}

// issueSession logs id in and returns the session cookie as a browser
// would send it back.
func issueSession(t *testing.T, mw *Middleware, id Identity) *http.Cookie {
	t.Helper()
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, "http://site.test/", nil)
	if err := mw.startSession(w, r, id, ""); err != nil {
		t.Fatal(err)
	}
	for _, c := range w.Result().Cookies() {
		if c.Name == sessionCookie {
			return &http.Cookie{Name: c.Name, Value: c.Value}
		}
	}
	t.Fatal("no session cookie issued")
	return nil
}

// serve sends one request through mw's gate in front of next, with the
// given headers (a Cookie header line per "Cookie" entry).
func serve(mw *Middleware, method, target string, next http.Handler, cookie *http.Cookie, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "http://site.test"+target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	if cookie != nil {
		r.AddCookie(cookie)
	}
	w := httptest.NewRecorder()
	if next == nil {
		next = http.NotFoundHandler()
	}
	mw.Handler(next).ServeHTTP(w, r)
	return w
}

// upstream records the request headers the wrapped handler received.
type upstream struct {
	mu   sync.Mutex
	seen []http.Header
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.seen = append(u.seen, r.Header.Clone())
	u.mu.Unlock()
	_, _ = w.Write([]byte("upstream"))
}

func (u *upstream) last(t *testing.T) http.Header {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.seen) == 0 {
		t.Fatal("the request did not reach the wrapped handler")
	}
	h := u.seen[len(u.seen)-1]
	u.seen = nil
	return h
}

// switchStore is a store that can be made to fail, and counts the calls
// that would change it.
type switchStore struct {
	store.Store
	down   atomic.Bool
	writes atomic.Int64
}

var errDown = errors.New("connection refused")

func (s *switchStore) Get(ctx context.Context, key string) ([]byte, error) {
	if s.down.Load() {
		return nil, errDown
	}
	return s.Store.Get(ctx, key)
}

func (s *switchStore) Create(ctx context.Context, key string, v []byte, ttl time.Duration) error {
	s.writes.Add(1)
	return s.Store.Create(ctx, key, v, ttl)
}

func (s *switchStore) Update(ctx context.Context, key string, old, v []byte) error {
	s.writes.Add(1)
	return s.Store.Update(ctx, key, old, v)
}

func (s *switchStore) Take(ctx context.Context, key string) ([]byte, error) {
	s.writes.Add(1)
	return s.Store.Take(ctx, key)
}

func (s *switchStore) Delete(ctx context.Context, key string) error {
	s.writes.Add(1)
	return s.Store.Delete(ctx, key)
}

// TestReady: {prefix}/ready answers 200 while the store answers (a key
// that is not there is an answer) and 503 with a short reason when it does
// not, needs no login, is never cached and writes nothing.
func TestReady(t *testing.T) {
	inner, err := bigcachestore.New(bigcachestore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inner.Close() })
	st := &switchStore{Store: inner}
	mw := gatewayMiddleware(t, func(c *Config) { c.Store = st })

	for _, tc := range []struct {
		name   string
		method string
		down   bool
		status int
		body   map[string]string
	}{
		{"store answers", http.MethodGet, false, http.StatusOK, map[string]string{"status": "ready"}},
		{"HEAD", http.MethodHead, false, http.StatusOK, nil},
		{"store down", http.MethodGet, true, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": "store unavailable"}},
		{"store back", http.MethodGet, false, http.StatusOK, map[string]string{"status": "ready"}},
		{"POST", http.MethodPost, false, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st.down.Store(tc.down)
			w := serve(mw, tc.method, "/wechat/ready", nil, nil, "Accept", "application/json")
			if w.Code != tc.status {
				t.Fatalf("%s /wechat/ready: %d %s", tc.method, w.Code, w.Body)
			}
			if got := w.Header().Get("Cache-Control"); got != "no-store" {
				t.Fatalf("Cache-Control %q", got)
			}
			if tc.body != nil {
				var got map[string]string
				if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || len(got) != len(tc.body) {
					t.Fatalf("body %q: %v", w.Body, err)
				}
				for k, v := range tc.body {
					if got[k] != v {
						t.Fatalf("body %v, want %v", got, tc.body)
					}
				}
			}
			if strings.Contains(w.Body.String(), errDown.Error()) {
				t.Fatalf("the answer tells the store's error: %s", w.Body)
			}
		})
	}
	if n := st.writes.Load(); n != 0 {
		t.Fatalf("readiness probes wrote to the store %d times", n)
	}
	_ = mw.Close()
	if w := serve(mw, http.MethodGet, "/wechat/ready", nil, nil); w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "shutting down") {
		t.Fatalf("after Close: %d %s", w.Code, w.Body)
	}
}

// navigation is what a browser sends with a top-level navigation started
// from site: "same-origin", "same-site", "cross-site" or "none".
func navigation(site string) []string {
	return []string{"Sec-Fetch-Site", site, "Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "document", "Accept", "text/html"}
}

// TestLogoutLink: GET {prefix}/logout logs out at once only when the
// browser says this site or the user alone started the navigation;
// anything else gets a page whose form posts to the protected logout.
func TestLogoutLink(t *testing.T) {
	mw := gatewayMiddleware(t, func(c *Config) { c.RedirectHosts = []string{"app.example.com"} })
	app := &upstream{}
	alice := Identity{AppID: testAppID, OpenID: "oAlice", Method: MethodQR}

	tests := []struct {
		name      string
		method    string
		next      string
		hdr       []string
		loggedOut bool
		location  string // after logging out
	}{
		{"link on this site", http.MethodGet, "/bye", navigation("same-origin"), true, "/bye"},
		{"typed or bookmarked", http.MethodGet, "", navigation("none"), true, "/"},
		{"next on an allowed host", http.MethodGet, "https://app.example.com/x", navigation("same-origin"), true, "https://app.example.com/x"},
		{"next elsewhere", http.MethodGet, "https://evil.example/", navigation("same-origin"), true, "/"},
		{"next protocol-relative", http.MethodGet, "//evil.example/", navigation("none"), true, "/"},
		{"link on another site", http.MethodGet, "/bye", navigation("cross-site"), false, ""},
		{"link on a sibling subdomain", http.MethodGet, "/bye", navigation("same-site"), false, ""},
		{"browser without Sec-Fetch headers", http.MethodGet, "/bye", []string{"Accept", "text/html"}, false, ""},
		{"image on this site", http.MethodGet, "", []string{"Sec-Fetch-Site", "same-origin", "Sec-Fetch-Mode", "no-cors", "Sec-Fetch-Dest", "image"}, false, ""},
		{"script on this site", http.MethodGet, "", []string{"Sec-Fetch-Site", "same-origin", "Sec-Fetch-Mode", "cors", "Sec-Fetch-Dest", "empty"}, false, ""},
		{"frame on this site", http.MethodGet, "", []string{"Sec-Fetch-Site", "same-origin", "Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "iframe"}, false, ""},
		{"prefetch", http.MethodGet, "", append(navigation("same-origin"), "Sec-Purpose", "prefetch;prerender"), false, ""},
		{"legacy prefetch", http.MethodGet, "", append(navigation("same-origin"), "Purpose", "prefetch"), false, ""},
		{"HEAD", http.MethodHead, "", navigation("same-origin"), false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cookie := issueSession(t, mw, alice)
			target := "/wechat/logout"
			if tc.next != "" {
				target += "?next=" + url.QueryEscape(tc.next)
			}
			w := serve(mw, tc.method, target, app, cookie, tc.hdr...)
			stillIn := serve(mw, http.MethodGet, "/", app, cookie, "Accept", "application/json").Code == http.StatusOK
			if tc.loggedOut {
				if w.Code != http.StatusSeeOther || w.Header().Get("Location") != tc.location {
					t.Fatalf("logout: %d to %q, want 303 to %q", w.Code, w.Header().Get("Location"), tc.location)
				}
				if c := w.Result().Cookies(); len(c) != 1 || c[0].Name != sessionCookie || c[0].MaxAge >= 0 {
					t.Fatalf("session cookie not cleared: %+v", c)
				}
				if stillIn {
					t.Fatal("the session still works after the logout")
				}
				return
			}
			if !stillIn {
				t.Fatal("the session was ended by a request no one on this site made")
			}
			if w.Code != http.StatusOK || len(w.Result().Cookies()) != 0 {
				t.Fatalf("confirm page: %d, cookies %v", w.Code, w.Result().Cookies())
			}
			h := w.Header()
			if h.Get("Cache-Control") != "no-store" || h.Get("X-Frame-Options") != "DENY" || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
				t.Fatalf("confirm page headers %v", h)
			}
			csp := h.Get("Content-Security-Policy")
			for _, want := range []string{"default-src 'none'", "form-action 'self'", "frame-ancestors 'none'", "base-uri 'none'"} {
				if !strings.Contains(csp, want) {
					t.Fatalf("policy %q lacks %q", csp, want)
				}
			}
			if strings.Contains(csp, "script-src") {
				t.Fatalf("the confirm page allows scripts: %q", csp)
			}
			body := w.Body.String()
			if tc.method == http.MethodHead {
				if body != "" {
					t.Fatalf("HEAD with a body: %q", body)
				}
				return
			}
			if !strings.Contains(body, `<form method="post" action="/wechat/logout">`) {
				t.Fatalf("no logout form in %s", body)
			}
			if !strings.Contains(body, `name="next" value="`+map[bool]string{true: tc.next, false: "/"}[tc.next != ""]+`"`) {
				t.Fatalf("form does not carry next %q: %s", tc.next, body)
			}
		})
	}

	t.Run("confirm page's form logs out", func(t *testing.T) {
		cookie := issueSession(t, mw, alice)
		w := serve(mw, http.MethodGet, "/wechat/logout?next="+url.QueryEscape("https://app.example.com/after"), app, cookie, navigation("cross-site")...)
		if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "form-action 'self' https://app.example.com;") {
			t.Fatalf("policy %q does not let the form's redirect reach next's origin", csp)
		}
		m := regexp.MustCompile(`name="next" value="([^"]*)"`).FindStringSubmatch(w.Body.String())
		if m == nil {
			t.Fatalf("no next in %s", w.Body)
		}
		form := url.Values{"next": {m[1]}}.Encode()

		// The form submitted from another site is refused, as any
		// cross-origin POST is.
		post := func(site string) *httptest.ResponseRecorder {
			r := httptest.NewRequest(http.MethodPost, "http://site.test/wechat/logout", strings.NewReader(form))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.Header.Set("Sec-Fetch-Site", site)
			r.AddCookie(cookie)
			w := httptest.NewRecorder()
			mw.Handler(app).ServeHTTP(w, r)
			return w
		}
		if w := post("cross-site"); w.Code != http.StatusForbidden {
			t.Fatalf("cross-site POST: %d", w.Code)
		}
		w = post("same-origin")
		if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "https://app.example.com/after" {
			t.Fatalf("confirmed logout: %d to %q", w.Code, w.Header().Get("Location"))
		}
		if serve(mw, http.MethodGet, "/", app, cookie, "Accept", "application/json").Code != http.StatusUnauthorized {
			t.Fatal("the session works after the confirmed logout")
		}
	})

	t.Run("without a session", func(t *testing.T) {
		w := serve(mw, http.MethodGet, "/wechat/logout", app, nil, navigation("same-origin")...)
		if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/" {
			t.Fatalf("logout without a session: %d %q", w.Code, w.Header().Get("Location"))
		}
	})

	t.Run("other methods", func(t *testing.T) {
		w := serve(mw, http.MethodPut, "/wechat/logout", app, nil, "Sec-Fetch-Site", "same-origin")
		if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "GET, POST" {
			t.Fatalf("PUT: %d, Allow %q", w.Code, w.Header().Get("Allow"))
		}
	})
}

// TestSessionRefreshThroughGate: a session in use is issued again, through
// the gate and {prefix}/userinfo, once SessionRefresh has passed, never
// past SessionMaxAge from the login; a logout then holds until that bound,
// for every copy of the cookie.
func TestSessionRefreshThroughGate(t *testing.T) {
	start := time.Unix(1_700_000_000, 0).UTC()
	clock := newTestClock(start)
	revoked := &recordingList{}
	mw := gatewayMiddleware(t, func(c *Config) {
		c.Now = clock.Now
		c.Revocations = revoked
		c.SessionTTL, c.SessionRefresh, c.SessionMaxAge = time.Hour, 10*time.Minute, 2*time.Hour
	})
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := IdentityFromContext(r.Context())
		_ = json.NewEncoder(w).Encode(id)
	})
	cookie := issueSession(t, mw, Identity{AppID: testAppID, OpenID: "oAlice", Method: MethodQR})

	use := func(path string) (Identity, *http.Cookie, int) {
		t.Helper()
		w := serve(mw, http.MethodGet, path, app, cookie, "Accept", "application/json")
		var id Identity
		_ = json.Unmarshal(w.Body.Bytes(), &id)
		var set *http.Cookie
		for _, c := range w.Result().Cookies() {
			if c.Name == sessionCookie {
				set = c
			}
		}
		return id, set, w.Code
	}
	for _, s := range []struct {
		at        time.Duration
		path      string
		refreshed bool
		expires   time.Duration // since the login; 0: refused
	}{
		{5 * time.Minute, "/page", false, time.Hour},
		{10 * time.Minute, "/page", true, 70 * time.Minute},
		{15 * time.Minute, "/wechat/userinfo", false, 70 * time.Minute},
		{25 * time.Minute, "/wechat/userinfo", true, 85 * time.Minute},
		{84 * time.Minute, "/page", true, 2 * time.Hour},
		{110 * time.Minute, "/page", false, 2 * time.Hour},
		{2 * time.Hour, "/page", false, 0},
	} {
		clock.Set(start.Add(s.at))
		id, set, code := use(s.path)
		if s.expires == 0 {
			if code != http.StatusUnauthorized || set != nil {
				t.Fatalf("at +%v: a session past its max age: %d, cookie %v", s.at, code, set)
			}
			continue
		}
		if code != http.StatusOK || !id.LoginAt.Equal(start) || !id.ExpiresAt.Equal(start.Add(s.expires)) {
			t.Fatalf("at +%v %s: %d, identity %+v; want login %v, expiry +%v", s.at, s.path, code, id, start, s.expires)
		}
		if (set != nil) != s.refreshed {
			t.Fatalf("at +%v %s: cookie set %v, want refreshed %v", s.at, s.path, set, s.refreshed)
		}
		if set != nil {
			if want := int(id.ExpiresAt.Sub(clock.Now()) / time.Second); set.MaxAge != want || !set.HttpOnly {
				t.Fatalf("at +%v: refreshed cookie %+v, want Max-Age %d", s.at, set, want)
			}
			cookie = &http.Cookie{Name: set.Name, Value: set.Value}
		}
	}

	// A fresh login, refreshed once, then logged out: the logout is kept
	// until two hours after the login, and the first cookie, which a
	// refresh could carry that far, is refused with the rest.
	clock.Set(start)
	cookie = issueSession(t, mw, Identity{AppID: testAppID, OpenID: "oBob", Method: MethodQR})
	first := cookie
	clock.Set(start.Add(30 * time.Minute))
	if _, set, code := use("/page"); code != http.StatusOK || set == nil {
		t.Fatalf("refresh: %d %v", code, set)
	} else {
		cookie = &http.Cookie{Name: set.Name, Value: set.Value}
	}
	rec, err := mw.sessions.Get(requestWith(cookie))
	if err != nil {
		t.Fatal(err)
	}
	w := serve(mw, http.MethodPost, "/wechat/logout", nil, cookie, "Sec-Fetch-Site", "same-origin")
	if w.Code != http.StatusSeeOther {
		t.Fatalf("logout: %d %s", w.Code, w.Body)
	}
	if until, want := revoked.Until(rec.ID), start.Add(2*time.Hour+time.Minute); !until.Equal(want) {
		t.Fatalf("logout kept until %v, want %v: a refreshed copy could live until then", until, want)
	}
	for _, c := range []*http.Cookie{first, cookie} {
		cookie = c
		if _, _, code := use("/page"); code != http.StatusUnauthorized {
			t.Fatalf("a cookie of the logged-out session: %d", code)
		}
	}
}

// TestNoRefreshByDefault: without SessionRefresh, using a session never
// sets a cookie, and a logout is kept until the session's own expiry.
func TestNoRefreshByDefault(t *testing.T) {
	start := time.Unix(1_700_000_000, 0).UTC()
	clock := newTestClock(start)
	revoked := &recordingList{}
	mw := gatewayMiddleware(t, func(c *Config) { c.Now, c.Revocations, c.SessionTTL = clock.Now, revoked, time.Hour })
	cookie := issueSession(t, mw, Identity{AppID: testAppID, OpenID: "oAlice", Method: MethodQR})
	clock.Advance(50 * time.Minute)
	for _, path := range []string{"/page", "/wechat/userinfo"} {
		if w := serve(mw, http.MethodGet, path, &upstream{}, cookie); w.Code != http.StatusOK || len(w.Result().Cookies()) != 0 {
			t.Fatalf("%s: %d, cookies %v", path, w.Code, w.Result().Cookies())
		}
	}
	rec, _ := mw.sessions.Get(requestWith(cookie))
	serve(mw, http.MethodPost, "/wechat/logout", nil, cookie, "Sec-Fetch-Site", "same-origin")
	if until, want := revoked.Until(rec.ID), start.Add(time.Hour+time.Minute); !until.Equal(want) {
		t.Fatalf("logout kept until %v, want %v", until, want)
	}
}

func requestWith(c *http.Cookie) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "http://site.test/", nil)
	r.AddCookie(c)
	return r
}

// spoofedUserHeaders are client-sent claims of a user, in the spellings
// CGI, PHP and frameworks read as the real headers.
var spoofedUserHeaders = []string{
	"X-Forwarded-User", "mallory",
	"X_Forwarded_User", "mallory",
	"x.auth.request.user", "mallory",
	"X-Auth-Request-User", "mallory",
	"Remote-User", "mallory",
	"Remote_User", "mallory",
	"X-WeChat-OpenID", "oMallory",
}

// TestUserHeaders: with UserHeaders, the wrapped handler gets the user's
// UserID in X-Forwarded-User, X-Auth-Request-User and Remote-User, and
// none of them when UserID is unionid and the user has none; with or
// without the option, no client-sent copy of them gets through, on
// protected and public paths alike.
func TestUserHeaders(t *testing.T) {
	withUnion := Identity{AppID: testAppID, OpenID: "oAlice", UnionID: "uAlice", Method: MethodQR}
	openOnly := Identity{AppID: testAppID, OpenID: "oBob", Method: MethodOAuth}
	userNames := []string{HeaderForwardedUser, HeaderAuthRequestUser, HeaderRemoteUser}
	for _, tc := range []struct {
		name    string
		on      bool
		userID  string
		id      Identity
		want    string // "" for no user headers
		wantWeC string // X-WeChat-OpenID
	}{
		{"off", false, "", withUnion, "", "oAlice"},
		{"openid", true, "", withUnion, "oAlice", "oAlice"},
		{"openid explicitly", true, "openid", openOnly, "oBob", "oBob"},
		{"unionid", true, "unionid", withUnion, "uAlice", "oAlice"},
		{"unionid missing", true, "unionid", openOnly, "", "oBob"},
		{"unionid off", false, "unionid", withUnion, "", "oAlice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mw := gatewayMiddleware(t, func(c *Config) {
				c.UserHeaders, c.UserID = tc.on, tc.userID
				c.PublicPaths = []string{"/public"}
			})
			app := &upstream{}
			cookie := issueSession(t, mw, tc.id)
			if w := serve(mw, http.MethodGet, "/page", app, cookie, spoofedUserHeaders...); w.Code != http.StatusOK {
				t.Fatalf("protected page: %d %s", w.Code, w.Body)
			}
			h := app.last(t)
			for _, k := range userNames {
				if got := h.Values(k); tc.want == "" && len(got) != 0 || tc.want != "" && (len(got) != 1 || got[0] != tc.want) {
					t.Fatalf("%s: %q, want %q", k, got, tc.want)
				}
			}
			if got := h.Values(HeaderOpenID); len(got) != 1 || got[0] != tc.wantWeC {
				t.Fatalf("%s: %q", HeaderOpenID, got)
			}
			assertNoSpoofedUser(t, h, tc.want)

			// A public path gets no user at all.
			if w := serve(mw, http.MethodGet, "/public/x", app, cookie, spoofedUserHeaders...); w.Code != http.StatusOK {
				t.Fatalf("public path: %d", w.Code)
			}
			h = app.last(t)
			assertNoSpoofedUser(t, h, "")
			for _, k := range append(userNames, HeaderOpenID) {
				if h.Get(k) != "" {
					t.Fatalf("public path got %s: %q", k, h.Get(k))
				}
			}

			// The forward-auth answer carries the same headers.
			w := serve(mw, http.MethodGet, "/wechat/auth", nil, cookie, spoofedUserHeaders...)
			if w.Code != http.StatusOK || w.Header().Get(HeaderForwardedUser) != tc.want || w.Header().Get(HeaderRemoteUser) != tc.want {
				t.Fatalf("/wechat/auth: %d %v", w.Code, w.Header())
			}
		})
	}
}

// assertNoSpoofedUser checks that no header spelled like a user header
// (other than the canonical one, holding want) reached the handler.
func assertNoSpoofedUser(t *testing.T, h http.Header, want string) {
	t.Helper()
	for k, v := range h {
		switch {
		case isUserHeaderName(k) && (k != http.CanonicalHeaderKey(k) || v[0] != want || len(v) != 1):
			t.Fatalf("a client's %s: %q reached the handler", k, v)
		case strings.Contains(strings.Join(v, ","), "allory"):
			t.Fatalf("a client's %s: %q reached the handler", k, v)
		}
	}
}

// TestStripSessionCookie: with StripSessionCookie, the wrapped handler sees
// the application's cookies as the browser sent them and none of the
// middleware's, whatever their name's prefix; without it, the Cookie header
// is left alone.
func TestStripSessionCookie(t *testing.T) {
	for _, on := range []bool{true, false} {
		mw := gatewayMiddleware(t, func(c *Config) {
			c.StripSessionCookie = on
			c.PublicPaths = []string{"/public"}
		})
		app := &upstream{}
		cookie := issueSession(t, mw, Identity{AppID: testAppID, OpenID: "oAlice", Method: MethodQR})
		session := cookie.Name + "=" + cookie.Value
		for _, tc := range []struct {
			name  string
			lines []string
			want  []string // with the option on
		}{
			{"session only", []string{session}, nil},
			{"mixed", []string{"theme=dark; " + session + ";lang=zh-CN", "__Host-wechat_scene=x; cart=3; __Secure-wechat_session=y; wechat_oauth=z"},
				[]string{"theme=dark; lang=zh-CN", "cart=3"}},
			{"look-alikes kept", []string{session + "; wechat_session_app=1; my_wechat_session=2; __host-wechat_scene=3; __Host-wechat_oauth=4"},
				[]string{"wechat_session_app=1; my_wechat_session=2; __host-wechat_scene=3"}},
			{"app cookie only", []string{session, "a=1;b=2"}, []string{"a=1; b=2"}},
		} {
			for _, path := range []string{"/page", "/public/x"} {
				var hdr []string
				for _, l := range tc.lines {
					hdr = append(hdr, "Cookie", l)
				}
				if w := serve(mw, http.MethodGet, path, app, nil, hdr...); w.Code != http.StatusOK {
					t.Fatalf("%s %s: %d %s", tc.name, path, w.Code, w.Body)
				}
				got := app.last(t)["Cookie"]
				want := tc.want
				if !on {
					want = tc.lines
				}
				if strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Fatalf("option %v, %s %s: handler got Cookie %q, want %q", on, tc.name, path, got, want)
				}
			}
		}
	}
}

func TestIsOwnCookie(t *testing.T) {
	for name, want := range map[string]bool{
		"wechat_session": true, "__Host-wechat_session": true, "__Secure-wechat_session": true,
		"wechat_scene": true, "__Host-wechat_scene": true, "wechat_oauth": true, "__Secure-wechat_oauth": true,
		"": false, "__Host-": false, "wechat": false, "Wechat_session": false, "__host-wechat_session": false,
		"__Host-__Secure-wechat_session": false, "wechat_session ": false, "x-wechat_session": false,
	} {
		if got := isOwnCookie(name); got != want {
			t.Errorf("isOwnCookie(%q) = %v, want %v", name, got, want)
		}
	}
}
