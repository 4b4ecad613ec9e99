package wechat

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// replyEnvelopeDoc is the derived reply vector laid out as in §6.6.
const replyEnvelopeDoc = "<xml>\n" +
	"<Encrypt><![CDATA[" + derivedReplyEnc + "]]></Encrypt>\n" +
	"<MsgSignature><![CDATA[" + derivedReplyMsig + "]]></MsgSignature>\n" +
	"<TimeStamp>" + derivedReplyTS + "</TimeStamp>\n" +
	"<Nonce><![CDATA[" + derivedNonce + "]]></Nonce>\n" +
	"</xml>"

// A real encrypted reply envelope as published in a public SDK's tests
// (token tom00123); only its signature can be checked without the AppID.
const (
	realReplyToken    = "tom00123"
	realReplyEnvelope = `<xml><Encrypt><![CDATA[TYISAfTaVqF97gn22+BQrYOtJcf4GU360iTvjzdLBAp800rTdKFOj+nUhAJKUJ82YA5zbRHPZ/F6P8ok8dYMWhu2zBWwv+xIWlERDlaIKp2CKzbSa5FZ2gl1EWrZzn/GDkKEuDIEY7GyjJaVfiduMg8N6oBlxx6xYz0tuyNlVWoAbgDvIxYYJwkN7CRADuD0IPTE7mkY4fGc56fxFc2D58vnsIOQ8ys28m81fhHZ4g0UjcJKJXofj0N5QTJxO9RmHVP39+b0KcevUacw4Dmi8c72/S0IqIl/eBgZVG4IVVPgpii/7gojmbFDHFi9/RTA4nwQJAe9JxNx+76RvnmXvfCW8PigFlvtsJvY31Nv/ZB97ZxIUiJYk2Y48JoH3wZEs/9NKzDHOaOT+SvRFLaIWeD9DUayXXG5g0vEfugrZPM=]]></Encrypt><MsgSignature><![CDATA[2a57bca3d93100e42599d453d97ebde9f5a57eca]]></MsgSignature><TimeStamp>1515926128</TimeStamp><Nonce><![CDATA[143125540]]></Nonce></xml>`
)

func TestTextReply(t *testing.T) {
	got := TextReply("oUser", "gh_acct", "你好\n第二行", time.Unix(12345678, 999).In(time.FixedZone("X", 3600)))
	const want = "<xml><ToUserName><![CDATA[oUser]]></ToUserName><FromUserName><![CDATA[gh_acct]]></FromUserName>" +
		"<CreateTime>12345678</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好\n第二行]]></Content></xml>"
	if string(got) != want {
		t.Fatalf("TextReply =\n%s\nwant\n%s", got, want)
	}
	// A hostile content value cannot break out of its element.
	evil := "]]></Content><MsgType>news</MsgType><Content><![CDATA[x"
	e, err := ParseEvent(TextReply("oUser", "gh_acct", evil, time.Unix(1, 0)))
	if err != nil {
		t.Fatal(err)
	}
	if e.Content != evil || e.MsgType != "text" {
		t.Errorf("reply parsed as %+v", e)
	}
}

func TestMarshalReplyEnvelopeVector(t *testing.T) {
	env := &ReplyEnvelope{Encrypt: derivedReplyEnc, MsgSignature: derivedReplyMsig, TimeStamp: derivedReplyTS, Nonce: derivedNonce}
	if got := marshalReplyEnvelope(env); string(got) != replyEnvelopeDoc {
		t.Errorf("envelope =\n%s\nwant\n%s", got, replyEnvelopeDoc)
	}
	parsed, err := ParseReplyEnvelope([]byte(replyEnvelopeDoc))
	if err != nil || *parsed != *env {
		t.Fatalf("ParseReplyEnvelope = %+v, %v", parsed, err)
	}
	msg, err := vecA(t).Decrypt(parsed.MsgSignature, parsed.TimeStamp, parsed.Nonce, parsed.Encrypt)
	if err != nil || string(msg) != derivedReplyMsg {
		t.Errorf("Decrypt = %q, %v", msg, err)
	}
}

