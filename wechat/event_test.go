package wechat

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// capturedSubscribe is the real subscribe push of wechat-protocol.md §5.2,
// byte for byte (elements separated by "\n").
const capturedSubscribe = "<xml><ToUserName><![CDATA[gh_de0f036ce08f]]></ToUserName>\n" +
	"<FromUserName><![CDATA[ooUo26seZPcU3qKfcMiXLneG3fO4]]></FromUserName>\n" +
	"<CreateTime>1670592443</CreateTime>\n" +
	"<MsgType><![CDATA[event]]></MsgType>\n" +
	"<Event><![CDATA[subscribe]]></Event>\n" +
	"<EventKey><![CDATA[qrscene_110]]></EventKey>\n" +
	"<Ticket><![CDATA[gQGP8DwAAAAAAAAAAS5odHRwOi8vd2VpeGluLnFxLmNvbS9xLzAybUdKYm9weGFjU0cxeFJVajF6MU0AAgSFN5NjAwTwAAAA]]></Ticket>\n" +
	"</xml>"

// The documentation's templates, indented as published.
const (
	docScan = `<xml>
  <ToUserName><![CDATA[toUser]]></ToUserName>
  <FromUserName><![CDATA[FromUser]]></FromUserName>
  <CreateTime>123456789</CreateTime>
  <MsgType><![CDATA[event]]></MsgType>
  <Event><![CDATA[SCAN]]></Event>
  <EventKey><![CDATA[SCENE_VALUE]]></EventKey>
  <Ticket><![CDATA[TICKET]]></Ticket>
</xml>`
	docUnsubscribe    = "<xml><ToUserName><![CDATA[toUser]]></ToUserName>\n<FromUserName><![CDATA[FromUser]]></FromUserName>\n<CreateTime>123456789</CreateTime>\n<MsgType><![CDATA[event]]></MsgType>\n<Event><![CDATA[unsubscribe]]></Event>\n<EventKey><![CDATA[]]></EventKey>\n</xml>"
	docPlainSubscribe = `<xml>
  <ToUserName><![CDATA[toUser]]></ToUserName>
  <FromUserName><![CDATA[FromUser]]></FromUserName>
  <CreateTime>123456789</CreateTime>
  <MsgType><![CDATA[event]]></MsgType>
  <Event><![CDATA[subscribe]]></Event>
</xml>`
	compatBody = `<xml>
    <ToUserName><![CDATA[gh_b4f0e22ae50e]]></ToUserName>
    <FromUserName><![CDATA[oJqxQwYRyZMXFTc8sipB5TSe6Vw4]]></FromUserName>
    <CreateTime>1669640883</CreateTime>
    <MsgType><![CDATA[text]]></MsgType>
    <Content><![CDATA[测试文本消息/:share©]]></Content>
    <MsgId>23903507600338688</MsgId>
    <Encrypt><![CDATA[XcXRgKvv]]></Encrypt>
</xml>`
	safeBody = `<xml>
    <ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName>
    <Encrypt><![CDATA[` + derivedPushEnc + `]]></Encrypt>
</xml>`
)

