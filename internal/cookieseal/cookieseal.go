// Package cookieseal seals small payloads into cookie values with
// authenticated encryption, so a browser can carry state it can neither read
// nor change.
//
// A sealed value is bound to the cookie name it was sealed for and to an
// expiry time. Several keys may be configured for rotation: the first key
// seals, every key opens. Each sealed value carries a short key id so that
// opening tries only the key that sealed it.
//
// The wire format, before unpadded base64url encoding, is
//
//	version (1 byte) | key id (4 bytes) | nonce (12) | ciphertext | tag (16)
//
// where the plaintext is the expiry in Unix seconds (8 bytes, big endian)
// followed by the payload, and the additional data is the version, the key id
// and the cookie name. The key is used with AES-256-GCM and a random nonce, so
// one key must not seal more than about 2^32 values; rotate well before that.
package cookieseal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// KeySize is the length in bytes of every key given to [New].
const KeySize = 32

// MinSecretSize is the shortest secret [DeriveKey] accepts.
const MinSecretSize = 16

// MaxValueLen is the longest sealed value, in bytes of its encoded form, that
// [Codec.Seal] produces and [Codec.Open] considers. Browsers cap a cookie's
// name and value together at about 4096 bytes, so anything longer would be
// dropped by the browser or can only have come from somewhere else.
const MaxValueLen = 4096

const (
	version   = 1
	idSize    = 4
	headSize  = 1 + idSize
	nonceSize = 12
	tagSize   = 16
	expSize   = 8
	// minRawLen is the decoded length of a value with an empty payload.
	minRawLen = headSize + nonceSize + expSize + tagSize
)

// ErrInvalid is returned by [Codec.Open] for any value it cannot
// authenticate: garbled, truncated, tampered with, sealed for another cookie
// name, or sealed with a key that is not configured. The cases are
// deliberately not told apart, and the message is safe to show.
var ErrInvalid = errors.New("cookieseal: invalid cookie value")

// ErrExpired is returned by [Codec.Open] for an authentic value whose expiry
// has passed. The message is safe to show.
var ErrExpired = errors.New("cookieseal: cookie value expired")

// enc is strict so that every sealed value has exactly one accepted spelling.
var enc = base64.RawURLEncoding.Strict()

// Codec seals and opens cookie values. It is safe for concurrent use.
type Codec struct {
	keys []sealKey   // keys[0] seals
	memo *openedMemo // nil unless made by Remembering
}

type sealKey struct {
	id   [idSize]byte
	aead cipher.AEAD
}

// New returns a Codec for the given keys, each exactly [KeySize] bytes of
// secret randomness (or the output of [DeriveKey]). The first key seals new
// values; all keys open, which lets operators rotate keys without logging
// everyone out: put the new key first and drop the old one once every value
// it sealed has expired.
func New(keys ...[]byte) (*Codec, error) {
	if len(keys) == 0 {
		return nil, errors.New("cookieseal: at least one key is required")
	}
	c := &Codec{keys: make([]sealKey, len(keys))}
	for i, k := range keys {
		if len(k) != KeySize {
			return nil, fmt.Errorf("cookieseal: key %d is %d bytes, want %d", i, len(k), KeySize)
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("cookieseal: key %d: %w", i, err)
		}
		aead, err := cipher.NewGCMWithRandomNonce(block)
		if err != nil {
			return nil, fmt.Errorf("cookieseal: key %d: %w", i, err)
		}
		id := keyID(k)
		for j := range i {
			if c.keys[j].id == id {
				// Equal ids mean the same key given twice (or a 2^-32
				// accident); either way Open could not tell them apart.
				return nil, fmt.Errorf("cookieseal: key %d has the same id as key %d; use distinct keys", i, j)
			}
		}
		c.keys[i] = sealKey{id: id, aead: aead}
	}
	return c, nil
}

// keyID names a key without revealing anything useful about it: an HMAC of a
// fixed label under the key.
func keyID(key []byte) [idSize]byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("cookieseal key id"))
	var id [idSize]byte
	copy(id[:], m.Sum(nil))
	return id
}

// Seal encrypts payload for the cookie called name, valid until expires, and
// returns a cookie-safe value. The expiry is kept at one-second resolution,
// rounded down, so a value never outlives expires. Seal fails if expires is
// the zero time or the result would be longer than [MaxValueLen].
func (c *Codec) Seal(name string, payload []byte, expires time.Time) (string, error) {
	if expires.IsZero() {
		return "", errors.New("cookieseal: expiry is required")
	}
	rawLen := minRawLen + len(payload)
	if enc.EncodedLen(rawLen) > MaxValueLen {
		return "", fmt.Errorf("cookieseal: payload of %d bytes is too large for a cookie", len(payload))
	}
	k := &c.keys[0]

	plain := make([]byte, expSize+len(payload))
	binary.BigEndian.PutUint64(plain, uint64(expires.Unix()))
	copy(plain[expSize:], payload)

	raw := make([]byte, headSize, rawLen)
	raw[0] = version
	copy(raw[1:headSize], k.id[:])
	raw = k.aead.Seal(raw, nil, plain, additionalData(raw[:headSize], name))
	return enc.EncodeToString(raw), nil
}

