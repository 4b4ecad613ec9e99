package middleware

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/middleware/bigcachestore"
	"github.com/wechat-login/caddy-wechat-login/middleware/store"
	"github.com/wechat-login/caddy-wechat-login/wechat"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// countingMetrics records the middleware's metric events.
type countingMetrics struct {
	mu     sync.Mutex
	counts map[string]int
}

func (c *countingMetrics) inc(k string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts == nil {
		c.counts = map[string]int{}
	}
	c.counts[k]++
}

func (c *countingMetrics) get(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[k]
}

func (c *countingMetrics) SceneCreated()          { c.inc("scene") }
func (c *countingMetrics) Scan(o string)          { c.inc("scan:" + o) }
func (c *countingMetrics) DuplicatePush()         { c.inc("duplicate") }
func (c *countingMetrics) PushRejected(r string)  { c.inc("reject:" + r) }
func (c *countingMetrics) Login(m string)         { c.inc("login:" + m) }
func (c *countingMetrics) LoginDenied(m string)   { c.inc("denied:" + m) }
func (c *countingMetrics) Logout()                { c.inc("logout") }
func (c *countingMetrics) WeChatFailure(w string) { c.inc("wechat:" + w) }
func (c *countingMetrics) Limited(w string)       { c.inc("limited:" + w) }
func (c *countingMetrics) WeChatCall(e, o string, _ time.Duration) {
	c.inc("call:" + e + ":" + o)
}
func (c *countingMetrics) Waiting(d int) { c.inc("waiting:" + strconv.Itoa(d)) }

// pendingScene creates a scene in a fresh browser and returns both, plus the
// scene's ticket.
func pendingScene(t *testing.T, env *testEnv) (*browser, string, string) {
	t.Helper()
	b := env.browser()
	qr := b.createQR("/")
	scene := qr["scene"].(string)
	rec, _, err := env.mw.loadScene(context.Background(), scene)
	if err != nil {
		t.Fatal(err)
	}
	return b, scene, rec.Ticket
}

func TestCallbackVerifyHandshake(t *testing.T) {
	env := newEnv(t, wechattest.Safe)
	now := strconv.FormatInt(time.Now().Unix(), 10)
	good := url.Values{
		"signature": {wechat.Signature(testToken, now, "12345")},
		"timestamp": {now},
		"nonce":     {"12345"},
		"echostr":   {"8641591277801631551"},
	}
	resp := env.sendPush(pushReq{method: http.MethodGet, query: good})
	if resp.StatusCode != http.StatusOK || string(resp.body) != "8641591277801631551" {
		t.Fatalf("valid handshake: %d %q", resp.StatusCode, resp.body)
	}

	upper := strings.ToUpper(good.Get("signature"))
	tests := []struct {
		name     string
		rawQuery string
		method   string
		want     int
	}{
		{"missing signature", "timestamp=" + now + "&nonce=12345&echostr=1", "", http.StatusBadRequest},
		{"missing timestamp", "signature=" + good.Get("signature") + "&nonce=12345&echostr=1", "", http.StatusBadRequest},
		{"wrong signature", strings.Replace(good.Encode(), good.Get("signature")[:4], "0000", 1), "", http.StatusForbidden},
		{"uppercase signature", strings.Replace(good.Encode(), good.Get("signature"), upper, 1), "", http.StatusForbidden},
		{"repeated signature", good.Encode() + "&signature=" + good.Get("signature"), "", http.StatusBadRequest},
		{"stale timestamp", signedQuery(time.Now().Add(-time.Hour).Unix(), "1") + "&echostr=1", "", http.StatusForbidden},
		{"method PUT", good.Encode(), http.MethodPut, http.StatusMethodNotAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			resp := env.sendPush(pushReq{method: method, rawQuery: tc.rawQuery})
			if resp.StatusCode != tc.want {
				t.Fatalf("got %d %q, want %d", resp.StatusCode, resp.body, tc.want)
			}
		})
	}
	// An echostr that is not a plain token is refused even when signed.
	bad := signedQuery(time.Now().Unix(), "9") + "&echostr=" + url.QueryEscape("<script>alert(1)</script>")
	if resp := env.sendPush(pushReq{method: http.MethodGet, rawQuery: bad}); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("markup echostr: %d", resp.StatusCode)
	}
}

