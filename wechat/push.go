package wechat

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// defaultPushMaxAge is the freshness window when PushVerifier.MaxAge is zero.
const defaultPushMaxAge = 5 * time.Minute

// PushVerifier authenticates what WeChat sends to an account's server URL:
// the GET handshake that proves the URL answers for the account, and POSTed
// pushes. It holds no state between requests; the zero value is not usable
// (Token is required). A PushVerifier must not be changed while in use.
//
// Which mode a push must arrive in comes from these fields alone, never from
// the request: an attacker cannot downgrade an encrypted account to
// plaintext by dropping encrypt_type from the URL. The mode is
//
//   - plaintext, when Crypter is nil: the body is the event itself and
//     encrypt_type, if present, must be "raw";
//   - compatible or safe, when Crypter is set: encrypt_type must be "aes"
//     and msg_signature must cover the body's Encrypt element, which is the
//     only part that is trusted (the plaintext copy of compatible mode is
//     ignored);
//   - both, when Crypter is set and AllowPlaintext is true: a push without
//     encrypt_type is taken as plaintext, any other is held to the rules of
//     the encrypted modes.
//
// A plaintext push is weaker than it looks: its URL signature covers the
// token, timestamp and nonce but not the body, so anyone who saw one push
// URL can send any body under it while the timestamp is fresh. Callers that
// accept plaintext pushes should bind each signed URL to the first body seen
// under it.
type PushVerifier struct {
	// Token is the token from the account's server settings, with which
	// WeChat signs every request's URL. Required: without it every request
	// is refused. When Crypter is set it must hold the same token.
	Token string

	// Crypter decrypts encrypted pushes; nil means plaintext mode.
	Crypter *Crypter

	// AllowPlaintext accepts plaintext pushes although Crypter is set, for
	// a switch between modes.
	AllowPlaintext bool

	// MaxAge is the freshness window: the URL's timestamp and the event's
	// CreateTime must each be within MaxAge of Now, in either direction,
	// which bounds how long a captured request can be replayed. Zero means
	// five minutes.
	MaxAge time.Duration

	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
}

// Push is a push that passed every check of PushVerifier.Verify.
type Push struct {
	// Event is the event or message pushed: the body itself in plaintext
	// mode, the decrypted inner document otherwise.
	Event *Event

	// Body is the request body as received (for an encrypted push, the
	// envelope).
	Body []byte

	// Signature, Timestamp and Nonce are the URL parameters the signature
	// covers. Nonce is echoed in an encrypted reply.
	Signature, Timestamp, Nonce string

	// ReplyCrypter encrypts the answer to an encrypted push. It uses the key
	// the push was encrypted with, which during an EncodingAESKey rotation
	// may be an older one than the verifier's Crypter encrypts with. Nil for
	// a plaintext push.
	ReplyCrypter *Crypter
}

// Encrypted reports whether the push arrived encrypted (compatible or safe
// mode).
func (p *Push) Encrypted() bool { return p.ReplyCrypter != nil }

// ReplyText renders a passive text reply to the push: content from the
// account (the event's ToUserName) to the sender (its FromUserName), created
// at now. For an encrypted push the reply is encrypted under the push's own
// key and nonce; otherwise it is returned as plain XML.
func (p *Push) ReplyText(content string, now time.Time) ([]byte, error) {
	reply := TextReply(p.Event.FromUserName, p.Event.ToUserName, content, now)
	if p.ReplyCrypter == nil {
		return reply, nil
	}
	return p.ReplyCrypter.EncryptReply(reply, strconv.FormatInt(now.Unix(), 10), p.Nonce)
}

