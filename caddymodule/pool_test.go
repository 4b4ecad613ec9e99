package caddymodule

import (
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/middleware"
)

// TestEmbeddedStoreReservation: the embedded store is made at once for the
// pending logins the QR ceiling allows, never fewer than
// embeddedReservedLogins nor more than it may hold; it always has room for
// the million.
func TestEmbeddedStoreReservation(t *testing.T) {
	tests := []struct {
		name    string
		cfg     middleware.Config
		reserve int
	}{
		{"defaults", middleware.Config{}, embeddedReservedLogins},
		{"default ceiling", middleware.Config{QRCeiling: 60, SceneTTL: 5 * time.Minute}, embeddedReservedLogins},
		{"raised ceiling", middleware.Config{QRCeiling: 10_000, SceneTTL: 5 * time.Minute}, 60_000},
		{"raised ceiling, long ttl", middleware.Config{QRCeiling: 10_000, SceneTTL: 10*time.Minute + 30*time.Second}, 110_000},
		{"ceiling past the store", middleware.Config{QRCeiling: 200_000}, embeddedPendingLogins},
		{"no ceiling to speak of", middleware.Config{QRCeiling: 100_000_000}, embeddedPendingLogins},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := embeddedStoreConfig(tc.cfg)
			if c.ReserveEntries != tc.reserve || c.MaxEntries != embeddedPendingLogins {
				t.Fatalf("reserve %d of %d, want %d of %d", c.ReserveEntries, c.MaxEntries, tc.reserve, embeddedPendingLogins)
			}
			want := tc.cfg.SceneTTL
			if want == 0 {
				want = 5 * time.Minute
			}
			if c.ReserveTTL != want {
				t.Fatalf("reserved class for %v, want %v", c.ReserveTTL, want)
			}
		})
	}
}
