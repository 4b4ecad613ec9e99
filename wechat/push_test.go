package wechat_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat"
)

const (
	pvToken  = "pushtoken42"
	pvAESKey = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	pvOldKey = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
	pvAppID  = "wx0123456789abcdef"
	pvGhID   = "gh_0123456789ab"
	pvOpenID = "oTestOpenID0000000000000001"
)

// pvNow is the verifiers' clock in these tests.
var pvNow = time.Unix(1700000000, 0)

func pvCrypter(t testing.TB, key, appID string, prev ...string) *wechat.Crypter {
	t.Helper()
	c, err := wechat.NewCrypter(pvToken, key, appID, prev...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pvScan(created time.Time) *wechat.Event {
	return &wechat.Event{
		ToUserName: pvGhID, FromUserName: pvOpenID, CreateTime: created.Unix(),
		MsgType: "event", Event: "SCAN", EventKey: "0123456789abcdef0123456789abcdef", Ticket: "gQTicket==",
	}
}

// testPush is a request to the server URL, before it is sent.
type testPush struct {
	query  url.Values
	body   []byte
	header http.Header
}

func (p testPush) request() *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/callback?"+p.query.Encode(), strings.NewReader(string(p.body)))
	r.Header.Set("Content-Type", "text/xml")
	for k, v := range p.header {
		r.Header[k] = v
	}
	return r
}

func signedURL(ts time.Time, nonce string) url.Values {
	s := strconv.FormatInt(ts.Unix(), 10)
	return url.Values{
		"signature": {wechat.Signature(pvToken, s, nonce)},
		"timestamp": {s},
		"nonce":     {nonce},
		"openid":    {pvOpenID},
	}
}

// plainPush is a push in plaintext mode, sent at ts.
func plainPush(ev *wechat.Event, ts time.Time, nonce string) testPush {
	return testPush{query: signedURL(ts, nonce), body: wechat.MarshalEvent(ev)}
}

// safePush is a push in safe mode, encrypted by c.
func safePush(t testing.TB, c *wechat.Crypter, ev *wechat.Event, ts time.Time, nonce string) testPush {
	t.Helper()
	q := signedURL(ts, nonce)
	enc, msig, err := c.Encrypt(wechat.MarshalEvent(ev), q.Get("timestamp"), nonce)
	if err != nil {
		t.Fatal(err)
	}
	q.Set("encrypt_type", "aes")
	q.Set("msg_signature", msig)
	body := "<xml><ToUserName><![CDATA[" + pvGhID + "]]></ToUserName><Encrypt><![CDATA[" + enc + "]]></Encrypt></xml>"
	return testPush{query: q, body: []byte(body)}
}

// compatPush is a push in compatible mode: the plaintext fields of plain
// followed by the encrypted copy of ev.
func compatPush(t testing.TB, c *wechat.Crypter, ev, plain *wechat.Event, ts time.Time, nonce string) testPush {
	t.Helper()
	p := safePush(t, c, ev, ts, nonce)
	env, err := wechat.ParseEnvelope(p.body)
	if err != nil {
		t.Fatal(err)
	}
	outer := string(wechat.MarshalEvent(plain))
	p.body = []byte(strings.TrimSuffix(outer, "</xml>") + "<Encrypt><![CDATA[" + env.Encrypt + "]]></Encrypt>\n</xml>")
	return p
}

func TestPushVerifierAccepts(t *testing.T) {
	safe := pvCrypter(t, pvAESKey, pvAppID)
	ev := pvScan(pvNow)
	forged := *ev
	forged.FromUserName = "oForgedOpenID000000000000001"

	tests := []struct {
		name       string
		crypter    *wechat.Crypter
		allowPlain bool
		push       testPush
		encrypted  bool
	}{
		{"plaintext", nil, false, plainPush(ev, pvNow, "1"), false},
		{"plaintext, encrypt_type=raw", nil, false, func() testPush {
			p := plainPush(ev, pvNow, "2")
			p.query.Set("encrypt_type", "raw")
			return p
		}(), false},
		{"safe", safe, false, safePush(t, safe, ev, pvNow, "3"), true},
		// Only the encrypted copy counts: the plaintext fields are not
		// covered by msg_signature.
		{"compatible, plaintext copy ignored", safe, false, compatPush(t, safe, ev, &forged, pvNow, "4"), true},
		{"plaintext while migrating", safe, true, plainPush(ev, pvNow, "5"), false},
		{"safe while migrating", safe, true, safePush(t, safe, ev, pvNow, "6"), true},
		{"timestamp at the edge of the window", nil, false, plainPush(ev, pvNow.Add(-5*time.Minute), "7"), false},
		{"no Content-Type", nil, false, func() testPush {
			p := plainPush(ev, pvNow, "8")
			p.header = http.Header{"Content-Type": nil}
			return p
		}(), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := &wechat.PushVerifier{Token: pvToken, Crypter: tc.crypter, AllowPlaintext: tc.allowPlain, MaxAge: 5 * time.Minute, Now: func() time.Time { return pvNow }}
			push, err := v.Verify(tc.push.request())
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if *push.Event != *ev {
				t.Errorf("event = %+v, want %+v", push.Event, ev)
			}
			if push.Encrypted() != tc.encrypted || (push.ReplyCrypter != nil) != tc.encrypted {
				t.Errorf("Encrypted = %v, ReplyCrypter %v; want encrypted %v", push.Encrypted(), push.ReplyCrypter, tc.encrypted)
			}
			if string(push.Body) != string(tc.push.body) {
				t.Errorf("Body is not the body received")
			}
			q := tc.push.query
			if push.Signature != q.Get("signature") || push.Timestamp != q.Get("timestamp") || push.Nonce != q.Get("nonce") {
				t.Errorf("signed parameters %q %q %q, want those of the URL", push.Signature, push.Timestamp, push.Nonce)
			}
		})
	}
}

