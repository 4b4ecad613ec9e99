package middleware

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
)

// A scene record is read on every poll and every wake-up of every browser
// waiting on it, and held in the store for every QR code shown, so it is
// kept in a compact binary form rather than JSON:
//
//	format  1 byte, sceneFormat
//	state   1 byte, an index in sceneStates
//	tries   uvarint, ConfirmTries
//	ticket  the Ticket field (below); a single 0 when it is empty
//	exp     varint, ExpiresAt
//	then one or more runs of the other string fields:
//	present uvarint, bit i set when string field i is in the run
//	        each field of the run, in sceneRecord.strings order:
//	        uvarint length, bytes
//
// Every field is in at most one run, and each run's fields come after the
// previous run's in that order, so a record can be extended by appending a
// run: a scan adds the scanner's fields to a pending scene in one step on
// the store's side, without reading the record out (see scanSplice), and
// everything it must check (the format, the state, that no confirmation
// code was tried and the ticket) comes before the expiry, which the scan
// cannot know.
//
// The ticket and the QR code's URL, the largest fields, are packed when
// they have WeChat's form, and their length word is 4×n + form:
//
//	ticket form 0: n bytes, the ticket
//	       form 1: n bytes, the bytes the ticket's standard base64 spells
//	URL    form 0: n bytes, the URL
//	       form 1: n bytes, the URL after wechatQRPrefix
//	       form 2: none, the URL is the n bytes at offset o (uvarint,
//	               after the length) of the ticket's bytes, where WeChat
//	               puts it
//
// A pending scene of WeChat's takes about 120 bytes, its JSON 330. The
// state comes second and the expiry soon after, so a poll learns them
// without decoding the rest. Records written by earlier versions are still
// read: as JSON (their first byte is '{'), and in format 1, where the
// expiry came before the tries, then one run of every field, the ticket
// included. A login in flight during an upgrade completes, and its record
// is rewritten in this form at its next change.
const (
	sceneFormat   = 0x02
	sceneFormatV1 = 0x01
)

// sceneStates maps the stored state byte to the state; 0 is no state.
var sceneStates = [...]string{1: StatePending, 2: StateScanned, 3: StateConfirmed, 4: StateDenied, 5: StateExpired}

func stateCode(state string) (byte, bool) {
	for i, s := range sceneStates {
		if i > 0 && s == state {
			return byte(i), true
		}
	}
	return 0, false
}

// sceneStringFields is the number of string fields a record carries.
const sceneStringFields = 11

// strings lists the record's string fields in their stored order. New
// fields go at the end.
func (r *sceneRecord) strings() [sceneStringFields]*string {
	return [...]*string{&r.Ticket, &r.QRURL, &r.Next, &r.Client, &r.OpenID, &r.UnionID, &r.ScanKey, &r.SID, &r.NotMeCode, &r.ConfirmCode, &r.Code}
}

// wechatQRPrefix begins the URL of every QR code WeChat makes.
const wechatQRPrefix = "http://weixin.qq.com/q/"

// The fields that are packed, and their forms.
const (
	ticketField = 0
	qrURLField  = 1

	formRaw      = 0
	formBase64   = 1 // ticket
	formPrefixed = 1 // URL
	formInTicket = 2 // URL
)

var ticketEncoding = base64.StdEncoding.Strict()

// appendScene appends the stored form of rec to dst.
func appendScene(dst []byte, rec *sceneRecord) ([]byte, error) {
	dst, ticket, err := appendSceneHead(dst, rec)
	if err != nil {
		return nil, err
	}
	dst = binary.AppendVarint(dst, rec.ExpiresAt)
	return appendSceneRun(dst, rec, qrURLField, ticket), nil
}

