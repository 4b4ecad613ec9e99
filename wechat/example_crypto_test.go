package wechat_test

import (
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat"
)

// A callback handler in safe mode: parse the envelope, authenticate and
// decrypt it with the query's msg_signature, timestamp and nonce, then parse
// the inner event. The values here are a test vector, not a real account.
func ExampleCrypter_Decrypt() {
	c, err := wechat.NewCrypter("pamtest", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "wxb11529c136998cb6")
	if err != nil {
		log.Fatal(err)
	}
	body := []byte(`<xml>
    <ToUserName><![CDATA[gh_0123456789ab]]></ToUserName>
    <Encrypt><![CDATA[Q3stYC6hdFzMh9T8HCvyDBg2tXOh+sDfv38N87CKuD7UExS0AtBhLu33AxWV2pt//45cf/MFOCukBjxYFBtEHpHMmjmL85xXKvF1g05ygdp7vJvD+LO1EhwXdVtzaNQ2AHAAUh2kb6DrMXZ7+9CmtNdoTPNs6Or0HTebRHYWx6RyVExIEYy1N2gqiuHt3DRNYz8Mjb07Z+t6CsrRjUulMWPcpWOmBsSlleO93tQL8Vz7M8Z+fWTlhhCwWiVupBkSdyOGZOfyC+Mz28EYByvrRttk0a+ocJhsxNDFz6ih7+qjlXAPd7e/Q8uDyauhaWHQ41R/8A0Xt5DitNkkByvLoynjM+fWrEMZXNqUs1uh2gs+M5CvA5bL3e4EwF6SZpxYr/oEdd3joQgTEsVcxNQONzVVzhVc1ThVt70OJZu3Iyh0y0aAxOy4Vt023xrgI38y5gj7T6Qdd0MMK5QsFD+lgHEM7ApnMUcDUOhUtPscolZkDQuyHNLXuCPNamh/BUJ2]]></Encrypt>
</xml>`)
	// From the callback URL's query string.
	msgSignature, timestamp, nonce := "4814c0c6450024582c8b9381d55771bd4a57d370", "1700000000", "123456789"

	env, err := wechat.ParseEnvelope(body)
	if err != nil {
		log.Fatal(err)
	}
	inner, err := c.Decrypt(msgSignature, timestamp, nonce, env.Encrypt)
	if err != nil {
		log.Fatal(err)
	}
	ev, err := wechat.ParseEvent(inner)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ev.Kind(), ev.EventKey)

	// Any change to the ciphertext is caught by the signature.
	_, err = c.Decrypt(msgSignature, timestamp, nonce, "A"+env.Encrypt[1:])
	fmt.Println(errors.Is(err, wechat.ErrSignatureMismatch))
	// Output:
	// subscribe qrscene_login_abc123
	// true
}

// Keys rotate: the new EncodingAESKey comes first and encrypts; the old one
// is still accepted for pushes WeChat encrypted before the switch.
func ExampleNewCrypter() {
	_, err := wechat.NewCrypter("pamtest", "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG", "wxb11529c136998cb6",
		"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")
	fmt.Println(err)

	_, err = wechat.NewCrypter("pamtest", "abcde", "wxb11529c136998cb6")
	fmt.Println(err)
	// Output:
	// <nil>
	// wechat: invalid argument: encodingAESKey must be 43 characters, got 5
}

func ExampleParseEvent() {
	body := []byte("<xml><ToUserName><![CDATA[gh_de0f036ce08f]]></ToUserName>\n" +
		"<FromUserName><![CDATA[ooUo26seZPcU3qKfcMiXLneG3fO4]]></FromUserName>\n" +
		"<CreateTime>1670592443</CreateTime>\n" +
		"<MsgType><![CDATA[event]]></MsgType>\n" +
		"<Event><![CDATA[SCAN]]></Event>\n" +
		"<EventKey><![CDATA[login_abc123]]></EventKey>\n" +
		"<Ticket><![CDATA[gQTestTicket==]]></Ticket>\n" +
		"</xml>")
	ev, err := wechat.ParseEvent(body)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ev.Kind(), ev.CreateTime)

	// Duplicated fields, DTDs and the like are refused outright.
	_, err = wechat.ParseEvent([]byte("<xml><EventKey>a</EventKey><EventKey>b</EventKey></xml>"))
	fmt.Println(err)
	// Output:
	// SCAN 1670592443
	// wechat: invalid XML: duplicate <EventKey>
}

func ExampleEvent_LoginScene() {
	for _, ev := range []wechat.Event{
		{MsgType: "event", Event: "subscribe", EventKey: "qrscene_login_abc123"},
		{MsgType: "event", Event: "SCAN", EventKey: "login_abc123"},
		{MsgType: "event", Event: "subscribe", EventKey: ""}, // followed without a QR code
		{MsgType: "event", Event: "SCAN", EventKey: "0"},
	} {
		scene, ok := ev.LoginScene()
		fmt.Printf("%s %q %v\n", ev.Event, scene, ok)
	}
	// Output:
	// subscribe "login_abc123" true
	// SCAN "login_abc123" true
	// subscribe "" false
	// SCAN "" false
}

// Answering a push with an encrypted text reply in safe mode.
func ExampleCrypter_EncryptReply() {
	c, err := wechat.NewCrypter("pamtest", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "wxb11529c136998cb6")
	if err != nil {
		log.Fatal(err)
	}
	ev := &wechat.Event{ToUserName: "gh_0123456789ab", FromUserName: "oTestOpenID0000000000000001"}
	reply := wechat.TextReply(ev.FromUserName, ev.ToUserName, "登录成功", time.Unix(1700000001, 0))
	body, err := c.EncryptReply(reply, "1700000001", "123456789")
	if err != nil {
		log.Fatal(err)
	}

	// What WeChat (or the fake in wechattest) does with the answer.
	env, err := wechat.ParseReplyEnvelope(body)
	if err != nil {
		log.Fatal(err)
	}
	inner, err := c.Decrypt(env.MsgSignature, env.TimeStamp, env.Nonce, env.Encrypt)
	if err != nil {
		log.Fatal(err)
	}
	got, err := wechat.ParseEvent(inner)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(got.ToUserName, got.Content)
	// Output:
	// oTestOpenID0000000000000001 登录成功
}