func TestPushVerifierRefuses(t *testing.T) {
	safe := pvCrypter(t, pvAESKey, pvAppID)
	otherApp := pvCrypter(t, pvAESKey, "wxffffffffffffffff")
	ev := pvScan(pvNow)

	type verifierMode int
	const (
		plaintext verifierMode = iota
		encrypted
		migrating
	)
	tests := []struct {
		name   string
		mode   verifierMode
		push   func() testPush
		status int
		kind   string
		reason string
		is     error
	}{
		// The URL.
		{"forged signature", plaintext, func() testPush {
			p := plainPush(ev, pvNow, "1")
			p.query.Set("signature", wechat.Signature("guessed", p.query.Get("timestamp"), "1"))
			return p
		}, 403, "signature", "bad signature", nil},
		{"uppercase signature", plaintext, func() testPush {
			p := plainPush(ev, pvNow, "2")
			p.query.Set("signature", strings.ToUpper(p.query.Get("signature")))
			return p
		}, 403, "signature", "bad signature", nil},
		{"short signature", plaintext, func() testPush {
			p := plainPush(ev, pvNow, "3")
			p.query.Set("signature", p.query.Get("signature")[:39])
			return p
		}, 403, "", "bad signature", nil},
		{"long nonce", plaintext, func() testPush { return plainPush(ev, pvNow, strings.Repeat("9", 65)) }, 403, "", "bad signature", nil},
		{"signed nonce changed", encrypted, func() testPush {
			p := safePush(t, safe, ev, pvNow, "4")
			p.query.Set("nonce", "5")
			return p
		}, 403, "signature", "bad signature", nil},
		{"missing nonce", plaintext, func() testPush {
			p := plainPush(ev, pvNow, "6")
			p.query.Del("nonce")
			return p
		}, 400, "", "missing signature, timestamp or nonce", nil},
		{"timestamp not a number", plaintext, func() testPush {
			p := plainPush(ev, pvNow, "7")
			p.query.Set("timestamp", "17e8")
			return p
		}, 400, "", "malformed timestamp", nil},
		{"stale timestamp", encrypted, func() testPush { return safePush(t, safe, ev, pvNow.Add(-6*time.Minute), "8") }, 403, "stale", "stale timestamp", nil},
		{"future timestamp", encrypted, func() testPush { return safePush(t, safe, ev, pvNow.Add(6*time.Minute), "9") }, 403, "stale", "stale timestamp", nil},
		{"stale CreateTime", encrypted, func() testPush { return safePush(t, safe, pvScan(pvNow.Add(-time.Hour)), pvNow, "10") }, 403, "stale", "stale push", nil},
		{"repeated signature", plaintext, func() testPush {
			p := plainPush(ev, pvNow, "11")
			p.query.Add("signature", p.query.Get("signature"))
			return p
		}, 400, "malformed", "parameter signature repeated", nil},
		{"repeated encrypt_type", encrypted, func() testPush {
			p := safePush(t, safe, ev, pvNow, "12")
			p.query.Add("encrypt_type", "aes")
			return p
		}, 400, "malformed", "parameter encrypt_type repeated", nil},
		{"repeated openid", plaintext, func() testPush {
			p := plainPush(ev, pvNow, "13")
			p.query.Add("openid", "oOther")
			return p
		}, 400, "malformed", "parameter openid repeated", nil},

		// The mode comes from the configuration, never from the request.
		{"plaintext push to an encrypted account", encrypted, func() testPush { return plainPush(ev, pvNow, "14") }, 403, "mode", "encrypted push required", nil},
		{"encrypt_type=raw to an encrypted account", encrypted, func() testPush {
			p := safePush(t, safe, ev, pvNow, "15")
			p.query.Set("encrypt_type", "raw")
			return p
		}, 403, "mode", "encrypted push required", nil},
		{"encrypt_type=AES", encrypted, func() testPush {
			p := safePush(t, safe, ev, pvNow, "16")
			p.query.Set("encrypt_type", "AES")
			return p
		}, 403, "mode", "encrypted push required", nil},
		{"encrypt_type=raw while migrating", migrating, func() testPush {
			p := safePush(t, safe, ev, pvNow, "17")
			p.query.Set("encrypt_type", "raw")
			return p
		}, 403, "mode", "encrypted push required", nil},
		{"msg_signature missing", encrypted, func() testPush {
			p := safePush(t, safe, ev, pvNow, "18")
			p.query.Del("msg_signature")
			return p
		}, 403, "mode", "encrypted push required", nil},
		{"encrypted push to a plaintext account", plaintext, func() testPush { return safePush(t, safe, ev, pvNow, "19") }, 400, "mode", "encrypted push, but no EncodingAESKey is configured", nil},

		// The encrypted body.
		{"bad msg_signature", encrypted, func() testPush {
			p := safePush(t, safe, ev, pvNow, "20")
			p.query.Set("msg_signature", wechat.Signature(pvToken, p.query.Get("timestamp"), "20", "other"))
			return p
		}, 403, "signature", "bad msg_signature", wechat.ErrSignatureMismatch},
		{"ciphertext changed", encrypted, func() testPush {
			p := safePush(t, safe, ev, pvNow, "21")
			p.body = []byte(strings.Replace(string(p.body), "<Encrypt><![CDATA[", "<Encrypt><![CDATA[A", 1))
			return p
		}, 403, "signature", "bad msg_signature", wechat.ErrSignatureMismatch},
		{"wrong appid", encrypted, func() testPush { return safePush(t, otherApp, ev, pvNow, "22") }, 403, "appid", "push for another app", wechat.ErrAppIDMismatch},
		{"signed garbage ciphertext", encrypted, func() testPush {
			p := safePush(t, safe, ev, pvNow, "23")
			p.body = []byte("<xml><Encrypt><![CDATA[bm90IGEgY2lwaGVydGV4dA==]]></Encrypt></xml>")
			p.query.Set("msg_signature", wechat.Signature(pvToken, p.query.Get("timestamp"), "23", "bm90IGEgY2lwaGVydGV4dA=="))
			return p
		}, 400, "decrypt", "cannot decrypt push", wechat.ErrDecrypt},
		{"envelope without Encrypt", encrypted, func() testPush {
			p := safePush(t, safe, ev, pvNow, "24")
			p.body = wechat.MarshalEvent(ev)
			return p
		}, 400, "malformed", "malformed encrypted push", wechat.ErrInvalidXML},

		// The event.
		{"malformed XML", plaintext, func() testPush {
			p := plainPush(ev, pvNow, "25")
			p.body = []byte(`<!DOCTYPE xml [<!ENTITY a "b">]>` + string(p.body))
			return p
		}, 400, "malformed", "malformed push XML", wechat.ErrInvalidXML},
		{"not XML", plaintext, func() testPush {
			p := plainPush(ev, pvNow, "26")
			p.body = []byte(`{"Event":"SCAN"}`)
			return p
		}, 400, "malformed", "malformed push XML", wechat.ErrInvalidXML},
		{"JSON content type", plaintext, func() testPush {
			p := plainPush(ev, pvNow, "27")
			p.header = http.Header{"Content-Type": {"application/json; charset=utf-8"}}
			return p
		}, 415, "", "pushes must be XML", nil},
		{"body over the cap", encrypted, func() testPush {
			p := safePush(t, safe, ev, pvNow, "28")
			p.body = []byte("<xml><Encrypt>" + strings.Repeat("A", wechat.MaxPushBytes) + "</Encrypt></xml>")
			return p
		}, 413, "too_large", "push too large", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := &wechat.PushVerifier{Token: pvToken, MaxAge: 5 * time.Minute, Now: func() time.Time { return pvNow }}
			if tc.mode != plaintext {
				v.Crypter = safe
				v.AllowPlaintext = tc.mode == migrating
			}
			push, err := v.Verify(tc.push().request())
			checkPushError(t, push, err, tc.status, tc.kind, tc.reason)
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.is)
			}
		})
	}
}