func signedQuery(ts int64, nonce string) string {
	s := strconv.FormatInt(ts, 10)
	return url.Values{"signature": {wechat.Signature(testToken, s, nonce)}, "timestamp": {s}, "nonce": {nonce}}.Encode()
}

// TestPushBadInputs sends forged, replayed, stale, oversized and malformed
// pushes for a pending scene: each gets a clear 4xx and the scene stays
// pending.
func TestPushBadInputs(t *testing.T) {
	env := newEnv(t, wechattest.Safe)
	_, scene, ticket := pendingScene(t, env)
	openid := env.fake.OpenID(testAppID, "mallory")
	now := time.Now()
	ev := scanEvent(openid, scene, ticket, false, now)

	otherApp, err := wechat.NewCrypter(testToken, testAESKey, "wxffffffffffffffff")
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		build func() pushReq
		want  int
	}{
		{"plaintext push while safe mode is configured", func() pushReq { return plainPush(ev, now.Unix(), "1") }, http.StatusForbidden},
		{"encrypt_type=raw", func() pushReq {
			p := safePush(t, ev, now.Unix(), "2")
			p.query.Set("encrypt_type", "raw")
			return p
		}, http.StatusForbidden},
		{"encrypt_type=AES", func() pushReq {
			p := safePush(t, ev, now.Unix(), "3")
			p.query.Set("encrypt_type", "AES")
			return p
		}, http.StatusForbidden},
		{"encrypt_type missing", func() pushReq {
			p := safePush(t, ev, now.Unix(), "4")
			p.query.Del("encrypt_type")
			return p
		}, http.StatusForbidden},
		{"encrypt_type repeated", func() pushReq {
			p := safePush(t, ev, now.Unix(), "5")
			p.query.Add("encrypt_type", "aes")
			return p
		}, http.StatusBadRequest},
		{"msg_signature missing", func() pushReq {
			p := safePush(t, ev, now.Unix(), "6")
			p.query.Del("msg_signature")
			return p
		}, http.StatusForbidden},
		{"msg_signature flipped", func() pushReq {
			p := safePush(t, ev, now.Unix(), "7")
			p.query.Set("msg_signature", flipHex(p.query.Get("msg_signature")))
			return p
		}, http.StatusForbidden},
		{"ciphertext flipped", func() pushReq {
			p := safePush(t, ev, now.Unix(), "8")
			p.body = []byte(strings.Replace(string(p.body), "<Encrypt><![CDATA[", "<Encrypt><![CDATA[A", 1))
			return p
		}, http.StatusForbidden},
		{"nonce changed", func() pushReq {
			p := safePush(t, ev, now.Unix(), "9")
			p.query.Set("nonce", "10")
			return p
		}, http.StatusForbidden},
		{"timestamp changed", func() pushReq {
			p := safePush(t, ev, now.Unix(), "11")
			p.query.Set("timestamp", strconv.FormatInt(now.Unix()+1, 10))
			return p
		}, http.StatusForbidden},
		{"signed for another app", func() pushReq {
			p := safePush(t, ev, now.Unix(), "12")
			ts := p.query.Get("timestamp")
			enc, sig, err := otherApp.Encrypt(wechat.MarshalEvent(ev), ts, "12")
			if err != nil {
				t.Fatal(err)
			}
			p.query.Set("msg_signature", sig)
			p.body = []byte("<xml><ToUserName><![CDATA[gh_x]]></ToUserName><Encrypt><![CDATA[" + enc + "]]></Encrypt></xml>")
			return p
		}, http.StatusForbidden},
		{"encrypt_type=aes without Encrypt", func() pushReq {
			p := safePush(t, ev, now.Unix(), "13")
			p.body = wechat.MarshalEvent(ev)
			p.query.Set("msg_signature", wechat.Signature(testToken, p.query.Get("timestamp"), "13", ""))
			return p
		}, http.StatusBadRequest},
		{"stale timestamp", func() pushReq { return safePush(t, ev, now.Add(-10*time.Minute).Unix(), "14") }, http.StatusForbidden},
		{"future timestamp", func() pushReq { return safePush(t, ev, now.Add(10*time.Minute).Unix(), "15") }, http.StatusForbidden},
		{"timestamp beyond 2038", func() pushReq { return safePush(t, ev, 1<<31, "16") }, http.StatusForbidden},
		{"timestamp not a number", func() pushReq {
			p := safePush(t, ev, now.Unix(), "17")
			p.query.Set("timestamp", "12e9")
			return p
		}, http.StatusBadRequest},
		{"no query at all", func() pushReq { return pushReq{body: []byte("<xml/>"), skipQuery: true} }, http.StatusBadRequest},
		{"body over the cap", func() pushReq {
			p := safePush(t, ev, now.Unix(), "18")
			p.body = []byte("<xml><Encrypt>" + strings.Repeat("A", wechat.MaxPushBytes+1) + "</Encrypt></xml>")
			return p
		}, http.StatusRequestEntityTooLarge},
		{"JSON content type", func() pushReq {
			p := safePush(t, ev, now.Unix(), "19")
			p.header = http.Header{"Content-Type": {"application/json"}}
			return p
		}, http.StatusUnsupportedMediaType},
		{"method DELETE", func() pushReq {
			p := safePush(t, ev, now.Unix(), "20")
			p.method = http.MethodDelete
			return p
		}, http.StatusMethodNotAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := env.sendPush(tc.build())
			if resp.StatusCode != tc.want {
				t.Fatalf("got %d %q, want %d", resp.StatusCode, resp.body, tc.want)
			}
			if s := env.sceneState(scene); s != StatePending {
				t.Fatalf("scene became %q", s)
			}
		})
	}

	// And the genuine push still works afterwards: nothing above spent it.
	if resp := env.sendPush(safePush(t, ev, now.Unix(), "99")); resp.StatusCode != http.StatusOK {
		t.Fatalf("genuine push: %d %q", resp.StatusCode, resp.body)
	}
	if s := env.sceneState(scene); s != StateConfirmed {
		t.Fatalf("after the genuine push the scene is %q", s)
	}
}

