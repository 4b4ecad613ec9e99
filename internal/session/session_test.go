package session

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// FuzzDecode: the record decoder never panics, and whatever it accepts
// encodes back to the same bytes.
func FuzzDecode(f *testing.F) {
	f.Add(Record{ID: "0123", AppID: "wx1", OpenID: "o1", Method: "qr", LoginAt: time.Unix(1, 0), ExpiresAt: time.Unix(2, 0)}.Encode())
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{1, 2, 2, 200, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, ok := Decode(b)
		if !ok {
			return
		}
		if again := s.Encode(); string(again) != string(b) {
			// Varints have more than one spelling; only canonical ones
			// round-trip, and a non-canonical one must still decode to
			// the same record.
			s2, ok2 := Decode(again)
			if !ok2 || s2 != s {
				t.Fatalf("re-encoding changed the record: %+v vs %+v", s, s2)
			}
		}
	})
}

type memList map[string]time.Time

func (l memList) Revoke(id string, until time.Time) error { l[id] = until; return nil }
func (l memList) Revoked(id string) bool                  { _, ok := l[id]; return ok }

type failing struct{}

func (failing) Revoke(context.Context, string, time.Time) error { return errors.New("down") }
func (failing) Revoked(context.Context, string) (bool, error)   { return false, errors.New("down") }

func newManager(t *testing.T, now *time.Time, rev Revocations, apps ...string) *Manager {
	t.Helper()
	clock := func() time.Time { return *now }
	cookies, err := NewCookies([][]byte{[]byte("0123456789abcdef0123456789abcdef")}, func(r *http.Request) bool { return r.TLS != nil }, clock)
	if err != nil {
		t.Fatal(err)
	}
	return New(Config{Cookie: "s", Cookies: cookies, TTL: time.Hour, AppIDs: apps, Revocations: rev, Now: clock})
}

// carry returns a request bearing the cookies set on w.
func carry(w *httptest.ResponseRecorder, r *http.Request) *http.Request {
	next := r.Clone(r.Context())
	for _, c := range w.Result().Cookies() {
		next.AddCookie(c)
	}
	return next
}

func TestManager(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	list := memList{}
	m := newManager(t, &now, ListRevocations(list), "wxA", "wxOpen")
	other := newManager(t, &now, ListRevocations(list), "wxB")
	r := httptest.NewRequest("GET", "http://site/", nil)

	w := httptest.NewRecorder()
	rec, err := m.Issue(w, r, Record{AppID: "wxA", OpenID: "o1", Method: "qr"})
	if err != nil || rec.ID == "" || !rec.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Fatalf("Issue = %+v, %v", rec, err)
	}
	if c := w.Result().Cookies(); len(c) != 1 || c[0].Name != "s" || !c[0].HttpOnly || c[0].Secure {
		t.Fatalf("cookie over HTTP: %+v", c)
	}
	withCookie := carry(w, r)
	if got, err := m.Get(withCookie); err != nil || got != rec {
		t.Fatalf("Get = %+v, %v; want %+v", got, err, rec)
	}
	if _, err := other.Get(withCookie); !errors.Is(err, ErrNone) {
		t.Fatalf("a site of another app accepted the session: %v", err)
	}
	if _, err := newManager(t, &now, failing{}, "wxA").Get(withCookie); err == nil || errors.Is(err, ErrNone) {
		t.Fatalf("unanswerable revocation check gave %v, want a failure that is not ErrNone", err)
	}
	if err := m.Revoke(context.Background(), rec.ID, rec.ExpiresAt); err != nil {
		t.Fatal(err)
	}
	if until := list[rec.ID]; !until.Equal(rec.ExpiresAt.Add(time.Minute)) {
		t.Fatalf("revoked until %v, want a minute past expiry", until)
	}
	if _, err := m.Get(withCookie); !errors.Is(err, ErrNone) {
		t.Fatalf("revoked session: %v", err)
	}

	w = httptest.NewRecorder()
	rec2, _ := m.Issue(w, r, Record{ID: "chosen", AppID: "wxOpen", OpenID: "o2", Method: "open"})
	if rec2.ID != "chosen" {
		t.Fatalf("Issue dropped the chosen id: %q", rec2.ID)
	}
	withCookie = carry(w, r)
	now = now.Add(time.Hour)
	if _, err := m.Get(withCookie); !errors.Is(err, ErrNone) {
		t.Fatalf("expired session: %v", err)
	}
	// Revoking a session that has expired keeps nothing.
	if err := m.Revoke(context.Background(), "chosen", rec2.ExpiresAt); err != nil || list.Revoked("chosen") {
		t.Fatalf("revoking an expired session: %v, kept %v", err, list.Revoked("chosen"))
	}
}

func TestCookiesOverHTTPS(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	m := newManager(t, &now, ListRevocations(memList{}), "wxA")
	r := httptest.NewRequest("GET", "https://site/", nil)
	w := httptest.NewRecorder()
	if _, err := m.Issue(w, r, Record{AppID: "wxA", OpenID: "o1"}); err != nil {
		t.Fatal(err)
	}
	c := w.Result().Cookies()
	if len(c) != 1 || c[0].Name != "__Host-s" || !c[0].Secure || c[0].Path != "/" || c[0].Domain != "" {
		t.Fatalf("cookie over HTTPS: %+v", c)
	}
	// The same value under the unprefixed name does not open: it was
	// sealed for its name.
	plain := httptest.NewRequest("GET", "http://site/", nil)
	plain.AddCookie(&http.Cookie{Name: "s", Value: c[0].Value})
	if _, err := m.Get(plain); !errors.Is(err, ErrNone) {
		t.Fatalf("a __Host- session opened under another name: %v", err)
	}
	w = httptest.NewRecorder()
	m.Clear(w, r)
	if c := w.Result().Cookies(); len(c) != 1 || c[0].Name != "__Host-s" || c[0].MaxAge >= 0 || !c[0].Secure {
		t.Fatalf("clearing cookie: %+v", c)
	}
}
