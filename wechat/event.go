package wechat

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxPushBytes is the largest push body the parsers accept. Real pushes are
// well under 4 KiB; compatible mode roughly triples that. Callers should cap
// the request body at the same size before reading it.
const MaxPushBytes = 64 << 10

// ErrInvalidXML is wrapped by every parse error of ParseEvent, ParseEnvelope
// and ParseReplyEnvelope. The wrapped text says what was wrong, never what
// the fields contained.
var ErrInvalidXML = errors.New("wechat: invalid XML")

// maxXMLDepth bounds element nesting. WeChat's documents are two levels
// deep (three for media replies); anything deeper is not from WeChat.
const maxXMLDepth = 16

// Event is a push from WeChat (plaintext, or the inner document of an
// encrypted push) or a passive reply, which uses the same element names.
// Fields are exactly as received, without trimming; missing elements leave
// the zero value.
type Event struct {
	// ToUserName is the receiver: the account's original ID (gh_...) in a
	// push, the user's OpenID in a reply.
	ToUserName string
	// FromUserName is the sender: the user's OpenID in a push.
	FromUserName string
	// CreateTime is when WeChat created the message, in Unix seconds.
	CreateTime int64
	// MsgType is "event" for events, or the message type ("text", ...).
	MsgType string
	// Event is the event type, such as "subscribe", "SCAN" or "unsubscribe".
	Event string
	// EventKey is "qrscene_<scene>" for a subscribe through a parametric QR
	// code, the bare scene for SCAN, and empty or absent otherwise.
	EventKey string
	// Ticket is the QR ticket that was scanned, for QR events.
	Ticket string
	// MsgID is the message id of ordinary (non-event) messages (XML MsgId).
	MsgID int64
	// Content is the text of a text message or text reply.
	Content string
}

// EventKind classifies an Event for the login flow.
type EventKind int

// The event kinds. Matching is exact and case-sensitive, like WeChat's own
// values: MsgType must be "event" and Event "subscribe", "SCAN" or
// "unsubscribe". Anything else, including "scan" or "Subscribe", is
// EventOther.
const (
	// EventOther is any other message or event. It is the zero value.
	EventOther EventKind = iota
	// EventSubscribe is a user following the account, possibly by scanning
	// a parametric QR code.
	EventSubscribe
	// EventScan is a follower scanning a parametric QR code.
	EventScan
	// EventUnsubscribe is a user unfollowing the account.
	EventUnsubscribe
)

// String returns a short name for logs.
func (k EventKind) String() string {
	switch k {
	case EventSubscribe:
		return "subscribe"
	case EventScan:
		return "SCAN"
	case EventUnsubscribe:
		return "unsubscribe"
	default:
		return "other"
	}
}

// Kind classifies e; see the EventKind constants.
func (e *Event) Kind() EventKind {
	if e.MsgType != "event" {
		return EventOther
	}
	switch e.Event {
	case "subscribe":
		return EventSubscribe
	case "SCAN":
		return EventScan
	case "unsubscribe":
		return EventUnsubscribe
	default:
		return EventOther
	}
}

// maxSceneLen is the longest scene_str WeChat accepts when creating a QR code.
const maxSceneLen = 64

// scenePrefix marks the EventKey of a subscribe through a parametric QR code.
const scenePrefix = "qrscene_"

// LoginScene returns the QR scene a subscribe or SCAN event refers to.
//
// For subscribe the EventKey must start with "qrscene_", which is removed
// exactly once: "qrscene_qrscene_x" yields the scene "qrscene_x". For SCAN
// the EventKey is the scene as is. ok is false for any other event, and for
// a scene that is empty, "0", longer than 64 bytes, or not made only of
// visible ASCII (0x21 to 0x7E). Such keys cannot name a login scene, so
// callers can acknowledge the push and ignore it.
func (e *Event) LoginScene() (scene string, ok bool) {
	switch e.Kind() {
	case EventSubscribe:
		s, found := strings.CutPrefix(e.EventKey, scenePrefix)
		if !found {
			return "", false
		}
		scene = s
	case EventScan:
		scene = e.EventKey
	default:
		return "", false
	}
	if scene == "" || scene == "0" || len(scene) > maxSceneLen {
		return "", false
	}
	for i := 0; i < len(scene); i++ {
		if scene[i] < 0x21 || scene[i] > 0x7e {
			return "", false
		}
	}
	return scene, true
}