// PushError is the error of Verify and Handshake: the request was refused
// and should be answered with Status and Reason.
type PushError struct {
	// Status is the HTTP status to answer with: 400 for a malformed request,
	// 403 for one that fails authentication or freshness, 413 for a body
	// over MaxPushBytes, 415 for a body that is not XML.
	Status int

	// Reason is a short, fixed explanation for the response body, such as
	// "bad signature". It never contains request data or secrets.
	Reason string

	// Kind labels the rejection for metrics: "signature" (a URL signature
	// or msg_signature that does not match), "stale" (timestamp or
	// CreateTime outside MaxAge), "mode" (a push in a mode the verifier is
	// not configured for), "malformed" (repeated parameters, bad XML),
	// "decrypt", "appid" (encrypted for another app) or "too_large". It is
	// empty for requests that are noise rather than rejected pushes: missing
	// or unparseable parameters, an unreadable body, a body that is not XML,
	// a bad echostr. Handshake sets it only for "signature" and "stale".
	Kind string

	// Err is the underlying error, when there is one: ErrSignatureMismatch,
	// ErrAppIDMismatch, ErrDecrypt or an ErrInvalidXML parse error.
	Err error
}

func (e *PushError) Error() string { return "wechat: push refused: " + e.Reason }

// Unwrap returns e.Err.
func (e *PushError) Unwrap() error { return e.Err }

func refuse(status int, kind, reason string) error {
	return &PushError{Status: status, Kind: kind, Reason: reason}
}

// Handshake checks WeChat's server URL verification (a GET with signature,
// timestamp, nonce and echostr) and returns the echostr to answer with, as
// the whole body of a 200 response. For Official Accounts the handshake is
// plaintext in every mode, so only the URL signature is checked.
//
// The echostr must look like one of WeChat's (it is a long decimal
// number): anything else is refused rather than reflected. Every error is a
// *PushError.
func (v *PushVerifier) Handshake(query url.Values) (echo string, err error) {
	p, err := singleParams(query, "signature", "timestamp", "nonce", "echostr")
	if err != nil {
		return "", refuse(http.StatusBadRequest, "", err.Error())
	}
	if err := v.checkURL(p); err != nil {
		return "", err
	}
	if !validEcho(p["echostr"]) {
		return "", refuse(http.StatusBadRequest, "", "bad echostr")
	}
	return p["echostr"], nil
}

func validEcho(s string) bool {
	return s != "" && len(s) <= 128 && !strings.ContainsFunc(s, func(c rune) bool {
		return !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '_' || c == '+' || c == '/' || c == '=')
	})
}

// Verify authenticates a POSTed push and returns it parsed. It reads r.Body,
// at most MaxPushBytes of it, and checks in this order: that each of
// WeChat's query parameters appears at most once; the URL signature (in
// constant time) and the timestamp's freshness; that the body is not
// declared as something other than XML; the mode (see PushVerifier) and,
// for an encrypted push, msg_signature, decryption and the AppID; the event
// XML; and the freshness of the event's CreateTime.
//
// Nothing is remembered: a push passes again while it is fresh, as WeChat's
// retries must. Deduplication, and binding a plaintext push's URL to its
// body, are the caller's. Every error is a *PushError.
func (v *PushVerifier) Verify(r *http.Request) (*Push, error) {
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	p, err := singleParams(r.URL.Query(), "signature", "timestamp", "nonce", "openid", "encrypt_type", "msg_signature")
	if err != nil {
		return nil, refuse(http.StatusBadRequest, "malformed", err.Error())
	}
	if err := v.checkURL(p); err != nil {
		return nil, err
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, _ := mime.ParseMediaType(ct); strings.Contains(mt, "json") {
			return nil, refuse(http.StatusUnsupportedMediaType, "", "pushes must be XML")
		}
	}
	plain, reply, err := v.open(body, p)
	if err != nil {
		return nil, err
	}
	ev, err := ParseEvent(plain)
	if err != nil {
		return nil, &PushError{Status: http.StatusBadRequest, Kind: "malformed", Reason: "malformed push XML", Err: err}
	}
	if !v.fresh(ev.CreateTime) {
		return nil, refuse(http.StatusForbidden, "stale", "stale push")
	}
	return &Push{
		Event:        ev,
		Body:         body,
		Signature:    p["signature"],
		Timestamp:    p["timestamp"],
		Nonce:        p["nonce"],
		ReplyCrypter: reply,
	}, nil
}

