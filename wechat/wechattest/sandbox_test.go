package wechattest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/wechat-login/caddy-wechat-login/wechat"
)

func TestSandboxUsers(t *testing.T) {
	s := newPlatformServer(t, Config{}, "", Safe)
	resp, body := open(t, http.MethodGet, s.URL+"/sandbox/users", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if strings.Contains(body, oaSecret) || strings.Contains(body, oaAESKey) || strings.Contains(body, oaToken) {
		t.Fatal("sandbox listing leaks a secret")
	}
	var got struct {
		Users []sandboxUser `json:"users"`
		Apps  []sandboxApp  `json:"apps"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Users) != 3 || got.Users[0].Name != "alice" || len(got.Users[0].Follows) != 0 ||
		got.Users[1].Name != "bob" || len(got.Users[1].Follows) != 1 || !got.Users[2].Snapshot {
		t.Fatalf("users %+v", got.Users)
	}
	if len(got.Apps) != 2 || got.Apps[0].AppID != oaID || got.Apps[0].Mode != "safe" || got.Apps[1].Kind != "website_app" {
		t.Fatalf("apps %+v", got.Apps)
	}
}

func TestSandboxScan(t *testing.T) {
	cb := newCallback(t, nil)
	s := newPlatformServer(t, Config{}, cb.URL, Safe)
	qr := newQR(t, s, `{"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"sb"}}}`)

	// JSON in, JSON out.
	a := call(t, http.MethodPost, s.URL+"/sandbox/scan", `{"ticket":"`+qr.str("ticket")+`","user":"alice"}`)
	if a.str("status") != "acknowledged" || a.str("event") != "subscribe" || a.str("event_key") != "qrscene_sb" {
		t.Fatalf("answer %v", a)
	}

	// A browser form gets a page.
	form := url.Values{"ticket": {qr.str("url")}, "user": {"alice"}}
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/sandbox/scan", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "text/html")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `data-status="acknowledged"`) || !strings.Contains(string(b), "SCAN sb") {
		t.Fatalf("status %d page %s", resp.StatusCode, b)
	}
	if len(cb.requests()) != 2 {
		t.Fatalf("%d pushes", len(cb.requests()))
	}

	for _, tc := range []struct {
		name, body string
		want       int
	}{
		{"no user", `{"ticket":"x"}`, http.StatusBadRequest},
		{"unknown user", `{"ticket":"` + qr.str("ticket") + `","user":"mallory"}`, http.StatusBadRequest},
		{"unknown ticket", `{"ticket":"nope","user":"alice"}`, http.StatusNotFound},
		{"bad JSON", `{`, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, s.URL+"/sandbox/scan", strings.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}

	resp, body := open(t, http.MethodGet, s.URL+"/sandbox/deliveries", nil)
	if resp.StatusCode != http.StatusOK || strings.Count(body, `"status":"acknowledged"`) != 2 {
		t.Fatalf("deliveries %s", body)
	}
}

// TestMountedUnderPrefix serves the platform under a path prefix, as the
// sandbox inside Caddy does, and follows the generated links.
func TestMountedUnderPrefix(t *testing.T) {
	for _, pathOnly := range []bool{false, true} {
		t.Run(fmt.Sprintf("path only %v", pathOnly), func(t *testing.T) { testMountedUnderPrefix(t, pathOnly) })
	}
}

func testMountedUnderPrefix(t *testing.T, pathOnly bool) {
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	defer srv.Close()
	base := srv.URL + "/fake-wechat"
	cfgBase := base + "/"
	if pathOnly {
		// The host comes from each request, as inside Caddy's sandbox.
		cfgBase = "/fake-wechat"
	}
	p, err := New(Config{BaseURL: cfgBase})
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("/fake-wechat/", http.StripPrefix("/fake-wechat", p))
	cb := newCallback(t, nil)
	if err := p.AddApp(App{AppID: oaID, AppSecret: oaSecret, Token: oaToken, OriginalID: oaGH, CallbackURL: cb.URL}); err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimSuffix(cfgBase, "/"); p.Endpoint() != (wechat.Endpoint{API: want, Authorize: want, MP: want}) {
		t.Fatalf("endpoint %+v", p.Endpoint())
	}

	tok := get(t, base+"/cgi-bin/token?grant_type=client_credential&appid="+oaID+"&secret="+oaSecret).str("access_token")
	qr := call(t, http.MethodPost, base+"/cgi-bin/qrcode/create?access_token="+url.QueryEscape(tok),
		`{"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"pfx"}}}`)
	if !qrURLShape.MatchString(qr.str("url")) {
		t.Fatalf("url %q", qr.str("url"))
	}

	// The QR code's page, by the id of its url, has links that stay under
	// the prefix.
	id := qr.str("url")[strings.LastIndex(qr.str("url"), "/")+1:]
	resp, page := open(t, http.MethodGet, base+"/q/"+id, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("QR page: %d", resp.StatusCode)
	}
	for _, want := range []string{
		`src="` + base + "/cgi-bin/showqrcode?ticket=" + url.QueryEscape(qr.str("ticket")) + `"`,
		`action="` + base + `/sandbox/scan"`,
		`value="alice"`,
		`href="` + base + "/sandbox/phone?appid=" + oaID + `"`,
	} {
		if !strings.Contains(page, strings.ReplaceAll(want, "&", "&amp;")) {
			t.Errorf("QR page lacks %s", want)
		}
	}
	resp, _ = open(t, http.MethodGet, base+"/cgi-bin/showqrcode?ticket="+url.QueryEscape(qr.str("ticket")), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("showqrcode: %d", resp.StatusCode)
	}
	a := call(t, http.MethodPost, base+"/sandbox/scan", `{"ticket":"`+qr.str("url")+`","user":"bob"}`)
	if a.str("event") != "SCAN" || a.str("status") != "acknowledged" {
		t.Fatalf("scan %v", a)
	}
	if resp, _ := open(t, http.MethodGet, base+"/q/unknown", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown QR page: %d", resp.StatusCode)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{BaseURL: "ftp://x"},
		{BaseURL: "relative"},
		{BaseURL: "//host/path"},
		{BaseURL: "/path?query"},
		{PushTimeout: -1},
		{Users: []User{{Nickname: "no name"}}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
	p, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []App{
		{AppID: "wx1"},
		{AppID: "wx1", AppSecret: "s", Mode: Safe, Token: "t", EncodingAESKey: "short"},
		{AppID: "wx1", AppSecret: "s", CallbackURL: "http://x"},
		{AppID: "wx1", AppSecret: "s", Token: "t", CallbackURL: "mailto:x"},
		{AppID: "wx1", AppSecret: "s", Kind: 7},
	} {
		if err := p.AddApp(a); err == nil {
			t.Errorf("AddApp(%+v) succeeded", a)
		}
	}
}

func TestIDs(t *testing.T) {
	p, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, app := range []string{oaID, webID} {
		for _, u := range []string{"alice", "bob", "a", "lice"} {
			id := p.OpenID(app, u)
			if len(id) != 28 || id[0] != 'o' || strings.Trim(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") != "" {
				t.Fatalf("openid %q", id)
			}
			if id != p.OpenID(app, u) || seen[id] {
				t.Fatalf("openid %q not deterministic or not unique", id)
			}
			seen[id] = true
		}
	}
	if u := p.UnionID("alice"); len(u) != 28 || u == p.UnionID("bob") || seen[u] {
		t.Fatalf("unionid %q", u)
	}
}
