package session

import (
	"crypto/sha256"
	"encoding/hex"
)

// LogID shortens an openid (or any identifier) for logs: enough to
// correlate lines, not enough to identify the user elsewhere.
func LogID(s string) string {
	if s == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:6])
}