// TestPlaintextPushXMLAttacks covers the XML parser's bad inputs, reachable
// through a plaintext-mode callback (in safe mode they would have to be
// encrypted with our key first).
func TestPlaintextPushXMLAttacks(t *testing.T) {
	env := newEnv(t, wechattest.Plaintext)
	_, scene, ticket := pendingScene(t, env)
	now := time.Now()
	openid := env.fake.OpenID(testAppID, "mallory")
	good := string(wechat.MarshalEvent(scanEvent(openid, scene, ticket, false, now)))

	bodies := map[string]string{
		"doctype":            `<!DOCTYPE xml [<!ENTITY a "b">]>` + good,
		"external entity":    `<!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><xml><FromUserName>&xxe;</FromUserName></xml>`,
		"duplicate EventKey": strings.Replace(good, "</xml>", "<EventKey><![CDATA[other]]></EventKey></xml>", 1),
		"namespaced element": strings.Replace(good, "<Event>", "<x:Event xmlns:x=\"y\">", 1),
		"second root":        good + good,
		"not xml":            `{"Event":"SCAN"}`,
		"truncated":          good[:len(good)/2],
		"invalid utf-8":      strings.Replace(good, "SCAN", "SC\xffAN", 1),
		"gbk declaration":    `<?xml version="1.0" encoding="GBK"?>` + good,
		"huge CreateTime":    strings.Replace(good, strconv.FormatInt(now.Unix(), 10), "123456789012345678901", 1),
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			p := plainPush(scanEvent(openid, scene, ticket, false, now), now.Unix(), "n"+name[:3])
			p.body = []byte(body)
			resp := env.sendPush(p)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("got %d %q, want 400", resp.StatusCode, resp.body)
			}
			if s := env.sceneState(scene); s != StatePending {
				t.Fatalf("scene became %q", s)
			}
		})
	}

	// Pushes that are well-formed but not ours to act on are acknowledged
	// (so WeChat does not retry) and change nothing.
	acks := map[string]*wechat.Event{
		"unknown scene":      scanEvent(openid, strings.Repeat("0", 32), "", false, now),
		"empty EventKey":     scanEvent(openid, "", "", false, now),
		"scene 0":            scanEvent(openid, "0", "", true, now),
		"bare qrscene_":      {ToUserName: testGhID, FromUserName: openid, CreateTime: now.Unix(), MsgType: "event", Event: "subscribe", EventKey: "qrscene_"},
		"long EventKey":      scanEvent(openid, strings.Repeat("a", 65), "", false, now),
		"unsubscribe":        {ToUserName: testGhID, FromUserName: openid, CreateTime: now.Unix(), MsgType: "event", Event: "unsubscribe"},
		"text message":       {ToUserName: testGhID, FromUserName: openid, CreateTime: now.Unix(), MsgType: "text", Content: scene, MsgID: 1},
		"odd FromUserName":   scanEvent("o<script>", scene, ticket, false, now),
		"wrong ticket":       scanEvent(openid, scene, "gQWrongTicket==", false, now),
		"CLICK with our key": {ToUserName: testGhID, FromUserName: openid, CreateTime: now.Unix(), MsgType: "event", Event: "CLICK", EventKey: scene},
	}
	i := 0
	for name, ev := range acks {
		i++
		t.Run(name, func(t *testing.T) {
			resp := env.sendPush(plainPush(ev, now.Unix(), "ack"+strconv.Itoa(i)))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("got %d %q, want 200", resp.StatusCode, resp.body)
			}
			if s := env.sceneState(scene); s != StatePending {
				t.Fatalf("scene became %q", s)
			}
		})
	}
}