// ParseEvent parses the XML of a plaintext push, the decrypted inner XML of
// an encrypted push, or a passive reply.
//
// It is deliberately stricter than encoding/xml's Unmarshal: the body must
// be at most MaxPushBytes of valid UTF-8 with a single root element named
// xml; DTDs and other directives, processing instructions other than a UTF-8
// XML declaration, namespaces, duplicate known elements, comments or
// elements inside known elements, and text outside them are all rejected.
// CreateTime and MsgId must be unsigned decimal numbers that fit an int64.
// Unknown elements (and their children) are skipped. Values are not trimmed.
// Every error wraps ErrInvalidXML.
func ParseEvent(body []byte) (*Event, error) {
	var e Event
	var createTime, msgID string
	fields := []xmlField{
		{name: "ToUserName", dst: &e.ToUserName},
		{name: "FromUserName", dst: &e.FromUserName},
		{name: "CreateTime", dst: &createTime},
		{name: "MsgType", dst: &e.MsgType},
		{name: "Event", dst: &e.Event},
		{name: "EventKey", dst: &e.EventKey},
		{name: "Ticket", dst: &e.Ticket},
		{name: "MsgId", dst: &msgID},
		{name: "Content", dst: &e.Content},
	}
	if err := parseFlatXML(body, fields); err != nil {
		return nil, err
	}
	var err error
	if fields[2].seen {
		if e.CreateTime, err = parseDecimal("CreateTime", createTime); err != nil {
			return nil, err
		}
	}
	if fields[7].seen {
		if e.MsgID, err = parseDecimal("MsgId", msgID); err != nil {
			return nil, err
		}
	}
	return &e, nil
}

// Envelope is the outer document of an encrypted push. In safe mode the
// body holds only these two elements; in compatible mode it also repeats the
// message in plaintext, which is ignored here because only the encrypted
// copy is authenticated by msg_signature.
type Envelope struct {
	// ToUserName is the account's original ID (gh_...).
	ToUserName string
	// Encrypt is the base64 ciphertext to pass to Crypter.Decrypt.
	Encrypt string
}

// ParseEnvelope parses the body of an encrypted push with the same strict
// rules as ParseEvent. A missing or empty Encrypt element is an error.
func ParseEnvelope(body []byte) (*Envelope, error) {
	var env Envelope
	fields := []xmlField{
		{name: "ToUserName", dst: &env.ToUserName},
		{name: "Encrypt", dst: &env.Encrypt},
	}
	if err := parseFlatXML(body, fields); err != nil {
		return nil, err
	}
	if env.Encrypt == "" {
		return nil, fmt.Errorf("%w: missing or empty <Encrypt>", ErrInvalidXML)
	}
	return &env, nil
}

// parseDecimal parses an unsigned decimal number that must fit an int64.
// Signs, spaces and other bases are rejected, unlike strconv.ParseInt alone.
func parseDecimal(name, s string) (int64, error) {
	if !isDigits(s) {
		return 0, fmt.Errorf("%w: <%s> is not a decimal number", ErrInvalidXML, name)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: <%s> is out of range", ErrInvalidXML, name)
	}
	return n, nil
}

// isDigits reports whether s is non-empty and only ASCII digits.
func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// xmlField is a child element of the root that parseFlatXML extracts.
type xmlField struct {
	name string
	dst  *string
	seen bool
}

// parseFlatXML walks body token by token and stores the text of each known
// child of the root <xml> element into its field. It enforces the rules
// documented on ParseEvent. Walking tokens, rather than using Unmarshal,
// is what makes duplicates, namespaces and trailing documents detectable.
func parseFlatXML(body []byte, fields []xmlField) error {
	if len(body) > MaxPushBytes {
		return fmt.Errorf("%w: body larger than %d bytes", ErrInvalidXML, MaxPushBytes)
	}
	if !utf8.Valid(body) {
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidXML)
	}

	d := newStrictDecoder(body)
	var (
		depth    int       // elements currently open
		rootDone bool      // the root element has been closed
		cur      *xmlField // known element being read, at depth 2
		text     strings.Builder
	)
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: %s", ErrInvalidXML, syntaxReason(err))
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if t.Name.Space != "" {
				return fmt.Errorf("%w: namespaced element", ErrInvalidXML)
			}
			if rootDone {
				return fmt.Errorf("%w: more than one root element", ErrInvalidXML)
			}
			if cur != nil {
				return fmt.Errorf("%w: element inside <%s>", ErrInvalidXML, cur.name)
			}
			depth++
			if depth > maxXMLDepth {
				return fmt.Errorf("%w: nested deeper than %d", ErrInvalidXML, maxXMLDepth)
			}
			switch depth {
			case 1:
				if t.Name.Local != "xml" {
					return fmt.Errorf("%w: root element is not <xml>", ErrInvalidXML)
				}
			case 2:
				for i := range fields {
					if fields[i].name != t.Name.Local {
						continue
					}
					if fields[i].seen {
						return fmt.Errorf("%w: duplicate <%s>", ErrInvalidXML, t.Name.Local)
					}
					fields[i].seen = true
					cur = &fields[i]
					text.Reset()
				}
			}
		case xml.EndElement:
			if cur != nil {
				*cur.dst = text.String()
				cur = nil
			}
			depth--
			if depth == 0 {
				rootDone = true
			}
		case xml.CharData:
			switch {
			case cur != nil:
				text.Write(t)
			case depth <= 1 && len(bytes.TrimLeft(t, " \t\r\n")) != 0:
				// Stray text next to the elements (or outside the root)
				// is never sent by WeChat and hints at a spliced body.
				return fmt.Errorf("%w: text outside elements", ErrInvalidXML)
			}
		case xml.Comment:
			if cur != nil {
				// A comment would silently split a value in two.
				return fmt.Errorf("%w: comment inside <%s>", ErrInvalidXML, cur.name)
			}
		case xml.ProcInst:
			if err := checkProcInst(t, depth, rootDone); err != nil {
				return err
			}
		case xml.Directive:
			// <!DOCTYPE>, <!ENTITY> and friends. encoding/xml never expands
			// entities, but refusing DTDs outright leaves no doubt. Matching
			// the token rather than the raw bytes lets a user's chat text
			// mention "<!DOCTYPE" inside CDATA.
			return fmt.Errorf("%w: DTD or other directive not allowed", ErrInvalidXML)
		}
	}
	if !rootDone {
		return fmt.Errorf("%w: no <xml> root element", ErrInvalidXML)
	}
	return nil
}

