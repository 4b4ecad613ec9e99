package wechattest

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// newAccountServer starts a platform with one Official Account of type acct
// (plaintext pushes to callback, appDomain registered) and returns it with
// a basic token of the account.
func newAccountServer(t *testing.T, cfg Config, acct AccountType, callback string) (*Server, string) {
	t.Helper()
	s := NewServer(cfg)
	t.Cleanup(s.Close)
	if err := s.AddApp(App{
		AppID: oaID, AppSecret: oaSecret, Account: acct,
		Token: oaToken, OriginalID: oaGH, CallbackURL: callback, RedirectDomains: []string{appDomain},
	}); err != nil {
		t.Fatal(err)
	}
	return s, fetchClassic(t, s).str("access_token")
}

// TestAccountPermissions: what each account type may call, with WeChat's
// answers where it may not.
func TestAccountPermissions(t *testing.T) {
	for _, tc := range []struct {
		acct             AccountType
		qr, info         int    // errcodes of qrcode/create and user/info
		authorize        string // page errcode of web authorization, "" for a code
		authorizeForBob  string // the same for a user who follows the account
		name, kindInJSON string
	}{
		{VerifiedServiceAccount, 0, 0, "", "", "verified service", "verified_service"},
		{UnverifiedServiceAccount, 48001, 48001, "10005", "10005", "unverified service", "unverified_service"},
		{SubscriptionAccount, 48001, 48001, "10005", "10005", "subscription", "subscription"},
		{VerifiedSubscriptionAccount, 48001, 0, "10005", "10005", "verified subscription", "verified_subscription"},
		{TestAccount, 0, 0, "10006", "", "test account", "test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.acct.String() != tc.kindInJSON {
				t.Errorf("String() = %q", tc.acct.String())
			}
			s, tok := newAccountServer(t, Config{}, tc.acct, "")
			wantErrcode(t, createQR(t, s, tok, `{"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"a"}}}`), tc.qr)
			// The permission check comes before the body is looked at.
			if tc.qr != 0 {
				wantErrcode(t, createQR(t, s, tok, `not json`), tc.qr)
			}
			wantErrcode(t, get(t, s.URL+"/cgi-bin/user/info?access_token="+url.QueryEscape(tok)+"&openid="+s.OpenID(oaID, "bob")), tc.info)

			for user, want := range map[string]string{"alice": tc.authorize, "bob": tc.authorizeForBob} {
				for _, scope := range []string{"snsapi_base", "snsapi_userinfo"} {
					// The choice page's button, as the user who holds the phone.
					resp, body := open(t, http.MethodPost, authorizeURL(s, scope, "st"), url.Values{"user": {user}})
					if want == "" {
						if code, _ := codeFrom(t, resp); code == "" {
							t.Fatalf("%s %s: no code", user, scope)
						}
						continue
					}
					if m := errcodeAttr.FindStringSubmatch(body); resp.StatusCode != http.StatusOK || m == nil || m[1] != want {
						t.Fatalf("%s %s: %d, page error %v, want %s", user, scope, resp.StatusCode, m, want)
					}
				}
			}
		})
	}
}

// TestTestAccountAuthorizationNeedsFollow: a test account's web
// authorization works for its followers only; following makes it work.
func TestTestAccountAuthorizationNeedsFollow(t *testing.T) {
	cb := newCallback(t, nil)
	s, _ := newAccountServer(t, Config{OAuthUser: "alice"}, TestAccount, cb.URL)
	_, body := open(t, http.MethodGet, authorizeURL(s, "snsapi_userinfo", "a"), nil)
	if m := errcodeAttr.FindStringSubmatch(body); m == nil || m[1] != "10006" {
		t.Fatalf("page error %v, want 10006", m)
	}
	if _, err := s.Follow(context.Background(), oaID, "alice"); err != nil {
		t.Fatal(err)
	}
	resp, _ := open(t, http.MethodGet, authorizeURL(s, "snsapi_userinfo", "a"), nil)
	code, _ := codeFrom(t, resp)
	wantErrcode(t, exchange(t, s, oaID, oaSecret, code), 0)
}

