package middleware

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// appendSceneV1 is the encoder of format 1, which earlier versions wrote:
// expiry before tries, then one run of every field, the ticket first.
func appendSceneV1(dst []byte, rec *sceneRecord) []byte {
	code, _ := stateCode(rec.State)
	dst = append(dst, sceneFormatV1, code)
	dst = binary.AppendVarint(dst, rec.ExpiresAt)
	dst = binary.AppendUvarint(dst, uint64(rec.ConfirmTries))
	var present uint64
	for i, f := range rec.strings() {
		if *f != "" {
			present |= 1 << i
		}
	}
	dst = binary.AppendUvarint(dst, present)
	var ticket []byte
	for i, f := range rec.strings() {
		switch {
		case *f == "":
		case i == ticketField:
			dst, ticket = appendTicket(dst, *f)
		default:
			dst = appendField(dst, i, *f, ticket)
		}
	}
	return dst
}

// TestSceneRecordV1: records of format 1, written before a rolling
// upgrade, are still read, and peeked, as they were written.
func TestSceneRecordV1(t *testing.T) {
	for _, rec := range sampleScenes {
		raw := appendSceneV1(nil, &rec)
		got, err := decodeScene(raw)
		if err != nil || got != rec {
			t.Fatalf("format 1 record of %+v decoded as %+v, %v", rec, got, err)
		}
		if state, exp, err := peekScene(raw); err != nil || state != rec.State || exp != rec.ExpiresAt {
			t.Fatalf("format 1 peek of %+v = %q %d %v", rec, state, exp, err)
		}
		// Format 1 has one run: a second is refused.
		if _, err := decodeScene(append(raw, 1<<scanFieldsFrom, 1, 'x')); err == nil && rec.OpenID == "" {
			t.Fatalf("format 1 record with a second run decoded")
		}
	}
}

// scanChange is what confirmScene's change makes of a pending scene.
func scanChange(rec sceneRecord) sceneRecord {
	rec.State = StateConfirmed
	rec.OpenID, rec.ScanKey = "oAlice0000000000000000000001", "push:0123456789abcdef0123456789abcdef"
	rec.SID, rec.NotMeCode = "0123456789abcdef0123456789abcdef", "4821"
	return rec
}

// TestScanSplice: a pending QR scene spliced as scanSplice says gives the
// record the scan's change would store, and no other record (another
// ticket, another state, a code login's, a confirmation code tried) begins
// with the prefix.
func TestScanSplice(t *testing.T) {
	pending := []sceneRecord{sampleScenes[0], sampleScenes[4], sampleScenes[5], sampleScenes[7],
		{State: StatePending, Ticket: "t", Next: "/", ExpiresAt: 1}, // no URL, no client
		{State: StatePending, Ticket: sampleScenes[0].Ticket, QRURL: sampleScenes[0].QRURL, ExpiresAt: -1 << 40},
	}
	for _, rec := range pending {
		raw, err := encodeScene(rec)
		if err != nil {
			t.Fatal(err)
		}
		want := scanChange(rec)
		prefix, head, tail, ok := scanSplice(rec.Ticket, &want)
		if !ok || !bytes.HasPrefix(raw, prefix) || len(head) != len(prefix) {
			t.Fatalf("%+v: splice %v, prefix %x of %x", rec, ok, prefix, raw)
		}
		spliced := append(append(append([]byte(nil), head...), raw[len(prefix):]...), tail...)
		if got, err := decodeScene(spliced); err != nil || got != want {
			t.Fatalf("spliced %+v decoded as %+v, %v; want %+v", rec, got, err, want)
		}
		if state, exp, err := peekScene(spliced); err != nil || state != StateConfirmed || exp != rec.ExpiresAt {
			t.Fatalf("spliced peek = %q %d %v", state, exp, err)
		}

		for name, other := range map[string]sceneRecord{
			"other ticket": func() sceneRecord { o := rec; o.Ticket += "x"; return o }(),
			"scanned":      func() sceneRecord { o := rec; o.State = StateScanned; return o }(),
			"confirmed":    want,
			"tried":        func() sceneRecord { o := rec; o.ConfirmTries = 1; return o }(),
			"code login":   {State: StatePending, Next: rec.Next, Client: rec.Client, Code: "123456", ExpiresAt: rec.ExpiresAt},
		} {
			raw, err := encodeScene(other)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.HasPrefix(raw, prefix) {
				t.Errorf("%s: %x begins with the prefix of ticket %q", name, raw, rec.Ticket)
			}
			if bytes.HasPrefix(appendSceneV1(nil, &other), prefix) || bytes.HasPrefix(appendSceneV1(nil, &rec), prefix) {
				t.Errorf("%s: a format 1 record begins with the prefix", name)
			}
		}
	}
	for name, rec := range map[string]sceneRecord{
		"no ticket":     scanChange(sceneRecord{State: StatePending, Code: "1"}),
		"still pending": {State: StatePending, Ticket: "t"},
		"tried":         func() sceneRecord { r := scanChange(sampleScenes[0]); r.ConfirmTries = 2; return r }(),
	} {
		if _, _, _, ok := scanSplice(rec.Ticket, &rec); ok {
			t.Errorf("%s: spliced", name)
		}
	}
}
