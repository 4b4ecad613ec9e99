package wechattest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat"
)

// pushed is a request received by a test callback.
type pushed struct {
	method   string
	rawQuery string
	header   http.Header
	body     []byte
}

// callback is a test server standing in for an Official Account's server.
type callback struct {
	*httptest.Server
	mu     sync.Mutex
	got    []pushed
	answer func(n int, r *http.Request, body []byte, w http.ResponseWriter) // n counts from 0
}

func newCallback(t testing.TB, answer func(n int, r *http.Request, body []byte, w http.ResponseWriter)) *callback {
	t.Helper()
	c := &callback{answer: answer}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		c.mu.Lock()
		n := len(c.got)
		c.got = append(c.got, pushed{r.Method, r.URL.RawQuery, r.Header.Clone(), body})
		c.mu.Unlock()
		if c.answer != nil {
			c.answer(n, r, body, w)
			return
		}
		_, _ = io.WriteString(w, "success")
	}))
	t.Cleanup(c.Close)
	return c
}

func (c *callback) requests() []pushed {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]pushed(nil), c.got...)
}

func newQR(t testing.TB, s *Server, body string) apiAnswer {
	t.Helper()
	a := createQR(t, s, fetchClassic(t, s).str("access_token"), body)
	wantErrcode(t, a, 0)
	return a
}

var encryptElem = regexp.MustCompile(`<Encrypt><!\[CDATA\[([^\]]*)\]\]></Encrypt>`)

// openPush checks a push the way an Official Account server must and
// returns the plaintext event.
func openPush(t testing.TB, mode PushMode, p pushed) *wechat.Event {
	t.Helper()
	if p.method != http.MethodPost || p.header.Get("Content-Type") != "text/xml" || p.header.Get("User-Agent") != "Mozilla/4.0" {
		t.Fatalf("push %s with Content-Type %q, User-Agent %q", p.method, p.header.Get("Content-Type"), p.header.Get("User-Agent"))
	}
	keys := queryKeys(p.rawQuery)
	wantKeys := "signature,timestamp,nonce,openid"
	if mode != Plaintext {
		wantKeys += ",encrypt_type,msg_signature"
	}
	if got := strings.Join(keys, ","); got != wantKeys {
		t.Fatalf("query keys %s, want %s", got, wantKeys)
	}
	q := parseQuery(t, p.rawQuery)
	ts, nonce := q["timestamp"], q["nonce"]
	if !wechat.CheckSignature(q["signature"], oaToken, ts, nonce) {
		t.Fatal("bad signature")
	}
	if mode == Plaintext {
		ev, err := wechat.ParseEvent(p.body)
		if err != nil {
			t.Fatal(err)
		}
		if ev.FromUserName != q["openid"] {
			t.Fatalf("openid %q, FromUserName %q", q["openid"], ev.FromUserName)
		}
		return ev
	}
	if q["encrypt_type"] != "aes" {
		t.Fatalf("encrypt_type %q", q["encrypt_type"])
	}
	m := encryptElem.FindSubmatch(p.body)
	if m == nil {
		t.Fatalf("no Encrypt in %s", p.body)
	}
	cr, err := wechat.NewCrypter(oaToken, oaAESKey, oaID)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := cr.Decrypt(q["msg_signature"], ts, nonce, string(m[1]))
	if err != nil {
		t.Fatalf("decrypt: %v", err)
	}
	ev, err := wechat.ParseEvent(plain)
	if err != nil {
		t.Fatal(err)
	}
	outer, err := wechat.ParseEvent(p.body)
	if err != nil {
		t.Fatalf("envelope: %v", err)
	}
	switch mode {
	case Compatible:
		// The plaintext copy matches the encrypted one.
		if outer.FromUserName != ev.FromUserName || outer.EventKey != ev.EventKey || outer.CreateTime != ev.CreateTime {
			t.Fatalf("compatible body %+v differs from encrypted %+v", outer, ev)
		}
	case Safe:
		if outer.ToUserName != oaGH || outer.FromUserName != "" || outer.MsgType != "" {
			t.Fatalf("safe body carries plaintext fields: %s", p.body)
		}
	}
	if ev.FromUserName != q["openid"] {
		t.Fatalf("openid %q, FromUserName %q", q["openid"], ev.FromUserName)
	}
	return ev
}

