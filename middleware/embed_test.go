package middleware

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/wechat-login/caddy-wechat-login/internal/loginpage"
)

// sameOrigin is what a browser sends with the login page's own requests.
func (b *browser) sameOrigin() map[string]string {
	return map[string]string{"Origin": b.env.srv.URL, "Sec-Fetch-Site": "same-origin"}
}

func (b *browser) post(path string, form url.Values, hdr map[string]string) response {
	b.t.Helper()
	return b.do(http.MethodPost, path, strings.NewReader(form.Encode()), hdr)
}

// embed asks for a website login in a frame, as the login page does.
func (b *browser) embed(next string) (state, frameURL string) {
	b.t.Helper()
	resp := b.post("/wechat/oauth/embed", url.Values{"next": {next}}, b.sameOrigin())
	if resp.StatusCode != http.StatusOK {
		b.t.Fatalf("POST /wechat/oauth/embed: %d %s", resp.StatusCode, resp.body)
	}
	j := resp.json(b.t)
	state, _ = j["state"].(string)
	frameURL, _ = j["frame_url"].(string)
	if j["status"] != "frame" || state == "" || frameURL == "" || j["expires_in"] != float64(600) {
		b.t.Fatalf("embed answer %v", j)
	}
	return state, frameURL
}

// frameCallback is the callback URL WeChat's embedded page sends the frame
// to (the fake approves at once).
func (b *browser) frameCallback(frameURL string) string {
	b.t.Helper()
	return b.approve(frameURL)
}

var frameMsgRe = regexp.MustCompile(`var message = (\{.*?\});`)

// frameMessage checks that a callback answer is a page only this site may
// frame, posting to the parent at the site's exact origin, and returns the
// message it posts.
func frameMessage(t *testing.T, env *testEnv, resp response) loginpage.PopupMessage {
	t.Helper()
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "frame-ancestors 'self'") || resp.Header.Get("X-Frame-Options") != "SAMEORIGIN" {
		t.Fatalf("frame page's framing headers: CSP %q, X-Frame-Options %q", csp, resp.Header.Get("X-Frame-Options"))
	}
	body := string(resp.body)
	if !strings.Contains(body, "window.parent.postMessage(message, origin)") || strings.Contains(body, "window.opener") {
		t.Fatalf("frame page does not post to its parent alone: %s", body)
	}
	om := popupOriginRe.FindStringSubmatch(body)
	var origin string
	if om == nil || json.Unmarshal([]byte(om[1]), &origin) != nil || origin != env.srv.URL {
		t.Fatalf("frame page posts to %v, want %q", om, env.srv.URL)
	}
	mm := frameMsgRe.FindStringSubmatch(body)
	var msg loginpage.PopupMessage
	if mm == nil || json.Unmarshal([]byte(mm[1]), &msg) != nil || msg.Type != "wechat_login" {
		t.Fatalf("frame page message %v", mm)
	}
	return msg
}

