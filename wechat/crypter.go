package wechat

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
)

// Errors returned by Crypter and the push parsers. Callers branch on them
// with errors.Is; none of them carries message content or key material.
var (
	// ErrSignatureMismatch means a msg_signature did not match. Nothing was
	// decrypted.
	ErrSignatureMismatch = errors.New("wechat: msg_signature mismatch")

	// ErrDecrypt is the single error for every failure after the signature
	// check: bad base64, a ciphertext of the wrong length, bad padding or a
	// malformed plaintext. Keeping these indistinguishable means the
	// decryption stage can never serve as a padding oracle.
	ErrDecrypt = errors.New("wechat: cannot decrypt message")

	// ErrAppIDMismatch means the message decrypted and was well formed, but
	// it was addressed to another AppID. It is only reported once the
	// signature has authenticated the ciphertext, so telling it apart from
	// ErrDecrypt reveals nothing to a forger.
	ErrAppIDMismatch = errors.New("wechat: message is for another AppID")
)

const (
	// encodingAESKeyLen is the length of an EncodingAESKey: 43 base64
	// characters, 32 bytes once a trailing "=" is added and decoded.
	encodingAESKeyLen = 43

	// padBlock is the PKCS#7 block size WeChat uses. It is twice the AES
	// block size, so generic 16-byte unpadders reject pads of 17 to 32.
	padBlock = 32

	// randomLen and lenFieldLen describe the plaintext layout
	// random(16) || msg_len(4, big-endian) || msg || appid.
	randomLen   = 16
	lenFieldLen = 4
	headerLen   = randomLen + lenFieldLen
)

// Crypter encrypts and decrypts WeChat push messages in compatible and safe
// modes (AES-256-CBC, see the "message encryption" section of WeChat's
// documentation). It holds the account's Token, EncodingAESKey and AppID.
// A Crypter is immutable and safe for concurrent use.
type Crypter struct {
	token string
	appID string
	// keys holds the current key first, then older keys still accepted for
	// decryption while an EncodingAESKey rotation is under way.
	keys []aesKey
}

// aesKey is one decoded EncodingAESKey. WeChat derives the CBC IV from the
// key itself, so the pair is fixed per key.
type aesKey struct {
	block cipher.Block
	iv    [aes.BlockSize]byte
}

// NewCrypter returns a Crypter for the account with the given Token,
// EncodingAESKey and AppID, all as entered on WeChat's configuration page.
//
// previousKeys are earlier EncodingAESKeys that are still accepted when
// decrypting, so that pushes already in flight keep working while a new key
// is rolled out. Encryption always uses encodingAESKey.
//
// The error names the offending argument but never includes its value.
func NewCrypter(token, encodingAESKey, appID string, previousKeys ...string) (*Crypter, error) {
	if token == "" {
		return nil, fmt.Errorf("wechat: %w: token is empty", ErrInvalidArgument)
	}
	if appID == "" {
		return nil, fmt.Errorf("wechat: %w: appID is empty", ErrInvalidArgument)
	}
	c := &Crypter{token: token, appID: appID}
	k, err := decodeAESKey(encodingAESKey)
	if err != nil {
		return nil, fmt.Errorf("wechat: %w: encodingAESKey %s", ErrInvalidArgument, err)
	}
	c.keys = append(c.keys, k)
	for i, pk := range previousKeys {
		k, err := decodeAESKey(pk)
		if err != nil {
			return nil, fmt.Errorf("wechat: %w: previous key %d %s", ErrInvalidArgument, i+1, err)
		}
		c.keys = append(c.keys, k)
	}
	return c, nil
}

// decodeAESKey turns a 43-character EncodingAESKey into an AES-256 key. The
// error text describes the problem only, never the key.
func decodeAESKey(s string) (aesKey, error) {
	if len(s) != encodingAESKeyLen {
		return aesKey{}, fmt.Errorf("must be %d characters, got %d", encodingAESKeyLen, len(s))
	}
	// The 43rd character usually carries non-zero trailing bits, which a
	// strict decoder refuses; WeChat's own samples decode leniently.
	raw, err := base64.StdEncoding.DecodeString(s + "=")
	if err != nil || len(raw) != 32 {
		return aesKey{}, errors.New("is not valid base64 for a 32-byte key")
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return aesKey{}, errors.New("is not a valid AES key")
	}
	k := aesKey{block: block}
	copy(k.iv[:], raw[:aes.BlockSize])
	return k, nil
}

// Decrypt authenticates and decrypts the Encrypt field of a push (or of an
// encrypted reply) and returns the inner message, byte for byte.
//
// msgSignature, timestamp and nonce come from the push URL (for a reply,
// from its MsgSignature, TimeStamp and Nonce elements). The signature is
// checked first, in constant time, and nothing is decrypted unless it
// matches: the error is then ErrSignatureMismatch. Every later failure is
// ErrDecrypt, except a well-formed message for another AppID, which is
// ErrAppIDMismatch. Older keys given to NewCrypter are tried in turn.
func (c *Crypter) Decrypt(msgSignature, timestamp, nonce, encrypted string) ([]byte, error) {
	if !CheckSignature(msgSignature, c.token, timestamp, nonce, encrypted) {
		return nil, ErrSignatureMismatch
	}
	_, msg, _, err := c.open(encrypted)
	return msg, err
}