// TestDuplicatePushesOneTransition: WeChat retries a push up to three times;
// concurrent and sequential copies cause exactly one transition, and all get
// the same friendly answer.
func TestDuplicatePushesOneTransition(t *testing.T) {
	metrics := &countingMetrics{}
	env := newEnv(t, wechattest.Safe, withMetrics(metrics))
	_, scene, ticket := pendingScene(t, env)
	now := time.Now()
	ev := scanEvent(env.fake.OpenID(testAppID, "alice"), scene, ticket, false, now)

	var wg sync.WaitGroup
	var ok atomic.Int32
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each retry has its own timestamp and nonce in the URL, but the
			// same CreateTime inside.
			if resp := env.sendPush(safePush(t, ev, now.Unix()+int64(i), "r"+strconv.Itoa(i))); resp.StatusCode == http.StatusOK {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if resp := env.sendPush(safePush(t, ev, now.Unix()+3, "r3")); resp.StatusCode == http.StatusOK {
		ok.Add(1)
	}
	if ok.Load() != 4 {
		t.Fatalf("%d of 4 copies acknowledged", ok.Load())
	}
	if n := metrics.get("scan:confirmed"); n != 1 {
		t.Fatalf("%d transitions for one scan, want 1", n)
	}
	if n := metrics.get("duplicate"); n != 3 {
		t.Fatalf("%d duplicates counted, want 3", n)
	}

	// A second person scanning the same code later changes nothing: the
	// first scan wins.
	other := scanEvent(env.fake.OpenID(testAppID, "mallory"), scene, ticket, false, now.Add(time.Second))
	if resp := env.sendPush(safePush(t, other, now.Unix()+5, "m")); resp.StatusCode != http.StatusOK {
		t.Fatalf("second scanner: %d", resp.StatusCode)
	}
	rec, _, err := env.mw.loadScene(context.Background(), scene)
	if err != nil || rec.OpenID != env.fake.OpenID(testAppID, "alice") {
		t.Fatalf("scene identity after a second scanner: %+v %v", rec, err)
	}
}

// TestPollBinding: only the browser that created a scene may ask about it or
// redeem it; a scene id alone is worthless.
func TestPollBinding(t *testing.T) {
	env := newEnv(t, wechattest.Safe)
	owner, scene, _ := pendingScene(t, env)
	_, otherScene, _ := pendingScene(t, env)
	stranger := env.browser()

	for name, tc := range map[string]struct {
		b    *browser
		path string
		want int
	}{
		"stranger polls":              {stranger, "/wechat/poll?scene=" + scene, http.StatusForbidden},
		"stranger streams":            {stranger, "/wechat/events?scene=" + scene, http.StatusForbidden},
		"stranger fetches the QR":     {stranger, "/wechat/qr.svg?scene=" + scene, http.StatusForbidden},
		"owner asks for another":      {owner, "/wechat/poll?scene=" + otherScene, http.StatusForbidden},
		"guessed scene":               {owner, "/wechat/poll?scene=" + strings.Repeat("a", 32), http.StatusForbidden},
		"malformed scene":             {owner, "/wechat/poll?scene=../../etc", http.StatusBadRequest},
		"repeated scene":              {owner, "/wechat/poll?scene=" + scene + "&scene=" + scene, http.StatusBadRequest},
		"bad wait":                    {owner, "/wechat/poll?scene=" + scene + "&wait=-1", http.StatusBadRequest},
		"token in query is no cookie": {stranger, "/wechat/poll?scene=" + scene + "&token=" + scene, http.StatusForbidden},
	} {
		t.Run(name, func(t *testing.T) {
			resp := tc.b.get(tc.path, nil)
			if resp.StatusCode != tc.want {
				t.Fatalf("got %d %q, want %d", resp.StatusCode, resp.body, tc.want)
			}
		})
	}
	if got := owner.poll(scene, 0).json(t); got["status"] != StatePending {
		t.Fatalf("owner: %v", got)
	}

	// Confirm, then let a stranger holding the scene id try to redeem.
	ticket := func() string { r, _, _ := env.mw.loadScene(context.Background(), scene); return r.Ticket }()
	if resp := env.sendPush(safePush(t, scanEvent(env.fake.OpenID(testAppID, "alice"), scene, ticket, false, time.Now()), time.Now().Unix(), "c")); resp.StatusCode != http.StatusOK {
		t.Fatal(resp.StatusCode)
	}
	if resp := stranger.poll(scene, 0); resp.StatusCode != http.StatusForbidden || stranger.cookie(sessionCookie) != nil {
		t.Fatalf("stranger redeemed: %d", resp.StatusCode)
	}
	if env.sceneState(scene) != StateConfirmed {
		t.Fatal("stranger's attempt changed the scene")
	}
}

// TestDoubleRedemption: many concurrent polls of one confirmed scene from its
// own browser yield exactly one session.
func TestDoubleRedemption(t *testing.T) {
	env := newEnv(t, wechattest.Safe)
	b, scene, ticket := pendingScene(t, env)
	if resp := env.sendPush(safePush(t, scanEvent(env.fake.OpenID(testAppID, "alice"), scene, ticket, false, time.Now()), time.Now().Unix(), "c")); resp.StatusCode != http.StatusOK {
		t.Fatal(resp.StatusCode)
	}
	var wg sync.WaitGroup
	var sessions atomic.Int32
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp := b.poll(scene, 0)
			for _, c := range resp.Cookies() {
				if c.Name == sessionCookie && c.Value != "" {
					sessions.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := sessions.Load(); n != 1 {
		t.Fatalf("%d sessions issued for one scan, want exactly 1", n)
	}
}

// TestSameBrowserGetsSameScene: asking again while a scene is pending reuses
// it, with no new WeChat call.
func TestSameBrowserGetsSameScene(t *testing.T) {
	env := newEnv(t, wechattest.Safe)
	b := env.browser()
	first := b.createQR("/")
	calls := env.fake.Calls("/cgi-bin/qrcode/create")
	second := b.createQR("/")
	if first["scene"] != second["scene"] {
		t.Fatalf("new scene %v for the same browser, want %v", second["scene"], first["scene"])
	}
	if env.fake.Calls("/cgi-bin/qrcode/create") != calls {
		t.Fatal("a pending scene was recreated at WeChat")
	}
	if other := env.browser().createQR("/"); other["scene"] == first["scene"] {
		t.Fatal("another browser got the same scene")
	}
}

// TestQRRateLimit: a burst from one address is cut off with 429 and
// Retry-After, before any WeChat call.
func TestQRRateLimit(t *testing.T) {
	env := newEnv(t, wechattest.Safe, func(c *Config) { c.QRRateBurst = 3; c.QRRateLimit = 1 })
	for i := range 3 {
		env.browser().createQR("/")
		_ = i
	}
	calls := env.fake.Calls("/cgi-bin/qrcode/create")
	resp := env.browser().do(http.MethodPost, "/wechat/qr", nil, map[string]string{"Origin": env.srv.URL})
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("got %d, want 429", resp.StatusCode)
	}
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
		t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	if env.fake.Calls("/cgi-bin/qrcode/create") != calls {
		t.Fatal("rate-limited request still reached WeChat")
	}
}

func TestCrossSiteQRCreationRefused(t *testing.T) {
	env := newEnv(t, wechattest.Safe)
	resp := env.browser().do(http.MethodPost, "/wechat/qr", nil, map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"})
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("got %d, want 403", resp.StatusCode)
	}
	if env.fake.Calls("/cgi-bin/qrcode/create") != 0 {
		t.Fatal("cross-site request reached WeChat")
	}
	if resp := env.browser().get("/wechat/qr", nil); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET /wechat/qr: %d", resp.StatusCode)
	}
}

// openRedirectPayloads are `next` values that must never be accepted.
var openRedirectPayloads = []string{
	"//evil.example", "///evil.example", "////evil.example", "/\\evil.example", "\\\\evil.example", "\\/evil.example",
	"https://evil.example", "http://evil.example/", "HTTPS://evil.example", "//evil.example/%2e%2e",
	"/%2F/evil.example", "/%2f%2fevil.example", "%2F%2Fevil.example", "/%5Cevil.example", "/%5c/evil.example",
	"/\t/evil.example", "/%09/evil.example", "/\n/evil.example", "/%0a/evil.example", "/%0d/evil.example",
	"/\r/evil.example", "/%0b/evil.example", "javascript:alert(1)", "JavaScript:alert(1)",
	"java\tscript:alert(1)", "data:text/html,<script>alert(1)</script>", "vbscript:msgbox(1)", "http:evil.example",
	"https:/evil.example", "https:\\\\evil.example", "//evil.example@good.example", "https://good.example@evil.example",
	"https://good.example.evil.example", "https://evilgood.example", "//evil%2eexample", "/.//evil.example",
	"/./\\evil.example", "/..//evil.example", "/%2e%2e//evil.example", "%2f%2f%2fevil.example", "//%65vil.example",
	"\x00//evil.example", "/\x00/evil.example", " //evil.example", "\t//evil.example", "//evil.example\\@good.example",
	"ftp://evil.example", "//evil。example", "/%252F%252Fevil.example", "https:evil.example", "//\\evil.example",
	"/\\/evil.example", "%5C%5Cevil.example", "mailto:a@evil.example", "//[::1]/", "//127.0.0.1:22",
	strings.Repeat("/a", 2000),
}

// TestOpenRedirectPayloads: every payload is refused with 400 on scene
// creation (no WeChat call, no scene) and ignored by the login page.
func TestOpenRedirectPayloads(t *testing.T) {
	if len(openRedirectPayloads) < 50 {
		t.Fatalf("only %d payloads", len(openRedirectPayloads))
	}
	env := newEnv(t, wechattest.Safe, func(c *Config) {
		c.RedirectHosts = []string{"good.example"}
		c.QRRateBurst = 1000
	})
	for _, p := range openRedirectPayloads {
		b := env.browser()
		resp := b.do(http.MethodPost, "/wechat/qr", strings.NewReader(url.Values{"next": {p}}.Encode()), map[string]string{"Origin": env.srv.URL})
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("next=%q: got %d %s, want 400", p, resp.StatusCode, resp.body)
		}
		if b.cookie(bindingCookie) != nil {
			t.Errorf("next=%q: a scene was bound anyway", p)
		}
		page := b.get("/wechat/login?next="+url.QueryEscape(p), map[string]string{"Accept": "text/html"})
		if page.StatusCode != http.StatusOK || strings.Contains(string(page.body), "evil") {
			t.Errorf("next=%q: login page %d carries the payload", p, page.StatusCode)
		}
	}
	if n := env.fake.Calls("/cgi-bin/qrcode/create"); n != 0 {
		t.Fatalf("%d WeChat calls for refused requests", n)
	}
	// Legitimate targets pass.
	for _, ok := range []string{"/", "/a/b?c=d#e", "/%E4%BD%A0%E5%A5%BD", "https://good.example/x"} {
		b := env.browser()
		qr := b.createQR(ok)
		rec, _, err := env.mw.loadScene(context.Background(), qr["scene"].(string))
		if err != nil || rec.Next != ok {
			t.Errorf("next=%q stored as %q (%v)", ok, rec.Next, err)
		}
	}
}

