package wechattest

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

var tokenShape = regexp.MustCompile(`^[0-9]{1,2}_[A-Za-z0-9_-]{100,}$`)

func TestClassicTokenOverlapAndSupersede(t *testing.T) {
	s := newPlatformServer(t, Config{Now: fixedClock()}, "", Plaintext)

	first := fetchClassic(t, s)
	tok1 := first.str("access_token")
	if !tokenShape.MatchString(tok1) || first.num("expires_in") != 7200 {
		t.Fatalf("token answer %v", first)
	}
	if code := probe(t, s, tok1); code != 0 {
		t.Fatalf("fresh token: errcode %d", code)
	}

	s.Advance(time.Minute)
	tok2 := fetchClassic(t, s).str("access_token")
	if tok2 == tok1 {
		t.Fatal("cgi-bin/token returned the same token twice")
	}
	// Both work during the 5-minute overlap.
	s.Advance(4*time.Minute + 59*time.Second)
	if c1, c2 := probe(t, s, tok1), probe(t, s, tok2); c1 != 0 || c2 != 0 {
		t.Fatalf("during overlap: old %d, new %d", c1, c2)
	}
	// After it the old one is superseded (40001), the new one still works.
	s.Advance(time.Second)
	if c1, c2 := probe(t, s, tok1), probe(t, s, tok2); c1 != 40001 || c2 != 0 {
		t.Fatalf("after overlap: old %d (want 40001), new %d", c1, c2)
	}
	// A token that simply runs out gives 42001.
	s.Advance(2 * time.Hour)
	if c := probe(t, s, tok2); c != 42001 {
		t.Fatalf("expired token: errcode %d, want 42001", c)
	}
}

func TestClassicTokenGraceNeverExtends(t *testing.T) {
	s := newPlatformServer(t, Config{Now: fixedClock()}, "", Plaintext)
	tok1 := fetchClassic(t, s).str("access_token")
	// Refresh two minutes before tok1 expires: tok1 keeps its own expiry,
	// it is not stretched to now+5 min, and it then counts as expired.
	s.Advance(7200*time.Second - 2*time.Minute)
	fetchClassic(t, s)
	s.Advance(2 * time.Minute)
	if c := probe(t, s, tok1); c != 42001 {
		t.Fatalf("errcode %d, want 42001", c)
	}
}

func TestTokenChecks(t *testing.T) {
	s := newPlatformServer(t, Config{}, "", Plaintext)
	alice := s.OpenID(oaID, "alice")
	for _, tc := range []struct {
		name string
		path string
		want int
	}{
		{"missing", "/cgi-bin/user/info?openid=" + alice, 41001},
		{"garbage", "/cgi-bin/user/info?access_token=garbage&openid=" + alice, 40014},
		{"garbage sns", "/sns/userinfo?access_token=garbage&openid=" + alice, 40014},
		{"missing sns", "/sns/auth?openid=" + alice, 41001},
	} {
		t.Run(tc.name, func(t *testing.T) { wantErrcode(t, get(t, s.URL+tc.path), tc.want) })
	}
	// A basic token is the wrong kind for sns/* calls.
	tok := fetchClassic(t, s).str("access_token")
	wantErrcode(t, get(t, s.URL+"/sns/userinfo?access_token="+tok+"&openid="+alice), 40001)
}

