package middleware

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// subscriptionAccount makes the fake's Official Account a subscription
// account: WeChat answers its qrcode/create with 48001.
func subscriptionAccount(a *wechattest.App) { a.Account = wechattest.SubscriptionAccount }

func withMethods(methods ...string) envOption {
	return func(c *Config) { c.Methods = methods }
}

// createCode asks for a login code the way the login page does.
func (b *browser) createCode(next string) response {
	b.t.Helper()
	return b.do(http.MethodPost, "/wechat/code", strings.NewReader(url.Values{"next": {next}}.Encode()),
		map[string]string{"Origin": b.env.srv.URL, "Sec-Fetch-Site": "same-origin"})
}

// newCode creates a login code in b and returns its scene and code.
func (b *browser) newCode() (scene, code string) {
	b.t.Helper()
	resp := b.createCode("/in")
	if resp.StatusCode != http.StatusOK {
		b.t.Fatalf("POST /wechat/code: %d %s", resp.StatusCode, resp.body)
	}
	j := resp.json(b.t)
	return j["scene"].(string), j["code"].(string)
}

// send makes user's phone send text to the account in chat, the way a
// follower does (the fake refuses non-followers).
func (e *testEnv) send(user, text string) string {
	e.t.Helper()
	reply, err := e.fake.SendText(context.Background(), testAppID, user, text)
	if err != nil {
		e.t.Fatalf("%s sends %q: %v", user, text, err)
	}
	return reply
}

func (e *testEnv) follow(user string) {
	e.t.Helper()
	if _, err := e.fake.Follow(context.Background(), testAppID, user); err != nil {
		e.t.Fatal(err)
	}
}

// redeemed polls until the browser's login is confirmed and checks the
// identity the site then sees.
func redeemed(t *testing.T, env *testEnv, b *browser, scene, user, method string) {
	t.Helper()
	got := b.poll(scene, 0).json(t)
	if got["status"] != StateConfirmed {
		t.Fatalf("poll after the code was sent: %v", got)
	}
	id := b.get("/in", nil).json(t)
	if id["openid"] != env.fake.OpenID(testAppID, user) || id["method"] != method {
		t.Fatalf("site sees %v, want %s by %s", id, user, method)
	}
}

var codeRE = regexp.MustCompile(`^[0-9]{10}$`)