// TestSessionCookieTampering: any change to the cookie, an expired one, or
// one sealed with an unknown key, is no session.
func TestSessionCookieTampering(t *testing.T) {
	env := newEnv(t, wechattest.Safe)
	b := env.browser()
	value := issueTestSession(t, env.mw, "oAlice0000000000000000000001")
	check := func(name, v string, want int) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, env.srv.URL+"/protected", nil)
		req.AddCookie(&http.Cookie{Name: sessionCookie, Value: v})
		resp, err := b.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: got %d, want %d", name, resp.StatusCode, want)
		}
	}
	check("genuine", value, http.StatusOK)
	for i := 0; i < len(value); i += 7 {
		c := value[i]
		repl := byte('A')
		if c == 'A' {
			repl = 'B'
		}
		check("byte "+strconv.Itoa(i)+" changed", value[:i]+string(repl)+value[i+1:], http.StatusUnauthorized)
	}
	check("truncated", value[:len(value)-4], http.StatusUnauthorized)
	check("empty", "", http.StatusUnauthorized)
	check("garbage", strings.Repeat("x", 5000), http.StatusUnauthorized)

	// Rotation: a middleware whose first key is new still opens cookies
	// sealed with the old key; one without the old key does not.
	newKey := []byte("a-brand-new-session-key-0123456789abcdef")
	rotated, err := New(withKeys(env.cfg, newKey, testSessionKey))
	if err != nil {
		t.Fatal(err)
	}
	defer rotated.Close()
	if _, err := rotated.sessions.Get(cookieRequest(value)); err != nil {
		t.Fatalf("rotated middleware refused an old-key cookie: %v", err)
	}
	dropped, err := New(withKeys(env.cfg, newKey))
	if err != nil {
		t.Fatal(err)
	}
	defer dropped.Close()
	if _, err := dropped.sessions.Get(cookieRequest(value)); err == nil {
		t.Fatal("cookie accepted after its key was dropped")
	}

	// Expiry: the same cookie an hour past the session TTL.
	later := env.cfg
	later.Store = env.mw.store
	later.Now = func() time.Time { return time.Now().Add(env.cfg.SessionTTL + time.Hour) }
	expired, err := New(later)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := expired.sessions.Get(cookieRequest(value)); err == nil {
		t.Fatal("expired session accepted")
	}
}

