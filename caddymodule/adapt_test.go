package caddymodule

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
