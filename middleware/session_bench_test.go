package middleware

import (
	"context"
	"testing"
	"time"
)

// BenchmarkSessionVerifyRevocations is BenchmarkSessionVerify with other
// sessions revoked: the revocation list is not empty, so every check hashes
// the session id and looks it up.
func BenchmarkSessionVerifyRevocations(b *testing.B) {
	m, err := New(validConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	for _, id := range []string{"ended-1", "ended-2", "ended-3"} {
		if err := m.sessions.Revoke(context.Background(), id, time.Now().Add(time.Hour)); err != nil {
			b.Fatal(err)
		}
	}
	value := issueTestSession(b, m, "oAlice0000000000000000000001")
	r := cookieRequest(value)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := m.sessions.Get(r); err != nil {
			b.Fatal(err)
		}
	}
}