func withKeys(c Config, keys ...[]byte) Config {
	c.SessionKeys = keys
	c.Store = nil
	return c
}

func cookieRequest(value string) *http.Request {
	r, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
	r.AddCookie(&http.Cookie{Name: sessionCookie, Value: value})
	return r
}

// issueTestSession returns a genuine session cookie value for openid.
func issueTestSession(t testing.TB, m *Middleware, openid string) string {
	t.Helper()
	rec := &recorder{header: http.Header{}}
	if err := m.startSession(rec, cookieRequest(""), Identity{AppID: testAppID, OpenID: openid, Method: MethodQR}, ""); err != nil {
		t.Fatal(err)
	}
	for _, c := range (&http.Response{Header: rec.header}).Cookies() {
		if c.Name == sessionCookie {
			return c.Value
		}
	}
	t.Fatal("no cookie issued")
	return ""
}

type recorder struct{ header http.Header }

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *recorder) WriteHeader(int)             {}

// TestAllowlistAndPublicPaths: users outside the allowlist get 403, public
// paths need no session.
func TestAllowlistAndPublicPaths(t *testing.T) {
	env := newEnv(t, wechattest.Safe, func(c *Config) {
		c.AllowedOpenIDs = []string{"oAllowed00000000000000000001"}
		c.PublicPaths = []string{"/public/"}
	})
	b := env.browser()
	if resp := b.get("/public/x", nil); resp.StatusCode != http.StatusOK || resp.json(t)["has_id"] != false {
		t.Fatalf("public path: %d", resp.StatusCode)
	}
	for openid, want := range map[string]int{"oAllowed00000000000000000001": 200, "oSomebodyElse000000000000001": 403} {
		v := issueTestSession(t, env.mw, openid)
		req, _ := http.NewRequest(http.MethodGet, env.srv.URL+"/private", nil)
		req.AddCookie(&http.Cookie{Name: sessionCookie, Value: v})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: got %d, want %d", openid, resp.StatusCode, want)
		}
	}
}