// newStrictDecoder returns a decoder that refuses anything encoding/xml can
// be lenient about: unknown entities, unclosed elements, foreign charsets.
func newStrictDecoder(body []byte) *xml.Decoder {
	d := xml.NewDecoder(bytes.NewReader(body))
	d.Strict = true
	d.AutoClose = nil
	d.Entity = nil
	d.CharsetReader = nil // a declared non-UTF-8 encoding is then an error
	return d
}

// syntaxReason describes a decoder error without quoting the input, since
// encoding/xml messages can echo element names or entity text.
func syntaxReason(err error) string {
	var se *xml.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("syntax error on line %d", se.Line)
	}
	return "malformed document"
}

// checkProcInst allows only the XML declaration, and only before the root.
// The decoder itself rejects a declared encoding other than UTF-8.
func checkProcInst(pi xml.ProcInst, depth int, rootDone bool) error {
	if pi.Target != "xml" || depth != 0 || rootDone {
		return fmt.Errorf("%w: processing instruction not allowed", ErrInvalidXML)
	}
	return nil
}

// MarshalEvent renders e the way WeChat sends a push: a root <xml> with the
// first element on the same line, one element per line after that, string
// values in CDATA and numbers bare. Elements appear in WeChat's order.
// ToUserName, FromUserName, CreateTime and MsgType are always written. Event,
// Ticket and MsgId are written when set, Content when set or for text
// messages, and EventKey when set or, as real WeChat does, empty for
// subscribe and unsubscribe events.
//
// Strings are written so that ParseEvent returns them unchanged: "]]>" and
// carriage returns are split out of the CDATA sections. Bytes that XML
// cannot carry (invalid UTF-8, control characters) become U+FFFD.
// CreateTime and MsgID should not be negative; ParseEvent rejects that.
func MarshalEvent(e *Event) []byte {
	b := make([]byte, 0, 256+len(e.ToUserName)+len(e.FromUserName)+len(e.EventKey)+len(e.Ticket)+len(e.Content))
	b = append(b, "<xml>"...)
	b = appendCDATAElem(b, "ToUserName", e.ToUserName)
	b = append(b, '\n')
	b = appendCDATAElem(b, "FromUserName", e.FromUserName)
	b = append(b, '\n')
	b = appendIntElem(b, "CreateTime", e.CreateTime)
	b = append(b, '\n')
	b = appendCDATAElem(b, "MsgType", e.MsgType)
	b = append(b, '\n')
	if e.Event != "" {
		b = appendCDATAElem(b, "Event", e.Event)
		b = append(b, '\n')
	}
	if k := e.Kind(); e.EventKey != "" || k == EventSubscribe || k == EventUnsubscribe {
		b = appendCDATAElem(b, "EventKey", e.EventKey)
		b = append(b, '\n')
	}
	if e.Ticket != "" {
		b = appendCDATAElem(b, "Ticket", e.Ticket)
		b = append(b, '\n')
	}
	if e.Content != "" || e.MsgType == "text" {
		b = appendCDATAElem(b, "Content", e.Content)
		b = append(b, '\n')
	}
	if e.MsgID != 0 {
		b = appendIntElem(b, "MsgId", e.MsgID)
		b = append(b, '\n')
	}
	return append(b, "</xml>"...)
}
