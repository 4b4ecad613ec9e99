package wechattest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat"
)

// TestScanWithoutFollowing: a non-follower's scan opens the account page
// and pushes nothing; following from there pushes subscribe with the QR
// code's scene and ticket. A follower's scan is a SCAN.
func TestScanWithoutFollowing(t *testing.T) {
	for _, mode := range []PushMode{Plaintext, Compatible, Safe} {
		t.Run(mode.String(), func(t *testing.T) {
			cb := newCallback(t, nil)
			s := newPlatformServer(t, Config{Now: fixedClock()}, cb.URL, mode)
			ctx := context.Background()
			qr := newQR(t, s, `{"expire_seconds":300,"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"page1"}}}`)

			d, err := s.ScanWithoutFollowing(ctx, oaID, qr.str("url"), "alice")
			if d != nil || err != nil {
				t.Fatalf("non-follower's scan: %+v, %v; want nothing pushed", d, err)
			}
			if n := len(cb.requests()); n != 0 || s.Follows(oaID, "alice") {
				t.Fatalf("%d pushes, follows %v", n, s.Follows(oaID, "alice"))
			}

			d, err = s.Follow(ctx, oaID, "alice")
			if err != nil {
				t.Fatal(err)
			}
			ev := openPush(t, mode, cb.requests()[0])
			if ev.Event != "subscribe" || ev.EventKey != "qrscene_page1" || ev.Ticket != qr.str("ticket") || *ev != d.Event {
				t.Fatalf("follow from the account page pushed %+v", ev)
			}
			tok := fetchClassic(t, s).str("access_token")
			info := get(t, s.URL+"/cgi-bin/user/info?access_token="+tok+"&openid="+s.OpenID(oaID, "alice"))
			if info.str("subscribe_scene") != "ADD_SCENE_QR_CODE" || info.str("qr_scene_str") != "page1" || info.num("qr_scene") != 0 {
				t.Fatalf("user/info %v", info)
			}

			// Now a follower: the same call pushes SCAN with the bare scene.
			d, err = s.ScanWithoutFollowing(ctx, oaID, qr.str("ticket"), "alice")
			if err != nil || d == nil || d.Event.Event != "SCAN" || d.Event.EventKey != "page1" {
				t.Fatalf("follower's scan: %+v, %v", d, err)
			}
		})
	}
}

// TestFollowAndUnfollow: the phone's buttons, and the ones that do not
// exist in the current state.
func TestFollowAndUnfollow(t *testing.T) {
	cb := newCallback(t, nil)
	s := newPlatformServer(t, Config{}, cb.URL, Plaintext)
	ctx := context.Background()
	if _, err := s.Follow(ctx, oaID, "bob"); !errors.Is(err, ErrAlreadyFollowing) {
		t.Fatalf("bob follows already: %v", err)
	}
	if _, err := s.Unfollow(ctx, oaID, "alice"); !errors.Is(err, ErrNotFollowing) {
		t.Fatalf("alice does not follow: %v", err)
	}
	if n := len(cb.requests()); n != 0 {
		t.Fatalf("%d pushes for refused buttons", n)
	}

	// A plain follow, found by search: empty EventKey, no Ticket.
	d, err := s.Follow(ctx, oaID, "alice")
	if err != nil || d.Event.Event != "subscribe" || d.Event.EventKey != "" || d.Event.Ticket != "" {
		t.Fatalf("follow: %+v, %v", d, err)
	}
	if !bytes.Contains(cb.requests()[0].body, []byte("<EventKey><![CDATA[]]></EventKey>")) {
		t.Errorf("plain subscribe without the empty EventKey WeChat sends: %s", cb.requests()[0].body)
	}
	tok := fetchClassic(t, s).str("access_token")
	if info := get(t, s.URL+"/cgi-bin/user/info?access_token="+tok+"&openid="+s.OpenID(oaID, "alice")); info.str("subscribe_scene") != "ADD_SCENE_SEARCH" {
		t.Fatalf("user/info %v", info)
	}

	d, err = s.Unfollow(ctx, oaID, "alice")
	if err != nil || d.Event.Event != "unsubscribe" || s.Follows(oaID, "alice") {
		t.Fatalf("unfollow: %+v, %v", d, err)
	}
	if _, err := s.Follow(ctx, oaID, "mallory"); !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("unknown user: %v", err)
	}
	if _, err := s.Follow(ctx, "wxnope", "alice"); !errors.Is(err, ErrUnknownApp) {
		t.Fatalf("unknown app: %v", err)
	}
}

