package session

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/wechat-login/caddy-wechat-login/internal/cookieseal"
)

// HandoffTTL is how long a handoff can be redeemed after the login host
// made it. The browser follows it at once; the rest of the minute is for
// clocks that disagree a little.
const HandoffTTL = 60 * time.Second

// handoffName is what a handoff is sealed for. The key is derived for
// handoffs alone, and the name differs from every cookie's, so a session
// cookie can never be passed off as a handoff, nor the reverse.
const handoffName = "handoff"

// handoffPurpose derives the handoff key from the session keys.
const handoffPurpose = "wechat_login handoff v1"

// handoffFormat is the first byte of an encoded handoff.
const handoffFormat = 1

// Errors of Handoffs.Open. Their texts are safe to show.
var (
	ErrHandoffInvalid = errors.New("invalid handoff")
	ErrHandoffExpired = errors.New("handoff expired")
)

// Handoff is a login that a login host hands to another site: who logged
// in, for which site, where to go next, and the site's binding state. It
// travels through the browser, sealed (Handoffs.Seal), as the token of
// GET {prefix}/handoff on the site.
type Handoff struct {
	// ID is 128 random bits, hex. The site marks it used, so that a
	// handoff logs in once.
	ID string
	// Target is the origin of the only site that may redeem it.
	Target string
	// Next is where the site sends the browser once logged in; the site
	// validates it.
	Next string
	// State is the site's binding state: the site redeems only a handoff
	// whose state its browser's binding cookie lists.
	State string
	// Identity is the user: AppID, OpenID, UnionID, Method, Nickname,
	// AvatarURL and LoginAt are used; the rest is ignored.
	Identity  Record
	ExpiresAt time.Time
}

// Handoffs seals and opens handoffs with a key derived from the session
// keys that the login host and its sites share (the first seals, all open).
type Handoffs struct {
	codec *cookieseal.Codec
	now   func() time.Time
}

// NewHandoffs returns Handoffs for the configured session keys.
func NewHandoffs(keys [][]byte, now func() time.Time) (*Handoffs, error) {
	derived := make([][]byte, len(keys))
	for i, k := range keys {
		derived[i] = cookieseal.DeriveKey(k, handoffPurpose)
	}
	codec, err := cookieseal.New(derived...)
	if err != nil {
		return nil, err
	}
	return &Handoffs{codec: codec, now: now}, nil
}

// Seal fills in h's ID (when empty) and expiry, HandoffTTL from now, and
// returns it sealed as a URL-safe token with the handoff as sealed.
func (hs *Handoffs) Seal(h Handoff) (string, Handoff, error) {
	if h.ID == "" {
		h.ID = NewID()
	}
	h.ExpiresAt = hs.now().Truncate(time.Second).Add(HandoffTTL).UTC()
	token, err := hs.codec.Seal(handoffName, h.encode(), h.ExpiresAt)
	if err != nil {
		return "", Handoff{}, fmt.Errorf("seal handoff: %w", err)
	}
	return token, h, nil
}

// Open returns the handoff sealed in token: ErrHandoffExpired once
// HandoffTTL has passed, ErrHandoffInvalid for anything not sealed as a
// handoff by a holder of the session keys, or missing what a handoff needs.
func (hs *Handoffs) Open(token string) (Handoff, error) {
	payload, err := hs.codec.Open(handoffName, token, hs.now())
	switch {
	case errors.Is(err, cookieseal.ErrExpired):
		return Handoff{}, ErrHandoffExpired
	case err != nil:
		return Handoff{}, ErrHandoffInvalid
	}
	h, ok := decodeHandoff(payload)
	if !ok || len(h.ID) != 32 || h.Target == "" || h.State == "" || h.Identity.AppID == "" || h.Identity.OpenID == "" {
		return Handoff{}, ErrHandoffInvalid
	}
	return h, nil
}

func (h Handoff) encode() []byte {
	b := make([]byte, 0, 256+len(h.Next)+len(h.Identity.AvatarURL))
	b = append(b, handoffFormat)
	b = binary.AppendVarint(b, h.ExpiresAt.Unix())
	b = binary.AppendVarint(b, h.Identity.LoginAt.Unix())
	for _, f := range []string{h.ID, h.Target, h.Next, h.State, h.Identity.AppID, h.Identity.OpenID, h.Identity.UnionID, h.Identity.Method, h.Identity.Nickname, h.Identity.AvatarURL} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	return b
}

// decodeHandoff reverses encode. Its input was authenticated by the seal,
// but is still parsed defensively.
func decodeHandoff(b []byte) (Handoff, bool) {
	var h Handoff
	if len(b) == 0 || b[0] != handoffFormat {
		return h, false
	}
	b = b[1:]
	var times [2]int64
	for i := range times {
		v, n := binary.Varint(b)
		if n <= 0 {
			return h, false
		}
		times[i], b = v, b[n:]
	}
	h.ExpiresAt, h.Identity.LoginAt = time.Unix(times[0], 0).UTC(), time.Unix(times[1], 0).UTC()
	id := &h.Identity
	for _, f := range []*string{&h.ID, &h.Target, &h.Next, &h.State, &id.AppID, &id.OpenID, &id.UnionID, &id.Method, &id.Nickname, &id.AvatarURL} {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return h, false
		}
		*f, b = string(b[n:n+int(l)]), b[n+int(l):]
	}
	return h, len(b) == 0
}