// TestCodeLoginOnSubscriptionAccount is the whole story of an account that
// may not make parametric QR codes: QR creation answers 502 with a pointer
// to code login (and asks WeChat only once), the code is created, a user who
// does not follow cannot send it, one who does logs the browser in by
// sending it (in full-width digits with spaces around), and the chat reply
// names the site and offers the "not me" code.
func TestCodeLoginOnSubscriptionAccount(t *testing.T) {
	metrics := &countingMetrics{}
	env := newEnvWithApp(t, wechattest.Safe, subscriptionAccount, withMethods(MethodQR, MethodCode), withMetrics(metrics))
	b := env.browser()

	for i := range 3 {
		resp := b.do(http.MethodPost, "/wechat/qr", strings.NewReader("next=%2Fin"), map[string]string{"Origin": env.srv.URL})
		j := resp.json(t)
		if resp.StatusCode != http.StatusBadGateway || j["fallback"] != MethodCode || j["reason"] != ReasonMisconfigured || resp.Header.Get("Retry-After") != "" {
			t.Fatalf("QR creation %d on a subscription account: %d %v", i, resp.StatusCode, j)
		}
	}
	if n := env.fake.Calls("/cgi-bin/qrcode/create"); n != 1 {
		t.Errorf("WeChat was asked for a QR code %d times; a remembered 48001 should ask once", n)
	}
	if page := b.get("/wechat/login?next=/in", nil); !strings.Contains(string(page.body), `data-kind="code"`) || !strings.Contains(string(page.body), `"kinds":["code"]`) {
		t.Errorf("after a 48001 the login page does not start with the code: %s", page.body)
	}

	resp := b.createCode("/in")
	j := resp.json(t)
	scene, code := j["scene"].(string), j["code"].(string)
	if resp.StatusCode != http.StatusOK || !codeRE.MatchString(code) || !validSceneID(scene) ||
		j["poll_url"] != "/wechat/poll?scene="+scene || j["events_url"] != "/wechat/events?scene="+scene {
		t.Fatalf("POST /wechat/code: %d %v", resp.StatusCode, j)
	}
	if exp, err := time.Parse(time.RFC3339, j["expires_at"].(string)); err != nil || time.Until(exp) < 4*time.Minute {
		t.Fatalf("expires_at %v (%v)", j["expires_at"], err)
	}
	if b.cookie(bindingCookie) == nil {
		t.Fatal("no binding cookie")
	}
	if again := b.createCode("/in").json(t); again["code"] != code || again["scene"] != scene {
		t.Errorf("the same browser asking again got %v, want its pending code", again)
	}
	if img := b.get("/wechat/qr.svg?scene="+scene, nil); img.StatusCode != http.StatusNotFound {
		t.Errorf("qr.svg of a code login: %d", img.StatusCode)
	}
	if other := env.browser().poll(scene, 0); other.StatusCode != http.StatusForbidden {
		t.Errorf("another browser polls the code's scene: %d", other.StatusCode)
	}

	// Only followers have the chat.
	if _, err := env.fake.SendText(context.Background(), testAppID, "alice", code); !errors.Is(err, wechattest.ErrNotFollowing) {
		t.Fatalf("a non-follower sent a message: %v", err)
	}
	env.follow("alice")
	wide := " " + strings.Map(func(r rune) rune { return r - '0' + '０' }, code[:5]) + " " + code[5:] + "\u3000"
	reply := env.send("alice", wide)
	if !strings.Contains(reply, "You are now logged in to Example") {
		t.Fatalf("reply to the code: %q", reply)
	}
	notMeCode(t, reply)
	redeemed(t, env, b, scene, "alice", MethodCode)
	if metrics.get("login:code") != 1 || metrics.get("scan:confirmed") != 1 {
		t.Errorf("metrics %v", metrics.counts)
	}
}

// TestCodeLoginCodeServesOneLogin: a retried push logs in once and gets the
// same answer; the used code then confirms nothing else, for its sender or
// anybody; a code that never existed changes nothing.
func TestCodeLoginCodeServesOneLogin(t *testing.T) {
	env := newEnv(t, wechattest.Safe, withMethods(MethodCode))
	b := env.browser()
	scene, code := b.newCode()

	// Some other code: a reply saying so, and nothing changes.
	if reply := replyText(env.say("bob", "0000000000")); !strings.Contains(reply, "not a valid login code") || !strings.Contains(reply, "4 tries left") {
		t.Fatalf("wrong code: %q", reply)
	}
	if s := env.sceneState(scene); s != StatePending {
		t.Fatalf("after a wrong code the scene is %s", s)
	}

	// The same message pushed twice (WeChat's retry: same MsgId) is
	// answered the same and logs in once.
	ev := &wechat.Event{ToUserName: testGhID, FromUserName: env.fake.OpenID(testAppID, "alice"),
		CreateTime: time.Now().Unix(), MsgType: "text", Content: code, MsgID: 7_100_000_001}
	first := env.sendPush(safePush(t, ev, time.Now().Unix(), "nonce-1"))
	second := env.sendPush(safePush(t, ev, time.Now().Unix(), "nonce-2"))
	if first.StatusCode != http.StatusOK || string(first.body) == "" {
		t.Fatalf("first delivery: %d %s", first.StatusCode, first.body)
	}
	r1, r2 := replyContent(t, first.body), replyContent(t, second.body)
	if r1 != r2 || !strings.Contains(r1, "logged in") {
		t.Fatalf("replies to the retried message differ: %q / %q", r1, r2)
	}
	redeemed(t, env, b, scene, "alice", MethodCode)

	// The used code, sent again as a new message, by its sender or by
	// someone else, is a wrong code.
	for _, user := range []string{"alice", "carol"} {
		if reply := replyText(env.say(user, code)); !strings.Contains(reply, "not a valid login code") {
			t.Errorf("used code sent again by %s: %q", user, reply)
		}
	}
	// And a second browser's code is not confirmed by the first one's.
	b2 := env.browser()
	scene2, _ := b2.newCode()
	env.say("carol", code)
	if s := env.sceneState(scene2); s != StatePending {
		t.Fatalf("another browser's login became %s", s)
	}
}

