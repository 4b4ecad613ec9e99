package wechat

import (
	"crypto/sha1"
	"crypto/subtle"
	"encoding/hex"
	"io"
	"slices"
)

// Signature computes WeChat's push signature over parts: the strings are
// sorted in byte order, concatenated without a separator, hashed with SHA-1
// and rendered as lowercase hex.
//
// The URL signature of a push or of the server verification handshake is
// Signature(token, timestamp, nonce); the msg_signature of an encrypted push
// or reply is Signature(token, timestamp, nonce, encrypt). Because the parts
// are sorted first, their order does not matter.
func Signature(parts ...string) string {
	sorted := slices.Clone(parts)
	slices.Sort(sorted)
	h := sha1.New()
	for _, p := range sorted {
		io.WriteString(h, p) // hash.Hash writes never fail
	}
	return hex.EncodeToString(h.Sum(nil))
}

// CheckSignature reports whether signature equals Signature(parts...). The
// comparison takes the same time wherever the first difference is, so the
// check does not leak how much of a forged signature was right.
//
// Only WeChat's exact form is accepted: 40 lowercase hex digits. Uppercase
// hex, surrounding whitespace or any other variant is rejected rather than
// normalized, since WeChat never sends them.
func CheckSignature(signature string, parts ...string) bool {
	want := Signature(parts...)
	return subtle.ConstantTimeCompare([]byte(signature), []byte(want)) == 1
}