func TestEncryptReplyRoundTrip(t *testing.T) {
	c := vecA(t)
	reply := TextReply("oTestOpenID0000000000000001", "gh_0123456789ab", "登录成功 ]]> \r\n", time.Unix(1700000001, 0))
	body, err := c.EncryptReply(reply, "1700000001", "123456789")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(body), "<xml>\n<Encrypt><![CDATA[") || !strings.HasSuffix(string(body), "]]></Nonce>\n</xml>") ||
		!strings.Contains(string(body), "]]></MsgSignature>\n<TimeStamp>1700000001</TimeStamp>\n<Nonce><![CDATA[123456789") {
		t.Errorf("envelope layout:\n%s", body)
	}
	env, err := ParseReplyEnvelope(body)
	if err != nil {
		t.Fatal(err)
	}
	if env.TimeStamp != "1700000001" || env.Nonce != "123456789" {
		t.Errorf("envelope = %+v", env)
	}
	if !CheckSignature(env.MsgSignature, vecAToken, env.TimeStamp, env.Nonce, env.Encrypt) {
		t.Errorf("MsgSignature does not cover the envelope")
	}
	msg, err := c.Decrypt(env.MsgSignature, env.TimeStamp, env.Nonce, env.Encrypt)
	if err != nil || string(msg) != string(reply) {
		t.Fatalf("Decrypt = %q, %v", msg, err)
	}
	// A nonce with "]]>" survives the CDATA section.
	body, err = c.EncryptReply(reply, "1", "a]]>b")
	if err != nil {
		t.Fatal(err)
	}
	if env, err := ParseReplyEnvelope(body); err != nil || env.Nonce != "a]]>b" {
		t.Errorf("nonce came back as %+v, %v", env, err)
	}
}

func TestEncryptReplyRejects(t *testing.T) {
	c := vecA(t)
	tests := []struct{ name, ts, nonce string }{
		{"empty timestamp", "", "1"},
		{"timestamp with letters", "12a", "1"},
		{"negative timestamp", "-1", "1"},
		{"timestamp injection", "1</TimeStamp><x>", "1"},
		{"empty nonce", "1", ""},
		{"nonce with space", "1", "a b"},
		{"nonce with newline", "1", "a\nb"},
		{"nonce with non-ASCII", "1", "随机"},
		{"nonce too long", "1", strings.Repeat("1", maxNonceLen+1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, err := c.EncryptReply([]byte("<xml/>"), tt.ts, tt.nonce)
			if !errors.Is(err, ErrInvalidArgument) || body != nil {
				t.Errorf("EncryptReply = %q, %v; want ErrInvalidArgument", body, err)
			}
		})
	}
}

func TestParseReplyEnvelopeReal(t *testing.T) {
	env, err := ParseReplyEnvelope([]byte(realReplyEnvelope))
	if err != nil {
		t.Fatal(err)
	}
	if env.TimeStamp != "1515926128" || env.Nonce != "143125540" {
		t.Errorf("envelope = %+v", env)
	}
	if !CheckSignature(env.MsgSignature, realReplyToken, env.TimeStamp, env.Nonce, env.Encrypt) {
		t.Errorf("published MsgSignature does not verify")
	}
}

func TestParseReplyEnvelopeRejects(t *testing.T) {
	full := map[string]string{"Encrypt": "<Encrypt>e</Encrypt>", "MsgSignature": "<MsgSignature>s</MsgSignature>", "TimeStamp": "<TimeStamp>1</TimeStamp>", "Nonce": "<Nonce>n</Nonce>"}
	build := func(skip, replace string) string {
		var b strings.Builder
		b.WriteString("<xml>")
		for _, k := range []string{"Encrypt", "MsgSignature", "TimeStamp", "Nonce"} {
			switch k {
			case skip:
			case replace:
				b.WriteString("<" + k + "></" + k + ">")
			default:
				b.WriteString(full[k])
			}
		}
		return b.String() + "</xml>"
	}
	if _, err := ParseReplyEnvelope([]byte(build("", ""))); err != nil {
		t.Fatalf("complete envelope: %v", err)
	}
	bodies := map[string]string{
		"TimeStamp not decimal": "<xml><Encrypt>e</Encrypt><MsgSignature>s</MsgSignature><TimeStamp>1a</TimeStamp><Nonce>n</Nonce></xml>",
		"duplicate Nonce":       "<xml><Encrypt>e</Encrypt><MsgSignature>s</MsgSignature><TimeStamp>1</TimeStamp><Nonce>n</Nonce><Nonce>m</Nonce></xml>",
		"wrong element case":    "<xml><Encrypt>e</Encrypt><Msgsignature>s</Msgsignature><TimeStamp>1</TimeStamp><Nonce>n</Nonce></xml>",
		"plaintext reply":       derivedReplyMsg,
	}
	for _, k := range []string{"Encrypt", "MsgSignature", "TimeStamp", "Nonce"} {
		bodies["missing "+k] = build(k, "")
		bodies["empty "+k] = build("", k)
	}
	for _, tt := range badXML {
		bodies[tt.name] = tt.body
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			env, err := ParseReplyEnvelope([]byte(body))
			if !errors.Is(err, ErrInvalidXML) || env != nil {
				t.Errorf("ParseReplyEnvelope = %+v, %v; want ErrInvalidXML", env, err)
			}
		})
	}
}
