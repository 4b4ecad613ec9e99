package wechat

import (
	"bytes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Vector A: the official Java sample (WXBizMsgCryptTest).
const (
	vecAKey   = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	vecAToken = "pamtest"
	vecAAppID = "wxb11529c136998cb6"
	vecATS    = "1409304348"
	vecANonce = "xxxxxx"
)

// rotatedKey is a second valid EncodingAESKey for rotation tests.
const rotatedKey = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"

func mustCrypter(t testing.TB, token, key, appID string, prev ...string) *Crypter {
	t.Helper()
	c, err := NewCrypter(token, key, appID, prev...)
	if err != nil {
		t.Fatalf("NewCrypter: %v", err)
	}
	return c
}

func vecA(t testing.TB) *Crypter { return mustCrypter(t, vecAToken, vecAKey, vecAAppID) }

func random16(s string) [randomLen]byte {
	var r [randomLen]byte
	if copy(r[:], s) != randomLen {
		panic("random prefix must be 16 bytes")
	}
	return r
}

// seal CBC-encrypts full (whose length must be a multiple of 32) with c's
// current key, without adding padding or any layout, so tests control
// every decrypted byte.
func seal(c *Crypter, full []byte) string {
	out := make([]byte, len(full))
	k := c.keys[0]
	cipher.NewCBCEncrypter(k.block, k.iv[:]).CryptBlocks(out, full)
	return base64.StdEncoding.EncodeToString(out)
}

// layout builds random(16) || msgLen || msg || appID || padding, with the
// padding given byte by byte.
func layout(msgLen uint32, msg, appID string, pad []byte) []byte {
	b := []byte("0123456789abcdef")
	b = binary.BigEndian.AppendUint32(b, msgLen)
	b = append(b, msg...)
	b = append(b, appID...)
	return append(b, pad...)
}

func padBytes(n int, v byte) []byte { return bytes.Repeat([]byte{v}, n) }

func TestNewCrypterKey(t *testing.T) {
	c := vecA(t)
	raw, _ := base64.StdEncoding.DecodeString(vecAKey + "=")
	const wantHex = "69b71d79f8218a39259a7a29aabb2dbafc31cb3d35db7e39ebbf3d0010831051"
	if got := hex.EncodeToString(raw); got != wantHex {
		t.Fatalf("decoded key = %s, want %s", got, wantHex)
	}
	if !bytes.Equal(c.keys[0].iv[:], raw[:16]) {
		t.Errorf("IV is not the first 16 key bytes")
	}
	if c.token != vecAToken || c.appID != vecAAppID {
		t.Errorf("token, appID = %q, %q", c.token, c.appID)
	}
}

func TestNewCrypterRejects(t *testing.T) {
	tests := []struct {
		name, token, key, appID string
		prev                    []string
		wantInErr               string
	}{
		{"empty token", "", vecAKey, vecAAppID, nil, "token"},
		{"empty appID", vecAToken, vecAKey, "", nil, "appID"},
		{"short key from the Java sample", vecAToken, "abcde", vecAAppID, nil, "encodingAESKey"},
		{"empty key", vecAToken, "", vecAAppID, nil, "encodingAESKey"},
		{"44 characters", vecAToken, vecAKey + "H", vecAAppID, nil, "encodingAESKey"},
		{"42 characters", vecAToken, vecAKey[:42], vecAAppID, nil, "encodingAESKey"},
		{"not base64", vecAToken, "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF!", vecAAppID, nil, "encodingAESKey"},
		{"padding inside", vecAToken, "abcdefghijklmnopqrstuvwxyz0123456789ABCDE==", vecAAppID, nil, "encodingAESKey"},
		{"bad previous key", vecAToken, vecAKey, vecAAppID, []string{rotatedKey, "short"}, "previous key 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewCrypter(tt.token, tt.key, tt.appID, tt.prev...)
			if err == nil {
				t.Fatalf("NewCrypter accepted it: %+v", c)
			}
			if !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("error %v does not wrap ErrInvalidArgument", err)
			}
			if !strings.Contains(err.Error(), tt.wantInErr) {
				t.Errorf("error %q does not name %q", err, tt.wantInErr)
			}
			for _, k := range append([]string{tt.key}, tt.prev...) {
				if len(k) >= 5 && strings.Contains(err.Error(), k) {
					t.Errorf("error %q echoes a key", err)
				}
			}
		})
	}
}