// cookieless is a client like a frame sent from WeChat's site, whose
// SameSite cookies the browser withholds.
func cookieless() *http.Client {
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func get(t *testing.T, c *http.Client, u string) response {
	t.Helper()
	b := &browser{t: t, client: c}
	return b.fetch(u, nil)
}

// TestEmbeddedWebsiteLogin: the login page's frame logs the browser in
// through its parent, whether or not the frame's callback request carries
// the browser's cookies; the result is redeemed once, and only then is
// there a session.
func TestEmbeddedWebsiteLogin(t *testing.T) {
	for _, tc := range []struct {
		name          string
		frameCookies  bool
		wantEnglish   bool
		acceptLangTag string
	}{
		{"frame request without cookies", false, true, "en"},
		{"frame request with cookies", true, false, "zh-CN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newOAuthEnv(t, "alice", func(c *Config) { c.OpenFrameStyle = "white" })
			b := env.browser()
			hdr := b.sameOrigin()
			hdr["Accept-Language"] = tc.acceptLangTag
			resp := b.post("/wechat/oauth/embed", url.Values{"next": {"/dash?x=1"}}, hdr)
			j := resp.json(t)
			state, frameURL := j["state"].(string), j["frame_url"].(string)
			u, err := url.Parse(frameURL)
			if err != nil || u.Path != "/connect/qrconnect" || !strings.HasPrefix(frameURL, env.fake.URL+"/") {
				t.Fatalf("frame URL %q", frameURL)
			}
			q := u.Query()
			if q.Get("login_type") != "jssdk" || q.Get("self_redirect") != "true" || q.Get("appid") != testOpenAppID ||
				q.Get("scope") != "snsapi_login" || q.Get("state") != state || q.Has("response_type") ||
				q.Get("redirect_uri") != env.srv.URL+"/wechat/oauth/callback" || q.Get("style") != "white" ||
				(q.Get("lang") == "en") != tc.wantEnglish || u.Fragment != "" {
				t.Fatalf("frame URL %q", frameURL)
			}
			callback := b.frameCallback(frameURL)
			var page response
			if tc.frameCookies {
				page = b.fetch(callback, nil)
			} else {
				page = get(t, cookieless(), callback)
			}
			if page.StatusCode != http.StatusOK || page.Header.Get("Set-Cookie") != "" {
				t.Fatalf("frame callback: %d, Set-Cookie %q: %s", page.StatusCode, page.Header.Get("Set-Cookie"), page.body)
			}
			msg := frameMessage(t, env, page)
			if msg.Status != "frame" || msg.State != state || len(msg.Token) != 32 || msg.Redirect != "" {
				t.Fatalf("frame message %+v", msg)
			}
			if env.storedOAuth(state) {
				t.Fatal("state still pending after the callback")
			}
			if id := b.whoami(); id != nil {
				t.Fatalf("logged in before the page redeemed the frame's token: %v", id)
			}
			red := b.post("/wechat/oauth/redeem", url.Values{"state": {state}, "token": {msg.Token}}, b.sameOrigin())
			if red.StatusCode != http.StatusOK {
				t.Fatalf("redeem: %d %s", red.StatusCode, red.body)
			}
			if got := red.json(t); got["status"] != "confirmed" || got["redirect"] != "/dash?x=1" {
				t.Fatalf("redeem answer %v", got)
			}
			if id := b.whoami(); id == nil || id["app_id"] != testOpenAppID || id["login_method"] != MethodOpen {
				t.Fatalf("identity after redeem: %v", id)
			}
			again := b.post("/wechat/oauth/redeem", url.Values{"state": {state}, "token": {msg.Token}}, b.sameOrigin())
			if again.StatusCode != http.StatusGone {
				t.Fatalf("second redeem: %d %s, want 410", again.StatusCode, again.body)
			}
		})
	}
}

// TestEmbeddedResultBoundToBrowser: a frame's result, token and all, is
// useless to any browser but the one that asked for the frame, and trying
// changes nothing. Loading an attacker's callback in a victim's browser
// (login CSRF) leaves the victim logged out.
func TestEmbeddedResultBoundToBrowser(t *testing.T) {
	env := newOAuthEnv(t, "alice")
	owner := env.browser()
	state, frameURL := owner.embed("/")
	msg := frameMessage(t, env, get(t, cookieless(), owner.frameCallback(frameURL)))

	other := env.browser()
	other.embed("/") // a binding cookie of its own, without this state
	fresh := env.browser()
	for name, b := range map[string]*browser{"other binding": other, "no binding": fresh} {
		resp := b.post("/wechat/oauth/redeem", url.Values{"state": {state}, "token": {msg.Token}}, b.sameOrigin())
		if resp.StatusCode != http.StatusForbidden || b.whoami() != nil {
			t.Fatalf("%s: redeem %d %s, want 403 and no session", name, resp.StatusCode, resp.body)
		}
	}
	// The victim loads the attacker's frame result: nothing happens to it.
	attackerState, attackerFrame := other.embed("/")
	attackerCallback := other.frameCallback(attackerFrame)
	victimPage := owner.fetch(attackerCallback, nil)
	attackerMsg := frameMessage(t, env, victimPage)
	if resp := owner.post("/wechat/oauth/redeem", url.Values{"state": {attackerState}, "token": {attackerMsg.Token}}, owner.sameOrigin()); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("victim redeeming the attacker's result: %d %s", resp.StatusCode, resp.body)
	}
	if id := owner.whoami(); id != nil {
		t.Fatalf("victim logged in as %v", id)
	}
	// The owner's own result is still there.
	if resp := owner.post("/wechat/oauth/redeem", url.Values{"state": {state}, "token": {msg.Token}}, owner.sameOrigin()); resp.StatusCode != http.StatusOK {
		t.Fatalf("owner's redeem after the others' tries: %d %s", resp.StatusCode, resp.body)
	}
}