// TestCodeLoginGuessLimit: five wrong codes within ten minutes lock the
// sender out for ten minutes, the right code included, while others are
// unaffected; afterwards the sender may try again. Wrong codes spread over
// more than ten minutes do not add up.
func TestCodeLoginGuessLimit(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	metrics := &countingMetrics{}
	env := newEnv(t, wechattest.Safe, withMethods(MethodCode), withMetrics(metrics), func(c *Config) {
		c.Now = clock
		c.PushMaxAge = 2 * time.Hour // the fake stamps pushes with the real time
	})

	// Four wrong, eleven minutes, four wrong: never five in ten minutes.
	for round := range 2 {
		for i := range 4 {
			if reply := replyText(env.say("mallory", "123456789"+string(rune('0'+i)))); !strings.Contains(reply, "not a valid login code") {
				t.Fatalf("round %d, wrong code %d: %q", round, i, reply)
			}
		}
		advance(11 * time.Minute)
	}

	b := env.browser()
	scene, code := b.newCode()
	for i := range 5 {
		reply := replyText(env.say("mallory", "98765432"+string(rune('0'+i))+"1"))
		if want := "not a valid login code"; i == 4 {
			if !strings.Contains(reply, "Too many wrong login codes: try again in 10 minutes") {
				t.Fatalf("fifth wrong code: %q", reply)
			}
		} else if !strings.Contains(reply, want) {
			t.Fatalf("wrong code %d: %q", i, reply)
		}
	}
	if reply := replyText(env.say("mallory", code)); !strings.Contains(reply, "Too many wrong login codes") {
		t.Fatalf("the right code during the lockout: %q", reply)
	}
	if s := env.sceneState(scene); s != StatePending {
		t.Fatalf("a locked-out sender moved the scene to %s", s)
	}
	if metrics.get("limited:code_guess") == 0 {
		t.Error("lockout not counted")
	}
	advance(10*time.Minute + time.Second)
	b2 := env.browser()
	scene2, code2 := b2.newCode()
	if reply := replyText(env.say("mallory", code2)); !strings.Contains(reply, "logged in") {
		t.Fatalf("after the lockout: %q", reply)
	}
	if s := env.sceneState(scene2); s != StateConfirmed {
		t.Fatalf("after the lockout the scene is %s", s)
	}
}

// TestCodeLoginLockoutIsPerSender: one sender's lockout leaves others free.
func TestCodeLoginLockoutIsPerSender(t *testing.T) {
	env := newEnv(t, wechattest.Safe, withMethods(MethodCode))
	for i := range 5 {
		env.say("mallory", "55555555"+string(rune('0'+i))+"5")
	}
	b := env.browser()
	scene, code := b.newCode()
	if reply := replyText(env.say("alice", code)); !strings.Contains(reply, "logged in") {
		t.Fatalf("alice's code while mallory is locked out: %q", reply)
	}
	redeemed(t, env, b, scene, "alice", MethodCode)
}

// TestCodeLoginConfirmInChat: with ConfirmInChat, the code only moves the
// login to scanned; the confirmation code from the reply completes it.
func TestCodeLoginConfirmInChat(t *testing.T) {
	env := newEnv(t, wechattest.Safe, withMethods(MethodQR, MethodCode), func(c *Config) { c.ConfirmInChat = true })
	b := env.browser()
	scene, code := b.newCode()
	prompt := replyText(env.say("alice", code))
	confirm := promptCode(t, prompt)
	if got := b.poll(scene, 0).json(t); got["status"] != StateScanned {
		t.Fatalf("after the code: %v", got)
	}
	if reply := replyText(env.say("alice", confirm)); !strings.Contains(reply, "logged in") {
		t.Fatalf("confirmation: %q", reply)
	}
	redeemed(t, env, b, scene, "alice", MethodCode)
}