// appendSceneHead appends what comes before a record's expiry: format,
// state, tries and ticket. It returns the ticket's packed bytes, if it was
// packed, which the URL may point into.
func appendSceneHead(dst []byte, rec *sceneRecord) (out, ticket []byte, err error) {
	code, ok := stateCode(rec.State)
	if !ok {
		return nil, nil, fmt.Errorf("encode scene: unknown state %q", rec.State)
	}
	if rec.ConfirmTries < 0 {
		return nil, nil, fmt.Errorf("encode scene: negative ConfirmTries %d", rec.ConfirmTries)
	}
	dst = append(dst, sceneFormat, code)
	dst = binary.AppendUvarint(dst, uint64(rec.ConfirmTries))
	if rec.Ticket == "" {
		return append(dst, 0), nil, nil
	}
	dst, ticket = appendTicket(dst, rec.Ticket)
	return dst, ticket, nil
}

// appendTicket appends a non-empty Ticket field, packed when it can be,
// and returns the packed bytes (nil when it was not packed).
func appendTicket(dst []byte, v string) (out, packed []byte) {
	start := len(dst)
	if out, ok := appendPackedTicket(dst, v); ok {
		_, n := binary.Uvarint(out[start:])
		return out, out[start+n:]
	}
	return appendPacked(dst, formRaw, v), nil
}

// appendSceneRun appends a run of rec's non-empty string fields from the
// one numbered from on. ticket is the record's packed ticket, if any.
func appendSceneRun(dst []byte, rec *sceneRecord, from int, ticket []byte) []byte {
	fields := rec.strings()
	var present uint64
	for i := from; i < sceneStringFields; i++ {
		if *fields[i] != "" {
			present |= 1 << i
		}
	}
	dst = binary.AppendUvarint(dst, present)
	for i := from; i < sceneStringFields; i++ {
		if v := *fields[i]; v != "" {
			dst = appendField(dst, i, v, ticket)
		}
	}
	return dst
}

// appendField appends string field i (not the ticket) with value v, not
// empty. ticket is the record's packed ticket, if any, which the URL may
// point into.
func appendField(dst []byte, i int, v string, ticket []byte) []byte {
	if i != qrURLField {
		dst = binary.AppendUvarint(dst, uint64(len(v)))
		return append(dst, v...)
	}
	if at := strings.Index(string(ticket), v); ticket != nil && at >= 0 {
		dst = binary.AppendUvarint(dst, uint64(len(v))<<2|formInTicket)
		return binary.AppendUvarint(dst, uint64(at))
	}
	if rest, ok := strings.CutPrefix(v, wechatQRPrefix); ok {
		return appendPacked(dst, formPrefixed, rest)
	}
	return appendPacked(dst, formRaw, v)
}

func appendPacked(dst []byte, form uint64, v string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(v))<<2|form)
	return append(dst, v...)
}

// appendPackedTicket appends a ticket in form 1, if it has one: the bytes
// its standard base64 spells, which give back exactly the ticket.
func appendPackedTicket(dst []byte, ticket string) ([]byte, bool) {
	// The decoder skips newlines, so a ticket with one would not come
	// back the same.
	if len(ticket)%4 != 0 || strings.ContainsAny(ticket, "\r\n") {
		return dst, false
	}
	n := len(ticket) / 4 * 3
	switch {
	case strings.HasSuffix(ticket, "=="):
		n -= 2
	case strings.HasSuffix(ticket, "="):
		n--
	}
	head := binary.AppendUvarint(dst, uint64(n)<<2|formBase64)
	out, err := ticketEncoding.AppendDecode(head, []byte(ticket))
	if err != nil || len(out)-len(head) != n || n == 0 {
		return dst, false
	}
	return out, true
}

// encodeScene returns the stored form of rec.
func encodeScene(rec sceneRecord) ([]byte, error) {
	return appendScene(make([]byte, 0, 32+len(rec.Ticket)+len(rec.Next)+len(rec.Client)), &rec)
}