func TestClassicTokenErrors(t *testing.T) {
	s := newPlatformServer(t, Config{}, "", Plaintext)
	for _, tc := range []struct {
		name, query string
		want        int
	}{
		{"grant_type", "grant_type=authorization_code&appid=" + oaID + "&secret=" + oaSecret, 40002},
		{"no grant_type", "appid=" + oaID + "&secret=" + oaSecret, 40002},
		{"no appid", "grant_type=client_credential&secret=" + oaSecret, 41002},
		{"no secret", "grant_type=client_credential&appid=" + oaID, 41004},
		{"unknown appid", "grant_type=client_credential&appid=wx0000000000000000&secret=" + oaSecret, 40013},
		{"website appid", "grant_type=client_credential&appid=" + webID + "&secret=" + webSecret, 40013},
		{"bad secret", "grant_type=client_credential&appid=" + oaID + "&secret=nope", 40125},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErrcode(t, get(t, s.URL+"/cgi-bin/token?"+tc.query), tc.want)
		})
	}
	wantErrcode(t, call(t, http.MethodPost, s.URL+"/cgi-bin/token?grant_type=client_credential&appid="+oaID+"&secret="+oaSecret, ""), 43001)
}

func TestIPAllowList(t *testing.T) {
	s := newPlatformServer(t, Config{}, "", Plaintext)
	s.SetIPAllowed(false)
	a := fetchClassic(t, s)
	wantErrcode(t, a, 40164)
	if msg := a.str("errmsg"); !strings.HasPrefix(msg, "invalid ip 127.0.0.1 ipv6 ::ffff:127.0.0.1, not in whitelist") {
		t.Errorf("errmsg %q", msg)
	}
	wantErrcode(t, fetchStable(t, s, false), 40164)
	s.SetIPAllowed(true)
	wantErrcode(t, fetchClassic(t, s), 0)
}

func TestClassicTokenDailyQuota(t *testing.T) {
	s := newPlatformServer(t, Config{Now: fixedClock(), TokenDailyQuota: 3}, "", Plaintext)
	for range 3 {
		wantErrcode(t, fetchClassic(t, s), 0)
	}
	a := fetchClassic(t, s)
	wantErrcode(t, a, 45009)
	if !strings.HasPrefix(a.str("errmsg"), "reach max api daily quota limit") {
		t.Errorf("errmsg %q", a.str("errmsg"))
	}
	// Failed calls do not count, and stable_token is not limited by it.
	wantErrcode(t, fetchStable(t, s, false), 0)
	// The quota resets at midnight China time (the clock starts at 10:00).
	s.Advance(14 * time.Hour)
	wantErrcode(t, fetchClassic(t, s), 0)
}

func TestStableTokenNormalMode(t *testing.T) {
	s := newPlatformServer(t, Config{Now: fixedClock()}, "", Plaintext)
	a := fetchStable(t, s, false)
	tok := a.str("access_token")
	if !tokenShape.MatchString(tok) || a.num("expires_in") != 7200 {
		t.Fatalf("answer %v", a)
	}
	s.Advance(1000 * time.Second)
	a = fetchStable(t, s, false)
	if a.str("access_token") != tok || a.num("expires_in") != 6200 {
		t.Fatalf("normal mode: got %v, want the same token with expires_in 6200", a)
	}
	// With less than 300 s left a new token comes; the old one lives on.
	s.Advance(6200*time.Second - 299*time.Second)
	a = fetchStable(t, s, false)
	next := a.str("access_token")
	if next == tok || a.num("expires_in") != 7200 {
		t.Fatalf("near expiry: got %v, want a new token", a)
	}
	if c1, c2 := probe(t, s, tok), probe(t, s, next); c1 != 0 || c2 != 0 {
		t.Fatalf("old %d new %d, want both valid", c1, c2)
	}
	s.Advance(299 * time.Second)
	if c := probe(t, s, tok); c != 42001 {
		t.Fatalf("old stable token after its expiry: %d, want 42001", c)
	}
}