// checkPushError asserts that err is the *wechat.PushError described, and
// that it gives away no secret.
func checkPushError(t *testing.T, got any, err error, status int, kind, reason string) {
	t.Helper()
	var pe *wechat.PushError
	if !errors.As(err, &pe) {
		t.Fatalf("got %v, %v; want a *PushError", got, err)
	}
	if pe.Status != status || pe.Kind != kind || pe.Reason != reason {
		t.Errorf("got %d %q %q, want %d %q %q", pe.Status, pe.Kind, pe.Reason, status, kind, reason)
	}
	for _, secret := range []string{pvToken, pvAESKey, pvAppID} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error %q contains a secret", err)
		}
	}
}

func TestPushVerifierUnreadableBody(t *testing.T) {
	v := &wechat.PushVerifier{Token: pvToken, Now: func() time.Time { return pvNow }}
	r := plainPush(pvScan(pvNow), pvNow, "1").request()
	r.Body = io.NopCloser(iotest.ErrReader(errors.New("connection reset")))
	push, err := v.Verify(r)
	checkPushError(t, push, err, 400, "", "cannot read push")
}

// A verifier without a token refuses everything rather than accept
// signatures over an empty token, which anybody can compute.
func TestPushVerifierWithoutToken(t *testing.T) {
	v := &wechat.PushVerifier{Now: func() time.Time { return pvNow }}
	s := strconv.FormatInt(pvNow.Unix(), 10)
	q := url.Values{"signature": {wechat.Signature("", s, "1")}, "timestamp": {s}, "nonce": {"1"}}
	r := httptest.NewRequest(http.MethodPost, "/callback?"+q.Encode(), strings.NewReader(string(wechat.MarshalEvent(pvScan(pvNow)))))
	push, err := v.Verify(r)
	checkPushError(t, push, err, 403, "signature", "bad signature")
}