func TestVectorA(t *testing.T) {
	c := vecA(t)
	tests := []struct{ name, msg, want string }{
		{"A1", "我是中文abcd123", "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg=="},
		{"A2", `<xml><ToUserName><![CDATA[oia2Tj我是中文jewbmiOUlr6X-1crbLOvLw]]></ToUserName><FromUserName><![CDATA[gh_7f083739789a]]></FromUserName><CreateTime>1407743423</CreateTime><MsgType><![CDATA[video]]></MsgType><Video><MediaId><![CDATA[eYJ1MbwPRJtOvIEabaxHs7TX2D-HV71s79GUxqdUkjm6Gs2Ed1KF3ulAOA9H1xG0]]></MediaId><Title><![CDATA[testCallBackReplyVideo]]></Title><Description><![CDATA[testCallBackReplyVideo]]></Description></Video></xml>`,
			"jn1L23DB+6ELqJ+6bruv23M2GmYfkv0xBh2h+XTBOKVKcgDFHle6gqcZ1cZrk3e1qjPQ1F4RsLWzQRG9udbKWesxlkupqcEcW7ZQweImX9+wLMa0GaUzpkycA8+IamDBxn5loLgZpnS7fVAbExOkK5DYHBmv5tptA9tklE/fTIILHR8HLXa5nQvFb3tYPKAlHF3rtTeayNf0QuM+UW/wM9enGIDIJHF7CLHiDNAYxr+r+OrJCmPQyTy8cVWlu9iSvOHPT/77bZqJucQHQ04sq7KZI27OcqpQNSto2OdHCoTccjggX5Z9Mma0nMJBU+jLKJ38YB1fBIz+vBzsYjrTmFQ44YfeEuZ+xRTQwr92vhA9OxchWVINGC50qE/6lmkwWTwGX9wtQpsJKhP+oS7rvTY8+VdzETdfakjkwQ5/Xka042OlUb1/slTwo4RscuQ+RdxSGvDahxAJ6+EAjLt9d8igHngxIbf6YyqqROxuxqIeIch3CssH/LqRs+iAcILvApYZckqmA7FNERspKA5f8GoJ9sv8xmGvZ9Yrf57cExWtnX8aCMMaBropU/1k+hKP5LVdzbWCG0hGwx/dQudYR/eXp3P0XxjlFiy+9DMlaFExWUZQDajPkdPrEeOwofJb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			enc, sig, err := c.encryptWithRandom(random16("aaaabbbbccccdddd"), []byte(tt.msg), vecATS, vecANonce)
			if err != nil {
				t.Fatal(err)
			}
			if enc != tt.want {
				t.Fatalf("Encrypt =\n%s\nwant\n%s", enc, tt.want)
			}
			if want := Signature(vecAToken, vecATS, vecANonce, tt.want); sig != want {
				t.Errorf("msg_signature = %s, want %s", sig, want)
			}
			got, err := c.Decrypt(sig, vecATS, vecANonce, enc)
			if err != nil || string(got) != tt.msg {
				t.Errorf("Decrypt = %q, %v; want the message back", got, err)
			}
		})
	}
	// The sample's negative case: a bogus msg_signature fails before decryption.
	if _, err := c.Decrypt("12345", vecATS, vecANonce, tests[0].want); !errors.Is(err, ErrSignatureMismatch) {
		t.Errorf("Decrypt with msg_signature 12345: %v, want ErrSignatureMismatch", err)
	}
}