func TestAddAppAccountChecks(t *testing.T) {
	p, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	for name, a := range map[string]App{
		"test account in safe mode":       {AppID: "wx1", AppSecret: "s", Account: TestAccount, Mode: Safe, Token: oaToken, EncodingAESKey: oaAESKey},
		"test account in compatible mode": {AppID: "wx1", AppSecret: "s", Account: TestAccount, Mode: Compatible, Token: oaToken, EncodingAESKey: oaAESKey},
		"website app with an account":     {AppID: "wx1", AppSecret: "s", Kind: WebsiteApp, Account: SubscriptionAccount},
		"unknown account type":            {AppID: "wx1", AppSecret: "s", Account: 9},
		"negative account type":           {AppID: "wx1", AppSecret: "s", Account: -1},
	} {
		if err := p.AddApp(a); err == nil {
			t.Errorf("%s: AddApp succeeded", name)
		}
	}
	for _, acct := range []AccountType{UnverifiedServiceAccount, SubscriptionAccount, VerifiedSubscriptionAccount} {
		if err := p.AddApp(App{AppID: "wx1", AppSecret: "s", Account: acct, Mode: Safe, Token: oaToken, EncodingAESKey: oaAESKey}); err != nil {
			t.Errorf("%v in safe mode: %v", acct, err)
		}
	}
}

// TestTestAccountQuotas: a test account gets 200 access tokens and 10,000
// QR codes a day; the configured quotas override both.
func TestTestAccountQuotas(t *testing.T) {
	s, _ := newAccountServer(t, Config{Now: fixedClock()}, TestAccount, "")
	for i := 2; i <= 200; i++ { // newAccountServer took the first
		wantErrcode(t, fetchClassic(t, s), 0)
	}
	wantErrcode(t, fetchClassic(t, s), 45009)

	// 10,000 QR codes, counted without going through HTTP.
	for i := range testQRDailyQuota {
		if e := s.takeQRQuota(oaID); e != nil {
			t.Fatalf("QR code %d: %d", i+1, e.code)
		}
	}
	if e := s.takeQRQuota(oaID); e == nil || e.code != 45009 {
		t.Fatalf("QR code 10,001: %v", e)
	}

	s2, tok := newAccountServer(t, Config{Now: fixedClock(), QRDailyQuota: 2, TokenDailyQuota: 1}, TestAccount, "")
	wantErrcode(t, fetchClassic(t, s2), 45009)
	body := `{"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"a"}}}`
	wantErrcode(t, createQR(t, s2, tok, body), 0)
	wantErrcode(t, createQR(t, s2, tok, body), 0)
	wantErrcode(t, createQR(t, s2, tok, body), 45009)
	// Quotas reset at midnight China time (the clock starts at 10:00).
	s2.Advance(14 * time.Hour)
	wantErrcode(t, createQR(t, s2, fetchClassic(t, s2).str("access_token"), body), 0)
}

// TestVerifiedServiceQRQuota: 100,000 QR codes a day unless configured.
func TestVerifiedServiceQRQuota(t *testing.T) {
	p, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AddApp(App{AppID: oaID, AppSecret: oaSecret}); err != nil {
		t.Fatal(err)
	}
	for i := range DefaultQRDailyQuota {
		if e := p.takeQRQuota(oaID); e != nil {
			t.Fatalf("QR code %d: %d", i+1, e.code)
		}
	}
	if e := p.takeQRQuota(oaID); e == nil || e.code != 45009 {
		t.Fatalf("QR code 100,001: %v", e)
	}
}

func TestSandboxUsersShowsAccountType(t *testing.T) {
	s, _ := newAccountServer(t, Config{}, VerifiedSubscriptionAccount, "")
	_, body := open(t, http.MethodGet, s.URL+"/sandbox/users", nil)
	if !strings.Contains(body, `"account":"verified_subscription"`) {
		t.Fatalf("listing %s", body)
	}
}