func TestParseEventValid(t *testing.T) {
	tests := []struct {
		name string
		body string
		want Event
	}{
		{"captured subscribe", capturedSubscribe, Event{
			ToUserName: "gh_de0f036ce08f", FromUserName: "ooUo26seZPcU3qKfcMiXLneG3fO4", CreateTime: 1670592443,
			MsgType: "event", Event: "subscribe", EventKey: "qrscene_110",
			Ticket: "gQGP8DwAAAAAAAAAAS5odHRwOi8vd2VpeGluLnFxLmNvbS9xLzAybUdKYm9weGFjU0cxeFJVajF6MU0AAgSFN5NjAwTwAAAA",
		}},
		{"SCAN template", docScan, Event{
			ToUserName: "toUser", FromUserName: "FromUser", CreateTime: 123456789,
			MsgType: "event", Event: "SCAN", EventKey: "SCENE_VALUE", Ticket: "TICKET",
		}},
		{"unsubscribe with empty EventKey", docUnsubscribe, Event{
			ToUserName: "toUser", FromUserName: "FromUser", CreateTime: 123456789, MsgType: "event", Event: "unsubscribe",
		}},
		{"subscribe without EventKey", docPlainSubscribe, Event{
			ToUserName: "toUser", FromUserName: "FromUser", CreateTime: 123456789, MsgType: "event", Event: "subscribe",
		}},
		{"compatible mode: Encrypt is skipped", compatBody, Event{
			ToUserName: "gh_b4f0e22ae50e", FromUserName: "oJqxQwYRyZMXFTc8sipB5TSe6Vw4", CreateTime: 1669640883,
			MsgType: "text", Content: "测试文本消息/:share©", MsgID: 23903507600338688,
		}},
		{"derived inner push", derivedPushMsg, Event{
			ToUserName: "gh_0123456789ab", FromUserName: "oTestOpenID0000000000000001", CreateTime: 1700000000,
			MsgType: "event", Event: "subscribe", EventKey: "qrscene_login_abc123", Ticket: "gQTestTicket==",
		}},
		{"passive reply", derivedReplyMsg, Event{
			ToUserName: "oTestOpenID0000000000000001", FromUserName: "gh_0123456789ab", CreateTime: 1700000001,
			MsgType: "text", Content: "登录成功",
		}},
		{"whitespace in CDATA is kept", "<xml><Content><![CDATA[  two\nlines\t ]]></Content><EventKey><![CDATA[ ]]></EventKey></xml>",
			Event{Content: "  two\nlines\t ", EventKey: " "}},
		{"plain text and entities", "<xml><Content>a &amp; b &lt;c&gt; &#x4e2d;</Content><MsgType>text</MsgType></xml>",
			Event{Content: "a & b <c> 中", MsgType: "text"}},
		{"XML declaration and comments outside fields",
			"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- pushed --><xml><!-- c --><MsgType><![CDATA[event]]></MsgType></xml>\n<!-- end -->\n",
			Event{MsgType: "event"}},
		{"lower-case utf-8 declaration", `<?xml version="1.0" encoding="utf-8"?><xml/>`, Event{}},
		{"unknown elements with children are skipped", derivedReplyMsg[:len(derivedReplyMsg)-6] + "<Video><MediaId><![CDATA[m]]></MediaId><Title>t</Title></Video><Video/><MsgID>1</MsgID></xml>",
			Event{ToUserName: "oTestOpenID0000000000000001", FromUserName: "gh_0123456789ab", CreateTime: 1700000001, MsgType: "text", Content: "登录成功"}},
		{"known names deeper down are not fields", "<xml><Video><EventKey>x</EventKey><EventKey>y</EventKey></Video><EventKey>z</EventKey></xml>",
			Event{EventKey: "z"}},
		{"attributes are ignored", `<xml a="1"><EventKey b="2">k</EventKey></xml>`, Event{EventKey: "k"}},
		{"empty root", "<xml></xml>", Event{}},
		{"markup-like chat text in CDATA", "<xml><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[<!DOCTYPE html><!ENTITY x>]]></Content></xml>",
			Event{MsgType: "text", Content: "<!DOCTYPE html><!ENTITY x>"}},
		{"timestamp past 2038", "<xml><CreateTime>2147483648</CreateTime></xml>", Event{CreateTime: 2147483648}},
		{"largest int64", "<xml><CreateTime>9223372036854775807</CreateTime><MsgId>9223372036854775807</MsgId></xml>",
			Event{CreateTime: 9223372036854775807, MsgID: 9223372036854775807}},
		{"leading zeros", "<xml><CreateTime>007</CreateTime></xml>", Event{CreateTime: 7}},
		{"CRLF between elements", "<xml>\r\n<MsgType><![CDATA[event]]></MsgType>\r\n</xml>\r\n", Event{MsgType: "event"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseEvent([]byte(tt.body))
			if err != nil {
				t.Fatalf("ParseEvent: %v", err)
			}
			if *got != tt.want {
				t.Errorf("ParseEvent =\n%+v\nwant\n%+v", *got, tt.want)
			}
		})
	}
}

