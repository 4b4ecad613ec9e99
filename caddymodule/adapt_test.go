package caddymodule

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/adapt")

// TestAdaptGolden adapts the shipped Caddyfiles (and a few of our own) to
// JSON and compares with golden files, so a change in what a Caddyfile means
// is always a visible diff. Run with -update to accept a change.
func TestAdaptGolden(t *testing.T) {
	inputs := map[string]string{
		"sandbox_example":    "../examples/sandbox/Caddyfile",
		"production_example": "../Caddyfile.example",
	}
	extra, err := filepath.Glob("testdata/adapt/*.caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range extra {
		inputs[strings.TrimSuffix(filepath.Base(f), ".caddyfile")] = f
	}
	adapter := caddyconfig.GetAdapter("caddyfile")
	for name, path := range inputs {
		t.Run(name, func(t *testing.T) {
			src, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			out, warnings, err := adapter.Adapt(src, map[string]any{"filename": path})
			if err != nil {
				t.Fatalf("adapt: %v", err)
			}
			for _, w := range warnings {
				t.Errorf("warning: %s", w.String())
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, out, "", "\t"); err != nil {
				t.Fatal(err)
			}
			pretty.WriteByte('\n')
			golden := filepath.Join("testdata", "adapt", name+".json")
			if *update {
				if err := os.WriteFile(golden, pretty.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(pretty.Bytes(), want) {
				t.Fatalf("adapted %s differs from %s (run with -update if intended):\n%s", path, golden, pretty.String())
			}
		})
	}
}

// TestValidateAdaptedCaddyfile goes the way of `caddy validate` (and `caddy
// adapt --validate`): a Caddyfile whose wechat_login values parse but are
// wrong adapts cleanly, and loading the adapted JSON reports the mistake
// by its option.
func TestValidateAdaptedCaddyfile(t *testing.T) {
	tests := []struct {
		name    string
		options string
		wantErr string
	}{
		{"short aes key", "encoding_aes_key abcde", "encoding_aes_key must be 43 characters, got 5"},
		{"bad method", "methods qr password", `methods 2 "password" must be qr, code, oauth or open`},
		{"bad scope", "scope snsapi_login", `scope must be snsapi_base or snsapi_userinfo, not "snsapi_login"`},
		{"bad user_id", "user_id email", `user_id must be openid or unionid, not "email"`},
		{"short session key", "session_key short", "session_key 2 is 5 bytes, need at least 32"},
	}
	adapter := caddyconfig.GetAdapter("caddyfile")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := "{\n\tadmin off\n\tauto_https off\n\tstorage file_system " + t.TempDir() + "\n}\n" +
				"http://127.0.0.1:0 {\n\twechat_login {\n" +
				"\t\tapp_id wx0123456789abcdef\n\t\tapp_secret secret0123\n\t\ttoken tok123\n" +
				"\t\tsession_key validate-test-session-key-0123456789\n" +
				"\t\trevocation_file " + filepath.Join(t.TempDir(), "logouts") + "\n" +
				"\t\t" + tc.options + "\n\t}\n\trespond ok\n}\n"
			out, warnings, err := adapter.Adapt([]byte(src), map[string]any{"filename": "Caddyfile"})
			if err != nil {
				t.Fatalf("adapt: %v", err)
			}
			for _, w := range warnings {
				t.Errorf("warning: %s", w.String())
			}
			var cfg caddy.Config
			if err := json.Unmarshal(out, &cfg); err != nil {
				t.Fatal(err)
			}
			err = caddy.Validate(&cfg)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("validate: error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}
