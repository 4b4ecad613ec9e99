package wechat

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// TextReply renders a passive text reply, the body that answers a push so
// the user sees content in the chat. toUser is the user's OpenID (the
// push's FromUserName) and fromUser the account's original ID (the push's
// ToUserName). The output is compact XML with no whitespace between
// elements; in safe mode pass it through Crypter.EncryptReply.
//
// Strings are escaped as MarshalEvent does, so the reply is always
// well-formed XML.
func TextReply(toUser, fromUser, content string, createTime time.Time) []byte {
	b := make([]byte, 0, 192+len(toUser)+len(fromUser)+len(content))
	b = append(b, "<xml>"...)
	b = appendCDATAElem(b, "ToUserName", toUser)
	b = appendCDATAElem(b, "FromUserName", fromUser)
	b = appendIntElem(b, "CreateTime", createTime.Unix())
	b = appendCDATAElem(b, "MsgType", "text")
	b = appendCDATAElem(b, "Content", content)
	return append(b, "</xml>"...)
}

// maxNonceLen bounds the nonce of an encrypted reply. WeChat's nonces are
// about ten digits.
const maxNonceLen = 128

// EncryptReply encrypts a passive reply (such as the output of TextReply)
// and wraps it in the envelope WeChat expects in safe mode:
//
//	<xml>
//	<Encrypt><![CDATA[...]]></Encrypt>
//	<MsgSignature><![CDATA[...]]></MsgSignature>
//	<TimeStamp>...</TimeStamp>
//	<Nonce><![CDATA[...]]></Nonce>
//	</xml>
//
// timestamp is the current Unix time in decimal; nonce is usually the
// push's nonce echoed back and must be visible ASCII.
func (c *Crypter) EncryptReply(reply []byte, timestamp, nonce string) ([]byte, error) {
	if !isDigits(timestamp) {
		return nil, fmt.Errorf("wechat: %w: timestamp is not a decimal number", ErrInvalidArgument)
	}
	if nonce == "" || len(nonce) > maxNonceLen || !isVisibleASCII(nonce) {
		return nil, fmt.Errorf("wechat: %w: nonce must be 1 to %d visible ASCII characters", ErrInvalidArgument, maxNonceLen)
	}
	encrypted, sig, err := c.Encrypt(reply, timestamp, nonce)
	if err != nil {
		return nil, err
	}
	return marshalReplyEnvelope(&ReplyEnvelope{Encrypt: encrypted, MsgSignature: sig, TimeStamp: timestamp, Nonce: nonce}), nil
}

// marshalReplyEnvelope renders env in the layout of WeChat's documentation.
func marshalReplyEnvelope(env *ReplyEnvelope) []byte {
	b := make([]byte, 0, 160+len(env.Encrypt)+len(env.Nonce))
	b = append(b, "<xml>\n"...)
	b = appendCDATAElem(b, "Encrypt", env.Encrypt)
	b = append(b, '\n')
	b = appendCDATAElem(b, "MsgSignature", env.MsgSignature)
	b = append(b, "\n<TimeStamp>"...)
	b = append(b, env.TimeStamp...)
	b = append(b, "</TimeStamp>\n"...)
	b = appendCDATAElem(b, "Nonce", env.Nonce)
	return append(b, "\n</xml>"...)
}

// ReplyEnvelope is an encrypted passive reply as produced by EncryptReply.
// A receiver checks and opens it with
// Crypter.Decrypt(env.MsgSignature, env.TimeStamp, env.Nonce, env.Encrypt).
type ReplyEnvelope struct {
	Encrypt      string // base64 ciphertext of the reply XML
	MsgSignature string // Signature(token, TimeStamp, Nonce, Encrypt)
	TimeStamp    string // Unix seconds, decimal
	Nonce        string // usually the nonce of the push being answered
}

// ParseReplyEnvelope parses an encrypted reply with the same strict rules
// as ParseEvent. All four elements must be present and non-empty, and
// TimeStamp must be a decimal number. Errors wrap ErrInvalidXML.
func ParseReplyEnvelope(body []byte) (*ReplyEnvelope, error) {
	var env ReplyEnvelope
	fields := []xmlField{
		{name: "Encrypt", dst: &env.Encrypt},
		{name: "MsgSignature", dst: &env.MsgSignature},
		{name: "TimeStamp", dst: &env.TimeStamp},
		{name: "Nonce", dst: &env.Nonce},
	}
	if err := parseFlatXML(body, fields); err != nil {
		return nil, err
	}
	for _, f := range fields {
		if *f.dst == "" {
			return nil, fmt.Errorf("%w: missing or empty <%s>", ErrInvalidXML, f.name)
		}
	}
	if !isDigits(env.TimeStamp) {
		return nil, fmt.Errorf("%w: <TimeStamp> is not a decimal number", ErrInvalidXML)
	}
	return &env, nil
}

// isVisibleASCII reports whether s holds only bytes 0x21 to 0x7E.
func isVisibleASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// appendCDATAElem appends <name><![CDATA[v]]></name>.
func appendCDATAElem(b []byte, name, v string) []byte {
	b = append(b, '<')
	b = append(b, name...)
	b = append(b, '>')
	b = appendCDATA(b, v)
	b = append(b, "</"...)
	b = append(b, name...)
	return append(b, '>')
}

// appendIntElem appends <name>n</name>.
func appendIntElem(b []byte, name string, n int64) []byte {
	b = append(b, '<')
	b = append(b, name...)
	b = append(b, '>')
	b = strconv.AppendInt(b, n, 10)
	b = append(b, "</"...)
	b = append(b, name...)
	return append(b, '>')
}

// appendCDATA appends s as a CDATA section that an XML parser reads back as
// exactly s. Three things cannot appear literally inside CDATA: the closing
// "]]>", which is split across two sections; a carriage return, which
// parsers turn into a newline and so is written as the reference &#13;
// between sections; and characters XML forbids, which become U+FFFD.
func appendCDATA(b []byte, s string) []byte {
	b = append(b, "<![CDATA["...)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1, !isXMLChar(r):
			b = append(b, string(utf8.RuneError)...)
		case r == '\r':
			b = append(b, "]]>&#13;<![CDATA["...)
		case r == ']' && strings.HasPrefix(s[i:], "]]>"):
			b = append(b, "]]]]><![CDATA[>"...)
			size = len("]]>")
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, "]]>"...)
}

// isXMLChar reports whether r may appear in an XML 1.0 document.
func isXMLChar(r rune) bool {
	switch {
	case r == '\t', r == '\n', r == '\r':
		return true
	case r >= 0x20 && r <= 0xD7FF, r >= 0xE000 && r <= 0xFFFD, r >= 0x10000 && r <= 0x10FFFF:
		return true
	}
	return false
}
