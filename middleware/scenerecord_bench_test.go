package middleware

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// sampleScenes are records as the middleware writes them, with the sizes
// of real WeChat tickets and URLs.
var sampleScenes = []sceneRecord{
	{
		State:     StatePending,
		Ticket:    "gQH47joAAAAAAAAAASxodHRwOi8vd2VpeGluLnFxLmNvbS9xL2taZ2Z3TVRtNzJXV1Brb3ZhYmJJAAIEZ23sUwMEmm3sUw==",
		QRURL:     "http://weixin.qq.com/q/kZgfwMTm72WWPkovabbI",
		Next:      "/",
		ExpiresAt: 1_790_000_000,
		Client:    "Chrome on Windows, 203.0.113.45",
	},
	{
		State: StateConfirmed, Ticket: "t", QRURL: "u", Next: "/a/b?c=d#e", ExpiresAt: 1,
		Client: "a browser, 2001:db8::1", OpenID: "oAlice0000000000000000000001", UnionID: "uAlice",
		ScanKey: "push:0123456789abcdef0123456789abcdef", SID: "sid", NotMeCode: "123456",
		ConfirmCode: "654321", ConfirmTries: 3,
	},
	{State: StateDenied, ExpiresAt: -5, Next: "/你好"},
	{State: StateScanned},
	// Tickets and URLs that are not in WeChat's form are kept as they are.
	{State: StatePending, Ticket: "YWJj\nZGVm", QRURL: "https://weixin.qq.com/q/x"},
	{State: StatePending, Ticket: "YR==", QRURL: "http://weixin.qq.com/q/"},
	{State: StatePending, Ticket: "YQ==", QRURL: "http://weixin.qq.com/q"},
	{State: StatePending, Ticket: "YWJjZA=", QRURL: wechatQRPrefix + "02mGJbopxacSG1xRUj1z1M"},
	{State: StateExpired, ConfirmTries: 1 << 30},
}

func TestSceneRecordRoundTrip(t *testing.T) {
	for _, rec := range sampleScenes {
		raw, err := encodeScene(rec)
		if err != nil {
			t.Fatalf("encode %+v: %v", rec, err)
		}
		got, err := decodeScene(raw)
		if err != nil || got != rec {
			t.Fatalf("round trip of %+v = %+v, %v", rec, got, err)
		}
		state, exp, err := peekScene(raw)
		if err != nil || state != rec.State || exp != rec.ExpiresAt {
			t.Fatalf("peek %+v = %q %d %v", rec, state, exp, err)
		}
		legacy, _ := json.Marshal(rec)
		if got, err := decodeScene(legacy); err != nil || got != rec {
			t.Fatalf("JSON record %s decoded as %+v, %v", legacy, got, err)
		}
		if len(raw) >= len(legacy) {
			t.Errorf("compact record of %d bytes, its JSON has %d", len(raw), len(legacy))
		}
	}
	// WeChat's ticket and URL are stored packed: 96 + 43 characters in
	// 70 + 2 bytes, since the ticket holds the URL.
	if raw, _ := encodeScene(sampleScenes[0]); len(raw) > 120 {
		t.Errorf("a pending scene takes %d bytes", len(raw))
	}
	if _, err := encodeScene(sceneRecord{State: "lost"}); err == nil {
		t.Fatal("unknown state encoded")
	}
}

// TestSceneRecordRejectsMalformed: every truncation and every change of
// the header of a compact record is refused or decodes to a record; none
// panics or reads past the end.
func TestSceneRecordRejectsMalformed(t *testing.T) {
	raw, _ := encodeScene(sampleScenes[1])
	for i := range raw {
		if _, err := decodeScene(raw[:i]); err == nil {
			t.Fatalf("record cut at %d of %d bytes decoded", i, len(raw))
		}
	}
	for _, bad := range [][]byte{
		nil, {sceneFormat}, {0x02, 1, 0, 0, 0}, {sceneFormat, 0, 0, 0, 0}, {sceneFormat, 9, 0, 0, 0},
		{sceneFormat, 1, 0, 0, 0xff, 0x0f}, // a field beyond the ten
		append(append([]byte(nil), raw...), 'x'),
		[]byte(`{"state":`),
	} {
		if rec, err := decodeScene(bad); err == nil {
			t.Errorf("decodeScene(%q) = %+v, want an error", bad, rec)
		}
	}
}

func FuzzSceneRecord(f *testing.F) {
	for _, rec := range sampleScenes {
		raw, _ := encodeScene(rec)
		f.Add(raw)
		legacy, _ := json.Marshal(rec)
		f.Add(legacy)
		f.Add(appendSceneV1(nil, &rec))
		after := scanChange(rec)
		if prefix, head, tail, ok := scanSplice(rec.Ticket, &after); ok && bytes.HasPrefix(raw, prefix) {
			f.Add(append(append(head, raw[len(prefix):]...), tail...))
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		rec, err := decodeScene(raw)
		if err != nil || isLegacyScene(raw) {
			return
		}
		again, err := encodeScene(rec)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", rec, err)
		}
		if got, err := decodeScene(again); err != nil || got != rec {
			t.Fatalf("re-encoded %+v decodes as %+v, %v", rec, got, err)
		}
	})
}

// TestLegacySceneRecordCompletesLogin: a scene stored as JSON by an earlier
// version (before a rolling upgrade) is polled, scanned and redeemed by
// this one, and the login completes.
func TestLegacySceneRecordCompletesLogin(t *testing.T) {
	env := newEnv(t, wechattest.Safe)
	b := env.browser()
	qr := b.createQR("/after")
	scene := qr["scene"].(string)
	ctx := context.Background()
	rec, raw, err := env.mw.loadScene(ctx, scene)
	if err != nil {
		t.Fatal(err)
	}
	legacy, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := env.mw.store.Update(ctx, sceneKey(scene), raw, legacy); err != nil {
		t.Fatal(err)
	}

	if got := b.poll(scene, 0).json(t); got["status"] != StatePending {
		t.Fatalf("poll of a JSON record: %v", got)
	}
	if resp := b.get("/wechat/qr.svg?scene="+scene, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("QR image of a JSON record: %d", resp.StatusCode)
	}
	ev := scanEvent(env.fake.OpenID(testAppID, "alice"), scene, rec.Ticket, false, time.Now())
	if resp := env.sendPush(safePush(t, ev, time.Now().Unix(), "legacy")); resp.StatusCode != http.StatusOK {
		t.Fatalf("scan of a JSON record: %d %s", resp.StatusCode, resp.body)
	}
	if got := env.sceneState(scene); got != StateConfirmed {
		t.Fatalf("scene after the scan: %s", got)
	}
	if got := b.poll(scene, 0).json(t); got["status"] != StateConfirmed || got["redirect"] != "/after" {
		t.Fatalf("redeem: %v", got)
	}
	if resp := b.get("/private", nil); resp.StatusCode != http.StatusOK || resp.json(t)["openid"] != ev.FromUserName {
		t.Fatalf("protected page after the login: %d %s", resp.StatusCode, resp.body)
	}
}

// BenchmarkSceneDecode compares reading a pending scene's state from its
// compact record with decoding its JSON form.
func BenchmarkSceneDecode(b *testing.B) {
	compact, _ := encodeScene(sampleScenes[0])
	legacy, _ := json.Marshal(sampleScenes[0])
	b.Run("compact-state", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := peekScene(compact); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(compact)), "record-bytes")
	})
	b.Run("compact-full", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeScene(compact); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeScene(legacy); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(legacy)), "record-bytes")
	})
}