// scanSplice is how a scan moves a pending QR scene whose ticket is ticket
// to rec (the scene with the scanner's fields, as the scan's change makes
// it) without reading it: a record that begins with prefix is the pending
// scene of that ticket, untouched by any scan or confirmation code; head,
// as long as prefix, replaces it, and tail is appended. The result is the
// record rec's encoding would give, but for the order of its runs (see
// TestScanSplice). ok is false when the change cannot be made this way:
// rec's fields before OpenID, but for the state, must be the pending
// scene's.
func scanSplice(ticket string, rec *sceneRecord) (prefix, head, tail []byte, ok bool) {
	if ticket == "" || rec.ConfirmTries != 0 || rec.State == StatePending {
		return nil, nil, nil, false
	}
	pending := sceneRecord{State: StatePending, Ticket: ticket}
	prefix, _, err := appendSceneHead(nil, &pending)
	if err != nil {
		return nil, nil, nil, false
	}
	after := *rec
	after.Ticket = ticket
	head, _, err = appendSceneHead(nil, &after)
	if err != nil || len(head) != len(prefix) {
		return nil, nil, nil, false
	}
	return prefix, head, appendSceneRun(nil, rec, scanFieldsFrom, nil), true
}

// scanFieldsFrom is the first of the fields a scan sets (OpenID).
const scanFieldsFrom = 4

var errSceneRecord = errors.New("decode scene: malformed record")

// isLegacyScene reports whether raw is a record in the JSON form of earlier
// versions.
func isLegacyScene(raw []byte) bool { return len(raw) > 0 && raw[0] == '{' }

func decodeLegacyScene(raw []byte) (sceneRecord, error) {
	var rec sceneRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return sceneRecord{}, fmt.Errorf("decode scene: %w", err)
	}
	return rec, nil
}

// compactHead is what comes before a compact record's string fields.
type compactHead struct {
	state  string
	exp    int64
	tries  uint64
	ticket fieldSpan // format 2; in format 1 the ticket is in the run
	rest   int       // where the first run starts
}

// readCompactHead reads a compact record's head, in either format.
func readCompactHead(raw []byte) (compactHead, error) {
	var h compactHead
	if len(raw) < 3 || raw[0] != sceneFormat && raw[0] != sceneFormatV1 || raw[1] == 0 || int(raw[1]) >= len(sceneStates) {
		return h, errSceneRecord
	}
	h.state = sceneStates[raw[1]]
	pos := 2
	readExp := func() bool {
		v, n := binary.Varint(raw[pos:])
		h.exp, pos = v, pos+n
		return n > 0
	}
	readTries := func() bool {
		v, n := binary.Uvarint(raw[pos:])
		h.tries, pos = v, pos+n
		return n > 0 && v <= math.MaxInt32
	}
	if raw[0] == sceneFormatV1 {
		if !readExp() || !readTries() {
			return h, errSceneRecord
		}
		h.rest = pos
		return h, nil
	}
	if !readTries() || pos >= len(raw) {
		return h, errSceneRecord
	}
	if raw[pos] == 0 {
		pos++
	} else {
		sp, next, ok := readSpan(raw, pos, ticketField, fieldSpan{})
		if !ok || sp.size == 0 {
			return h, errSceneRecord
		}
		h.ticket, pos = sp, next
	}
	if !readExp() {
		return h, errSceneRecord
	}
	h.rest = pos
	return h, nil
}

// peekScene reads a stored record's state and expiry (unix seconds),
// decoding no more of a compact record than that.
func peekScene(raw []byte) (state string, exp int64, err error) {
	if isLegacyScene(raw) {
		rec, err := decodeLegacyScene(raw)
		return rec.State, rec.ExpiresAt, err
	}
	h, err := readCompactHead(raw)
	return h.state, h.exp, err
}

// fieldSpan is where a compact record holds a string field: the bytes
// raw[from:to] in the given form, size bytes once unpacked.
type fieldSpan struct {
	from, to, size int
	form           uint64
}