// TestCodeLoginKindsDoNotMix: a scene made for a code takes no QR scan.
func TestCodeLoginKindsDoNotMix(t *testing.T) {
	env := newEnv(t, wechattest.Plaintext, withMethods(MethodQR, MethodCode))
	b := env.browser()
	scene, _ := b.newCode()
	ev := scanEvent(env.fake.OpenID(testAppID, "alice"), scene, "", false, time.Now())
	if resp := env.sendPush(plainPush(ev, time.Now().Unix(), "n1")); resp.StatusCode != http.StatusOK {
		t.Fatalf("push: %d", resp.StatusCode)
	}
	if s := env.sceneState(scene); s != StatePending {
		t.Fatalf("a QR scan event moved a code login to %s", s)
	}
}

// TestWelcomeReply: an ordinary follow gets the welcome reply (by default,
// with code login, a line about sending the code); a follow by scanning a
// login QR code gets the login's reply instead; PassThroughPushes without a
// welcome reply leaves follows to the site.
func TestWelcomeReply(t *testing.T) {
	env := newEnv(t, wechattest.Safe, withMethods(MethodQR, MethodCode))
	d, err := env.fake.Follow(context.Background(), testAppID, "alice")
	if err != nil || !strings.Contains(replyText(d), "To log in to Example, send the login code") {
		t.Fatalf("follow: %q %v", replyText(d), err)
	}

	custom := newEnv(t, wechattest.Safe, func(c *Config) { c.WelcomeReply = "Welcome to %s!" })
	d, _ = custom.fake.Follow(context.Background(), testAppID, "alice")
	if got := replyText(d); got != "Welcome to Example!" {
		t.Fatalf("custom welcome: %q", got)
	}
	if _, err := custom.fake.Unfollow(context.Background(), testAppID, "alice"); err != nil {
		t.Fatal(err)
	}
	b := custom.browser()
	qr := b.createQR("/in")
	d, err = custom.fake.Scan(context.Background(), testAppID, qr["qr_content"].(string), "alice")
	if err != nil || d.Event.Event != "subscribe" || !strings.Contains(replyText(d), "logged in") {
		t.Fatalf("follow by scanning a login code: %s %q %v", d.Event.Event, replyText(d), err)
	}

	pass := newEnv(t, wechattest.Safe, withMethods(MethodCode), func(c *Config) { c.PassThroughPushes = true })
	d, _ = pass.fake.Follow(context.Background(), testAppID, "alice")
	if len(d.Attempts) == 0 || !strings.Contains(string(d.Attempts[0].Body), `"path":"/wechat/callback"`) {
		t.Fatalf("follow with PassThroughPushes did not reach the site: %+v", d.Attempts)
	}
}

// TestCodeRouteBadInput: the route answers what it cannot serve with a clear
// 4xx and creates nothing.
func TestCodeRouteBadInput(t *testing.T) {
	metrics := &countingMetrics{}
	env := newEnv(t, wechattest.Safe, withMethods(MethodCode), withMetrics(metrics))
	b := env.browser()
	for _, tc := range []struct {
		name   string
		method string
		body   string
		hdr    map[string]string
		status int
	}{
		{"GET", http.MethodGet, "", nil, http.StatusMethodNotAllowed},
		{"cross-origin", http.MethodPost, "next=%2F", map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"offsite next", http.MethodPost, "next=https%3A%2F%2Fevil.example%2F", map[string]string{"Origin": env.srv.URL}, http.StatusBadRequest},
		{"malformed form", http.MethodPost, "next=%zz", map[string]string{"Origin": env.srv.URL, "Content-Type": "application/x-www-form-urlencoded"}, http.StatusBadRequest},
		{"oversized", http.MethodPost, "next=" + strings.Repeat("a", 8<<10), map[string]string{"Origin": env.srv.URL}, http.StatusBadRequest},
	} {
		hdr := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
		for k, v := range tc.hdr {
			hdr[k] = v
		}
		resp := b.do(tc.method, "/wechat/code", strings.NewReader(tc.body), hdr)
		if resp.StatusCode != tc.status || resp.json(t)["error"] == "" {
			t.Errorf("%s: %d %s, want %d with a reason", tc.name, resp.StatusCode, resp.body, tc.status)
		}
	}
	if n := metrics.get("scene"); n != 0 {
		t.Errorf("%d scenes created by bad requests", n)
	}
	qrOnly := newEnv(t, wechattest.Safe)
	if resp := qrOnly.browser().createCode("/"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST /code without code login: %d", resp.StatusCode)
	}
}