// TestCallbackAnswersInTimeWhenStoreIsSlow: WeChat waits five seconds; a
// stuck store must not make us miss that.
func TestCallbackAnswersInTimeWhenStoreIsSlow(t *testing.T) {
	inner, err := bigcachestore.New(bigcachestore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inner.Close() })
	slow := &slowStore{inner: inner}
	env := newEnv(t, wechattest.Safe, func(c *Config) { c.Store = slow })
	_, scene, ticket := pendingScene(t, env)
	slow.delay.Store(int64(6 * time.Second))
	start := time.Now()
	resp := env.sendPush(safePush(t, scanEvent(env.fake.OpenID(testAppID, "alice"), scene, ticket, false, time.Now()), time.Now().Unix(), "s"))
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("answered after %v", took)
	}
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("got %d, want 503 so that WeChat retries", resp.StatusCode)
	}
	slow.delay.Store(0)
	// WeChat's retry then succeeds.
	resp = env.sendPush(safePush(t, scanEvent(env.fake.OpenID(testAppID, "alice"), scene, ticket, false, time.Now()), time.Now().Unix(), "s2"))
	if resp.StatusCode != http.StatusOK || env.sceneState(scene) != StateConfirmed {
		t.Fatalf("retry: %d, scene %s", resp.StatusCode, env.sceneState(scene))
	}
}