// Open authenticates and decrypts a value sealed for the cookie called name
// and returns its payload. It returns [ErrInvalid] for anything it cannot
// authenticate and [ErrExpired] when the value's expiry is not after now.
func (c *Codec) Open(name, value string, now time.Time) ([]byte, error) {
	return c.AppendOpen(nil, name, value, now)
}

// AppendOpen is [Codec.Open] appending the payload to dst, for callers that
// keep a buffer of their own: opening then allocates nothing. On error it
// returns dst unchanged.
func (c *Codec) AppendOpen(dst []byte, name, value string, now time.Time) ([]byte, error) {
	// Size checks come before any decoding, so junk costs almost nothing.
	if len(value) > MaxValueLen || len(value) < enc.EncodedLen(minRawLen) {
		return dst, ErrInvalid
	}
	// The decoder skips CR and LF even in strict mode; refuse them so that a
	// value cannot be respelled. (Two byte searches cost a tenth of
	// strings.ContainsAny's set lookup per byte.)
	if strings.IndexByte(value, '\r') >= 0 || strings.IndexByte(value, '\n') >= 0 {
		return dst, ErrInvalid
	}
	if c.memo != nil {
		if out, found, err := c.memo.lookup(dst, name, value, now); found {
			return out, err
		}
	}
	bp := scratch.Get().(*[]byte)
	defer scratch.Put(bp)
	// The decoded value and the additional data share one scratch buffer.
	rawMax := enc.DecodedLen(len(value))
	if need := rawMax + headSize + len(name); cap(*bp) < need {
		*bp = make([]byte, need)
	}
	buf := (*bp)[:cap(*bp)]
	n, err := enc.Decode(buf[:rawMax], []byte(value))
	raw := buf[:n]
	if err != nil || len(raw) < minRawLen || raw[0] != version {
		return dst, ErrInvalid
	}
	head, sealed := raw[:headSize], raw[headSize:]
	k := c.key(head[1:])
	if k == nil {
		return dst, ErrInvalid
	}
	ad := append(append(buf[rawMax:rawMax], head...), name...)
	// Decrypt in place: the plaintext lands over the nonce and ciphertext,
	// which the AEAD allows. New guarantees ids are distinct, so no other
	// key needs the (on failure, wiped) ciphertext afterwards.
	plain, err := k.aead.Open(sealed[:0], nil, sealed, ad)
	if err != nil {
		return dst, ErrInvalid
	}
	// The payload is the caller's alone: the pooled copy is wiped.
	defer clear(plain)
	exp := int64(binary.BigEndian.Uint64(plain))
	if now.Unix() >= exp {
		return dst, ErrExpired
	}
	if c.memo != nil {
		c.memo.remember(name, value, exp, plain[expSize:])
	}
	return append(dst, plain[expSize:]...), nil
}

// scratch holds Open's decoding buffers. Values are at most MaxValueLen
// bytes, so a buffer never grows past about 3 KiB and every one is kept.
var scratch = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// key returns the configured key with the given id, or nil.
func (c *Codec) key(id []byte) *sealKey {
	for i := range c.keys {
		if string(c.keys[i].id[:]) == string(id) {
			return &c.keys[i]
		}
	}
	return nil
}

// additionalData binds the format version, key id and cookie name to the
// ciphertext, so a value cannot be replayed under another cookie's name. The
// header has a fixed length, so the concatenation is unambiguous.
func additionalData(head []byte, name string) []byte {
	ad := make([]byte, 0, len(head)+len(name))
	ad = append(ad, head...)
	return append(ad, name...)
}

// DeriveKey derives a [KeySize]-byte key for one purpose from a configured
// secret with HKDF-SHA256, so one secret can yield independent keys for, say,
// session cookies and browser-binding cookies. Different purposes give
// unrelated keys.
//
// The secret must hold enough entropy on its own (32 random bytes is right);
// HKDF does not strengthen a weak secret. DeriveKey returns nil when the
// secret is shorter than [MinSecretSize], and [New] rejects a nil key, so a
// missing secret can never silently turn into a guessable key.
func DeriveKey(secret []byte, purpose string) []byte {
	if len(secret) < MinSecretSize {
		return nil
	}
	key, err := hkdf.Key(sha256.New, secret, nil, "cookieseal v1 "+purpose, KeySize)
	if err != nil {
		// Only reachable in FIPS 140-only mode with an unapproved
		// secret; New reports the nil key.
		return nil
	}
	return key
}