// badXML lists bodies every parser must refuse, from security.md §1.1.7
// and §6.2, plus the rest of the strictness rules.
var badXML = []struct{ name, body string }{
	{"billion laughs", `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;">]><xml><Content>&lol3;</Content></xml>`},
	{"XXE", `<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><xml><Content>&xxe;</Content></xml>`},
	{"bare DOCTYPE", `<!DOCTYPE xml><xml></xml>`},
	{"ENTITY alone", `<xml><!ENTITY x "y"></xml>`},
	{"other directive", `<xml><!ELEMENT xml ANY></xml>`},
	{"lower-case doctype", `<!doctype xml><xml></xml>`},
	{"GBK declaration", `<?xml version="1.0" encoding="GBK"?><xml></xml>`},
	{"Latin-1 declaration", `<?xml version="1.0" encoding="ISO-8859-1"?><xml></xml>`},
	{"other processing instruction", `<?php echo 1; ?><xml></xml>`},
	{"declaration inside root", `<xml><?xml version="1.0"?></xml>`},
	{"declaration after root", `<xml></xml><?xml version="1.0"?>`},
	{"duplicate EventKey", `<xml><EventKey><![CDATA[qrscene_a]]></EventKey><EventKey><![CDATA[qrscene_b]]></EventKey></xml>`},
	{"duplicate empty EventKey", `<xml><EventKey/><EventKey>x</EventKey></xml>`},
	{"duplicate Event", `<xml><Event>SCAN</Event><Event>subscribe</Event></xml>`},
	{"duplicate FromUserName", `<xml><FromUserName>a</FromUserName><FromUserName>b</FromUserName></xml>`},
	{"duplicate ToUserName", `<xml><ToUserName>a</ToUserName><ToUserName>a</ToUserName></xml>`},
	{"duplicate CreateTime", `<xml><CreateTime>1</CreateTime><CreateTime>1</CreateTime></xml>`},
	{"namespace prefix", `<xml><x:EventKey>qrscene_a</x:EventKey></xml>`},
	{"declared namespace prefix", `<xml xmlns:x="urn:x"><x:EventKey>qrscene_a</x:EventKey></xml>`},
	{"default namespace on root", `<xml xmlns="urn:x"><EventKey>a</EventKey></xml>`},
	{"default namespace on a field", `<xml><EventKey xmlns="urn:x">a</EventKey></xml>`},
	{"prefixed root", `<x:xml xmlns:x="urn:x"></x:xml>`},
	{"second root", `<xml><EventKey>a</EventKey></xml><xml><EventKey>b</EventKey></xml>`},
	{"second root of another name", `<xml></xml><other/>`},
	{"text after root", `<xml></xml>trailing`},
	{"text before root", `junk<xml></xml>`},
	{"text inside root", `<xml>junk<Event>SCAN</Event></xml>`},
	{"byte order mark", "\uFEFF<xml></xml>"},
	{"NUL character reference", `<xml><EventKey>a&#0;b</EventKey></xml>`},
	{"control character", "<xml><EventKey>a\x01b</EventKey></xml>"},
	{"invalid UTF-8", "<xml><EventKey><![CDATA[a\xffb]]></EventKey></xml>"},
	{"overlong UTF-8", "<xml><EventKey>\xc0\xaf</EventKey></xml>"},
	{"unknown entity", `<xml><EventKey>&nbsp;</EventKey></xml>`},
	{"comment inside a field", `<xml><EventKey><![CDATA[qrscene_]]><!-- x --><![CDATA[abc]]></EventKey></xml>`},
	{"element inside a field", `<xml><EventKey>qrscene_<b>abc</b></EventKey></xml>`},
	{"empty element inside a field", `<xml><Content>a<br/></Content></xml>`},
	{"root is XML", `<XML></XML>`},
	{"root is another name", `<root><EventKey>a</EventKey></root>`},
	{"empty body", ``},
	{"whitespace only", " \n\t "},
	{"comment only", `<!-- nothing -->`},
	{"unclosed root", `<xml><EventKey>a</EventKey>`},
	{"unclosed field", `<xml><EventKey>a</xml>`},
	{"mismatched tags", `<xml><EventKey>a</Event></xml>`},
	{"unquoted attribute", `<xml a=1></xml>`},
	{"CreateTime empty", `<xml><CreateTime></CreateTime></xml>`},
	{"CreateTime with letters", `<xml><CreateTime>12a</CreateTime></xml>`},
	{"CreateTime negative", `<xml><CreateTime>-1</CreateTime></xml>`},
	{"CreateTime with plus sign", `<xml><CreateTime>+1</CreateTime></xml>`},
	{"CreateTime padded", `<xml><CreateTime> 1</CreateTime></xml>`},
	{"CreateTime decimal point", `<xml><CreateTime>1.0</CreateTime></xml>`},
	{"CreateTime hex", `<xml><CreateTime>0x10</CreateTime></xml>`},
	{"CreateTime underscore", `<xml><CreateTime>1_000</CreateTime></xml>`},
	{"CreateTime 20 digits", `<xml><CreateTime>12345678901234567890</CreateTime></xml>`},
	{"CreateTime int64 overflow", `<xml><CreateTime>9223372036854775808</CreateTime></xml>`},
	{"CreateTime full-width digits", `<xml><CreateTime>１２</CreateTime></xml>`},
	{"MsgId overflow", `<xml><MsgId>99999999999999999999</MsgId></xml>`},
	{"MsgId empty", `<xml><MsgId/></xml>`},
	{"too deep", "<xml>" + strings.Repeat("<a>", maxXMLDepth) + strings.Repeat("</a>", maxXMLDepth) + "</xml>"},
	{"far too deep", "<xml>" + strings.Repeat("<a>", 5000) + strings.Repeat("</a>", 5000) + "</xml>"},
	{"over the size limit", "<xml>" + strings.Repeat(" ", MaxPushBytes) + "</xml>"},
}