// decryptForReply is Decrypt for a push that will be answered: it also
// returns the Crypter to encrypt the answer with. While an EncodingAESKey is
// being changed, WeChat may still push under the previous key, and the
// reply must use the key the push used; the returned Crypter has that key
// first (it is c itself when the current key worked).
func (c *Crypter) decryptForReply(msgSignature, timestamp, nonce, encrypted string) (msg []byte, reply *Crypter, err error) {
	if !CheckSignature(msgSignature, c.token, timestamp, nonce, encrypted) {
		return nil, nil, ErrSignatureMismatch
	}
	_, msg, key, err := c.open(encrypted)
	if err != nil {
		return nil, nil, err
	}
	if key == 0 {
		return msg, c, nil
	}
	older := *c
	older.keys = []aesKey{c.keys[key]}
	return msg, &older, nil
}

// open decrypts an already authenticated Encrypt value and returns the
// random prefix, the message and the index of the key that worked. It is
// separate from Decrypt so tests can check the random prefix of known
// vectors.
func (c *Crypter) open(encrypted string) (random, msg []byte, key int, err error) {
	ct, err := base64.StdEncoding.DecodeString(encrypted)
	if err != nil || len(ct) < padBlock || len(ct)%padBlock != 0 {
		return nil, nil, 0, ErrDecrypt
	}
	wrongApp := false
	buf := make([]byte, len(ct))
	for i, k := range c.keys {
		cipher.NewCBCDecrypter(k.block, k.iv[:]).CryptBlocks(buf, ct)
		random, msg, appID, ok := parsePlaintext(buf)
		if !ok {
			continue
		}
		if subtle.ConstantTimeCompare(appID, []byte(c.appID)) != 1 {
			wrongApp = true
			continue
		}
		return random, msg, i, nil
	}
	if wrongApp {
		return nil, nil, 0, ErrAppIDMismatch
	}
	return nil, nil, 0, ErrDecrypt
}

// parsePlaintext removes the 32-byte PKCS#7 padding from a decrypted buffer
// and splits random(16) || msg_len(4) || msg || appid. The returned slices
// alias buf. Lengths are compared as 64-bit values, so a msg_len near 2^32
// cannot wrap around and index out of range.
func parsePlaintext(buf []byte) (random, msg, appID []byte, ok bool) {
	plain, ok := unpad(buf)
	if !ok || len(plain) < headerLen {
		return nil, nil, nil, false
	}
	msgLen := uint64(binary.BigEndian.Uint32(plain[randomLen:headerLen]))
	if msgLen > uint64(len(plain)-headerLen) {
		return nil, nil, nil, false
	}
	end := headerLen + int(msgLen)
	return plain[:randomLen], plain[headerLen:end], plain[end:], true
}

// unpad checks and strips PKCS#7 padding with a 32-byte block: the last
// byte p must be 1..32 and each of the last p bytes must equal p. Every one
// of the last 32 bytes is examined whatever p is, so the time taken does not
// depend on where the padding goes wrong.
func unpad(b []byte) ([]byte, bool) {
	n := len(b)
	if n < padBlock || n%padBlock != 0 {
		return nil, false
	}
	p := int(b[n-1])
	good := subtle.ConstantTimeLessOrEq(1, p) & subtle.ConstantTimeLessOrEq(p, padBlock)
	for i := 1; i <= padBlock; i++ {
		inPad := subtle.ConstantTimeLessOrEq(i, p)
		same := subtle.ConstantTimeByteEq(b[n-i], byte(p))
		good &= same | (inPad ^ 1)
	}
	if good != 1 {
		return nil, false
	}
	return b[:n-p], true
}

// Encrypt encrypts plaintext for WeChat and signs the result. It returns the
// base64 Encrypt value and its msg_signature over the Token, timestamp and
// nonce. The 16-byte random prefix is fresh for each call and, as in real
// WeChat traffic, made of lowercase hex digits. The current (first) key is
// always used.
func (c *Crypter) Encrypt(plaintext []byte, timestamp, nonce string) (encrypted, msgSignature string, err error) {
	var seed [randomLen / 2]byte
	rand.Read(seed[:]) // crypto/rand.Read never fails; it aborts the program instead
	var random [randomLen]byte
	hex.Encode(random[:], seed[:])
	return c.encryptWithRandom(random, plaintext, timestamp, nonce)
}

// encryptWithRandom is Encrypt with a caller-chosen random prefix, which
// makes the output deterministic for test vectors.
func (c *Crypter) encryptWithRandom(random [randomLen]byte, plaintext []byte, timestamp, nonce string) (encrypted, msgSignature string, err error) {
	if len(c.keys) == 0 {
		return "", "", errors.New("wechat: Crypter not created by NewCrypter")
	}
	if uint64(len(plaintext)) > math.MaxUint32 {
		return "", "", fmt.Errorf("wechat: %w: message longer than %d bytes", ErrInvalidArgument, uint64(math.MaxUint32))
	}
	n := headerLen + len(plaintext) + len(c.appID)
	pad := padBlock - n%padBlock
	buf := make([]byte, 0, n+pad)
	buf = append(buf, random[:]...)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(plaintext)))
	buf = append(buf, plaintext...)
	buf = append(buf, c.appID...)
	for range pad {
		buf = append(buf, byte(pad))
	}
	k := c.keys[0]
	cipher.NewCBCEncrypter(k.block, k.iv[:]).CryptBlocks(buf, buf)
	encrypted = base64.StdEncoding.EncodeToString(buf)
	return encrypted, Signature(c.token, timestamp, nonce, encrypted), nil
}