// parseQuery splits a raw query, failing on repeated keys.
func parseQuery(t testing.TB, raw string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for part := range strings.SplitSeq(raw, "&") {
		k, v, _ := strings.Cut(part, "=")
		if _, dup := out[k]; dup {
			t.Fatalf("repeated %s", k)
		}
		out[k] = v
	}
	return out
}

func TestScanPushesInEveryMode(t *testing.T) {
	for _, mode := range []PushMode{Plaintext, Compatible, Safe} {
		t.Run(mode.String(), func(t *testing.T) {
			cb := newCallback(t, nil)
			s := newPlatformServer(t, Config{}, cb.URL+"/wechat/callback", mode)
			qr := newQR(t, s, `{"expire_seconds":300,"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"login_abc123"}}}`)
			ticket := qr.str("ticket")

			d, err := s.Scan(context.Background(), oaID, ticket, "alice")
			if err != nil {
				t.Fatal(err)
			}
			if d.Status != StatusAcknowledged || len(d.Attempts) != 1 || d.Attempts[0].Status != 200 {
				t.Fatalf("delivery %+v", d)
			}
			reqs := cb.requests()
			if len(reqs) != 1 || !strings.HasPrefix(d.URL, cb.URL+"/wechat/callback?signature=") {
				t.Fatalf("%d pushes to %s", len(reqs), d.URL)
			}
			ev := openPush(t, mode, reqs[0])
			want := wechat.Event{
				ToUserName: oaGH, FromUserName: s.OpenID(oaID, "alice"), CreateTime: ev.CreateTime,
				MsgType: "event", Event: "subscribe", EventKey: "qrscene_login_abc123", Ticket: ticket,
			}
			if *ev != want || d.Event != want {
				t.Fatalf("event %+v\nwant %+v", *ev, want)
			}
			if !bytes.Contains(reqs[0].body, []byte("\n")) {
				t.Error("push XML has no newlines between elements")
			}

			// Alice follows now: the next scan is a SCAN with the bare scene.
			if !s.Follows(oaID, "alice") {
				t.Fatal("alice does not follow after subscribing")
			}
			if _, err := s.Scan(context.Background(), oaID, ticket, "alice"); err != nil {
				t.Fatal(err)
			}
			ev = openPush(t, mode, cb.requests()[1])
			if ev.Event != "SCAN" || ev.EventKey != "login_abc123" || ev.Ticket != ticket {
				t.Fatalf("second scan %+v", ev)
			}
		})
	}
}

func TestScanFollowerAndUserInfo(t *testing.T) {
	cb := newCallback(t, nil)
	s := newPlatformServer(t, Config{Now: fixedClock()}, cb.URL, Safe)
	tok := fetchClassic(t, s).str("access_token")
	ticket := createQR(t, s, tok, `{"action_name":"QR_SCENE","action_info":{"scene":{"scene_id":42}}}`).str("ticket")

	// Bob follows every account from the start: he gets SCAN.
	d, err := s.Scan(context.Background(), oaID, ticket, "bob")
	if err != nil || d.Event.Event != "SCAN" || d.Event.EventKey != "42" {
		t.Fatalf("bob: %+v, %v", d, err)
	}

	alice := s.OpenID(oaID, "alice")
	info := get(t, s.URL+"/cgi-bin/user/info?access_token="+tok+"&openid="+alice+"&lang=zh_CN")
	if info.num("subscribe") != 0 || len(info) != 3 || info.str("openid") != alice {
		t.Fatalf("non-follower info %v", info)
	}
	if _, err := s.Scan(context.Background(), oaID, ticket, "alice"); err != nil {
		t.Fatal(err)
	}
	info = get(t, s.URL+"/cgi-bin/user/info?access_token="+tok+"&openid="+alice)
	if info.num("subscribe") != 1 || info.str("subscribe_scene") != "ADD_SCENE_QR_CODE" || info.num("qr_scene") != 42 ||
		info.str("unionid") != s.UnionID("alice") || info.num("subscribe_time") != fixedClock()().Unix() {
		t.Fatalf("follower info %v", info)
	}
	wantErrcode(t, get(t, s.URL+"/cgi-bin/user/info?access_token="+tok+"&openid="+s.OpenID(webID, "alice")), 40003)
	wantErrcode(t, get(t, s.URL+"/cgi-bin/user/info?access_token="+tok), 41009)
}

