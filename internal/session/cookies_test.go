package session

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func hostOf(r *http.Request) string {
	if h, _, err := net.SplitHostPort(r.Host); err == nil {
		return h
	}
	return r.Host
}

// TestSharedCookies: cookies shared with a domain are set for it only on
// its own hosts, named __Secure- over HTTPS, and never open under the
// host-only name; clearing one clears its host-only counterpart too.
func TestSharedCookies(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	own, err := NewCookies([][]byte{[]byte("0123456789abcdef0123456789abcdef")}, func(r *http.Request) bool { return r.TLS != nil }, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	shared := own.Shared("Example.com", hostOf)
	for _, tc := range []struct {
		url, name, domain string
		secure            bool
	}{
		{"https://a.example.com/", "__Secure-s", "example.com", true},
		{"https://example.com/", "__Secure-s", "example.com", true},
		{"https://A.EXAMPLE.COM:8443/", "__Secure-s", "example.com", true},
		{"http://b.example.com:8080/", "s", "example.com", false},
		{"https://example.com.evil.net/", "__Host-s", "", true},
		{"https://notexample.com/", "__Host-s", "", true},
		{"https://a.example.com./", "__Host-s", "", true},
		{"http://127.0.0.1/", "s", "", false},
	} {
		r := httptest.NewRequest(http.MethodGet, tc.url, nil)
		w := httptest.NewRecorder()
		if err := shared.Set(w, r, "s", []byte("v"), now.Add(time.Hour), time.Hour); err != nil {
			t.Fatal(err)
		}
		c := w.Result().Cookies()
		if len(c) != 1 || c[0].Name != tc.name || c[0].Domain != tc.domain || c[0].Secure != tc.secure || c[0].Path != "/" || !c[0].HttpOnly {
			t.Errorf("%s: %+v", tc.url, c)
			continue
		}
		back := httptest.NewRequest(http.MethodGet, tc.url, nil)
		back.AddCookie(c[0])
		if string(shared.Open(back, "s")) != "v" {
			t.Errorf("%s: the cookie does not open", tc.url)
		}
	}

	// A __Secure- value renamed __Host- does not open: the seal binds the
	// name.
	r := httptest.NewRequest(http.MethodGet, "https://a.example.com/", nil)
	w := httptest.NewRecorder()
	_ = shared.Set(w, r, "s", []byte("v"), now.Add(time.Hour), time.Hour)
	renamed := httptest.NewRequest(http.MethodGet, "https://a.example.com/", nil)
	renamed.AddCookie(&http.Cookie{Name: "__Host-s", Value: w.Result().Cookies()[0].Value})
	if own.Open(renamed, "s") != nil {
		t.Fatal("a shared cookie opened under the host-only name")
	}

	// Over HTTP the names agree; a browser may send a stale host-only
	// cookie first, and the first that opens counts.
	r = httptest.NewRequest(http.MethodGet, "http://a.example.com/", nil)
	w = httptest.NewRecorder()
	_ = shared.Set(w, r, "s", []byte("shared"), now.Add(time.Hour), time.Hour)
	both := httptest.NewRequest(http.MethodGet, "http://a.example.com/", nil)
	both.AddCookie(&http.Cookie{Name: "s", Value: "garbage"})
	both.AddCookie(w.Result().Cookies()[0])
	if got := string(shared.Open(both, "s")); got != "shared" {
		t.Fatalf("Open with a stale cookie first: %q", got)
	}

	w = httptest.NewRecorder()
	shared.Clear(w, httptest.NewRequest(http.MethodGet, "https://a.example.com/", nil), "s")
	c := w.Result().Cookies()
	if len(c) != 2 || c[0].Name != "__Secure-s" || c[0].Domain != "example.com" || c[0].MaxAge >= 0 ||
		c[1].Name != "__Host-s" || c[1].Domain != "" || c[1].MaxAge >= 0 {
		t.Fatalf("Clear: %+v", c)
	}
}

func TestUnderDomain(t *testing.T) {
	for _, tc := range []struct {
		host string
		want bool
	}{
		{"example.com", true}, {"a.b.example.com", true}, {"EXAMPLE.com", true},
		{"xexample.com", false}, {"example.com.net", false}, {"", false}, {"com", false},
		{"1.example.com", true}, {"::1", false}, {"[::1]", false},
	} {
		if got := UnderDomain(tc.host, "example.com"); got != tc.want {
			t.Errorf("UnderDomain(%q) = %v", tc.host, got)
		}
	}
}

// TestCookieHeaderReading: the session cookie is read from the Cookie
// header lines as net/http reads them (Request.CookiesNamed): among other
// cookies, in any line, in double quotes, after a same-named value that does
// not open, never under a name that only begins like it or with a value
// net/http would refuse; over HTTPS only under its __Host- name.
func TestCookieHeaderReading(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	m := newManager(t, &now, ListRevocations(memList{}), "wxA")
	for _, scheme := range []string{"http", "https"} {
		r := httptest.NewRequest(http.MethodGet, scheme+"://site/", nil)
		w := httptest.NewRecorder()
		rec, err := m.Issue(w, r, Record{AppID: "wxA", OpenID: "o1", Nickname: "Ada", Method: "qr"})
		if err != nil {
			t.Fatal(err)
		}
		c := w.Result().Cookies()[0]
		n, v := c.Name, c.Value
		for _, tc := range []struct {
			header []string
			opens  bool
		}{
			{[]string{n + "=" + v}, true},
			{[]string{"a=1; " + n + "=" + v + "; b=2"}, true},
			{[]string{"a=1", "  " + n + "=" + v + " ;"}, true},
			{[]string{n + "=" + v + "\r"}, true},
			{[]string{n + `="` + v + `"`}, true},
			{[]string{n + "=forged; " + n + "=" + v}, true},
			{[]string{n + "=; " + n + "=" + v[1:] + "; " + n + "=" + v}, true},
			{[]string{n + " = " + v}, false},
			{[]string{n + "x=" + v}, false},
			{[]string{"x" + n + "=" + v}, false},
			{[]string{"__Secure-s=" + v}, false},
			{[]string{"__Host-s=" + v}, scheme == "https"},
			{[]string{n + "=" + v[:len(v)-1]}, false},
			{[]string{n + "=" + v[:10] + " " + v[10:]}, false},
			{[]string{n + `="` + v}, false},
		} {
			back := httptest.NewRequest(http.MethodGet, scheme+"://site/", nil)
			back.Header["Cookie"] = tc.header
			byNetHTTP := false
			for _, ck := range back.CookiesNamed(m.cfg.Cookies.Name(back, "s")) {
				if _, err := m.cfg.Cookies.codec.Open(ck.Name, ck.Value, now); err == nil {
					byNetHTTP = true
				}
			}
			if byNetHTTP != tc.opens {
				t.Errorf("%s %q: net/http finds a session: %v, want %v", scheme, tc.header, byNetHTTP, tc.opens)
			}
			got, err := m.Get(back)
			if tc.opens && (err != nil || got != rec) || !tc.opens && !errors.Is(err, ErrNone) {
				t.Errorf("%s %q: Get = %+v, %v; want a session: %v", scheme, tc.header, got, err, tc.opens)
			}
		}
	}
}
