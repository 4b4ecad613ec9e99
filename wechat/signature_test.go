package wechat

import (
	"crypto/sha1"
	"fmt"
	"sort"
	"strings"
	"testing"
)

func TestSignature(t *testing.T) {
	tests := []struct {
		name  string
		parts []string
		want  string
	}{
		// §4: a real verification request (token GreedIsGood).
		{"GreedIsGood handshake", []string{"GreedIsGood", "1668869433", "977789310"}, "37cc4891f809493628677ae2b592e63c938c0b03"},
		// §4: the official documentation's example (token AAAAA).
		{"AAAAA doc example", []string{"AAAAA", "1714037059", "486452656"}, "899cf89e464efb63f54ddac96b0a0a235f53aa78"},
		// §5.2: the URL signature of the captured subscribe push.
		{"captured push", []string{"GreedIsGood", "1670592443", "1078156260"}, "eef9a7798349ab9473dc8ea661ccabc3ed47778d"},
		// §7 vector A: the plain signature for the Java sample's parameters.
		{"vector A plain", []string{vecAToken, vecATS, vecANonce}, "76480565cbe296026c53aaacd1ad523a1ddba24f"},
		// §7 derived vectors: URL signature and msg_signature of the push.
		{"derived signature", []string{vecAToken, derivedPushTS, derivedNonce}, derivedPushSig},
		{"derived msg_signature", []string{vecAToken, derivedPushTS, derivedNonce, derivedPushEnc}, derivedPushMsgSig},
		{"derived reply", []string{vecAToken, derivedReplyTS, derivedNonce, derivedReplyEnc}, derivedReplyMsig},
		// SHA-1 of the empty string.
		{"no parts", nil, "da39a3ee5e6b4b0d3255bfef95601890afd80709"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Signature(tt.parts...); got != tt.want {
				t.Errorf("Signature = %s, want %s", got, tt.want)
			}
			// Order does not matter.
			rev := make([]string, len(tt.parts))
			for i, p := range tt.parts {
				rev[len(rev)-1-i] = p
			}
			if got := Signature(rev...); got != tt.want {
				t.Errorf("Signature(reversed) = %s, want %s", got, tt.want)
			}
			if !CheckSignature(tt.want, tt.parts...) {
				t.Errorf("CheckSignature rejected the right signature")
			}
		})
	}
}

func TestSignatureDoesNotReorderInput(t *testing.T) {
	parts := []string{"c", "a", "b"}
	Signature(parts...)
	if strings.Join(parts, "") != "cab" {
		t.Errorf("Signature sorted the caller's slice: %v", parts)
	}
}

// The sort is by bytes, not by numeric value or locale: "10" < "9" and
// uppercase before lowercase.
func TestSignatureByteOrder(t *testing.T) {
	want := fmt.Sprintf("%x", sha1.Sum([]byte("109Zz")))
	if got := Signature("9", "z", "10", "Z"); got != want {
		t.Errorf("Signature = %s, want %s", got, want)
	}
}

func TestCheckSignatureRejects(t *testing.T) {
	parts := []string{"GreedIsGood", "1668869433", "977789310"}
	const good = "37cc4891f809493628677ae2b592e63c938c0b03"
	for _, sig := range []string{
		"",
		strings.ToUpper(good),
		"37CC4891f809493628677ae2b592e63c938c0b03",
		" " + good,
		good + " ",
		good + "\n",
		good[:39],
		good + "0",
		"47cc4891f809493628677ae2b592e63c938c0b03",
		good[:39] + "2",
	} {
		if CheckSignature(sig, parts...) {
			t.Errorf("CheckSignature accepted %q", sig)
		}
	}
	// Parts are not trimmed either.
	if CheckSignature(good, "GreedIsGood ", "1668869433", "977789310") {
		t.Errorf("CheckSignature accepted a token with a trailing space")
	}
}

// FuzzCheckSignature checks Signature against a reference written out
// longhand, its independence from argument order, and that CheckSignature
// accepts exactly the reference value.
func FuzzCheckSignature(f *testing.F) {
	f.Add("GreedIsGood", "1668869433", "977789310", "", "37cc4891f809493628677ae2b592e63c938c0b03")
	f.Add(vecAToken, derivedPushTS, derivedNonce, derivedPushEnc, derivedPushMsgSig)
	f.Add("AAAAA", "1714037059", "486452656", "", "899CF89E464EFB63F54DDAC96B0A0A235F53AA78")
	f.Add("", "", "", "", "")
	f.Add("a", "a", "a", "a", " da39a3ee5e6b4b0d3255bfef95601890afd80709")
	f.Fuzz(func(t *testing.T, token, ts, nonce, enc, sig string) {
		parts := []string{token, ts, nonce, enc}
		sorted := append([]string(nil), parts...)
		sort.Strings(sorted)
		want := fmt.Sprintf("%x", sha1.Sum([]byte(sorted[0]+sorted[1]+sorted[2]+sorted[3])))

		if got := Signature(parts...); got != want {
			t.Fatalf("Signature = %s, reference %s", got, want)
		}
		if got := Signature(enc, nonce, token, ts); got != want {
			t.Fatalf("Signature depends on argument order")
		}
		if got := CheckSignature(sig, parts...); got != (sig == want) {
			t.Fatalf("CheckSignature(%q) = %v, reference %s", sig, got, want)
		}
		if !CheckSignature(want, parts...) {
			t.Fatalf("CheckSignature rejected the reference")
		}
		if up := strings.ToUpper(want); up != want && CheckSignature(up, parts...) {
			t.Fatalf("CheckSignature accepted uppercase hex")
		}
		if CheckSignature(want+" ", parts...) || CheckSignature(" "+want, parts...) {
			t.Fatalf("CheckSignature accepted surrounding whitespace")
		}
	})
}

func BenchmarkCheckSignature(b *testing.B) {
	for b.Loop() {
		CheckSignature(derivedPushMsgSig, vecAToken, derivedPushTS, derivedNonce, derivedPushEnc)
	}
}