// echoReply answers text pushes with a passive text reply ("you said: ...")
// encrypted when the push was, and acknowledges everything else.
func echoReply(t testing.TB, mode PushMode) func(int, *http.Request, []byte, http.ResponseWriter) {
	return func(_ int, r *http.Request, body []byte, w http.ResponseWriter) {
		ev := openPush(t, mode, pushed{r.Method, r.URL.RawQuery, r.Header, body})
		if ev.MsgType != "text" {
			_, _ = io.WriteString(w, "success")
			return
		}
		reply := wechat.TextReply(ev.FromUserName, ev.ToUserName, "you said: "+ev.Content, time.Unix(ev.CreateTime, 0))
		if mode == Safe {
			cr, err := wechat.NewCrypter(oaToken, oaAESKey, oaID)
			if err != nil {
				t.Error(err)
				return
			}
			if reply, err = cr.EncryptReply(reply, r.URL.Query().Get("timestamp"), r.URL.Query().Get("nonce")); err != nil {
				t.Error(err)
				return
			}
		}
		_, _ = w.Write(reply)
	}
}

// TestSendText: a follower's text message is pushed in the account's mode
// with a MsgId, and the passive reply is what the chat shows.
func TestSendText(t *testing.T) {
	for _, mode := range []PushMode{Plaintext, Compatible, Safe} {
		t.Run(mode.String(), func(t *testing.T) {
			cb := newCallback(t, echoReply(t, mode))
			s := newPlatformServer(t, Config{}, cb.URL, mode)
			ctx := context.Background()
			if _, err := s.SendText(ctx, oaID, "alice", "hi"); !errors.Is(err, ErrNotFollowing) {
				t.Fatalf("non-follower: %v", err)
			}
			if _, err := s.SendText(ctx, oaID, "bob", ""); err == nil {
				t.Fatal("empty message sent")
			}
			if n := len(cb.requests()); n != 0 {
				t.Fatalf("%d pushes for refused messages", n)
			}

			reply, err := s.SendText(ctx, oaID, "bob", "登录 123456 ]]> <b>")
			if err != nil || reply != "you said: 登录 123456 ]]> <b>" {
				t.Fatalf("reply %q, %v", reply, err)
			}
			if _, err := s.SendText(ctx, oaID, "bob", "again"); err != nil {
				t.Fatal(err)
			}
			reqs := cb.requests()
			first, second := openPush(t, mode, reqs[0]), openPush(t, mode, reqs[1])
			if first.MsgType != "text" || first.Content != "登录 123456 ]]> <b>" || first.FromUserName != s.OpenID(oaID, "bob") ||
				first.ToUserName != oaGH || first.Event != "" {
				t.Fatalf("push %+v", first)
			}
			if first.MsgID < 1e18 || second.MsgID == first.MsgID {
				t.Fatalf("MsgIds %d and %d: want distinct 19-digit ids", first.MsgID, second.MsgID)
			}
			ds := s.Deliveries()
			if last := ds[len(ds)-1]; last.Status != StatusReplied || last.ChatText() != "you said: again" {
				t.Fatalf("last delivery %+v", last)
			}
		})
	}
}

