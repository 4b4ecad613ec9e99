package middleware_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The protocol package and the middleware must stay usable without Caddy:
// only caddymodule may import it.
func TestNoCaddyImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-test",
		"github.com/wechat-login/caddy-wechat-login/wechat/...",
		"github.com/wechat-login/caddy-wechat-login/middleware/...",
	).CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list returned too few packages to be believable: %v", deps)
	}
	for _, dep := range deps {
		if strings.Contains(dep, "caddyserver") {
			t.Errorf("wechat or middleware depends on %s; only caddymodule may import Caddy", dep)
		}
	}
}
