package session

import (
	"context"
	"encoding/binary"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// FuzzDecode: the record decoder never panics, and whatever it accepts
// encodes back to the same bytes.
func FuzzDecode(f *testing.F) {
	f.Add(Record{ID: "0123", AppID: "wx1", OpenID: "o1", Method: "qr", LoginAt: time.Unix(1, 0), IssuedAt: time.Unix(5, 0), ExpiresAt: time.Unix(9, 0)}.Encode())
	f.Add(encodeV1(Record{ID: "0123", AppID: "wx1", OpenID: "o1", Method: "qr", LoginAt: time.Unix(1, 0), ExpiresAt: time.Unix(2, 0)}))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{1, 2, 2, 200, 1})
	f.Add([]byte{2, 2, 2, 2, 200, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, ok := Decode(b)
		if !ok {
			return
		}
		// An old record was issued at its login: nothing refreshed it.
		if b[0] == formatV1 && !s.IssuedAt.Equal(s.LoginAt) {
			t.Fatalf("a format 1 record decoded with IssuedAt %v, LoginAt %v", s.IssuedAt, s.LoginAt)
		}
		if again := s.Encode(); again[0] != formatV2 {
			t.Fatalf("Encode wrote format %d", again[0])
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

// encodeV1 writes rec the way cookies were sealed before sessions could be
// refreshed: format 1, with no issue time.
func encodeV1(rec Record) []byte {
	b := []byte{formatV1}
	b = binary.AppendVarint(b, rec.LoginAt.Unix())
	b = binary.AppendVarint(b, rec.ExpiresAt.Unix())
	for _, f := range []string{rec.ID, rec.AppID, rec.OpenID, rec.UnionID, rec.Method, rec.Nickname, rec.AvatarURL} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	return b
}

// TestOldCookiesStayValid: a cookie sealed in format 1 still opens, as the
// session it was, issued at its login.
func TestOldCookiesStayValid(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	m := newManager(t, &now, ListRevocations(memList{}), "wxA")
	old := Record{
		ID: "0123456789abcdef", AppID: "wxA", OpenID: "o1", UnionID: "u1", Method: "oauth",
		Nickname: "昵称", AvatarURL: "https://example.com/a.png",
		LoginAt: now.Add(-10 * time.Minute).UTC(), ExpiresAt: now.Add(50 * time.Minute).UTC(),
	}
	want := old
	want.IssuedAt = old.LoginAt
	if got, ok := Decode(encodeV1(old)); !ok || got != want {
		t.Fatalf("Decode(format 1) = %+v, %v; want %+v", got, ok, want)
	}
	r := httptest.NewRequest("GET", "http://site/", nil)
	w := httptest.NewRecorder()
	if err := m.cfg.Cookies.Set(w, r, "s", encodeV1(old), old.ExpiresAt, time.Hour); err != nil {
		t.Fatal(err)
	}
	if got, err := m.Get(carry(w, r)); err != nil || got != want {
		t.Fatalf("Get(format 1 cookie) = %+v, %v; want %+v", got, err, want)
	}
	for _, b := range [][]byte{nil, {0}, {3}, {formatV1, 2}, {formatV2, 2, 2}} {
		if _, ok := Decode(b); ok {
			t.Errorf("Decode(%v) accepted", b)
		}
	}
}

// TestRefresh follows one session used now and then: it is issued again
// once Refresh has passed since its last issue, keeps its id and login
// time, never outlives MaxAge from the login, and a logout of it holds
// until that bound, whichever copy of its cookie comes back.
func TestRefresh(t *testing.T) {
	start := time.Unix(1_700_000_000, 0).UTC()
	now := start
	list := memList{}
	m := newManager(t, &now, ListRevocations(list), "wxA")
	m.cfg.TTL, m.cfg.Refresh, m.cfg.MaxAge = time.Hour, 20*time.Minute, 3*time.Hour
	r := httptest.NewRequest("GET", "http://site/", nil)

	w := httptest.NewRecorder()
	first, err := m.Issue(w, r, Record{AppID: "wxA", OpenID: "o1", Method: "qr"})
	if err != nil || !first.IssuedAt.Equal(start) || !first.LoginAt.Equal(start) || !first.ExpiresAt.Equal(start.Add(time.Hour)) {
		t.Fatalf("Issue = %+v, %v", first, err)
	}
	cookie := carry(w, r)

	steps := []struct {
		at        time.Duration // since the login
		refreshed bool
		expires   time.Duration // since the login; 0: refused
	}{
		{10 * time.Minute, false, time.Hour},                   // too early to refresh
		{20 * time.Minute, true, 80 * time.Minute},             // Refresh has passed
		{39 * time.Minute, false, 80 * time.Minute},            // 19 minutes after that refresh
		{75 * time.Minute, true, 135 * time.Minute},            // just before it expired
		{130 * time.Minute, true, 3 * time.Hour},               // capped at MaxAge
		{175 * time.Minute, false, 3 * time.Hour},              // nothing left to extend
		{3 * time.Hour, false, 0},                              // older than MaxAge
		{3*time.Hour + 20*time.Minute, false, 0},               // still
		{3*time.Hour + 59*time.Minute + time.Second, false, 0}, // still
	}
	for _, s := range steps {
		now = start.Add(s.at)
		rec, err := m.Get(cookie)
		if s.expires == 0 {
			if !errors.Is(err, ErrNone) {
				t.Fatalf("at +%v: a session past MaxAge gave %+v, %v", s.at, rec, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("at +%v: Get: %v", s.at, err)
		}
		w := httptest.NewRecorder()
		got, refreshed, err := m.Refresh(w, r, rec)
		if err != nil || refreshed != s.refreshed {
			t.Fatalf("at +%v: Refresh = %v, %v; want refreshed %v", s.at, refreshed, err, s.refreshed)
		}
		if got.ID != first.ID || !got.LoginAt.Equal(start) || !got.ExpiresAt.Equal(start.Add(s.expires)) {
			t.Fatalf("at +%v: session %+v; want id %s, login %v, expiry +%v", s.at, got, first.ID, start, s.expires)
		}
		cookies := w.Result().Cookies()
		if !refreshed {
			if len(cookies) != 0 {
				t.Fatalf("at +%v: a cookie was set without a refresh: %+v", s.at, cookies)
			}
			continue
		}
		if !got.IssuedAt.Equal(now) || len(cookies) != 1 || cookies[0].MaxAge != int(got.ExpiresAt.Sub(now)/time.Second) {
			t.Fatalf("at +%v: refreshed %+v with cookies %+v", s.at, got, cookies)
		}
		cookie = carry(w, r)
	}

	// A logout of a refreshed session holds until MaxAge after its login,
	// even against the first cookie, which a refresh could carry as far.
	now = start
	w = httptest.NewRecorder()
	rec, _ := m.Issue(w, r, Record{AppID: "wxA", OpenID: "o2", Method: "qr"})
	original := carry(w, r)
	now = start.Add(30 * time.Minute)
	w = httptest.NewRecorder()
	refreshed, ok, err := m.Refresh(w, r, rec)
	if err != nil || !ok {
		t.Fatalf("Refresh: %v, %v", ok, err)
	}
	if err := m.RevokeRecord(context.Background(), refreshed); err != nil {
		t.Fatal(err)
	}
	if until, want := list[rec.ID], start.Add(3*time.Hour+time.Minute); !until.Equal(want) {
		t.Fatalf("revoked until %v, want %v (MaxAge after the login, and a minute)", until, want)
	}
	for _, c := range []*http.Request{original, carry(w, r)} {
		if _, err := m.Get(c); !errors.Is(err, ErrNone) {
			t.Fatalf("a cookie of the revoked session: %v", err)
		}
	}
	// Revoking by id and known expiry, without the record, keeps it as
	// long as a refresh could carry that expiry.
	if err := m.Revoke(context.Background(), "by-id", now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if until, want := list["by-id"], now.Add(time.Hour+2*time.Hour+time.Minute); !until.Equal(want) {
		t.Fatalf("revoked by id until %v, want %v", until, want)
	}
}

// TestMaxAgeWithoutRefresh: a session whose cookie promises more than
// MaxAge from its login (sealed under a longer session_ttl) is refused
// once MaxAge has passed, and without Refresh nothing is ever re-issued.
func TestMaxAgeWithoutRefresh(t *testing.T) {
	start := time.Unix(1_700_000_000, 0).UTC()
	now := start
	m := newManager(t, &now, ListRevocations(memList{}), "wxA")
	m.cfg.TTL = 24 * time.Hour
	r := httptest.NewRequest("GET", "http://site/", nil)
	w := httptest.NewRecorder()
	rec, err := m.Issue(w, r, Record{AppID: "wxA", OpenID: "o1"})
	if err != nil {
		t.Fatal(err)
	}
	cookie := carry(w, r)
	m.cfg.TTL = time.Hour // the site now keeps sessions for an hour
	now = start.Add(50 * time.Minute)
	got, err := m.Get(cookie)
	if err != nil {
		t.Fatal(err)
	}
	if _, refreshed, _ := m.Refresh(httptest.NewRecorder(), r, got); refreshed {
		t.Fatal("refreshed without Refresh")
	}
	now = start.Add(time.Hour)
	if _, err := m.Get(cookie); !errors.Is(err, ErrNone) {
		t.Fatalf("a session older than MaxAge (%+v): %v", rec, err)
	}
}