// The zero MaxAge and a nil Now mean five minutes of the real clock.
func TestPushVerifierDefaults(t *testing.T) {
	v := &wechat.PushVerifier{Token: pvToken}
	now := time.Now()
	if _, err := v.Verify(plainPush(pvScan(now), now, "1").request()); err != nil {
		t.Fatalf("fresh push: %v", err)
	}
	old := now.Add(-6 * time.Minute)
	push, err := v.Verify(plainPush(pvScan(old), old, "2").request())
	checkPushError(t, push, err, 403, "stale", "stale timestamp")
}

func TestPushVerifierHandshake(t *testing.T) {
	// A real handshake (token GreedIsGood).
	captured := &wechat.PushVerifier{Token: "GreedIsGood", Now: func() time.Time { return time.Unix(1668869433, 30) }}
	echo, err := captured.Handshake(url.Values{
		"signature": {"37cc4891f809493628677ae2b592e63c938c0b03"},
		"timestamp": {"1668869433"},
		"nonce":     {"977789310"},
		"echostr":   {"8641591277801631551"},
	})
	if err != nil || echo != "8641591277801631551" {
		t.Fatalf("captured handshake: %q, %v", echo, err)
	}

	// The handshake is plaintext whatever the mode.
	v := &wechat.PushVerifier{Token: pvToken, Crypter: pvCrypter(t, pvAESKey, pvAppID), MaxAge: 5 * time.Minute, Now: func() time.Time { return pvNow }}
	good := func() url.Values {
		q := signedURL(pvNow, "12345")
		q.Del("openid")
		q.Set("echostr", "8641591277801631551")
		return q
	}
	if echo, err := v.Handshake(good()); err != nil || echo != "8641591277801631551" {
		t.Fatalf("good handshake: %q, %v", echo, err)
	}
	tests := []struct {
		name   string
		edit   func(url.Values)
		status int
		kind   string
		reason string
	}{
		{"missing signature", func(q url.Values) { q.Del("signature") }, 400, "", "missing signature, timestamp or nonce"},
		{"missing timestamp", func(q url.Values) { q.Del("timestamp") }, 400, "", "missing signature, timestamp or nonce"},
		{"wrong signature", func(q url.Values) { q.Set("signature", "0000"+q.Get("signature")[4:]) }, 403, "signature", "bad signature"},
		{"uppercase signature", func(q url.Values) { q.Set("signature", strings.ToUpper(q.Get("signature"))) }, 403, "signature", "bad signature"},
		{"repeated signature", func(q url.Values) { q.Add("signature", q.Get("signature")) }, 400, "", "parameter signature repeated"},
		{"repeated echostr", func(q url.Values) { q.Add("echostr", "1") }, 400, "", "parameter echostr repeated"},
		{"stale timestamp", func(q url.Values) {
			s := strconv.FormatInt(pvNow.Add(-time.Hour).Unix(), 10)
			q.Set("timestamp", s)
			q.Set("signature", wechat.Signature(pvToken, s, "12345"))
		}, 403, "stale", "stale timestamp"},
		{"missing echostr", func(q url.Values) { q.Del("echostr") }, 400, "", "bad echostr"},
		{"markup echostr", func(q url.Values) { q.Set("echostr", "<script>alert(1)</script>") }, 400, "", "bad echostr"},
		{"long echostr", func(q url.Values) { q.Set("echostr", strings.Repeat("1", 129)) }, 400, "", "bad echostr"},
		{"echostr with a newline", func(q url.Values) { q.Set("echostr", "123\n") }, 400, "", "bad echostr"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := good()
			tc.edit(q)
			echo, err := v.Handshake(q)
			checkPushError(t, echo, err, tc.status, tc.kind, tc.reason)
		})
	}
}

