package middleware

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzChatCode: a chat message is a code only when it is exactly six
// digits (ASCII or full-width) between optional spaces, and the code is
// those digits in ASCII.
func FuzzChatCode(f *testing.F) {
	for _, s := range []string{"123456", " １２３４５６ ", "12345", "1234567", "1", "确认", "12 3456", "１2３4５6", "\u00a0123456", "123456\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		code, ok := chatCode(s)
		if !ok {
			if code != "" {
				t.Fatalf("%q: no code but %q", s, code)
			}
			return
		}
		if len(code) != chatCodeLen || strings.Trim(code, "0123456789") != "" {
			t.Fatalf("%q gave code %q", s, code)
		}
		if !utf8.ValidString(s) {
			t.Fatalf("invalid UTF-8 %q taken for a code", s)
		}
		digits := 0
		for _, r := range strings.TrimSpace(s) {
			switch {
			case r >= '0' && r <= '9', r >= '０' && r <= '９':
				digits++
			default:
				t.Fatalf("%q has %q inside and still gave a code", s, r)
			}
		}
		if digits != chatCodeLen {
			t.Fatalf("%q has %d digits", s, digits)
		}
	})
}
