package caddymodule

import (
	"context"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		want    Handler
		wantErr string
	}{
		{
			name: "full",
			input: `wechat_login {
				app_id wx0123456789abcdef
				app_secret {env.WECHAT_APP_SECRET}
				token {file./run/secrets/token}
				encoding_aes_key abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG
				methods qr open
				scope snsapi_userinfo
				open_app_id wxopen0123456789ab
				open_app_secret {env.OPEN_SECRET}
				session_key {env.KEY1} {env.KEY0}
				session_key {env.KEY_OLDEST}
				prefix /auth/wechat
				session_ttl 8h
				qr_ttl 2m
				site_name "Example Site"
				logo /static/logo.svg
				login_template /etc/caddy/login.html
				login_reply "Welcome to %s"
				expired_reply "Too late"
				public_paths /static/ /healthz
				public_paths /favicon.ico
				allow_openids oA oB
				allow_unionids uA
				redirect_hosts app.example.com *.example.org
				fetch_unionid
				confirm_in_chat
				pass_through_pushes
				allow_plaintext_pushes
				user_id unionid
				qr_rate_limit 30 10
				api_base http://127.0.0.1:9999
				oauth_base http://127.0.0.1:9999
				mp_base http://127.0.0.1:9999
			}`,
			want: Handler{
				AppID:                "wx0123456789abcdef",
				AppSecret:            "{env.WECHAT_APP_SECRET}",
				Token:                "{file./run/secrets/token}",
				EncodingAESKey:       "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
				Methods:              []string{"qr", "open"},
				Scope:                "snsapi_userinfo",
				OpenAppID:            "wxopen0123456789ab",
				OpenAppSecret:        "{env.OPEN_SECRET}",
				SessionKeys:          []string{"{env.KEY1}", "{env.KEY0}", "{env.KEY_OLDEST}"},
				Prefix:               "/auth/wechat",
				SessionTTL:           caddy.Duration(8 * time.Hour),
				QRTTL:                caddy.Duration(2 * time.Minute),
				SiteName:             "Example Site",
				Logo:                 "/static/logo.svg",
				LoginTemplate:        "/etc/caddy/login.html",
				LoginReply:           "Welcome to %s",
				ExpiredReply:         "Too late",
				PublicPaths:          []string{"/static/", "/healthz", "/favicon.ico"},
				AllowOpenIDs:         []string{"oA", "oB"},
				AllowUnionIDs:        []string{"uA"},
				RedirectHosts:        []string{"app.example.com", "*.example.org"},
				FetchUnionID:         true,
				ConfirmInChat:        true,
				PassThroughPushes:    true,
				AllowPlaintextPushes: true,
				UserID:               "unionid",
				QRRateLimit:          30,
				QRRateBurst:          10,
				APIBase:              "http://127.0.0.1:9999",
				OAuthBase:            "http://127.0.0.1:9999",
				MPBase:               "http://127.0.0.1:9999",
			},
		},
		{name: "sandbox only", input: "wechat_login {\n sandbox\n}", want: Handler{Sandbox: true}},
		{name: "sandbox subscription", input: "wechat_login {\n sandbox subscription\n}", want: Handler{Sandbox: true, SandboxAccount: "subscription"}},
		{name: "code login", input: "wechat_login {\n methods qr code\n account_name \"Shop 商店\"\n follow_qr /follow.jpg\n welcome_reply \"Hi %s\"\n}",
			want: Handler{Methods: []string{"qr", "code"}, AccountName: "Shop 商店", FollowQR: "/follow.jpg", WelcomeReply: "Hi %s"}},
		{name: "empty block", input: "wechat_login", want: Handler{}},
		{name: "duration with days", input: "wechat_login {\n session_ttl 1d\n}", want: Handler{SessionTTL: caddy.Duration(24 * time.Hour)}},
		{name: "redis store", input: "wechat_login {\n store redis {env.REDIS_URL} site1:\n}", want: Handler{Store: "redis", RedisURL: "{env.REDIS_URL}", RedisPrefix: "site1:"}},
		{name: "memory store", input: "wechat_login {\n store memory\n}", want: Handler{Store: "memory"}},
		{name: "limits", input: "wechat_login {\n qr_ceiling 120\n max_waiting 500\n revocation_file /var/lib/caddy/logouts\n}", want: Handler{QRCeiling: 120, MaxWaiting: 500, RevocationFile: "/var/lib/caddy/logouts"}},
		{name: "bad ceiling", input: "wechat_login {\n qr_ceiling 0\n}", wantErr: `qr_ceiling: "0" is not a positive whole number`},
		{name: "bad max_waiting", input: "wechat_login {\n max_waiting many\n}", wantErr: `max_waiting: "many" is not a positive whole number`},
		{name: "revocation_file without value", input: "wechat_login {\n revocation_file\n}", wantErr: "wrong argument count"},
		{name: "redis store without url", input: "wechat_login {\n store redis\n}", wantErr: "store: want `memory` or `redis <url> [<key prefix>]`"},
		{name: "unknown store", input: "wechat_login {\n store etcd x\n}", wantErr: "store: want"},
		{name: "rate without burst", input: "wechat_login {\n qr_rate_limit 2.5\n}", want: Handler{QRRateLimit: 2.5}},

		{name: "unknown option", input: "wechat_login {\n app_key x\n}", wantErr: `unknown wechat_login option "app_key"`},
		{name: "argument on directive", input: "wechat_login extra", wantErr: "wrong argument count"},
		{name: "missing app_id value", input: "wechat_login {\n app_id\n}", wantErr: "wrong argument count"},
		{name: "two app_id values", input: "wechat_login {\n app_id a b\n}", wantErr: "wrong argument count"},
		{name: "duplicate app_id", input: "wechat_login {\n app_id a\n app_id b\n}", wantErr: "app_id given more than once"},
		// Values are checked when the config is loaded (TestCaddyfileMistakesAtLoad).
		{name: "short aes key parses", input: "wechat_login {\n encoding_aes_key abcde\n}", want: Handler{EncodingAESKey: "abcde"}},
		{name: "bad duration", input: "wechat_login {\n qr_ttl soon\n}", wantErr: `qr_ttl: "soon" is not a positive duration`},
		{name: "negative duration", input: "wechat_login {\n session_ttl -1h\n}", wantErr: "not a positive duration"},
		{name: "unknown user_id parses", input: "wechat_login {\n user_id email\n}", want: Handler{UserID: "email"}},
		{name: "sandbox with a wrong argument", input: "wechat_login {\n sandbox yes\n}", wantErr: "sandbox: want no argument or `subscription`"},
		{name: "sandbox with two arguments", input: "wechat_login {\n sandbox subscription x\n}", wantErr: "wrong argument count"},
		{name: "flag with argument", input: "wechat_login {\n confirm_in_chat yes\n}", wantErr: "wrong argument count"},
		{name: "session_key without value", input: "wechat_login {\n session_key\n}", wantErr: "wrong argument count"},
		{name: "bad rate", input: "wechat_login {\n qr_rate_limit fast\n}", wantErr: `qr_rate_limit: "fast" is not a positive number`},
		{name: "bad burst", input: "wechat_login {\n qr_rate_limit 10 0\n}", wantErr: `burst "0" is not a positive whole number`},
		{name: "unknown method parses", input: "wechat_login {\n methods qr password\n}", want: Handler{Methods: []string{"qr", "password"}}},
		{name: "unknown scope parses", input: "wechat_login {\n scope snsapi_login\n}", want: Handler{Scope: "snsapi_login"}},
		{name: "public_paths without value", input: "wechat_login {\n public_paths\n}", wantErr: "wrong argument count"},
		{
			name:  "gateway options",
			input: "wechat_login {\n session_ttl 8h\n session_refresh 30m\n session_max_age 7d\n user_id unionid\n forward_user_headers\n strip_session_cookie\n}",
			want: Handler{
				SessionTTL: caddy.Duration(8 * time.Hour), SessionRefresh: caddy.Duration(30 * time.Minute), SessionMaxAge: caddy.Duration(7 * 24 * time.Hour),
				UserID: "unionid", ForwardUserHeaders: true, StripSessionCookie: true,
			},
		},
		{name: "bad session_refresh", input: "wechat_login {\n session_refresh often\n}", wantErr: `session_refresh: "often" is not a positive duration`},
		{name: "zero session_refresh", input: "wechat_login {\n session_refresh 0s\n}", wantErr: `session_refresh: "0s" is not a positive duration`},
		{name: "negative session_max_age", input: "wechat_login {\n session_max_age -1h\n}", wantErr: `session_max_age: "-1h" is not a positive duration`},
		{name: "session_max_age without value", input: "wechat_login {\n session_max_age\n}", wantErr: "wrong argument count"},
		{name: "duplicate session_refresh", input: "wechat_login {\n session_refresh 1h\n session_refresh 2h\n}", wantErr: "session_refresh given more than once"},
		{name: "forward_user_headers with argument", input: "wechat_login {\n forward_user_headers X-User\n}", wantErr: "wrong argument count"},
		{name: "strip_session_cookie with argument", input: "wechat_login {\n strip_session_cookie yes\n}", wantErr: "wrong argument count"},
		{name: "duplicate strip_session_cookie", input: "wechat_login {\n strip_session_cookie\n strip_session_cookie\n}", wantErr: "strip_session_cookie given more than once"},
		{
			name:  "login host options",
			input: "wechat_login {\n public_origin https://login.example.com\n cookie_domain example.com\n handoff_to https://shop.example.net https://blog.example.org\n handoff_to {env.THIRD_SITE}\n}",
			want: Handler{
				PublicOrigin: "https://login.example.com", CookieDomain: "example.com",
				HandoffTo: []string{"https://shop.example.net", "https://blog.example.org", "{env.THIRD_SITE}"},
			},
		},
		{name: "site with a login host", input: "wechat_login {\n login_host https://login.example.com\n session_key {env.K}\n}", want: Handler{LoginHost: "https://login.example.com", SessionKeys: []string{"{env.K}"}}},
		{name: "handoff_to without value", input: "wechat_login {\n handoff_to\n}", wantErr: "wrong argument count"},
		{name: "two login hosts", input: "wechat_login {\n login_host https://a.example\n login_host https://b.example\n}", wantErr: "login_host given more than once"},
		{name: "cookie_domain with two values", input: "wechat_login {\n cookie_domain a.example b.example\n}", wantErr: "wrong argument count"},
		{name: "public_origin without value", input: "wechat_login {\n public_origin\n}", wantErr: "wrong argument count"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), "Testfile:") {
					t.Fatalf("error %q does not say where in the Caddyfile", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !reflect.DeepEqual(h, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", h, tc.want)
			}
		})
	}
}