// A push encrypted under the previous EncodingAESKey is answered under that
// key, with the push's nonce.
func TestPushReplyText(t *testing.T) {
	old := pvCrypter(t, pvOldKey, pvAppID)
	v := &wechat.PushVerifier{Token: pvToken, Crypter: pvCrypter(t, pvAESKey, pvAppID, pvOldKey), Now: func() time.Time { return pvNow }}
	push, err := v.Verify(safePush(t, old, pvScan(pvNow), pvNow, "777").request())
	if err != nil {
		t.Fatal(err)
	}
	body, err := push.ReplyText("登录成功", pvNow.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	env, err := wechat.ParseReplyEnvelope(body)
	if err != nil {
		t.Fatal(err)
	}
	if env.Nonce != "777" || env.TimeStamp != strconv.FormatInt(pvNow.Unix()+1, 10) {
		t.Errorf("envelope nonce %q, timestamp %q", env.Nonce, env.TimeStamp)
	}
	inner, err := old.Decrypt(env.MsgSignature, env.TimeStamp, env.Nonce, env.Encrypt)
	if err != nil {
		t.Fatalf("the previous key cannot read the reply: %v", err)
	}
	reply, err := wechat.ParseEvent(inner)
	if err != nil {
		t.Fatal(err)
	}
	if reply.ToUserName != pvOpenID || reply.FromUserName != pvGhID || reply.Content != "登录成功" {
		t.Errorf("reply %+v", reply)
	}

	// A plaintext push gets a plaintext reply.
	plain := &wechat.PushVerifier{Token: pvToken, Now: func() time.Time { return pvNow }}
	push, err = plain.Verify(plainPush(pvScan(pvNow), pvNow, "778").request())
	if err != nil {
		t.Fatal(err)
	}
	body, err = push.ReplyText("hi", pvNow)
	if err != nil {
		t.Fatal(err)
	}
	if want := wechat.TextReply(pvOpenID, pvGhID, "hi", pvNow); string(body) != string(want) {
		t.Errorf("plaintext reply %q, want %q", body, want)
	}
}
