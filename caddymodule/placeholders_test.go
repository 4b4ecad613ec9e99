package caddymodule

import (
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/wechat-login/caddy-wechat-login/middleware"
)

// TestIdentityPlaceholders: every {http.auth.user.*} placeholder answers
// with the identity (the user id is the unionid in unionid mode, never the
// openid in its place), an empty nickname is no placeholder, and other
// placeholders are left to the rest of the replacer.
func TestIdentityPlaceholders(t *testing.T) {
	alice := middleware.Identity{AppID: "wxapp", OpenID: "oAlice", UnionID: "uAlice", Method: middleware.MethodQR, Nickname: "Alice"}
	noUnion := middleware.Identity{AppID: "wxapp", OpenID: "oBob", Method: middleware.MethodOAuth}
	for _, tc := range []struct {
		name   string
		id     middleware.Identity
		userID string
		want   map[string]any // placeholder -> value; nil: not known
	}{
		{"openid", alice, "openid", map[string]any{
			"id": "oAlice", "openid": "oAlice", "unionid": "uAlice", "app_id": "wxapp", "login_method": middleware.MethodQR, "nickname": "Alice", "other": nil,
		}},
		{"unionid", alice, "unionid", map[string]any{"id": "uAlice", "openid": "oAlice", "unionid": "uAlice"}},
		{"no unionid", noUnion, "unionid", map[string]any{"id": "", "unionid": "", "nickname": nil, "login_method": middleware.MethodOAuth}},
	} {
		repl := caddy.NewReplacer()
		repl.Set("http.vars.kept", "kept")
		setPlaceholders(repl, tc.id, tc.userID)
		for name, want := range tc.want {
			got, ok := repl.Get("http.auth.user." + name)
			if want == nil && ok || want != nil && (!ok || got != want) {
				t.Errorf("%s: {http.auth.user.%s} = %v, %v; want %v", tc.name, name, got, ok, want)
			}
		}
		want := tc.want["id"].(string)
		if want == "" {
			want = "-" // ReplaceAll's stand-in for an empty value
		}
		if got := repl.ReplaceAll("{http.auth.user.id} {http.vars.kept}", "-"); got != want+" kept" {
			t.Errorf("%s: ReplaceAll = %q, want %q", tc.name, got, want+" kept")
		}
	}
}