func TestVectorB(t *testing.T) {
	c := mustCrypter(t, "QDG6eK", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", "wx5823bf96d3bd56c7")
	const (
		ts      = "1409659589"
		nonce   = "263014780"
		echostr = "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ=="
		msig    = "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3"
	)
	msg, err := c.Decrypt(msig, ts, nonce, echostr)
	if err != nil {
		t.Fatal(err)
	}
	if string(msg) != "1616140317555161061" {
		t.Errorf("msg = %q", msg)
	}
	random, _, _, err := c.open(echostr)
	if err != nil || string(random) != "c41b64491c2468d0" {
		t.Errorf("random = %q, %v", random, err)
	}
	// The same ciphertext addressed to another AppID.
	other := mustCrypter(t, "QDG6eK", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", "wx5823bf96d3bd56c8")
	if _, err := other.Decrypt(msig, ts, nonce, echostr); !errors.Is(err, ErrAppIDMismatch) {
		t.Errorf("other AppID: %v, want ErrAppIDMismatch", err)
	}
}

// Vector E: the widely reused "spamtest" compatible-mode text message from
// the official samples, as it appears in many public test suites.
func TestVectorE(t *testing.T) {
	c := mustCrypter(t, "spamtest", vecAKey, "wx2c2769f8efd9abc2")
	const body = `<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName><FromUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]></FromUserName><CreateTime>1409735668</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[abcdteT]]></Content><MsgId>6054768590064713728</MsgId><Encrypt><![CDATA[hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=]]></Encrypt></xml>`
	env, err := ParseEnvelope([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if env.ToUserName != "gh_10f6c3c3ac5a" {
		t.Errorf("ToUserName = %q", env.ToUserName)
	}
	inner, err := c.Decrypt("5d197aaffba7e9b25a30732f161a50dee96bd5fa", "1409735669", "1320562132", env.Encrypt)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseEvent(inner)
	if err != nil {
		t.Fatal(err)
	}
	// In compatible mode the outer plaintext copy must agree with the
	// authenticated inner document.
	outer, err := ParseEvent([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if *got != *outer {
		t.Errorf("inner %+v != outer %+v", got, outer)
	}
	if got.Content != "abcdteT" || got.MsgID != 6054768590064713728 || got.CreateTime != 1409735668 {
		t.Errorf("inner event = %+v", got)
	}
	// Real WeChat lays the inner document out exactly as MarshalEvent does.
	if m := MarshalEvent(got); !bytes.Equal(m, inner) {
		t.Errorf("MarshalEvent =\n%q\nwant\n%q", m, inner)
	}
	random, _, _, _ := c.open(env.Encrypt)
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).Match(random) {
		t.Errorf("random prefix %q is not 16 lowercase hex digits", random)
	}
}

// The login-by-QR vectors derived for wechat-protocol.md §7.
const (
	derivedPushTS     = "1700000000"
	derivedNonce      = "123456789"
	derivedPushMsg    = `<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName><FromUserName><![CDATA[oTestOpenID0000000000000001]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event><EventKey><![CDATA[qrscene_login_abc123]]></EventKey><Ticket><![CDATA[gQTestTicket==]]></Ticket></xml>`
	derivedPushEnc    = "Q3stYC6hdFzMh9T8HCvyDBg2tXOh+sDfv38N87CKuD7UExS0AtBhLu33AxWV2pt//45cf/MFOCukBjxYFBtEHpHMmjmL85xXKvF1g05ygdp7vJvD+LO1EhwXdVtzaNQ2AHAAUh2kb6DrMXZ7+9CmtNdoTPNs6Or0HTebRHYWx6RyVExIEYy1N2gqiuHt3DRNYz8Mjb07Z+t6CsrRjUulMWPcpWOmBsSlleO93tQL8Vz7M8Z+fWTlhhCwWiVupBkSdyOGZOfyC+Mz28EYByvrRttk0a+ocJhsxNDFz6ih7+qjlXAPd7e/Q8uDyauhaWHQ41R/8A0Xt5DitNkkByvLoynjM+fWrEMZXNqUs1uh2gs+M5CvA5bL3e4EwF6SZpxYr/oEdd3joQgTEsVcxNQONzVVzhVc1ThVt70OJZu3Iyh0y0aAxOy4Vt023xrgI38y5gj7T6Qdd0MMK5QsFD+lgHEM7ApnMUcDUOhUtPscolZkDQuyHNLXuCPNamh/BUJ2"
	derivedPushSig    = "b5f8761641d70e61357db469cb0ab84c67c50f1f"
	derivedPushMsgSig = "4814c0c6450024582c8b9381d55771bd4a57d370"
	derivedReplyTS    = "1700000001"
	derivedReplyMsg   = `<xml><ToUserName><![CDATA[oTestOpenID0000000000000001]]></ToUserName><FromUserName><![CDATA[gh_0123456789ab]]></FromUserName><CreateTime>1700000001</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[登录成功]]></Content></xml>`
	derivedReplyEnc   = "DpQeJfnf/MGZ/+GTIspwVNO6a8O0Z/HR8vB/4VMG+m/gvUebBL2yORoJgpCmm7Ukhzch8gpjrX43UVPh6nkHuwSIB+ZPKZVnQat5pjKVg2ECBgKb1LR+d9axhOZAGPWV+GCrP9/BaQjuwHtv5Yog3C13mMUxM1G0M/hz9rTP/IYgcluAbOaF/h0hVjLJ2oCDNU7o8bVc/IMT4VMhYsPPLiw2UZ6ieEcy0ztSAL5TgHqmF7p4ApiWIIlUraZqONRynpD2K1opJG1u0X9VY1S5uvlqJ0DBVr5gnOufS+ghabXSKA8Wd6hZQLvty0tVLQZFTUyO5kUJLYWmcrYmvW9cwkafwQsReCKtVG0aPHL9fAzkJ+7I4INutSG0n4YNKDaa"
	derivedReplyMsig  = "952eb7eb8a2a75815cdc6470bd6d6f521690f81a"
)

func TestDerivedPushVector(t *testing.T) {
	c := vecA(t)
	enc, msig, err := c.encryptWithRandom(random16("0123456789abcdef"), []byte(derivedPushMsg), derivedPushTS, derivedNonce)
	if err != nil {
		t.Fatal(err)
	}
	if enc != derivedPushEnc || msig != derivedPushMsgSig {
		t.Fatalf("Encrypt = %s, %s\nwant %s, %s", enc, msig, derivedPushEnc, derivedPushMsgSig)
	}
	if sig := Signature(vecAToken, derivedPushTS, derivedNonce); sig != derivedPushSig {
		t.Errorf("signature = %s, want %s", sig, derivedPushSig)
	}
	msg, err := c.Decrypt(derivedPushMsgSig, derivedPushTS, derivedNonce, derivedPushEnc)
	if err != nil || string(msg) != derivedPushMsg {
		t.Fatalf("Decrypt = %q, %v", msg, err)
	}
	ev, err := ParseEvent(msg)
	if err != nil {
		t.Fatal(err)
	}
	if scene, ok := ev.LoginScene(); !ok || scene != "login_abc123" {
		t.Errorf("LoginScene = %q, %v", scene, ok)
	}
	// The URL signature is not a msg_signature: confusing the two fails.
	if _, err := c.Decrypt(derivedPushSig, derivedPushTS, derivedNonce, derivedPushEnc); !errors.Is(err, ErrSignatureMismatch) {
		t.Errorf("Decrypt with the URL signature: %v", err)
	}
}

func TestDerivedReplyVector(t *testing.T) {
	c := vecA(t)
	reply := TextReply("oTestOpenID0000000000000001", "gh_0123456789ab", "登录成功", unixTime(1700000001))
	if string(reply) != derivedReplyMsg {
		t.Fatalf("TextReply =\n%s\nwant\n%s", reply, derivedReplyMsg)
	}
	enc, msig, err := c.encryptWithRandom(random16("fedcba9876543210"), reply, derivedReplyTS, derivedNonce)
	if err != nil {
		t.Fatal(err)
	}
	if enc != derivedReplyEnc || msig != derivedReplyMsig {
		t.Fatalf("Encrypt = %s, %s\nwant %s, %s", enc, msig, derivedReplyEnc, derivedReplyMsig)
	}
}

// A zero Crypter is unusable but must fail cleanly rather than panic.
func TestZeroCrypter(t *testing.T) {
	var c Crypter
	if _, _, err := c.Encrypt([]byte("x"), "1", "2"); err == nil {
		t.Error("Encrypt succeeded without a key")
	}
	if _, err := c.EncryptReply([]byte("x"), "1", "2"); err == nil {
		t.Error("EncryptReply succeeded without a key")
	}
	enc := base64.StdEncoding.EncodeToString(make([]byte, 64))
	if _, err := c.Decrypt(Signature("", "1", "2", enc), "1", "2", enc); err != ErrDecrypt {
		t.Errorf("Decrypt = %v, want ErrDecrypt", err)
	}
}

func TestRoundTrip(t *testing.T) {
	c := vecA(t)
	rng := rand.New(rand.NewPCG(1, 2))
	var lengths []int
	for n := 0; n <= 100; n++ {
		lengths = append(lengths, n)
	}
	// Around the 32-byte padding boundary for this AppID (18 bytes) and
	// the 20-byte header, and a few multi-KB messages.
	for _, base := range []int{1024, 4096} {
		for d := -34; d <= 34; d++ {
			lengths = append(lengths, base+d-headerLen-len(vecAAppID))
		}
	}
	lengths = append(lengths, 10_000, MaxPushBytes)
	for _, n := range lengths {
		msg := make([]byte, n)
		for i := range msg {
			msg[i] = byte(rng.Uint32())
		}
		enc, sig, err := c.Encrypt(msg, "1700000000", "42")
		if err != nil {
			t.Fatalf("len %d: Encrypt: %v", n, err)
		}
		ct, _ := base64.StdEncoding.DecodeString(enc)
		if len(ct)%padBlock != 0 || len(ct) <= headerLen+n+len(vecAAppID) {
			t.Fatalf("len %d: ciphertext length %d", n, len(ct))
		}
		if pad := len(ct) - (headerLen + n + len(vecAAppID)); pad < 1 || pad > padBlock {
			t.Fatalf("len %d: %d padding bytes", n, pad)
		}
		got, err := c.Decrypt(sig, "1700000000", "42", enc)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("len %d: round trip failed: %v", n, err)
		}
	}
}

func TestEncryptRandomPrefix(t *testing.T) {
	c := vecA(t)
	hexRE := regexp.MustCompile(`^[0-9a-f]{16}$`)
	seen := map[string]bool{}
	for range 20 {
		enc, _, err := c.Encrypt([]byte("x"), "1", "2")
		if err != nil {
			t.Fatal(err)
		}
		random, msg, _, err := c.open(enc)
		if err != nil || string(msg) != "x" {
			t.Fatalf("open: %q, %v", msg, err)
		}
		if !hexRE.Match(random) {
			t.Errorf("random prefix %q is not 16 lowercase hex digits", random)
		}
		seen[string(random)] = true
	}
	if len(seen) < 20 {
		t.Errorf("random prefixes repeat: %d distinct of 20", len(seen))
	}
}

func TestKeyRotation(t *testing.T) {
	oldOnly := mustCrypter(t, vecAToken, vecAKey, vecAAppID)
	rotated := mustCrypter(t, vecAToken, rotatedKey, vecAAppID, vecAKey)
	newOnly := mustCrypter(t, vecAToken, rotatedKey, vecAAppID)

	// A push still encrypted with the old key opens with the rotated Crypter.
	got, err := rotated.Decrypt(derivedPushMsgSig, derivedPushTS, derivedNonce, derivedPushEnc)
	if err != nil || string(got) != derivedPushMsg {
		t.Fatalf("previous key: %q, %v", got, err)
	}
	// Without the previous key it does not.
	if _, err := newOnly.Decrypt(derivedPushMsgSig, derivedPushTS, derivedNonce, derivedPushEnc); !errors.Is(err, ErrDecrypt) {
		t.Errorf("new key only: %v, want ErrDecrypt", err)
	}
	// Encryption uses the current key: the new-key Crypter reads it, the old one cannot.
	enc, sig, err := rotated.Encrypt([]byte("hello"), "1", "2")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := newOnly.Decrypt(sig, "1", "2", enc); err != nil || string(got) != "hello" {
		t.Errorf("current key: %q, %v", got, err)
	}
	if _, err := oldOnly.Decrypt(sig, "1", "2", enc); !errors.Is(err, ErrDecrypt) {
		t.Errorf("old key on new ciphertext: %v, want ErrDecrypt", err)
	}
}

func TestDecryptSignatureFirst(t *testing.T) {
	c := vecA(t)
	sig := derivedPushMsgSig
	tests := []struct{ name, sig, ts, nonce, enc string }{
		{"empty signature", "", derivedPushTS, derivedNonce, derivedPushEnc},
		{"uppercase signature", strings.ToUpper(sig), derivedPushTS, derivedNonce, derivedPushEnc},
		{"signature with space", sig + " ", derivedPushTS, derivedNonce, derivedPushEnc},
		{"one hex digit changed", "5" + sig[1:], derivedPushTS, derivedNonce, derivedPushEnc},
		{"timestamp changed", sig, "1700000001", derivedNonce, derivedPushEnc},
		{"nonce changed", sig, derivedPushTS, "123456780", derivedPushEnc},
		{"ciphertext changed", sig, derivedPushTS, derivedNonce, "R" + derivedPushEnc[1:]},
		// Garbage that would fail decryption still reports the signature.
		{"garbage ciphertext", sig, derivedPushTS, derivedNonce, "!!!"},
	}
	wrongToken := mustCrypter(t, "pamtesT", vecAKey, vecAAppID)
	if _, err := wrongToken.Decrypt(sig, derivedPushTS, derivedNonce, derivedPushEnc); !errors.Is(err, ErrSignatureMismatch) {
		t.Errorf("wrong token: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, err := c.Decrypt(tt.sig, tt.ts, tt.nonce, tt.enc)
			if err != ErrSignatureMismatch || msg != nil {
				t.Errorf("Decrypt = %q, %v; want ErrSignatureMismatch", msg, err)
			}
		})
	}
}

// TestDecryptMalformed feeds ciphertexts whose signature is valid, so the
// checks after it are reached. Every failure must be the same generic error
// (or ErrAppIDMismatch for a well-formed message to someone else).
func TestDecryptMalformed(t *testing.T) {
	c := vecA(t)
	const msg = "hello, world"
	// 16 random + 4 len + 12 msg + 18 appid = 50 bytes; 14 bytes of padding make 64.
	valid := layout(uint32(len(msg)), msg, vecAAppID, padBytes(14, 14))
	if len(valid) != 64 {
		t.Fatalf("fixture length %d", len(valid))
	}
	mixed := bytes.Clone(valid)
	mixed[55] = 13 // one wrong byte among the 14 padding bytes
	firstPadWrong := bytes.Clone(valid)
	firstPadWrong[50] = 0
	// 16 + 4 + 26 + 18 = 64 bytes: already aligned, so a whole block of padding.
	const msg26 = "abcdefghijklmnopqrstuvwxyz"
	aligned := layout(uint32(len(msg26)), msg26, vecAAppID, padBytes(32, 32))
	alignedBad := bytes.Clone(aligned)
	alignedBad[70] = 31

	tests := []struct {
		name    string
		enc     string
		want    error
		wantMsg string
	}{
		{name: "valid", enc: seal(c, valid), wantMsg: msg},
		{name: "full block of padding", enc: seal(c, aligned), wantMsg: msg26},
		{name: "full block of padding, one byte wrong", enc: seal(c, alignedBad), want: ErrDecrypt},
		{name: "padding byte 0", enc: seal(c, append(valid[:63:63], 0)), want: ErrDecrypt},
		{name: "padding byte 33", enc: seal(c, append(valid[:63:63], 33)), want: ErrDecrypt},
		{name: "padding byte 255", enc: seal(c, append(valid[:63:63], 255)), want: ErrDecrypt},
		{name: "mixed padding bytes", enc: seal(c, mixed), want: ErrDecrypt},
		{name: "first padding byte wrong", enc: seal(c, firstPadWrong), want: ErrDecrypt},
		{name: "msg_len 0xFFFFFFFF", enc: seal(c, layout(0xFFFFFFFF, msg, vecAAppID, padBytes(14, 14))), want: ErrDecrypt},
		{name: "msg_len 0x80000000", enc: seal(c, layout(0x80000000, msg, vecAAppID, padBytes(14, 14))), want: ErrDecrypt},
		{name: "msg_len one past the end", enc: seal(c, layout(uint32(len(msg)+len(vecAAppID)+1), msg, vecAAppID, padBytes(14, 14))), want: ErrDecrypt},
		{name: "msg_len swallows the appid", enc: seal(c, layout(uint32(len(msg)+len(vecAAppID)), msg, vecAAppID, padBytes(14, 14))), want: ErrAppIDMismatch},
		{name: "msg_len 0", enc: seal(c, layout(0, msg, vecAAppID, padBytes(14, 14))), want: ErrAppIDMismatch},
		{name: "empty message", enc: seal(c, layout(0, "", vecAAppID, padBytes(26, 26))), wantMsg: ""},
		{name: "header cut short", enc: seal(c, append([]byte("0123456789abcdef012"), padBytes(13, 13)...)), want: ErrDecrypt},
		{name: "only padding", enc: seal(c, padBytes(32, 32)), want: ErrDecrypt},
		{name: "other appid", enc: seal(c, layout(12, msg, "wxb11529c136998cb7", padBytes(14, 14))), want: ErrAppIDMismatch},
		{name: "appid prefix", enc: seal(c, layout(12, msg, vecAAppID[:17], padBytes(15, 15))), want: ErrAppIDMismatch},
		{name: "empty appid", enc: seal(c, layout(12, msg, "", padBytes(32, 32))), want: ErrAppIDMismatch},
		{name: "bad base64", enc: "####", want: ErrDecrypt},
		{name: "unpadded base64", enc: strings.TrimRight(seal(c, valid), "="), want: ErrDecrypt},
		{name: "empty", enc: "", want: ErrDecrypt},
		{name: "16 bytes", enc: base64.StdEncoding.EncodeToString(make([]byte, 16)), want: ErrDecrypt},
		{name: "48 bytes", enc: base64.StdEncoding.EncodeToString(make([]byte, 48)), want: ErrDecrypt},
		{name: "33 bytes", enc: base64.StdEncoding.EncodeToString(make([]byte, 33)), want: ErrDecrypt},
		{name: "last block truncated", enc: base64.StdEncoding.EncodeToString(mustDecode(t, seal(c, valid))[:48]), want: ErrDecrypt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sig := Signature(vecAToken, "1", "2", tt.enc)
			got, err := c.Decrypt(sig, "1", "2", tt.enc)
			if err != tt.want {
				t.Fatalf("Decrypt error = %v, want %v", err, tt.want)
			}
			if err == nil && string(got) != tt.wantMsg {
				t.Errorf("Decrypt = %q, want %q", got, tt.wantMsg)
			}
			if err != nil && got != nil {
				t.Errorf("Decrypt returned %q alongside an error", got)
			}
		})
	}
}

func unixTime(sec int64) time.Time { return time.Unix(sec, 0) }

func mustDecode(t testing.TB, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDecryptBitFlips flips every bit of a real ciphertext and re-signs it:
// each result is an error or a different plaintext, never a panic and never
// the original message.
func TestDecryptBitFlips(t *testing.T) {
	c := vecA(t)
	ct := mustDecode(t, derivedPushEnc)
	for i := range len(ct) * 8 {
		b := bytes.Clone(ct)
		b[i/8] ^= 1 << (i % 8)
		enc := base64.StdEncoding.EncodeToString(b)
		got, err := c.Decrypt(Signature(vecAToken, "1", "2", enc), "1", "2", enc)
		// A flip garbles its own plaintext block and flips the same bit of
		// the next one, so at least the length or the message changes.
		if err == nil && string(got) == derivedPushMsg {
			t.Fatalf("bit %d: flip went unnoticed", i)
		}
		if err != nil && err != ErrDecrypt && err != ErrAppIDMismatch {
			t.Fatalf("bit %d: unexpected error %v", i, err)
		}
	}
}

// refOpen is a plain, non-constant-time statement of the plaintext rules,
// used to cross-check parsePlaintext on fuzzed input.
func refOpen(full []byte, appID string) (msg []byte, err error) {
	n := len(full)
	p := int(full[n-1])
	if p == 0 || p > 32 {
		return nil, ErrDecrypt
	}
	for _, b := range full[n-p:] {
		if int(b) != p {
			return nil, ErrDecrypt
		}
	}
	inner := full[:n-p]
	if len(inner) < 20 {
		return nil, ErrDecrypt
	}
	l := int64(inner[16])<<24 | int64(inner[17])<<16 | int64(inner[18])<<8 | int64(inner[19])
	if l > int64(len(inner)-20) {
		return nil, ErrDecrypt
	}
	if string(inner[20+l:]) != appID {
		return nil, ErrAppIDMismatch
	}
	return inner[20 : 20+l], nil
}

// FuzzDecrypt checks that Decrypt(Encrypt(msg)) == msg, that a re-signed
// bit flip never yields the original message, and that any decrypted
// plaintext (full, chosen by the fuzzer, including its padding and length
// field) is judged exactly as refOpen judges it. Nothing may panic.
func FuzzDecrypt(f *testing.F) {
	valid := layout(12, "hello, world", vecAAppID, padBytes(14, 14))
	f.Add([]byte("hello"), valid, uint16(0))
	f.Add([]byte{}, layout(0, "", vecAAppID, padBytes(26, 26)), uint16(300))
	f.Add([]byte(derivedPushMsg), layout(0xFFFFFFFF, "hello, world", vecAAppID, padBytes(14, 14)), uint16(1000))
	f.Add([]byte("x"), layout(31, "hello, world", vecAAppID, padBytes(14, 14)), uint16(7))
	f.Add(bytes.Repeat([]byte("a"), 26), append(valid[:63:63], 0), uint16(9))
	f.Add(bytes.Repeat([]byte("b"), 27), append(valid[:63:63], 33), uint16(200))
	mixed := bytes.Clone(valid)
	mixed[55] = 13
	f.Add(bytes.Repeat([]byte("c"), 58), mixed, uint16(511))
	f.Add([]byte("\x00\xff"), padBytes(32, 32), uint16(65535))

	c := vecA(f)
	f.Fuzz(func(t *testing.T, msg, full []byte, flip uint16) {
		enc, sig, err := c.Encrypt(msg, "1700000000", "nonce")
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.Decrypt(sig, "1700000000", "nonce", enc)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("round trip: %q, %v", got, err)
		}

		ct := mustDecode(t, enc)
		bit := int(flip) % (len(ct) * 8)
		ct[bit/8] ^= 1 << (bit % 8)
		tampered := base64.StdEncoding.EncodeToString(ct)
		if _, err := c.Decrypt(sig, "1700000000", "nonce", tampered); err != ErrSignatureMismatch {
			t.Fatalf("tampered ciphertext with the old signature: %v", err)
		}
		got, err = c.Decrypt(Signature(vecAToken, "1", "2", tampered), "1", "2", tampered)
		if err == nil && bytes.Equal(got, msg) {
			t.Fatalf("bit %d flipped without effect", bit)
		}

		if len(full) > 4*MaxPushBytes {
			return
		}
		if len(full) == 0 || len(full)%padBlock != 0 {
			full = append(full, make([]byte, padBlock-len(full)%padBlock)...)
		}
		sealed := seal(c, full)
		got, err = c.Decrypt(Signature(vecAToken, "1", "2", sealed), "1", "2", sealed)
		want, wantErr := refOpen(full, vecAAppID)
		if err != wantErr || !bytes.Equal(got, want) {
			t.Fatalf("Decrypt = %q, %v; reference %q, %v", got, err, want, wantErr)
		}

		// full used directly as a ciphertext decrypts to noise.
		raw := base64.StdEncoding.EncodeToString(full)
		if _, err := c.Decrypt(Signature(vecAToken, "1", "2", raw), "1", "2", raw); err != nil && err != ErrDecrypt && err != ErrAppIDMismatch {
			t.Fatalf("unexpected error %v", err)
		}
	})
}

func BenchmarkDecrypt(b *testing.B) {
	c := vecA(b)
	b.SetBytes(int64(len(derivedPushMsg)))
	for b.Loop() {
		if _, err := c.Decrypt(derivedPushMsgSig, derivedPushTS, derivedNonce, derivedPushEnc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncrypt(b *testing.B) {
	c := vecA(b)
	msg := []byte(derivedReplyMsg)
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, _, err := c.Encrypt(msg, derivedReplyTS, derivedNonce); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPushPipeline is the whole cost of a safe-mode push on our side:
// envelope, signature check, decryption and event parsing.
func BenchmarkPushPipeline(b *testing.B) {
	c := vecA(b)
	body := []byte(safeBody)
	for b.Loop() {
		env, err := ParseEnvelope(body)
		if err != nil {
			b.Fatal(err)
		}
		inner, err := c.Decrypt(derivedPushMsgSig, derivedPushTS, derivedNonce, env.Encrypt)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ParseEvent(inner); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDecryptForReplyUsesThePushKey: during a key rotation a push under the
// previous key is answered under the previous key, which is what WeChat
// can still read.
func TestDecryptForReplyUsesThePushKey(t *testing.T) {
	const (
		token  = "rotation"
		appID  = "wxb11529c136998cb6"
		oldKey = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
		newKey = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
	)
	mustCrypter := func(key string, previous ...string) *Crypter {
		c, err := NewCrypter(token, key, appID, previous...)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	rotating := mustCrypter(newKey, oldKey)
	for _, tc := range []struct {
		name   string
		pusher *Crypter // WeChat's side
	}{
		{"current key", mustCrypter(newKey)},
		{"previous key", mustCrypter(oldKey)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			enc, sig, err := tc.pusher.Encrypt([]byte("<xml>push</xml>"), "1700000000", "42")
			if err != nil {
				t.Fatal(err)
			}
			msg, reply, err := rotating.decryptForReply(sig, "1700000000", "42", enc)
			if err != nil || string(msg) != "<xml>push</xml>" {
				t.Fatalf("decryptForReply: %q %v", msg, err)
			}
			out, err := reply.EncryptReply([]byte("<xml>reply</xml>"), "1700000001", "42")
			if err != nil {
				t.Fatal(err)
			}
			env, err := ParseReplyEnvelope(out)
			if err != nil {
				t.Fatal(err)
			}
			// WeChat, holding only the key it pushed with, can read it.
			got, err := tc.pusher.Decrypt(env.MsgSignature, env.TimeStamp, env.Nonce, env.Encrypt)
			if err != nil || string(got) != "<xml>reply</xml>" {
				t.Fatalf("the pusher cannot read the reply: %q %v", got, err)
			}
		})
	}
	if _, _, err := rotating.decryptForReply("0000000000000000000000000000000000000000", "1", "2", "AAAA"); !errors.Is(err, ErrSignatureMismatch) {
		t.Fatalf("bad signature: %v", err)
	}
}