func TestLoginCodeAttempt(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		ok   bool
	}{
		{"1234567890", "1234567890", true},
		{" 12345 67890 ", "1234567890", true},
		{"１２３４５６７８９０", "1234567890", true},
		{"12345-67890", "1234567890", true},
		{"\u3000１２３４５　６７８９０\n", "1234567890", true},
		{"1234567", "1234567", true}, // too short for a code, still a try
		{"1234567890123456", "1234567890123456", true},
		{"12345678901234567", "", false}, // too long to be a try
		{"123456", "", false},            // a six-digit chat code
		{"12345a7890", "", false},
		{"login 1234567890", "", false},
		{"", "", false},
		{"----------", "", false},
		{"١٢٣٤٥٦٧٨٩٠", "", false}, // other scripts' digits are no code
	} {
		got, ok := loginCodeAttempt(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("loginCodeAttempt(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// FuzzLoginCodeAttempt: whatever a chat message holds, a try is
// minCodeAttempt to maxCodeAttempt ASCII digits, and reading never panics.
func FuzzLoginCodeAttempt(f *testing.F) {
	for _, s := range []string{"1234567890", "１２３４５ ６７８９０", "12-34", "\xff\xfe", strings.Repeat("1 ", 40)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := loginCodeAttempt(s)
		if !ok {
			return
		}
		if len(got) < minCodeAttempt || len(got) > maxCodeAttempt || strings.Trim(got, "0123456789") != "" {
			t.Fatalf("loginCodeAttempt(%q) = %q", s, got)
		}
	})
}

func TestCodeLoginConfig(t *testing.T) {
	base := func() Config {
		return Config{AppID: testAppID, AppSecret: testSecret, PushToken: testToken, SessionKeys: [][]byte{testSessionKey}, Methods: []string{MethodCode}}
	}
	for _, tc := range []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"code needs the push token", func(c *Config) { c.PushToken = "" }, "PushToken"},
		{"follow QR path", func(c *Config) { c.FollowQR = "/static/follow.jpg" }, ""},
		{"follow QR URL", func(c *Config) { c.FollowQR = "https://mmbiz.qpic.cn/follow.jpg" }, ""},
		{"follow QR relative", func(c *Config) { c.FollowQR = "follow.jpg" }, "FollowQR"},
		{"follow QR script", func(c *Config) { c.FollowQR = "javascript:alert(1)" }, "FollowQR"},
		{"follow QR protocol-relative", func(c *Config) { c.FollowQR = "//evil.example/x.png" }, "FollowQR"},
		{"follow QR quote", func(c *Config) { c.FollowQR = "https://a.example/x'.png" }, "FollowQR"},
		{"account name for website login only", func(c *Config) {
			*c = Config{OpenAppID: "wx00000000000000bb", OpenAppSecret: "open-secret-0123456789", SessionKeys: [][]byte{testSessionKey}, AccountName: "Shop"}
		}, "AccountName"},
	} {
		c := base()
		tc.edit(&c)
		err := c.Validate()
		var ce *ConfigError
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.field != "" && (!errors.As(err, &ce) || ce.Field != tc.field):
			t.Errorf("%s: %v, want an error about %s", tc.name, err, tc.field)
		}
	}
}