// TestEmbeddedBadInput: bad requests to the new routes get a 4xx with a
// short reason, never a session, and leave a pending result redeemable.
func TestEmbeddedBadInput(t *testing.T) {
	env := newOAuthEnv(t, "alice")
	b := env.browser()
	state, frameURL := b.embed("/")
	msg := frameMessage(t, env, get(t, cookieless(), b.frameCallback(frameURL)))
	wrongToken := strings.Repeat("0", 32)
	if msg.Token == wrongToken {
		t.Fatal("token collided with the test's wrong token")
	}
	cross := map[string]string{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
	for _, tc := range []struct {
		name   string
		method string
		path   string
		body   string
		hdr    map[string]string
		status int
	}{
		{"embed by GET", http.MethodGet, "/wechat/oauth/embed", "", nil, http.StatusMethodNotAllowed},
		{"embed cross-site", http.MethodPost, "/wechat/oauth/embed", "next=/", cross, http.StatusForbidden},
		{"embed bad next", http.MethodPost, "/wechat/oauth/embed", "next=//evil.example/", b.sameOrigin(), http.StatusBadRequest},
		{"embed next twice", http.MethodPost, "/wechat/oauth/embed", "next=/a&next=/b", b.sameOrigin(), http.StatusBadRequest},
		{"embed malformed body", http.MethodPost, "/wechat/oauth/embed", "next=%zz", b.sameOrigin(), http.StatusBadRequest},
		{"embed huge body", http.MethodPost, "/wechat/oauth/embed", "next=/" + strings.Repeat("a", 20000), b.sameOrigin(), http.StatusBadRequest},
		{"redeem by GET", http.MethodGet, "/wechat/oauth/redeem?state=" + state + "&token=" + msg.Token, "", nil, http.StatusMethodNotAllowed},
		{"redeem cross-site", http.MethodPost, "/wechat/oauth/redeem", "state=" + state + "&token=" + msg.Token, cross, http.StatusForbidden},
		{"redeem no state", http.MethodPost, "/wechat/oauth/redeem", "token=" + msg.Token, b.sameOrigin(), http.StatusBadRequest},
		{"redeem no token", http.MethodPost, "/wechat/oauth/redeem", "state=" + state, b.sameOrigin(), http.StatusBadRequest},
		{"redeem short token", http.MethodPost, "/wechat/oauth/redeem", "state=" + state + "&token=abc", b.sameOrigin(), http.StatusBadRequest},
		{"redeem upper-case token", http.MethodPost, "/wechat/oauth/redeem", "state=" + state + "&token=" + strings.ToUpper(msg.Token), b.sameOrigin(), http.StatusBadRequest},
		{"redeem state twice", http.MethodPost, "/wechat/oauth/redeem", "state=" + state + "&state=" + state + "&token=" + msg.Token, b.sameOrigin(), http.StatusBadRequest},
		{"redeem state with junk", http.MethodPost, "/wechat/oauth/redeem", "state=" + state + "x&token=" + msg.Token, b.sameOrigin(), http.StatusBadRequest},
		{"redeem wrong token", http.MethodPost, "/wechat/oauth/redeem", "state=" + state + "&token=" + wrongToken, b.sameOrigin(), http.StatusForbidden},
		{"redeem NUL", http.MethodPost, "/wechat/oauth/redeem", "state=%00&token=%00", b.sameOrigin(), http.StatusBadRequest},
	} {
		var resp response
		if tc.body == "" {
			resp = b.do(tc.method, tc.path, nil, tc.hdr)
		} else {
			resp = b.do(tc.method, tc.path, strings.NewReader(tc.body), tc.hdr)
		}
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.name, resp.StatusCode, resp.body, tc.status)
			continue
		}
		var e struct{ Error string }
		if json.Unmarshal(resp.body, &e) != nil || e.Error == "" || len(e.Error) > 80 {
			t.Errorf("%s: reason %q", tc.name, resp.body)
		}
		if b.whoami() != nil {
			t.Fatalf("%s: logged in", tc.name)
		}
	}
	if resp := b.post("/wechat/oauth/redeem", url.Values{"state": {state}, "token": {msg.Token}}, b.sameOrigin()); resp.StatusCode != http.StatusOK {
		t.Fatalf("redeem after the bad requests: %d %s", resp.StatusCode, resp.body)
	}
}