// decodeScene decodes a stored record, compact or JSON.
func decodeScene(raw []byte) (sceneRecord, error) {
	if isLegacyScene(raw) {
		return decodeLegacyScene(raw)
	}
	h, err := readCompactHead(raw)
	if err != nil {
		return sceneRecord{}, err
	}
	rec := sceneRecord{State: h.state, ExpiresAt: h.exp, ConfirmTries: int(h.tries)}

	// First the fields' places and sizes, then one string that holds them
	// all, of which the fields are slices.
	var spans [sceneStringFields]fieldSpan
	spans[ticketField] = h.ticket
	total, pos := h.ticket.size, h.rest
	// The fields a run may hold: in format 1 every one, in one run; in
	// format 2 those after the ticket, then those after the previous run's.
	next, runs := ticketField, 1
	if raw[0] == sceneFormat {
		next, runs = qrURLField, sceneStringFields
	}
	for run := 0; run == 0 || run < runs && pos < len(raw); run++ {
		present, n := binary.Uvarint(raw[pos:])
		if n <= 0 || present>>sceneStringFields != 0 || present&(1<<next-1) != 0 || run > 0 && present == 0 {
			return sceneRecord{}, errSceneRecord
		}
		pos += n
		for i := next; i < sceneStringFields; i++ {
			if present&(1<<i) == 0 {
				continue
			}
			sp, after, ok := readSpan(raw, pos, i, spans[ticketField])
			if !ok || sp.size == 0 { // empty fields are not present
				return sceneRecord{}, errSceneRecord
			}
			spans[i], pos, total, next = sp, after, total+sp.size, i+1
		}
	}
	if pos != len(raw) {
		return sceneRecord{}, errSceneRecord
	}
	var b strings.Builder
	b.Grow(total)
	for i, sp := range spans {
		switch {
		case sp.size == 0:
		case i == ticketField && sp.form == formBase64:
			var text [256]byte
			if sp.size <= len(text) {
				ticketEncoding.Encode(text[:sp.size], raw[sp.from:sp.to])
				b.Write(text[:sp.size])
			} else {
				b.WriteString(ticketEncoding.EncodeToString(raw[sp.from:sp.to]))
			}
		case i == qrURLField && sp.form == formPrefixed:
			b.WriteString(wechatQRPrefix)
			b.Write(raw[sp.from:sp.to])
		default:
			b.Write(raw[sp.from:sp.to])
		}
	}
	all, at := b.String(), 0
	for i, f := range rec.strings() {
		*f = all[at : at+spans[i].size]
		at += spans[i].size
	}
	return rec, nil
}

// readSpan reads field i of a compact record at pos, and returns where the
// next field starts.
func readSpan(raw []byte, pos, i int, ticket fieldSpan) (fieldSpan, int, bool) {
	l, n := binary.Uvarint(raw[pos:])
	if n <= 0 {
		return fieldSpan{}, 0, false
	}
	pos += n
	size, form := l, uint64(formRaw)
	if i == ticketField || i == qrURLField {
		size, form = l>>2, l&3
	}
	if i == qrURLField && form == formInTicket {
		at, n := binary.Uvarint(raw[pos:])
		if n <= 0 || ticket.form != formBase64 || at > uint64(ticket.to-ticket.from) || size > uint64(ticket.to-ticket.from)-at {
			return fieldSpan{}, 0, false
		}
		from := ticket.from + int(at)
		return fieldSpan{from: from, to: from + int(size), size: int(size), form: form}, pos + n, true
	}
	if size > uint64(len(raw)-pos) {
		return fieldSpan{}, 0, false
	}
	sp := fieldSpan{from: pos, to: pos + int(size), size: int(size), form: form}
	switch {
	case i == ticketField && form == formBase64:
		sp.size = ticketEncoding.EncodedLen(int(size))
	case i == ticketField && form != formRaw:
		return fieldSpan{}, 0, false
	case i == qrURLField && form == formPrefixed:
		sp.size += len(wechatQRPrefix)
	case i == qrURLField && form != formRaw:
		return fieldSpan{}, 0, false
	}
	return sp, sp.to, true
}