func TestScanResolvesURLAndScene(t *testing.T) {
	cb := newCallback(t, nil)
	s := newPlatformServer(t, Config{}, cb.URL, Plaintext)
	qr := newQR(t, s, `{"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"sc1"}}}`)
	for _, ref := range []string{qr.str("url"), "sc1", qr.str("ticket")} {
		d, err := s.Scan(context.Background(), "", ref, "bob")
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		if d.Event.Ticket != qr.str("ticket") || d.AppID != oaID {
			t.Fatalf("%s: %+v", ref, d.Event)
		}
	}
}

func TestScanWithoutSceneLevel(t *testing.T) {
	cb := newCallback(t, nil)
	s := newPlatformServer(t, Config{}, cb.URL, Plaintext)
	qr := newQR(t, s, `{"action_name":"QR_SCENE","action_info":{"scene_id":7}}`)
	d, err := s.Scan(context.Background(), oaID, qr.str("ticket"), "alice")
	if err != nil || d.Event.EventKey != "qrscene_0" {
		t.Fatalf("%+v, %v", d, err)
	}
}

func TestScanErrorsPushNothing(t *testing.T) {
	cb := newCallback(t, nil)
	s := newPlatformServer(t, Config{Now: fixedClock()}, cb.URL, Plaintext)
	ticket := newQR(t, s, `{"expire_seconds":60,"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"x"}}}`).str("ticket")
	if err := s.AddApp(App{AppID: "wxother", AppSecret: "s", Token: "t", CallbackURL: cb.URL}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name         string
		app, ref, by string
		want         error
	}{
		{"unknown ticket", oaID, "bm9wZQ==", "alice", ErrUnknownTicket},
		{"unknown user", oaID, ticket, "mallory", ErrUnknownUser},
		{"other app", "wxother", ticket, "alice", ErrUnknownTicket},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.Scan(ctx, tc.app, tc.ref, tc.by); !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
	s.Advance(time.Minute)
	if _, err := s.Scan(ctx, oaID, ticket, "alice"); !errors.Is(err, ErrTicketExpired) {
		t.Fatalf("expired: %v", err)
	}
	if _, err := s.Follow(ctx, webID, "alice"); !errors.Is(err, ErrNotOA) {
		t.Fatalf("website app: %v", err)
	}
	if n := len(cb.requests()); n != 0 {
		t.Fatalf("%d pushes", n)
	}
}

func TestPushRetriesWithTheSameRequest(t *testing.T) {
	cb := newCallback(t, func(n int, r *http.Request, _ []byte, w http.ResponseWriter) {
		switch n {
		case 0:
			<-r.Context().Done() // stall until the platform gives up
		case 1:
			w.WriteHeader(http.StatusBadGateway)
		default:
			_, _ = io.WriteString(w, "success")
		}
	})
	s := newPlatformServer(t, Config{PushTimeout: 100 * time.Millisecond}, cb.URL, Compatible)
	ticket := newQR(t, s, `{"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"r"}}}`).str("ticket")
	d, err := s.Scan(context.Background(), oaID, ticket, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != StatusAcknowledged || len(d.Attempts) != 3 {
		t.Fatalf("status %s after %d attempts", d.Status, len(d.Attempts))
	}
	if a := d.Attempts[0]; a.Status != 0 || !errors.Is(a.Err, context.DeadlineExceeded) || a.Duration < 100*time.Millisecond {
		t.Errorf("first attempt %+v", a)
	}
	if strings.Contains(d.Attempts[0].Err.Error(), "signature") {
		t.Errorf("attempt error leaks the URL: %v", d.Attempts[0].Err)
	}
	if d.Attempts[1].Status != http.StatusBadGateway {
		t.Errorf("second attempt %+v", d.Attempts[1])
	}
	reqs := cb.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests", len(reqs))
	}
	for _, p := range reqs[1:] {
		if p.rawQuery != reqs[0].rawQuery || !bytes.Equal(p.body, reqs[0].body) {
			t.Fatal("a retry differs from the first attempt")
		}
	}
	if openPush(t, Compatible, reqs[2]).CreateTime != openPush(t, Compatible, reqs[0]).CreateTime {
		t.Fatal("CreateTime changed between attempts")
	}
}

func TestPushGivesUpAfterThreeAttempts(t *testing.T) {
	cb := newCallback(t, func(_ int, _ *http.Request, _ []byte, w http.ResponseWriter) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	})
	s := newPlatformServer(t, Config{}, cb.URL, Plaintext)
	d, err := s.Follow(context.Background(), oaID, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != StatusUnavailable || len(d.Attempts) != 3 || len(cb.requests()) != 3 || d.Problem != "HTTP status 503" {
		t.Fatalf("delivery %s %q after %d attempts", d.Status, d.Problem, len(d.Attempts))
	}
	// The user follows even though the account's server failed.
	if !s.Follows(oaID, "alice") {
		t.Error("alice does not follow")
	}
}

func TestPushCancelled(t *testing.T) {
	cb := newCallback(t, func(_ int, r *http.Request, _ []byte, _ http.ResponseWriter) { <-r.Context().Done() })
	s := newPlatformServer(t, Config{}, cb.URL, Plaintext)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	d, err := s.Follow(ctx, oaID, "alice")
	if !errors.Is(err, context.DeadlineExceeded) || d == nil || len(d.Attempts) != 1 {
		t.Fatalf("err %v, delivery %+v", err, d)
	}
}

func encryptedEnvelope(t testing.TB, plain []byte, ts, nonce string, tamper bool) []byte {
	t.Helper()
	cr, err := wechat.NewCrypter(oaToken, oaAESKey, oaID)
	if err != nil {
		t.Fatal(err)
	}
	enc, sig, err := cr.Encrypt(plain, ts, nonce)
	if err != nil {
		t.Fatal(err)
	}
	if tamper {
		sig = strings.Repeat("0", 40)
	}
	return []byte("<xml>\n<Encrypt><![CDATA[" + enc + "]]></Encrypt>\n<MsgSignature><![CDATA[" + sig +
		"]]></MsgSignature>\n<TimeStamp>" + ts + "</TimeStamp>\n<Nonce><![CDATA[" + nonce + "]]></Nonce>\n</xml>")
}

func TestReplyDecoding(t *testing.T) {
	alice := (&Platform{}).OpenID(oaID, "alice")
	text := func(to, from string) []byte {
		return wechat.MarshalEvent(&wechat.Event{ToUserName: to, FromUserName: from, CreateTime: 1700000001, MsgType: "text", Content: "登录成功"})
	}
	for _, tc := range []struct {
		name   string
		mode   PushMode
		status int
		reply  func(r *http.Request) []byte
		want   DeliveryStatus
	}{
		{"success", Safe, 200, func(*http.Request) []byte { return []byte("success") }, StatusAcknowledged},
		{"empty", Safe, 200, func(*http.Request) []byte { return nil }, StatusAcknowledged},
		{"success with newline", Plaintext, 200, func(*http.Request) []byte { return []byte("success\n") }, StatusAcknowledged},
		{"plaintext reply", Plaintext, 200, func(*http.Request) []byte { return text(alice, oaGH) }, StatusReplied},
		{"plaintext reply in compatible mode", Compatible, 200, func(*http.Request) []byte { return text(alice, oaGH) }, StatusReplied},
		{"encrypted reply", Safe, 200, func(r *http.Request) []byte {
			return encryptedEnvelope(t, text(alice, oaGH), "1700000001", r.URL.Query().Get("nonce"), false)
		}, StatusReplied},
		{"encrypted reply, bad signature", Safe, 200, func(r *http.Request) []byte {
			return encryptedEnvelope(t, text(alice, oaGH), "1700000001", r.URL.Query().Get("nonce"), true)
		}, StatusUnavailable},
		{"plaintext reply in safe mode", Safe, 200, func(*http.Request) []byte { return text(alice, oaGH) }, StatusUnavailable},
		{"encrypted reply in plaintext mode", Plaintext, 200, func(r *http.Request) []byte {
			return encryptedEnvelope(t, text(alice, oaGH), "1700000001", "n", false)
		}, StatusUnavailable},
		{"wrong addressee", Plaintext, 200, func(*http.Request) []byte { return text("oSomeoneElse", oaGH) }, StatusUnavailable},
		{"JSON", Plaintext, 200, func(*http.Request) []byte { return []byte(`{"ok":true}`) }, StatusUnavailable},
		{"forbidden", Plaintext, 403, func(*http.Request) []byte { return []byte("success") }, StatusUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cb := newCallback(t, func(_ int, r *http.Request, _ []byte, w http.ResponseWriter) {
				w.WriteHeader(tc.status)
				_, _ = w.Write(tc.reply(r))
			})
			s := newPlatformServer(t, Config{PushAttempts: 1}, cb.URL, tc.mode)
			d, err := s.Follow(context.Background(), oaID, "alice")
			if err != nil {
				t.Fatal(err)
			}
			if d.Status != tc.want {
				t.Fatalf("status %s (%s), want %s", d.Status, d.Problem, tc.want)
			}
			if tc.want == StatusUnavailable && d.Problem == "" {
				t.Error("no problem recorded")
			}
			if tc.want == StatusReplied && (d.Reply == nil || d.Reply.Content != "登录成功" || d.Reply.MsgType != "text") {
				t.Fatalf("reply %+v", d.Reply)
			}
		})
	}
}