// TestEmbeddedDeclined: a refusal in the frame is reported to the parent
// by a page the site may frame, with no link that would leave the page.
func TestEmbeddedDeclined(t *testing.T) {
	env := newOAuthEnv(t, "")
	b := env.browser()
	state, frameURL := b.embed("/")
	resp, err := cookieless().PostForm(frameURL, url.Values{"decision": {"deny"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, env.srv.URL+"/wechat/oauth/callback?") || strings.Contains(loc, "code=") {
		t.Fatalf("deny: %d to %q", resp.StatusCode, loc)
	}
	page := get(t, cookieless(), loc)
	msg := frameMessage(t, env, page)
	if page.StatusCode != http.StatusForbidden || msg.Status != "error" || msg.Message == "" || msg.Token != "" ||
		strings.Contains(string(page.body), "/oauth/start") {
		t.Fatalf("declined frame: %d %+v %s", page.StatusCode, msg, page.body)
	}
	if env.storedOAuth(state) {
		t.Fatal("declined state still pending")
	}
}

// TestLoginPageFrameSources: the login page may frame WeChat's origin (the
// fake's, from the configured endpoint) and this site's callback, nothing
// else; with the popup it frames nothing, and the pages that end other
// flows still refuse to be framed.
func TestLoginPageFrameSources(t *testing.T) {
	env := newOAuthEnv(t, "alice")
	b := env.browser()
	csp := b.get("/wechat/login?next=/", nil).Header.Get("Content-Security-Policy")
	want := "frame-src " + env.fake.URL + " " + env.srv.URL + "/wechat/oauth/callback;"
	if !strings.Contains(csp, want) || strings.Contains(csp, "*") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Fatalf("login page CSP %q, want %q", csp, want)
	}
	_, resp := b.loginOAuth("/wechat/oauth/start?method=open&next=%2F&popup=1", nil)
	resp = b.get(resp.Header.Get("Location"), nil) // the code-free page that tells the opener
	if got := resp.Header.Get("Content-Security-Policy"); !strings.Contains(got, "frame-ancestors 'none'") || resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Fatalf("popup page CSP %q", got)
	}

	popup := newOAuthEnv(t, "alice", func(c *Config) { c.OpenDisplay = OpenDisplayPopup })
	if csp := popup.browser().get("/wechat/login", nil).Header.Get("Content-Security-Policy"); strings.Contains(csp, "frame-src") {
		t.Fatalf("popup display's login page CSP %q", csp)
	}
}

func TestOpenDisplayConfig(t *testing.T) {
	base := func() Config {
		return Config{AppID: testAppID, AppSecret: testSecret, PushToken: testToken, SessionKeys: [][]byte{testSessionKey},
			OpenAppID: testOpenAppID, OpenAppSecret: testOpenSecret}
	}
	for _, tc := range []struct {
		name  string
		set   func(*Config)
		field string // "" for valid
		want  string // OpenDisplay after defaults
	}{
		{"default", func(*Config) {}, "", OpenDisplayEmbedded},
		{"popup", func(c *Config) { c.OpenDisplay = OpenDisplayPopup }, "", OpenDisplayPopup},
		{"page", func(c *Config) { c.OpenDisplay = OpenDisplayPage }, "", OpenDisplayPage},
		{"embedded styled", func(c *Config) {
			c.OpenFrameStyle, c.OpenFrameCSS = "white", "data:text/css;base64,LmltcG93ZXJCb3ggLnFyY29kZSB7d2lkdGg6MjAwcHg7fQ=="
		}, "", OpenDisplayEmbedded},
		{"https css", func(c *Config) { c.OpenFrameCSS = "https://example.com/wx.css" }, "", OpenDisplayEmbedded},
		{"unknown display", func(c *Config) { c.OpenDisplay = "iframe" }, "OpenDisplay", ""},
		{"upper case", func(c *Config) { c.OpenDisplay = "Embedded" }, "OpenDisplay", ""},
		{"without website login", func(c *Config) { c.OpenAppID, c.OpenAppSecret, c.OpenDisplay = "", "", OpenDisplayPopup }, "OpenDisplay", ""},
		{"style without website login", func(c *Config) { c.OpenAppID, c.OpenAppSecret, c.OpenFrameStyle = "", "", "white" }, "OpenFrameStyle", ""},
		{"bad style", func(c *Config) { c.OpenFrameStyle = "red" }, "OpenFrameStyle", ""},
		{"style with popup", func(c *Config) { c.OpenDisplay, c.OpenFrameStyle = OpenDisplayPopup, "white" }, "OpenFrameStyle", ""},
		{"css with page", func(c *Config) { c.OpenDisplay, c.OpenFrameCSS = OpenDisplayPage, "https://example.com/a.css" }, "OpenFrameCSS", ""},
		{"http css", func(c *Config) { c.OpenFrameCSS = "http://example.com/wx.css" }, "OpenFrameCSS", ""},
		{"javascript css", func(c *Config) { c.OpenFrameCSS = "javascript:alert(1)" }, "OpenFrameCSS", ""},
		{"bad base64 css", func(c *Config) { c.OpenFrameCSS = "data:text/css;base64,%%%" }, "OpenFrameCSS", ""},
		{"css with quote", func(c *Config) { c.OpenFrameCSS = `https://example.com/a.css"><script>` }, "OpenFrameCSS", ""},
		{"css too long", func(c *Config) { c.OpenFrameCSS = "https://example.com/" + strings.Repeat("a", 3000) }, "OpenFrameCSS", ""},
	} {
		c := base()
		tc.set(&c)
		got, err := c.withDefaults()
		var ce *ConfigError
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.field == "" && got.OpenDisplay != tc.want:
			t.Errorf("%s: OpenDisplay %q, want %q", tc.name, got.OpenDisplay, tc.want)
		case tc.field != "" && (!errors.As(err, &ce) || ce.Field != tc.field):
			t.Errorf("%s: error %v, want one naming %s", tc.name, err, tc.field)
		}
	}
}
