package wechattest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

const (
	oaID      = "wx1234567890abcdef"
	oaSecret  = "oa-secret-0123456789abcdef0123456"
	oaToken   = "pamtest"
	oaAESKey  = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	oaGH      = "gh_0123456789ab"
	webID     = "wxfedcba0987654321"
	webSecret = "web-secret-0123456789abcdef012345"
)

var ridSuffix = regexp.MustCompile(`, rid: [0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}$`)

// appDomain is the domain both test apps register for OAuth redirects.
const appDomain = "app.example.com"

// newPlatformServer starts a Server with one Official Account (pushing to
// callback, in mode) and one website app, both with appDomain registered
// for OAuth, closed when the test ends.
func newPlatformServer(t testing.TB, cfg Config, callback string, mode PushMode) *Server {
	t.Helper()
	s := NewServer(cfg)
	t.Cleanup(s.Close)
	if err := s.AddApp(App{
		AppID: oaID, AppSecret: oaSecret, Kind: OfficialAccount,
		Token: oaToken, EncodingAESKey: oaAESKey, OriginalID: oaGH,
		CallbackURL: callback, Mode: mode, RedirectDomains: []string{appDomain},
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddApp(App{AppID: webID, AppSecret: webSecret, Kind: WebsiteApp, RedirectDomains: []string{appDomain}}); err != nil {
		t.Fatal(err)
	}
	return s
}

// apiAnswer is any JSON answer of the platform.
type apiAnswer map[string]any

func (a apiAnswer) errcode() int {
	if v, ok := a["errcode"].(float64); ok {
		return int(v)
	}
	return 0
}

func (a apiAnswer) str(k string) string { s, _ := a[k].(string); return s }

func (a apiAnswer) num(k string) int64 { v, _ := a[k].(float64); return int64(v) }

// callE makes a request and decodes the JSON answer; anything but HTTP 200
// with a JSON body whose errmsg carries the rid suffix is an error.
func callE(method, u string, body string) (apiAnswer, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: HTTP %d %s", method, u, resp.StatusCode, b)
	}
	var a apiAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, fmt.Errorf("%s %s: not JSON: %s", method, u, b)
	}
	if a.errcode() != 0 && !ridSuffix.MatchString(a.str("errmsg")) {
		return nil, fmt.Errorf("errmsg %q lacks the rid suffix", a.str("errmsg"))
	}
	return a, nil
}

// call is callE that fails the test on error.
func call(t testing.TB, method, u string, body string) apiAnswer {
	t.Helper()
	a, err := callE(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func get(t testing.TB, u string) apiAnswer { t.Helper(); return call(t, http.MethodGet, u, "") }

func wantErrcode(t testing.TB, a apiAnswer, code int) {
	t.Helper()
	if got := a.errcode(); got != code {
		t.Fatalf("errcode = %d, want %d (answer %v)", got, code, a)
	}
}

func fetchClassic(t testing.TB, s *Server) apiAnswer {
	t.Helper()
	return get(t, s.URL+"/cgi-bin/token?grant_type=client_credential&appid="+oaID+"&secret="+oaSecret)
}

func fetchStable(t testing.TB, s *Server, force bool) apiAnswer {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"grant_type": "client_credential", "appid": oaID, "secret": oaSecret, "force_refresh": force})
	return call(t, http.MethodPost, s.URL+"/cgi-bin/stable_token", string(body))
}

// probe calls an API that needs a basic token and returns its errcode.
func probe(t testing.TB, s *Server, tok string) int {
	t.Helper()
	a := get(t, s.URL+"/cgi-bin/user/info?access_token="+url.QueryEscape(tok)+"&openid="+s.OpenID(oaID, "alice"))
	return a.errcode()
}

// fixedClock returns a Config.Now that starts at a fixed instant; tests
// move it with Platform.Advance.
func fixedClock() func() time.Time {
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, chinaTime)
	return func() time.Time { return t0 }
}

// noRedirect is a client that returns redirects instead of following them.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