// TestSendTextChatView: what the chat shows for each kind of answer.
func TestSendTextChatView(t *testing.T) {
	image := `<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[` + oaGH +
		`]]></FromUserName><CreateTime>1</CreateTime><MsgType><![CDATA[image]]></MsgType></xml>`
	for _, tc := range []struct {
		name   string
		answer func(w http.ResponseWriter, openid string)
		want   string
	}{
		{"acknowledged", func(w http.ResponseWriter, _ string) { _, _ = io.WriteString(w, "success") }, ""},
		{"failing server", func(w http.ResponseWriter, _ string) { w.WriteHeader(http.StatusInternalServerError) }, ServiceUnavailableNotice},
		{"JSON", func(w http.ResponseWriter, _ string) { _, _ = io.WriteString(w, `{"ok":1}`) }, ServiceUnavailableNotice},
		{"image reply", func(w http.ResponseWriter, openid string) {
			_, _ = io.WriteString(w, strings.Replace(image, "%s", openid, 1))
		}, "[image]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newPlatformServer(t, Config{PushAttempts: 1}, "", Plaintext)
			cb := newCallback(t, func(_ int, _ *http.Request, _ []byte, w http.ResponseWriter) { tc.answer(w, s.OpenID(oaID, "bob")) })
			if err := s.AddApp(App{AppID: oaID, AppSecret: oaSecret, Token: oaToken, OriginalID: oaGH, CallbackURL: cb.URL}); err != nil {
				t.Fatal(err)
			}
			if reply, err := s.SendText(context.Background(), oaID, "bob", "hello"); err != nil || reply != tc.want {
				t.Fatalf("reply %q, %v; want %q", reply, err, tc.want)
			}
		})
	}
}

// TestTestAccountChat: a test account pushes in plaintext, and only its
// followers can message it.
func TestTestAccountChat(t *testing.T) {
	cb := newCallback(t, echoReply(t, Plaintext))
	s, _ := newAccountServer(t, Config{}, TestAccount, cb.URL)
	ctx := context.Background()
	if _, err := s.SendText(ctx, oaID, "alice", "hi"); !errors.Is(err, ErrNotFollowing) {
		t.Fatalf("non-follower: %v", err)
	}
	if _, err := s.Follow(ctx, oaID, "alice"); err != nil {
		t.Fatal(err)
	}
	if reply, err := s.SendText(ctx, oaID, "alice", "hi"); err != nil || reply != "you said: hi" {
		t.Fatalf("reply %q, %v", reply, err)
	}
	for _, r := range cb.requests() {
		if strings.Contains(r.rawQuery, "encrypt_type") || bytes.Contains(r.body, []byte("<Encrypt>")) {
			t.Fatalf("test account push is not plaintext: %s", r.body)
		}
	}
}

// TestDeliveryLogRing: the log keeps the latest deliveries in order, in
// storage that does not grow past the limit.
func TestDeliveryLogRing(t *testing.T) {
	p, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 2*maxDeliveriesKept + 123
	for i := range n {
		p.record(&Delivery{AppID: "a", Nonce: string(rune('a' + i%26)), Event: wechat.Event{CreateTime: int64(i)}})
		if i == maxDeliveriesKept/2 {
			if got := p.Deliveries(); len(got) != i+1 || got[0].Event.CreateTime != 0 || got[i].Event.CreateTime != int64(i) {
				t.Fatalf("partly full log: %d entries", len(got))
			}
		}
	}
	got := p.Deliveries()
	if len(got) != maxDeliveriesKept {
		t.Fatalf("%d deliveries kept", len(got))
	}
	for i, d := range got {
		if want := int64(n - maxDeliveriesKept + i); d.Event.CreateTime != want {
			t.Fatalf("delivery %d is #%d, want #%d", i, d.Event.CreateTime, want)
		}
	}
	if c := cap(p.log.ring); c != maxDeliveriesKept {
		t.Fatalf("ring capacity %d", c)
	}
	// The copies are the caller's.
	got[0].Event.CreateTime = -1
	if p.Deliveries()[0].Event.CreateTime == -1 {
		t.Fatal("Deliveries shares memory with the log")
	}
}

// BenchmarkRecord: recording costs the same with a full log.
func BenchmarkRecord(b *testing.B) {
	p, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	d := &Delivery{AppID: "a", Body: make([]byte, 512)}
	for range maxDeliveriesKept {
		p.record(d)
	}
	b.ReportAllocs()
	for b.Loop() {
		p.record(d)
	}
}
