package middleware

import (
	"strings"
	"testing"
	"time"
)

func validConfig() Config {
	return Config{
		AppID:       testAppID,
		AppSecret:   testSecret,
		Token:       testToken,
		SessionKeys: [][]byte{testSessionKey},
	}
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{"valid", func(*Config) {}, ""},
		{"no AppID", func(c *Config) { c.AppID = "" }, "AppID is required"},
		{"no AppSecret", func(c *Config) { c.AppSecret = "" }, "AppSecret is required"},
		{"no Token", func(c *Config) { c.Token = "" }, "Token is required"},
		{"short Token", func(c *Config) { c.Token = "ab" }, "Token must be 3 to 32 letters and digits"},
		{"Token with symbols", func(c *Config) { c.Token = "tok-en!" }, "Token must be 3 to 32 letters and digits"},
		{"no SessionKeys", func(c *Config) { c.SessionKeys = nil }, "SessionKeys needs at least one key"},
		{"short session key", func(c *Config) { c.SessionKeys = [][]byte{testSessionKey, []byte("short")} }, "SessionKeys[1] is 5 bytes"},
		{"prefix without slash", func(c *Config) { c.Prefix = "wechat" }, `Prefix "wechat"`},
		{"prefix with trailing slash", func(c *Config) { c.Prefix = "/wechat/" }, `Prefix "/wechat/"`},
		{"negative SessionTTL", func(c *Config) { c.SessionTTL = -time.Second }, "SessionTTL must not be negative"},
		{"SceneTTL too short", func(c *Config) { c.SceneTTL = time.Second }, "SceneTTL 1s must be between"},
		{"SceneTTL too long", func(c *Config) { c.SceneTTL = time.Hour }, "SceneTTL 1h0m0s must be between"},
		{"public path without slash", func(c *Config) { c.PublicPaths = []string{"static"} }, `PublicPaths[0] "static"`},
		{"bad AES key", func(c *Config) { c.EncodingAESKey = "abcde" }, "EncodingAESKey"},
		{"previous keys alone", func(c *Config) { c.PreviousEncodingAESKeys = []string{testAESKey} }, "PreviousEncodingAESKeys given without EncodingAESKey"},
		{"negative rate", func(c *Config) { c.QRRateLimit = -1 }, "QRRateLimit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mutate(&c)
			m, err := New(c)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				defer m.Close()
				if m.cfg.Prefix != "/wechat" || m.cfg.SceneTTL != 5*time.Minute || m.cfg.SessionTTL != 24*time.Hour {
					t.Fatalf("defaults not applied: %+v", m.cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), testSecret) || strings.Contains(err.Error(), string(testSessionKey)) {
				t.Fatalf("error text leaks a secret: %v", err)
			}
		})
	}
}