// loadTestSessionKey is a session key that passes every check; it must
// never appear in an error.
const loadTestSessionKey = "load-test-session-key-0123456789abcdef"

// loadCaddyfile parses a wechat_login block (with the required options
// added in front) and loads it the way Caddy does: Provision, then Validate,
// then Cleanup whatever the outcome. The handler is returned for a look at
// what Provision left.
func loadCaddyfile(t *testing.T, options string) (*Handler, error) {
	t.Helper()
	input := "wechat_login {\n" +
		" revocation_file " + filepath.Join(t.TempDir(), "logouts") + "\n" +
		options + "\n}"
	if !strings.Contains(options, "sandbox") {
		input = strings.Replace(input, "{\n", "{\n app_id wx0123456789abcdef\n app_secret secret0123\n token tok123\n session_key "+loadTestSessionKey+"\n", 1)
	}
	h := new(Handler)
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
		t.Fatalf("%q does not parse: %v", input, err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	err := h.Provision(ctx)
	if err == nil {
		err = h.Validate()
	}
	if cerr := h.Cleanup(); cerr != nil {
		t.Errorf("cleanup: %v", cerr)
	}
	return h, err
}

// TestCaddyfileMistakesAtLoad: the Caddyfile unmarshaler only parses; a
// value that parses but is wrong is reported when the config is loaded
// (what `caddy validate` does), naming the option, before any shared state
// is created.
func TestCaddyfileMistakesAtLoad(t *testing.T) {
	t.Setenv("WECHAT_LOGIN_TEST_AES_KEY", "abcde")
	tests := []struct {
		name    string
		options string
		wantErr string
	}{
		{"short aes key", "encoding_aes_key abcde", "encoding_aes_key must be 43 characters, got 5"},
		{"short aes key from a placeholder", "encoding_aes_key {env.WECHAT_LOGIN_TEST_AES_KEY}", "encoding_aes_key must be 43 characters, got 5"},
		{"aes key not base64", "encoding_aes_key " + strings.Repeat("!", 43), "encoding_aes_key is not a valid key"},
		{"bad user_id", "user_id email", `user_id must be openid or unionid, not "email"`},
		{"bad method", "methods qr password", `methods 2 "password" must be qr, code, oauth or open`},
		{"method twice", "methods oauth oauth", `methods 2 "oauth" is listed twice`},
		{"open without website app", "methods open", `methods 1 "open" needs a website app`},
		{"bad scope", "scope snsapi_login", `scope must be snsapi_base or snsapi_userinfo, not "snsapi_login"`},
		{"website app without secret", "open_app_id wxopen0123456789ab", "open_app_secret is missing"},
		{"short session key", "session_key short", "session_key 2 is 5 bytes, need at least 32"},
		{"repeated session key", "session_key " + loadTestSessionKey, "session_key 2 repeats an earlier key"},
		{"bad prefix", "prefix wechat", `prefix "wechat" must start with /`},
		{"short qr_ttl", "qr_ttl 1s", "qr_ttl 1s must be between 30s and 30m0s"},
		{"long session_ttl", "session_ttl 31d", "session_ttl 744h0m0s is longer than the maximum of 720h0m0s"},
		{"bad public path", "public_paths /static/ healthz", `public_paths 2 "healthz" must be an absolute path`},
		{"revocation_file with redis", "store redis redis://127.0.0.1:1/0", "revocation_file is only for store memory"},
		{"sandbox with an app", "sandbox\n app_id wx0123456789abcdef", "sandbox cannot be combined with app_id"},
		{"sandbox with a bad prefix", "sandbox\n prefix /wechat/", `prefix "/wechat/" must start with /`},
		{"follow_qr not a URL", "methods code\n follow_qr follow.jpg", `follow_qr must be an absolute path on this site or an http(s) URL`},
		{"code login names no website app option", "methods code\n open_app_id x", `open_app_secret is missing`},
		{"refresh as long as the session", "session_refresh 24h\n session_max_age 48h", "session_refresh 24h0m0s must be shorter than the session lifetime (24h0m0s)"},
		{"refresh without max age", "session_refresh 1h", "session_max_age is required with session refresh"},
		{"max age shorter than the session", "session_ttl 2h\n session_max_age 1h", "session_max_age 1h0m0s must not be shorter than the session lifetime (2h0m0s)"},
		{"max age that refresh cannot reach", "session_refresh 1h\n session_max_age 24h", "session_max_age 24h0m0s must be longer than the session lifetime (24h0m0s)"},
		{"max age without refresh", "session_max_age 48h", "session_max_age 48h0m0s is longer than the session lifetime (24h0m0s), which only session refresh extends"},
		{"max age too long", "session_refresh 1h\n session_max_age 31d", "session_max_age 744h0m0s is longer than the maximum of 720h0m0s"},
		{"login host and an app", "login_host https://login.example.com", "app_id is set on a site with a login host"},
		{"login host with a path", "login_host https://login.example.com/wechat", `login_host "https://login.example.com/wechat" must be a scheme and a host`},
		{"handoff target not an origin", "handoff_to https://shop.example.net shop.example.org", `handoff_to 2 "shop.example.org" must be an origin`},
		{"cookie_domain a TLD", "cookie_domain com", `cookie_domain "com" must have at least two labels`},
		{"public_origin outside cookie_domain", "cookie_domain example.com\n public_origin https://login.example.net", "cookie_domain \"example.com\" does not contain the host of this site's public origin"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := loadCaddyfile(t, tc.options)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
			if strings.HasPrefix(err.Error(), "middleware:") || strings.Contains(err.Error(), loadTestSessionKey) {
				t.Fatalf("error %q speaks Go or leaks a secret", err)
			}
			if h.poolKey != "" || h.revKey != "" {
				t.Fatalf("a refused config reached the usage pools (%q, %q)", h.poolKey, h.revKey)
			}
		})
	}
	t.Run("valid", func(t *testing.T) {
		h, err := loadCaddyfile(t, "encoding_aes_key abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\n methods qr oauth\n scope snsapi_userinfo\n user_id unionid")
		if err != nil {
			t.Fatal(err)
		}
		if h.poolKey == "" {
			t.Fatal("a valid config did not get its shared state")
		}
	})
	t.Run("sandbox", func(t *testing.T) {
		if _, err := loadCaddyfile(t, "sandbox"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("sandbox subscription", func(t *testing.T) {
		h, err := loadCaddyfile(t, "sandbox subscription")
		if err != nil {
			t.Fatal(err)
		}
		if h.sandbox == nil || h.sandbox.appID != sandboxSubAppID {
			t.Fatalf("the sandbox's account is not the subscription account: %+v", h.sandbox)
		}
	})
	t.Run("gateway options", func(t *testing.T) {
		if _, err := loadCaddyfile(t, "session_ttl 8h\n session_refresh 1h\n session_max_age 30d\n user_id unionid\n forward_user_headers\n strip_session_cookie"); err != nil {
			t.Fatal(err)
		}
	})
}

// TestValidateModuleRules covers the module's own rules, which JSON can
// break in ways the Caddyfile cannot express.
func TestValidateModuleRules(t *testing.T) {
	tests := []struct {
		name    string
		h       Handler
		wantErr string
	}{
		{"empty", Handler{}, ""},
		{"redis", Handler{Store: "redis", RedisURL: "{env.REDIS_URL}", UserID: "openid"}, ""},
		{"unknown store", Handler{Store: "etcd"}, `store must be memory or redis, not "etcd"`},
		{"redis without url", Handler{Store: "redis"}, "store redis needs a URL"},
		{"redis_url without redis", Handler{RedisURL: "redis://127.0.0.1:6379/0"}, "redis_url is only for store redis"},
		{"bad user_id", Handler{UserID: "email"}, `user_id must be openid or unionid, not "email"`},
		{"long session", Handler{SessionTTL: caddy.Duration(31 * 24 * time.Hour)}, "session_ttl 744h0m0s is longer than the maximum"},
		{"long max age", Handler{SessionMaxAge: caddy.Duration(31 * 24 * time.Hour)}, "session_max_age 744h0m0s is longer than the maximum"},
		{"sandbox with a base", Handler{Sandbox: true, MPBase: "http://127.0.0.1:1"}, "sandbox cannot be combined"},
		{"sandbox with a login host", Handler{Sandbox: true, LoginHost: "https://login.example.com"}, "sandbox cannot be combined with login_host"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.h.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestProvisionRefusalLeavesPoolAlone: a refused configuration for an app
// whose state is pooled neither bumps nor drops the pool's count, so a
// reload to a broken config changes nothing for the running one.
func TestProvisionRefusalLeavesPoolAlone(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	revFile := filepath.Join(t.TempDir(), "logouts")
	handler := func() *Handler {
		return &Handler{AppID: "wxpool0123456789ab", AppSecret: "secret0123", Token: "tok123", SessionKeys: []string{loadTestSessionKey}, RevocationFile: revFile}
	}
	running := handler()
	if err := running.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer running.Cleanup()
	refs := func() int {
		n, _ := pool.References(running.poolKey)
		return n
	}
	if refs() != 1 {
		t.Fatalf("%d references to the running config's state, want 1", refs())
	}
	for _, mistake := range []func(*Handler){
		func(h *Handler) { h.EncodingAESKey = "abcde" },
		func(h *Handler) { h.Methods = []string{"password"} },
		func(h *Handler) { h.UserID = "email" },
		func(h *Handler) { h.Store = "etcd" },
	} {
		h := handler()
		mistake(h)
		err := h.Provision(ctx)
		if err == nil {
			t.Fatalf("%+v was accepted", h)
		}
		if n := refs(); n != 1 {
			t.Fatalf("after refusing %+v (%v): %d references, want 1", h, err, n)
		}
		_ = h.Cleanup()
		if n := refs(); n != 1 {
			t.Fatalf("after cleaning up the refused %+v: %d references, want 1", h, n)
		}
	}
}

// FuzzUnmarshalCaddyfile: any input either fails cleanly or yields a handler;
// it never panics.
func FuzzUnmarshalCaddyfile(f *testing.F) {
	for _, seed := range []string{
		"wechat_login {\n app_id a\n sandbox\n}",
		"wechat_login {\n session_key a b c\n qr_rate_limit 1 2\n}",
		"wechat_login {\n session_ttl 1d\n user_id openid\n}",
		"wechat_login {\n session_refresh 1h\n session_max_age 7d\n forward_user_headers\n strip_session_cookie\n}",
		"wechat_login {\n {\n}\n}",
		"wechat_login {\n encoding_aes_key {env.X}\n}",
		"wechat_login",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, input string) {
		tokens, err := caddyfile.Tokenize([]byte(input), "Fuzzfile")
		if err != nil {
			return
		}
		var h Handler
		_ = h.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens))
	})
}