func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxPushBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, refuse(http.StatusRequestEntityTooLarge, "too_large", "push too large")
	case err != nil:
		return nil, refuse(http.StatusBadRequest, "", "cannot read push")
	}
	return body, nil
}

// singleParams returns the named query parameters, insisting that each
// appears at most once: a repeated parameter is a sign of tampering, and
// which copy a parser picks is not something to leave to chance.
func singleParams(q url.Values, names ...string) (map[string]string, error) {
	out := make(map[string]string, len(names))
	for _, n := range names {
		switch len(q[n]) {
		case 0:
		case 1:
			out[n] = q[n][0]
		default:
			return nil, errors.New("parameter " + n + " repeated")
		}
	}
	return out, nil
}

// checkURL validates the signature, timestamp and nonce every request from
// WeChat carries.
func (v *PushVerifier) checkURL(p map[string]string) error {
	sig, ts, nonce := p["signature"], p["timestamp"], p["nonce"]
	if sig == "" || ts == "" || nonce == "" {
		return refuse(http.StatusBadRequest, "", "missing signature, timestamp or nonce")
	}
	if len(nonce) > 64 || len(sig) != 40 {
		return refuse(http.StatusForbidden, "", "bad signature")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sec <= 0 {
		return refuse(http.StatusBadRequest, "", "malformed timestamp")
	}
	if !v.fresh(sec) {
		return refuse(http.StatusForbidden, "stale", "stale timestamp")
	}
	if v.Token == "" || !CheckSignature(sig, v.Token, ts, nonce) {
		return refuse(http.StatusForbidden, "signature", "bad signature")
	}
	return nil
}

func (v *PushVerifier) fresh(unix int64) bool {
	now, maxAge := time.Now, v.MaxAge
	if v.Now != nil {
		now = v.Now
	}
	if maxAge <= 0 {
		maxAge = defaultPushMaxAge
	}
	d := now().Sub(time.Unix(unix, 0))
	return d <= maxAge && d >= -maxAge
}

// open returns the push's inner document and, for an encrypted push, the
// Crypter to encrypt the reply with. With a Crypter configured, a push
// without a valid msg_signature over its ciphertext is refused, because the
// URL signature alone does not cover the body.
func (v *PushVerifier) open(body []byte, p map[string]string) (plain []byte, reply *Crypter, err error) {
	et, hasET := p["encrypt_type"]
	if v.Crypter == nil || (v.AllowPlaintext && !hasET) {
		if hasET && et != "raw" {
			return nil, nil, refuse(http.StatusBadRequest, "mode", "encrypted push, but no EncodingAESKey is configured")
		}
		return body, nil, nil
	}
	if et != "aes" || p["msg_signature"] == "" {
		return nil, nil, refuse(http.StatusForbidden, "mode", "encrypted push required")
	}
	env, err := ParseEnvelope(body)
	if err != nil {
		return nil, nil, &PushError{Status: http.StatusBadRequest, Kind: "malformed", Reason: "malformed encrypted push", Err: err}
	}
	plain, reply, err = v.Crypter.decryptForReply(p["msg_signature"], p["timestamp"], p["nonce"], env.Encrypt)
	switch {
	case errors.Is(err, ErrSignatureMismatch):
		return nil, nil, &PushError{Status: http.StatusForbidden, Kind: "signature", Reason: "bad msg_signature", Err: err}
	case errors.Is(err, ErrAppIDMismatch):
		return nil, nil, &PushError{Status: http.StatusForbidden, Kind: "appid", Reason: "push for another app", Err: err}
	case err != nil:
		return nil, nil, &PushError{Status: http.StatusBadRequest, Kind: "decrypt", Reason: "cannot decrypt push", Err: err}
	}
	return plain, reply, nil
}
