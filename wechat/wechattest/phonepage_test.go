package wechattest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// newSandboxServer serves NewSandbox(cfg) with an Official Account pushing
// to callback and a website app, and returns the platform and its URL.
func newSandboxServer(t *testing.T, acct AccountType, mode PushMode, callback string) (*Platform, string) {
	t.Helper()
	var p *Platform
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { p.ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	var err error
	p, err = NewSandbox(SandboxConfig{
		Config:  Config{BaseURL: srv.URL},
		Account: acct,
		OfficialAccount: App{
			AppID: oaID, AppSecret: oaSecret, Kind: WebsiteApp, // NewSandbox makes it an Official Account
			Token: oaToken, EncodingAESKey: oaAESKey, OriginalID: oaGH, CallbackURL: callback, Mode: mode,
		},
		WebsiteApp: App{AppID: webID, AppSecret: webSecret},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p, srv.URL
}

// postPhone posts a form to the phone's endpoints as a browser does and
// returns the response without following its redirect.
func postPhone(t *testing.T, u string, form url.Values) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "text/html")
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestSandboxSubscriptionAccount: a sandbox run as a subscription account
// has no QR codes and no web authorization; its phone follows the account
// and chats with it, which is all a login by a code sent in the chat needs.
func TestSandboxSubscriptionAccount(t *testing.T) {
	cb := newCallback(t, echoReply(t, Safe))
	p, base := newSandboxServer(t, SubscriptionAccount, Safe, cb.URL)

	tok := get(t, base+"/cgi-bin/token?grant_type=client_credential&appid="+oaID+"&secret="+oaSecret).str("access_token")
	wantErrcode(t, call(t, http.MethodPost, base+"/cgi-bin/qrcode/create?access_token="+url.QueryEscape(tok),
		`{"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"a"}}}`), 48001)
	_, body := open(t, http.MethodGet, base+"/connect/oauth2/authorize?appid="+oaID+"&redirect_uri="+url.QueryEscape(base+"/cb")+
		"&response_type=code&scope=snsapi_base&state=a", nil)
	if m := errcodeAttr.FindStringSubmatch(body); m == nil || m[1] != "10005" {
		t.Fatalf("web authorization: page error %v, want 10005", m)
	}

	// The phone page opens on the sandbox's account, as the first user.
	resp, page := open(t, http.MethodGet, base+"/sandbox/phone", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, `data-user="alice"`) || !strings.Contains(page, `data-appid="`+oaID+`"`) ||
		!strings.Contains(page, `data-following="false"`) || !strings.Contains(page, "subscription") || strings.Contains(page, `name="content"`) {
		t.Fatalf("phone page %d\n%s", resp.StatusCode, page)
	}

	// Follow, from a browser form: back to the phone page.
	resp, _ = postPhone(t, base+"/sandbox/follow", url.Values{"user": {"alice"}, "follow": {"1"}})
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != base+"/sandbox/phone?appid="+oaID+"&user=alice" {
		t.Fatalf("follow: %d to %q", resp.StatusCode, loc)
	}
	if !p.Follows(oaID, "alice") {
		t.Fatal("alice does not follow")
	}

	// Send a message: the form, then JSON.
	resp, _ = postPhone(t, base+"/sandbox/message", url.Values{"user": {"alice"}, "content": {"654321"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("message form: %d", resp.StatusCode)
	}
	a := call(t, http.MethodPost, base+"/sandbox/message", `{"appid":"`+oaID+`","user":"alice","content":"again"}`)
	if a.str("status") != "replied" || a.str("chat") != "you said: again" || a.str("event") != "text" {
		t.Fatalf("message JSON answer %v", a)
	}

	_, page = open(t, http.MethodGet, base+"/sandbox/phone?user=alice", nil)
	for _, want := range []string{
		`data-following="true"`, `name="content"`, `value="0"`,
		`<small>event</small><br>subscribe`,
		`<small>me</small><br>654321`, `<small>account</small><br>you said: 654321`,
		`<small>me</small><br>again`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("phone page lacks %s", want)
		}
	}
	if strings.Index(page, "654321") > strings.Index(page, "again") {
		t.Error("chat not in order")
	}

	// Bob's chat is his own.
	_, page = open(t, http.MethodGet, base+"/sandbox/phone?user=bob", nil)
	if strings.Contains(page, "654321") || !strings.Contains(page, `data-following="true"`) {
		t.Fatalf("bob's phone\n%s", page)
	}

	// The JSON listing says what the account is.
	_, body = open(t, http.MethodGet, base+"/sandbox/users", nil)
	if !strings.Contains(body, `"account":"subscription"`) {
		t.Fatalf("listing %s", body)
	}
}

func TestSandboxPhoneErrors(t *testing.T) {
	cb := newCallback(t, nil)
	_, base := newSandboxServer(t, VerifiedServiceAccount, Plaintext, cb.URL)
	for _, tc := range []struct {
		name, path, body string
		want             int
	}{
		{"message from a non-follower", "/sandbox/message", `{"user":"alice","content":"hi"}`, http.StatusConflict},
		{"empty message", "/sandbox/message", `{"user":"bob","content":""}`, http.StatusBadRequest},
		{"long message", "/sandbox/message", `{"user":"bob","content":"` + strings.Repeat("x", maxChatText+1) + `"}`, http.StatusBadRequest},
		{"follow twice", "/sandbox/follow", `{"user":"bob","follow":true}`, http.StatusConflict},
		{"unfollow a non-follower", "/sandbox/follow", `{"user":"alice","follow":false}`, http.StatusConflict},
		{"unknown user", "/sandbox/follow", `{"user":"mallory","follow":true}`, http.StatusBadRequest},
		{"unknown app", "/sandbox/follow", `{"appid":"wxnope","user":"alice","follow":true}`, http.StatusNotFound},
		{"no user", "/sandbox/message", `{"content":"hi"}`, http.StatusBadRequest},
		{"bad JSON", "/sandbox/message", `{`, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, base+tc.path, strings.NewReader(tc.body))
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
	if resp, _ := open(t, http.MethodGet, base+"/sandbox/message", nil); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /sandbox/message: %d", resp.StatusCode)
	}
	if resp, _ := open(t, http.MethodGet, base+"/sandbox/phone?user=mallory", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("phone of an unknown user: %d", resp.StatusCode)
	}
	if n := len(cb.requests()); n != 0 {
		t.Fatalf("%d pushes", n)
	}
}

// TestSandboxScanWithoutFollowing: the QR page's "scan without following"
// opens the account page, whose follow button pushes the QR subscribe.
func TestSandboxScanWithoutFollowing(t *testing.T) {
	cb := newCallback(t, nil)
	p, base := newSandboxServer(t, VerifiedServiceAccount, Compatible, cb.URL)
	tok := get(t, base+"/cgi-bin/token?grant_type=client_credential&appid="+oaID+"&secret="+oaSecret).str("access_token")
	qr := call(t, http.MethodPost, base+"/cgi-bin/qrcode/create?access_token="+url.QueryEscape(tok),
		`{"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"sbx"}}}`)

	id := qr.str("url")[strings.LastIndex(qr.str("url"), "/")+1:]
	_, page := open(t, http.MethodGet, base+"/q/"+id, nil)
	if !strings.Contains(page, `name="nofollow" value="1"`) {
		t.Fatalf("QR page lacks the option\n%s", page)
	}

	// JSON.
	a := call(t, http.MethodPost, base+"/sandbox/scan", `{"ticket":"`+qr.str("ticket")+`","user":"alice","nofollow":true}`)
	if a["account_page"] != true || a.str("scene") != "sbx" || len(cb.requests()) != 0 {
		t.Fatalf("answer %v, %d pushes", a, len(cb.requests()))
	}
	// A browser's form: the page offers to follow.
	resp, body := postPhone(t, base+"/sandbox/scan", url.Values{"ticket": {qr.str("url")}, "user": {"alice"}, "nofollow": {"1"}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `data-status="account_page"`) ||
		!strings.Contains(body, `action="`+base+`/sandbox/follow"`) || !strings.Contains(body, `name="follow" value="1"`) {
		t.Fatalf("%d\n%s", resp.StatusCode, body)
	}
	_, page = open(t, http.MethodGet, base+"/sandbox/phone?user=alice", nil)
	if !strings.Contains(page, "from QR scene <code>sbx</code>") {
		t.Fatalf("phone page does not show the account page\n%s", page)
	}
	// Follow, JSON.
	a = call(t, http.MethodPost, base+"/sandbox/follow", `{"user":"alice","follow":true}`)
	if a.str("event") != "subscribe" || a.str("event_key") != "qrscene_sbx" {
		t.Fatalf("follow %v", a)
	}
	if !p.Follows(oaID, "alice") || len(cb.requests()) != 1 {
		t.Fatalf("follows %v, %d pushes", p.Follows(oaID, "alice"), len(cb.requests()))
	}
}

func TestNewSandboxChecks(t *testing.T) {
	if _, err := NewSandbox(SandboxConfig{
		Account:         TestAccount,
		OfficialAccount: App{AppID: oaID, AppSecret: oaSecret, Token: oaToken, EncodingAESKey: oaAESKey, Mode: Safe},
	}); err == nil {
		t.Error("a test-account sandbox in safe mode was accepted")
	}
	if _, err := NewSandbox(SandboxConfig{Config: Config{BaseURL: "ftp://x"}, OfficialAccount: App{AppID: oaID, AppSecret: oaSecret}}); err == nil {
		t.Error("a bad Config was accepted")
	}
	p, err := NewSandbox(SandboxConfig{OfficialAccount: App{AppID: oaID, AppSecret: oaSecret}})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.phoneApp(""); got != oaID {
		t.Errorf("phone opens on %q", got)
	}
}
