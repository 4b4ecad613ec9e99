package session

import (
	"testing"
	"time"
)

// FuzzDecodeHandoff: the handoff decoder never panics, and whatever it
// accepts encodes back to a handoff that decodes the same.
func FuzzDecodeHandoff(f *testing.F) {
	f.Add(Handoff{ID: "0123", Target: "https://a.example", Next: "/x", State: "s", ExpiresAt: time.Unix(9, 0),
		Identity: Record{AppID: "wx1", OpenID: "o1", LoginAt: time.Unix(1, 0)}}.encode())
	f.Add([]byte{handoffFormat, 0, 0})
	f.Add([]byte{handoffFormat, 2, 2, 200, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, ok := decodeHandoff(b)
		if !ok {
			return
		}
		again, ok := decodeHandoff(h.encode())
		if !ok || again != h {
			t.Fatalf("re-encoding changed the handoff: %+v vs %+v", h, again)
		}
	})
}
