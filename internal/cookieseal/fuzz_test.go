package cookieseal

import (
	"strings"
	"testing"
	"time"
)

// FuzzOpen checks that Open never panics and that nothing opens except what
// was sealed: only the exact seed values, sealed for the fuzzed name, carry
// one of the known payloads. Seal is randomized, so the oracle is the payload
// and name rather than the value itself.
func FuzzOpen(f *testing.F) {
	c := mustNew(f, testKey(1), testKey(2))
	old := mustNew(f, testKey(2))
	known := map[string]string{ // payload -> name it was sealed for
		"fuzz-payload-1": "s",
		"fuzz-payload-2": "__Host-wechat_session",
		"":               "b",
	}
	for p, name := range known {
		v := mustSeal(f, c, name, []byte(p), t0.Add(time.Hour))
		f.Add(name, v)
		f.Add(name, v[:len(v)-2])
		f.Add(name+"x", v)
		f.Add(name, v+"\n")
		f.Add(name, mustSeal(f, old, name, []byte(p), t0.Add(time.Hour)))
		f.Add(name, mustSeal(f, c, name, []byte(p), t0.Add(-time.Hour)))
	}
	f.Add("s", "")
	f.Add("s", "AQ")
	f.Add("s", strings.Repeat("_", MaxValueLen))
	f.Add("s", strings.Repeat("A", MaxValueLen+1))

	// A remembering Codec must answer as c does, from memory or not; it
	// keeps few values, so the fuzzer's inputs keep replacing them.
	rc := c.Remembering(4)

	f.Fuzz(func(t *testing.T, name, value string) {
		got, err := c.Open(name, value, t0)
		for range 2 {
			again, rerr := rc.Open(name, value, t0)
			if rerr != err || string(again) != string(got) {
				t.Fatalf("remembering Open(%q, %q) = %q, %v; Open = %q, %v", name, value, again, rerr, got, err)
			}
		}
		if err != nil {
			if got != nil {
				t.Fatalf("Open returned a payload with error %v", err)
			}
			if err != ErrInvalid && err != ErrExpired {
				t.Fatalf("Open returned an unexpected error %v", err)
			}
			return
		}
		wantName, ok := known[string(got)]
		if !ok || wantName != name {
			t.Fatalf("Open(%q, %q) = %q: a value that was never sealed opened", name, value, got)
		}
		// The accepted spelling is the canonical one.
		raw, derr := enc.DecodeString(value)
		if derr != nil || enc.EncodeToString(raw) != value {
			t.Fatalf("non-canonical value %q opened", value)
		}
	})
}