func TestParseEventRejects(t *testing.T) {
	for _, tt := range badXML {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := ParseEvent([]byte(tt.body))
			if !errors.Is(err, ErrInvalidXML) {
				t.Fatalf("ParseEvent = %+v, %v; want ErrInvalidXML", ev, err)
			}
			if ev != nil {
				t.Errorf("ParseEvent returned an event with its error")
			}
		})
	}
}

// Nesting just under the limit is still accepted.
func TestParseEventDepthLimit(t *testing.T) {
	n := maxXMLDepth - 1
	body := "<xml>" + strings.Repeat("<a>", n) + strings.Repeat("</a>", n) + "</xml>"
	if _, err := ParseEvent([]byte(body)); err != nil {
		t.Errorf("depth %d: %v", n+1, err)
	}
}

func TestParseEventSizeLimit(t *testing.T) {
	body := "<xml></xml>"
	body += strings.Repeat(" ", MaxPushBytes-len(body))
	if _, err := ParseEvent([]byte(body)); err != nil {
		t.Errorf("body of exactly MaxPushBytes: %v", err)
	}
}

// Parse errors describe the problem without quoting the document, which
// may hold an OpenID, ticket or ciphertext.
func TestParseErrorsDoNotEchoInput(t *testing.T) {
	const secret = "oSecretOpenID0123456789abcdef"
	for _, body := range []string{
		`<xml><` + secret + `>a</Other></xml>`,
		`<xml><EventKey>` + secret + `&` + secret + `;</EventKey></xml>`,
		`<xml><CreateTime>` + secret + `</CreateTime></xml>`,
		`<xml><x` + secret + `:EventKey>a</x` + secret + `:EventKey></xml>`,
		`<?xml version="1.0" encoding="` + secret + `"?><xml/>`,
	} {
		_, err := ParseEvent([]byte(body))
		if err == nil {
			t.Fatalf("accepted %q", body)
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error %q quotes the input", err)
		}
	}
}

