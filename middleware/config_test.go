package middleware

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func validConfig() Config {
	return Config{
		AppID:       testAppID,
		AppSecret:   testSecret,
		PushToken:   testToken,
		SessionKeys: [][]byte{testSessionKey},
	}
}

// TestConfigValidation: Validate and New refuse the same configurations
// with the same error, a *ConfigError naming the field (and element) at
// fault.
func TestConfigValidation(t *testing.T) {
	otherKey := []byte(strings.Repeat("k", 32))
	tests := []struct {
		name    string
		mutate  func(*Config)
		field   string
		index   int
		wantErr string
	}{
		{"valid", func(*Config) {}, "", -1, ""},
		{"valid with everything", func(c *Config) {
			c.EncodingAESKey, c.PreviousEncodingAESKeys = testAESKey, []string{testAESKey}
			c.OpenAppID, c.OpenAppSecret = testOpenAppID, testOpenSecret
			c.Methods, c.OAuthScope = []string{MethodOpen, MethodQR}, "snsapi_userinfo"
			c.SessionKeys = [][]byte{testSessionKey, otherKey}
			c.PublicPaths = []string{"/static/", "/healthz", "/"}
			c.LoginTemplate = "<p>{{.SiteName}}</p>"
		}, "", -1, ""},
		{"no AppID", func(c *Config) { c.AppID = "" }, "AppID", -1, "AppID is required"},
		{"no AppSecret", func(c *Config) { c.AppSecret = "" }, "AppSecret", -1, "AppSecret is required"},
		{"no PushToken", func(c *Config) { c.PushToken = "" }, "PushToken", -1, "Token is required"},
		{"short PushToken", func(c *Config) { c.PushToken = "ab" }, "PushToken", -1, "Token must be 3 to 32 letters and digits"},
		{"PushToken with symbols", func(c *Config) { c.PushToken = "tok-en!" }, "PushToken", -1, "Token must be 3 to 32 letters and digits"},
		{"no SessionKeys", func(c *Config) { c.SessionKeys = nil }, "SessionKeys", -1, "SessionKeys needs at least one key"},
		{"short session key", func(c *Config) { c.SessionKeys = [][]byte{testSessionKey, []byte("short")} }, "SessionKeys", 1, "SessionKeys[1] is 5 bytes"},
		{"repeated session key", func(c *Config) { c.SessionKeys = [][]byte{testSessionKey, otherKey, testSessionKey} }, "SessionKeys", 2, "SessionKeys[2] repeats an earlier key"},
		{"prefix without slash", func(c *Config) { c.Prefix = "wechat" }, "Prefix", -1, `Prefix "wechat"`},
		{"prefix with trailing slash", func(c *Config) { c.Prefix = "/wechat/" }, "Prefix", -1, `Prefix "/wechat/"`},
		{"negative SessionTTL", func(c *Config) { c.SessionTTL = -time.Second }, "SessionTTL", -1, "SessionTTL must not be negative"},
		{"SceneTTL too short", func(c *Config) { c.SceneTTL = time.Second }, "SceneTTL", -1, "SceneTTL 1s must be between"},
		{"SceneTTL too long", func(c *Config) { c.SceneTTL = time.Hour }, "SceneTTL", -1, "SceneTTL 1h0m0s must be between"},
		{"public path without slash", func(c *Config) { c.PublicPaths = []string{"/ok/", "static"} }, "PublicPaths", 1, `PublicPaths[1] "static"`},
		{"public path with dot segment", func(c *Config) { c.PublicPaths = []string{"/a/../b"} }, "PublicPaths", 0, `PublicPaths[0] "/a/../b" must be an absolute path`},
		{"short AES key", func(c *Config) { c.EncodingAESKey = "abcde" }, "EncodingAESKey", -1, "EncodingAESKey must be 43 characters, got 5"},
		{"AES key not base64", func(c *Config) { c.EncodingAESKey = strings.Repeat("!", 43) }, "EncodingAESKey", -1, "EncodingAESKey is not a valid key"},
		{"bad previous AES key", func(c *Config) {
			c.EncodingAESKey, c.PreviousEncodingAESKeys = testAESKey, []string{testAESKey, "short"}
		}, "PreviousEncodingAESKeys", 1, "PreviousEncodingAESKeys[1] must be 43 characters, got 5"},
		{"previous keys alone", func(c *Config) { c.PreviousEncodingAESKeys = []string{testAESKey} }, "PreviousEncodingAESKeys", -1, "PreviousEncodingAESKeys given without EncodingAESKey"},
		{"unknown method", func(c *Config) { c.Methods = []string{MethodQR, "password"} }, "Methods", 1, `Methods[1] "password" must be qr, code, oauth or open`},
		{"method twice", func(c *Config) { c.Methods = []string{MethodQR, MethodQR} }, "Methods", 1, `Methods[1] "qr" is listed twice`},
		{"open without website app", func(c *Config) { c.Methods = []string{MethodOpen} }, "Methods", 0, `Methods[0] "open" needs a website app`},
		{"bad scope", func(c *Config) { c.OAuthScope = "snsapi_login" }, "OAuthScope", -1, `OAuthScope must be snsapi_base or snsapi_userinfo, not "snsapi_login"`},
		{"website app without secret", func(c *Config) { c.OpenAppID = testOpenAppID }, "OpenAppSecret", -1, "OpenAppSecret is missing"},
		{"website secret without app", func(c *Config) { c.OpenAppSecret = testOpenSecret }, "OpenAppID", -1, "OpenAppID is missing"},
		{"negative rate", func(c *Config) { c.QRRateLimit = -1 }, "QRRateLimit", -1, "QRRateLimit must not be negative"},
		{"negative burst", func(c *Config) { c.QRRateBurst = -1 }, "QRRateBurst", -1, "QRRateBurst must not be negative"},
		{"negative ceiling", func(c *Config) { c.QRCeiling = -1 }, "QRCeiling", -1, "QRCeiling must not be negative"},
		{"negative MaxWaiting", func(c *Config) { c.MaxWaiting = -1 }, "MaxWaiting", -1, "MaxWaiting must not be negative"},
		{"broken template", func(c *Config) { c.LoginTemplate = "{{.Broken" }, "LoginTemplate", -1, "LoginTemplate does not parse"},
		{"valid refresh", func(c *Config) { c.SessionRefresh, c.SessionMaxAge = time.Hour, 7*24*time.Hour }, "", -1, ""},
		{"max age equal to the lifetime", func(c *Config) { c.SessionMaxAge = 24 * time.Hour }, "", -1, ""},
		{"negative SessionRefresh", func(c *Config) { c.SessionRefresh = -time.Second }, "SessionRefresh", -1, "SessionRefresh must not be negative"},
		{"refresh as long as the lifetime", func(c *Config) { c.SessionRefresh, c.SessionMaxAge = 24*time.Hour, 48*time.Hour }, "SessionRefresh", -1, "SessionRefresh 24h0m0s must be shorter than the session lifetime (24h0m0s)"},
		{"refresh longer than a set lifetime", func(c *Config) { c.SessionTTL, c.SessionRefresh, c.SessionMaxAge = time.Hour, 2*time.Hour, 3*time.Hour }, "SessionRefresh", -1, "SessionRefresh 2h0m0s must be shorter than the session lifetime (1h0m0s)"},
		{"refresh without max age", func(c *Config) { c.SessionRefresh = time.Hour }, "SessionMaxAge", -1, "SessionMaxAge is required with session refresh"},
		{"negative SessionMaxAge", func(c *Config) { c.SessionMaxAge = -time.Hour }, "SessionMaxAge", -1, "SessionMaxAge must not be negative"},
		{"max age shorter than the lifetime", func(c *Config) { c.SessionMaxAge = time.Hour }, "SessionMaxAge", -1, "SessionMaxAge 1h0m0s must not be shorter than the session lifetime (24h0m0s)"},
		{"refresh that extends nothing", func(c *Config) { c.SessionRefresh, c.SessionMaxAge = time.Hour, 24*time.Hour }, "SessionMaxAge", -1, "SessionMaxAge 24h0m0s must be longer than the session lifetime"},
		{"max age without refresh", func(c *Config) { c.SessionMaxAge = 48 * time.Hour }, "SessionMaxAge", -1, "which only session refresh extends"},
		{"unionid as user id", func(c *Config) { c.UserID, c.UserHeaders = "unionid", true }, "", -1, ""},
		{"bad UserID", func(c *Config) { c.UserID = "email" }, "UserID", -1, `UserID must be openid or unionid, not "email"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mutate(&c)
			verr := c.Validate()
			m, err := New(c)
			if tc.wantErr == "" {
				if verr != nil {
					t.Fatalf("Validate: unexpected error: %v", verr)
				}
				if err != nil {
					t.Fatalf("New: unexpected error: %v", err)
				}
				defer m.Close()
				if m.cfg.Prefix != "/wechat" || m.cfg.SceneTTL != 5*time.Minute || m.cfg.SessionTTL != 24*time.Hour {
					t.Fatalf("defaults not applied: %+v", m.cfg)
				}
				if m.cfg.SessionMaxAge < m.cfg.SessionTTL || m.cfg.SessionRefresh == 0 && m.cfg.SessionMaxAge != m.cfg.SessionTTL {
					t.Fatalf("SessionMaxAge %v with SessionTTL %v and SessionRefresh %v", m.cfg.SessionMaxAge, m.cfg.SessionTTL, m.cfg.SessionRefresh)
				}
				if m.cfg.UserID != "openid" && m.cfg.UserID != "unionid" {
					t.Fatalf("UserID %q", m.cfg.UserID)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New: error %v, want one containing %q", err, tc.wantErr)
			}
			if verr == nil || verr.Error() != err.Error() {
				t.Fatalf("Validate: error %v, want New's %v", verr, err)
			}
			if !strings.HasPrefix(err.Error(), "middleware: "+tc.field) {
				t.Fatalf("error %q does not start with the field's name", err)
			}
			var ce *ConfigError
			if !errors.As(verr, &ce) || ce.Field != tc.field || ce.Index != tc.index {
				t.Fatalf("Validate: error %#v, want a *ConfigError for %s index %d", verr, tc.field, tc.index)
			}
			if strings.Contains(err.Error(), testSecret) || strings.Contains(err.Error(), string(testSessionKey)) || strings.Contains(err.Error(), testAESKey) {
				t.Fatalf("error text leaks a secret: %v", err)
			}
		})
	}
}

// TestConfigValidateLeavesConfigAlone: Validate fills in no defaults on the
// caller's Config.
func TestConfigValidateLeavesConfigAlone(t *testing.T) {
	c := validConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Prefix != "" || c.Methods != nil || c.Logger != nil || c.SessionTTL != 0 {
		t.Fatalf("Validate changed the config: %+v", c)
	}
}

func TestConfigErrorText(t *testing.T) {
	for _, tc := range []struct {
		err  ConfigError
		want string
	}{
		{ConfigError{Field: "PushToken", Index: -1, Reason: "is required"}, "middleware: PushToken is required"},
		{ConfigError{Field: "SessionKeys", Index: 0, Reason: "is 5 bytes, need at least 32"}, "middleware: SessionKeys[0] is 5 bytes, need at least 32"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}