func TestStableAndClassicAreIsolated(t *testing.T) {
	s := newPlatformServer(t, Config{Now: fixedClock()}, "", Plaintext)
	stable := fetchStable(t, s, false).str("access_token")
	classic := fetchClassic(t, s).str("access_token")
	s.Advance(10 * time.Minute)
	// Fetching more classic tokens does not touch the stable one, and the
	// stable store does not invalidate classic ones.
	fetchClassic(t, s)
	fetchStable(t, s, true)
	s.Advance(6 * time.Minute)
	if c := probe(t, s, classic); c != 40001 {
		t.Errorf("superseded classic token: %d, want 40001", c)
	}
	if c := probe(t, s, stable); c != 40001 {
		t.Errorf("force-refreshed stable token: %d, want 40001", c)
	}
	stable2 := fetchStable(t, s, false).str("access_token")
	if stable2 == stable {
		t.Error("force refresh did not change the stable token")
	}
	classic2 := fetchClassic(t, s).str("access_token")
	if c1, c2 := probe(t, s, stable2), probe(t, s, classic2); c1 != 0 || c2 != 0 {
		t.Errorf("current tokens: stable %d classic %d", c1, c2)
	}
}

func TestStableTokenForceRefresh(t *testing.T) {
	s := newPlatformServer(t, Config{Now: fixedClock()}, "", Plaintext)
	tok := fetchStable(t, s, false).str("access_token")
	forced := fetchStable(t, s, true).str("access_token")
	if forced == tok {
		t.Fatal("force_refresh returned the old token")
	}
	if c := probe(t, s, tok); c != 40001 {
		t.Fatalf("invalidated token: %d, want 40001", c)
	}
	// Within 30 s a force refresh changes nothing.
	s.Advance(29 * time.Second)
	if again := fetchStable(t, s, true).str("access_token"); again != forced {
		t.Fatal("force refresh within 30 s refreshed")
	}
	// 20 a day, then 45009.
	for i := 1; i < 20; i++ {
		s.Advance(30 * time.Second)
		wantErrcode(t, fetchStable(t, s, true), 0)
	}
	s.Advance(30 * time.Second)
	wantErrcode(t, fetchStable(t, s, true), 45009)
	wantErrcode(t, fetchStable(t, s, false), 0)
}

func TestStableTokenRequestErrors(t *testing.T) {
	s := newPlatformServer(t, Config{}, "", Plaintext)
	u := s.URL + "/cgi-bin/stable_token"
	for _, tc := range []struct {
		name, body string
		want       int
	}{
		{"empty", "", 44002},
		{"form", "grant_type=client_credential&appid=" + oaID, 47001},
		{"wrong type", `{"grant_type":"client_credential","appid":"` + oaID + `","secret":"` + oaSecret + `","force_refresh":"yes"}`, 47001},
		{"grant_type", `{"grant_type":"x","appid":"` + oaID + `","secret":"` + oaSecret + `"}`, 40002},
		{"appid", `{"grant_type":"client_credential","secret":"` + oaSecret + `"}`, 41002},
		{"secret", `{"grant_type":"client_credential","appid":"` + oaID + `"}`, 41004},
		{"bad secret", `{"grant_type":"client_credential","appid":"` + oaID + `","secret":"x"}`, 40125},
		{"unknown app", `{"grant_type":"client_credential","appid":"wx00","secret":"x"}`, 40013},
		{"too large", `{"x":"` + strings.Repeat("a", maxBody) + `"}`, 47001},
	} {
		t.Run(tc.name, func(t *testing.T) { wantErrcode(t, call(t, http.MethodPost, u, tc.body), tc.want) })
	}
	wantErrcode(t, get(t, u), 43002)
}

func TestLongExpiredTokensAreForgotten(t *testing.T) {
	s := newPlatformServer(t, Config{Now: fixedClock()}, "", Plaintext)
	old := fetchClassic(t, s).str("access_token")
	s.Advance(2*time.Hour + 23*time.Hour)
	fetchClassic(t, s)
	if c := probe(t, s, old); c != 42001 {
		t.Fatalf("recently expired token: %d, want 42001", c)
	}
	s.Advance(2 * time.Hour)
	fetchClassic(t, s)
	if c := probe(t, s, old); c != 40014 {
		t.Fatalf("long expired token: %d, want 40014 once forgotten", c)
	}
}