func TestUnfollowAndPush(t *testing.T) {
	cb := newCallback(t, nil)
	s := newPlatformServer(t, Config{}, cb.URL, Compatible)
	ctx := context.Background()
	d, err := s.Unfollow(ctx, oaID, "bob")
	if err != nil || d.Event.Event != "unsubscribe" || s.Follows(oaID, "bob") {
		t.Fatalf("%+v %v", d, err)
	}
	ev := openPush(t, Compatible, cb.requests()[0])
	if ev.Event != "unsubscribe" || ev.EventKey != "" {
		t.Fatalf("event %+v", ev)
	}
	if !bytes.Contains(cb.requests()[0].body, []byte("<EventKey><![CDATA[]]></EventKey>")) {
		t.Error("unsubscribe lacks the empty EventKey real pushes carry")
	}

	text := &wechat.Event{FromUserName: s.OpenID(oaID, "bob"), MsgType: "text", Content: "hi", MsgID: 6054768590064713728}
	if _, err := s.Push(ctx, oaID, text); err != nil {
		t.Fatal(err)
	}
	ev = openPush(t, Compatible, cb.requests()[1])
	if ev.MsgID != text.MsgID || ev.Content != "hi" || ev.ToUserName != oaGH || ev.CreateTime == 0 {
		t.Fatalf("pushed %+v", ev)
	}
	if _, err := s.Push(ctx, oaID, &wechat.Event{MsgType: "text"}); err == nil {
		t.Fatal("push without FromUserName succeeded")
	}

	log := s.Deliveries()
	if len(log) != 2 || log[0].Event.Event != "unsubscribe" || log[1].Event.MsgType != "text" {
		t.Fatalf("log %+v", log)
	}
}