// slowStore wraps a store and, while delay is set, stalls every call without
// regard for its context, like a wedged network store.
type slowStore struct {
	inner store.Store
	delay atomic.Int64
}

func (s *slowStore) wait() { time.Sleep(time.Duration(s.delay.Load())) }
func (s *slowStore) Create(ctx context.Context, k string, v []byte, ttl time.Duration) error {
	s.wait()
	return s.inner.Create(ctx, k, v, ttl)
}
func (s *slowStore) Get(ctx context.Context, k string) ([]byte, error) {
	s.wait()
	return s.inner.Get(ctx, k)
}
func (s *slowStore) Update(ctx context.Context, k string, o, v []byte) error {
	s.wait()
	return s.inner.Update(ctx, k, o, v)
}
func (s *slowStore) Take(ctx context.Context, k string) ([]byte, error) {
	s.wait()
	return s.inner.Take(ctx, k)
}
func (s *slowStore) Delete(ctx context.Context, k string) error {
	s.wait()
	return s.inner.Delete(ctx, k)
}
func (s *slowStore) Close() error { return nil }

func flipHex(s string) string {
	b, _ := hex.DecodeString(s)
	if len(b) == 0 {
		b = make([]byte, sha1.Size)
	}
	b[0] ^= 1
	return hex.EncodeToString(b)
}