func TestParseEnvelope(t *testing.T) {
	tests := []struct {
		name, body string
		want       Envelope
	}{
		{"safe mode", safeBody, Envelope{ToUserName: "gh_97417a04a28d", Encrypt: derivedPushEnc}},
		{"compatible mode", compatBody, Envelope{ToUserName: "gh_b4f0e22ae50e", Encrypt: "XcXRgKvv"}},
		{"Encrypt only", "<xml><Encrypt><![CDATA[abc]]></Encrypt></xml>", Envelope{Encrypt: "abc"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseEnvelope([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if *got != tt.want {
				t.Errorf("ParseEnvelope = %+v, want %+v", *got, tt.want)
			}
		})
	}
	for _, tt := range append(badXML[:len(badXML):len(badXML)],
		struct{ name, body string }{"no Encrypt", "<xml><ToUserName>gh_1</ToUserName></xml>"},
		struct{ name, body string }{"empty Encrypt", "<xml><ToUserName>gh_1</ToUserName><Encrypt><![CDATA[]]></Encrypt></xml>"},
		struct{ name, body string }{"plaintext push", capturedSubscribe},
		struct{ name, body string }{"duplicate Encrypt", "<xml><Encrypt>a</Encrypt><Encrypt>b</Encrypt></xml>"},
		struct{ name, body string }{"duplicate ToUserName", "<xml><ToUserName>a</ToUserName><ToUserName>b</ToUserName><Encrypt>a</Encrypt></xml>"},
		struct{ name, body string }{"element inside Encrypt", "<xml><Encrypt>a<br/>b</Encrypt></xml>"},
		struct{ name, body string }{"namespaced Encrypt", "<xml><x:Encrypt>a</x:Encrypt></xml>"},
	) {
		if strings.HasPrefix(tt.name, "CreateTime") || strings.HasPrefix(tt.name, "MsgId") {
			continue // not fields of an envelope
		}
		t.Run("rejects "+tt.name, func(t *testing.T) {
			env, err := ParseEnvelope([]byte(tt.body))
			if !errors.Is(err, ErrInvalidXML) || env != nil {
				t.Errorf("ParseEnvelope = %+v, %v; want ErrInvalidXML", env, err)
			}
		})
	}
}

func TestKind(t *testing.T) {
	tests := []struct {
		msgType, event string
		want           EventKind
	}{
		{"event", "subscribe", EventSubscribe},
		{"event", "SCAN", EventScan},
		{"event", "unsubscribe", EventUnsubscribe},
		{"event", "scan", EventOther},
		{"event", "Subscribe", EventOther},
		{"event", "SUBSCRIBE", EventOther},
		{"event", "subscribe ", EventOther},
		{"event", "CLICK", EventOther},
		{"event", "VIEW", EventOther},
		{"event", "", EventOther},
		{"Event", "SCAN", EventOther},
		{"text", "SCAN", EventOther},
		{"", "", EventOther},
	}
	for _, tt := range tests {
		e := Event{MsgType: tt.msgType, Event: tt.event}
		if got := e.Kind(); got != tt.want {
			t.Errorf("Kind(%q, %q) = %v, want %v", tt.msgType, tt.event, got, tt.want)
		}
	}
	names := map[EventKind]string{EventOther: "other", EventSubscribe: "subscribe", EventScan: "SCAN", EventUnsubscribe: "unsubscribe", 99: "other"}
	for k, want := range names {
		if k.String() != want {
			t.Errorf("EventKind(%d).String() = %q, want %q", int(k), k.String(), want)
		}
	}
}

func TestLoginScene(t *testing.T) {
	long64 := strings.Repeat("s", 64)
	tests := []struct {
		name, event, key string
		want             string
		ok               bool
	}{
		{"subscribe with scene", "subscribe", "qrscene_123123", "123123", true},
		{"subscribe with string scene", "subscribe", "qrscene_login_abc123", "login_abc123", true},
		{"prefix stripped only once", "subscribe", "qrscene_qrscene_x", "qrscene_x", true},
		{"subscribe without prefix", "subscribe", "123123", "", false},
		{"subscribe, prefix in the wrong case", "subscribe", "QRSCENE_abc", "", false},
		{"subscribe, prefix only", "subscribe", "qrscene_", "", false},
		{"plain subscribe", "subscribe", "", "", false},
		{"subscribe scene 0", "subscribe", "qrscene_0", "", false},
		{"subscribe scene 00", "subscribe", "qrscene_00", "00", true},
		{"subscribe 64-byte scene", "subscribe", "qrscene_" + long64, long64, true},
		{"subscribe 65-byte scene", "subscribe", "qrscene_" + long64 + "s", "", false},
		{"SCAN bare scene", "SCAN", "SCENE_VALUE", "SCENE_VALUE", true},
		{"SCAN keeps a qrscene_ prefix", "SCAN", "qrscene_abc", "qrscene_abc", true},
		{"SCAN empty", "SCAN", "", "", false},
		{"SCAN 0", "SCAN", "0", "", false},
		{"SCAN 64 bytes", "SCAN", long64, long64, true},
		{"SCAN 65 bytes", "SCAN", long64 + "s", "", false},
		{"SCAN all visible ASCII punctuation", "SCAN", "!~_-.:/+=", "!~_-.:/+=", true},
		{"non-ASCII", "SCAN", "场景", "", false},
		{"fullwidth letters", "SCAN", "ａｂｃ", "", false},
		{"zero-width space", "SCAN", "abc\u200b", "", false},
		{"inner space", "SCAN", "a b", "", false},
		{"leading space", "subscribe", "qrscene_ abc", "", false},
		{"tab", "SCAN", "a\tb", "", false},
		{"DEL", "SCAN", "a\x7f", "", false},
		{"NUL", "SCAN", "a\x00", "", false},
		{"unsubscribe", "unsubscribe", "qrscene_abc", "", false},
		{"lower-case scan", "scan", "abc", "", false},
		{"CLICK", "CLICK", "abc", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := Event{MsgType: "event", Event: tt.event, EventKey: tt.key}
			got, ok := e.LoginScene()
			if got != tt.want || ok != tt.ok {
				t.Errorf("LoginScene = %q, %v; want %q, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
	text := Event{MsgType: "text", Event: "SCAN", EventKey: "abc"}
	if s, ok := text.LoginScene(); ok {
		t.Errorf("text message gave scene %q", s)
	}
}

func TestMarshalEventCaptured(t *testing.T) {
	e, err := ParseEvent([]byte(capturedSubscribe))
	if err != nil {
		t.Fatal(err)
	}
	if got := MarshalEvent(e); string(got) != capturedSubscribe {
		t.Errorf("MarshalEvent =\n%s\nwant\n%s", got, capturedSubscribe)
	}
}

func TestMarshalEventShapes(t *testing.T) {
	tests := []struct {
		name string
		e    Event
		want string
	}{
		{"unsubscribe carries an empty EventKey",
			Event{ToUserName: "gh_1", FromUserName: "o1", CreateTime: 5, MsgType: "event", Event: "unsubscribe"},
			"<xml><ToUserName><![CDATA[gh_1]]></ToUserName>\n<FromUserName><![CDATA[o1]]></FromUserName>\n<CreateTime>5</CreateTime>\n<MsgType><![CDATA[event]]></MsgType>\n<Event><![CDATA[unsubscribe]]></Event>\n<EventKey><![CDATA[]]></EventKey>\n</xml>"},
		{"SCAN without ticket",
			Event{ToUserName: "gh_1", FromUserName: "o1", CreateTime: 5, MsgType: "event", Event: "SCAN", EventKey: "s"},
			"<xml><ToUserName><![CDATA[gh_1]]></ToUserName>\n<FromUserName><![CDATA[o1]]></FromUserName>\n<CreateTime>5</CreateTime>\n<MsgType><![CDATA[event]]></MsgType>\n<Event><![CDATA[SCAN]]></Event>\n<EventKey><![CDATA[s]]></EventKey>\n</xml>"},
		{"CLICK without key",
			Event{MsgType: "event", Event: "CLICK"},
			"<xml><ToUserName><![CDATA[]]></ToUserName>\n<FromUserName><![CDATA[]]></FromUserName>\n<CreateTime>0</CreateTime>\n<MsgType><![CDATA[event]]></MsgType>\n<Event><![CDATA[CLICK]]></Event>\n</xml>"},
		{"text message",
			Event{ToUserName: "gh_1", FromUserName: "o1", CreateTime: 5, MsgType: "text", MsgID: 6054768590064713728},
			"<xml><ToUserName><![CDATA[gh_1]]></ToUserName>\n<FromUserName><![CDATA[o1]]></FromUserName>\n<CreateTime>5</CreateTime>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[]]></Content>\n<MsgId>6054768590064713728</MsgId>\n</xml>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := MarshalEvent(&tt.e)
			if string(got) != tt.want {
				t.Errorf("MarshalEvent =\n%q\nwant\n%q", got, tt.want)
			}
			back, err := ParseEvent(got)
			if err != nil || *back != tt.e {
				t.Errorf("ParseEvent(MarshalEvent) = %+v, %v", back, err)
			}
		})
	}
}

// Strings that cannot be written literally inside CDATA still come back
// unchanged; bytes XML cannot carry become U+FFFD.
func TestMarshalEventEscaping(t *testing.T) {
	tests := []struct{ in, want string }{
		{"]]>", "]]>"},
		{"a]]>b]]>c", "a]]>b]]>c"},
		{"]]]>>", "]]]>>"},
		{"]]", "]]"},
		{"<![CDATA[x]]>", "<![CDATA[x]]>"},
		{"</EventKey><EventKey>", "</EventKey><EventKey>"},
		{"&amp; &lt;", "&amp; &lt;"},
		{"line\r\nbreak\rend\r", "line\r\nbreak\rend\r"},
		{"  spaced \t\n", "  spaced \t\n"},
		{"中文 ✓ 😀", "中文 ✓ 😀"},
		{"\uFFFD", "\uFFFD"},
		{"a\x00b", "a\uFFFDb"},
		{"a\x1bb", "a\uFFFDb"},
		{"a\xffb", "a\uFFFDb"},
		{"\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"}, // an encoded surrogate is invalid UTF-8
		{"\uFFFE", "\uFFFD"},
	}
	for _, tt := range tests {
		e := &Event{ToUserName: tt.in, FromUserName: tt.in, MsgType: "event", Event: "SCAN", EventKey: tt.in, Ticket: tt.in, Content: tt.in}
		body := MarshalEvent(e)
		got, err := ParseEvent(body)
		if err != nil {
			t.Errorf("%q: ParseEvent(MarshalEvent) failed: %v\n%s", tt.in, err, body)
			continue
		}
		for _, v := range []string{got.ToUserName, got.FromUserName, got.EventKey, got.Ticket, got.Content} {
			if v != tt.want {
				t.Errorf("%q came back as %q, want %q", tt.in, v, tt.want)
			}
		}
	}
}

// FuzzParseEvent checks that ParseEvent never panics, fails only with
// ErrInvalidXML, and that whatever it accepts survives MarshalEvent and a
// second parse unchanged.
func FuzzParseEvent(f *testing.F) {
	for _, s := range []string{capturedSubscribe, docScan, docUnsubscribe, docPlainSubscribe, compatBody, safeBody, derivedPushMsg, derivedReplyMsg} {
		f.Add([]byte(s))
	}
	for _, tt := range badXML {
		if len(tt.body) < 4096 {
			f.Add([]byte(tt.body))
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		e, err := ParseEvent(body)
		if err != nil {
			if !errors.Is(err, ErrInvalidXML) || e != nil {
				t.Fatalf("ParseEvent = %v, %v", e, err)
			}
			return
		}
		if len(body) > MaxPushBytes {
			t.Fatalf("accepted %d bytes", len(body))
		}
		if e.CreateTime < 0 || e.MsgID < 0 {
			t.Fatalf("negative number: %+v", e)
		}
		again, err := ParseEvent(MarshalEvent(e))
		if err != nil {
			t.Fatalf("ParseEvent(MarshalEvent(%+v)): %v", e, err)
		}
		if *again != *e {
			t.Fatalf("round trip changed the event:\n%+v\n%+v", e, again)
		}
		checkLoginScene(t, e)
	})
}

// checkLoginScene asserts the LoginScene contract for one event.
func checkLoginScene(t *testing.T, e *Event) {
	t.Helper()
	scene, ok := e.LoginScene()
	if !ok {
		if scene != "" {
			t.Fatalf("not ok but scene %q", scene)
		}
		return
	}
	if scene == "" || scene == "0" || len(scene) > 64 {
		t.Fatalf("bad scene %q accepted", scene)
	}
	for _, c := range []byte(scene) {
		if c <= ' ' || c > '~' {
			t.Fatalf("scene %q has byte %#x", scene, c)
		}
	}
	switch e.Kind() {
	case EventSubscribe:
		if e.EventKey != "qrscene_"+scene {
			t.Fatalf("subscribe key %q gave scene %q", e.EventKey, scene)
		}
	case EventScan:
		if e.EventKey != scene {
			t.Fatalf("SCAN key %q gave scene %q", e.EventKey, scene)
		}
	default:
		t.Fatalf("scene %q from a %v event", scene, e.Kind())
	}
}

// FuzzLoginScene checks the LoginScene contract on arbitrary keys, for
// every event type including near misses.
func FuzzLoginScene(f *testing.F) {
	for _, s := range []string{"", "0", "qrscene_", "qrscene_0", "qrscene_qrscene_x", "qrscene_123", "SCENE_VALUE",
		strings.Repeat("a", 65), "qrscene_" + strings.Repeat("a", 64), "场景", "a b", "\x00"} {
		f.Add("subscribe", s)
		f.Add("SCAN", s)
	}
	f.Add("unsubscribe", "qrscene_1")
	f.Fuzz(func(t *testing.T, event, key string) {
		e := &Event{MsgType: "event", Event: event, EventKey: key}
		checkLoginScene(t, e)
		if _, ok := e.LoginScene(); ok != wantLoginOK(event, key) {
			t.Fatalf("LoginScene(%q, %q) ok = %v", event, key, ok)
		}
	})
}

// wantLoginOK is an independent statement of when a scene is acceptable.
func wantLoginOK(event, key string) bool {
	var scene string
	switch event {
	case "subscribe":
		if len(key) < 8 || key[:8] != "qrscene_" {
			return false
		}
		scene = key[8:]
	case "SCAN":
		scene = key
	default:
		return false
	}
	if scene == "0" || len(scene) < 1 || len(scene) > 64 {
		return false
	}
	return !bytes.ContainsFunc([]byte(scene), func(r rune) bool { return r < '!' || r > '~' })
}

// FuzzParseEnvelope checks both envelope parsers: no panics, only
// ErrInvalidXML, required fields present, and a reply envelope that parses
// survives re-rendering.
func FuzzParseEnvelope(f *testing.F) {
	f.Add([]byte(safeBody))
	f.Add([]byte(compatBody))
	f.Add([]byte(capturedSubscribe))
	f.Add([]byte(replyEnvelopeDoc))
	f.Add([]byte("<xml><Encrypt>a</Encrypt><Encrypt>b</Encrypt></xml>"))
	f.Add([]byte("<xml><Encrypt><![CDATA[]]></Encrypt></xml>"))
	f.Fuzz(func(t *testing.T, body []byte) {
		env, err := ParseEnvelope(body)
		switch {
		case err != nil && (!errors.Is(err, ErrInvalidXML) || env != nil):
			t.Fatalf("ParseEnvelope = %v, %v", env, err)
		case err == nil && env.Encrypt == "":
			t.Fatalf("accepted an empty Encrypt")
		}
		renv, err := ParseReplyEnvelope(body)
		if err != nil {
			if !errors.Is(err, ErrInvalidXML) || renv != nil {
				t.Fatalf("ParseReplyEnvelope = %v, %v", renv, err)
			}
			return
		}
		if renv.Encrypt == "" || renv.MsgSignature == "" || renv.Nonce == "" || !isDigits(renv.TimeStamp) {
			t.Fatalf("accepted an incomplete reply envelope %+v", renv)
		}
		again, err := ParseReplyEnvelope(marshalReplyEnvelope(renv))
		if err != nil || *again != *renv {
			t.Fatalf("reply envelope round trip: %+v, %v", again, err)
		}
	})
}

func BenchmarkParseEvent(b *testing.B) {
	body := []byte(capturedSubscribe)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := ParseEvent(body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshalEvent(b *testing.B) {
	e, _ := ParseEvent([]byte(capturedSubscribe))
	for b.Loop() {
		MarshalEvent(e)
	}
}
