package caddymodule

import (
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
		{name: "short aes key", input: "wechat_login {\n encoding_aes_key abcde\n}", wantErr: "encoding_aes_key must be 43 characters, got 5"},
		{name: "bad duration", input: "wechat_login {\n qr_ttl soon\n}", wantErr: `qr_ttl: "soon" is not a positive duration`},
		{name: "negative duration", input: "wechat_login {\n session_ttl -1h\n}", wantErr: "not a positive duration"},
		{name: "bad user_id", input: "wechat_login {\n user_id email\n}", wantErr: `user_id must be openid or unionid, not "email"`},
		{name: "flag with argument", input: "wechat_login {\n sandbox yes\n}", wantErr: "wrong argument count"},
		{name: "session_key without value", input: "wechat_login {\n session_key\n}", wantErr: "wrong argument count"},
		{name: "bad rate", input: "wechat_login {\n qr_rate_limit fast\n}", wantErr: `qr_rate_limit: "fast" is not a positive number`},
		{name: "bad burst", input: "wechat_login {\n qr_rate_limit 10 0\n}", wantErr: `burst "0" is not a positive whole number`},
		{name: "bad method", input: "wechat_login {\n methods qr password\n}", wantErr: `methods: "password" is not one of qr, oauth, open`},
		{name: "bad scope", input: "wechat_login {\n scope snsapi_login\n}", wantErr: `scope must be snsapi_base or snsapi_userinfo, not "snsapi_login"`},
		{name: "public_paths without value", input: "wechat_login {\n public_paths\n}", wantErr: "wrong argument count"},
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

// FuzzUnmarshalCaddyfile: any input either fails cleanly or yields a handler;
// it never panics.
func FuzzUnmarshalCaddyfile(f *testing.F) {
	for _, seed := range []string{
		"wechat_login {\n app_id a\n sandbox\n}",
		"wechat_login {\n session_key a b c\n qr_rate_limit 1 2\n}",
		"wechat_login {\n session_ttl 1d\n user_id openid\n}",
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