func TestVerifyCallback(t *testing.T) {
	good := newCallback(t, func(_ int, r *http.Request, _ []byte, w http.ResponseWriter) {
		q := r.URL.Query()
		if r.Method != http.MethodGet || !wechat.CheckSignature(q.Get("signature"), oaToken, q.Get("timestamp"), q.Get("nonce")) {
			http.Error(w, "bad", http.StatusForbidden)
			return
		}
		if _, err := strconv.ParseUint(q.Get("echostr"), 10, 64); err != nil {
			http.Error(w, "echostr", http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, q.Get("echostr"))
	})
	s := newPlatformServer(t, Config{}, good.URL, Safe)
	if err := s.VerifyCallback(context.Background(), oaID); err != nil {
		t.Fatal(err)
	}

	for name, answer := range map[string]func(int, *http.Request, []byte, http.ResponseWriter){
		"success": func(_ int, _ *http.Request, _ []byte, w http.ResponseWriter) { _, _ = io.WriteString(w, "success") },
		"newline": func(_ int, r *http.Request, _ []byte, w http.ResponseWriter) {
			_, _ = io.WriteString(w, r.URL.Query().Get("echostr")+"\n")
		},
		"403": func(_ int, _ *http.Request, _ []byte, w http.ResponseWriter) { w.WriteHeader(http.StatusForbidden) },
	} {
		t.Run(name, func(t *testing.T) {
			bad := newCallback(t, answer)
			s := newPlatformServer(t, Config{}, bad.URL, Safe)
			if err := s.VerifyCallback(context.Background(), oaID); !errors.Is(err, ErrCallbackFailed) {
				t.Fatalf("err %v", err)
			}
		})
	}
}
