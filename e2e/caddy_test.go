package e2e

import (
	"testing"

	"github.com/wechat-login/caddy-wechat-login/internal/caddytest"
)

// The browser tests run this repository's Caddy (../cmd/caddy) as a
// separate process, the way operators run it (see caddytest).

// The fake WeChat app the screenshots are taken against.
const (
	itAppID  = "wx00000000000000aa"
	itSecret = "integration-secret-0123456789"
	itToken  = "integrationtoken"
	itAESKey = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
)

var itEnv = []string{
	"IT_WECHAT_SECRET=" + itSecret,
	"IT_WECHAT_AES_KEY=" + itAESKey,
	"IT_SESSION_KEY=integration-session-key-0123456789abcdef",
}

func TestMain(m *testing.M) { caddytest.Main(m) }

// caddyProc is one running Caddy.
type caddyProc struct {
	*caddytest.Proc
	t *testing.T
}

// startCaddy runs Caddy with site (a Caddyfile site body) served at
// BaseURL.
func startCaddy(t *testing.T, site string, env ...string) *caddyProc {
	t.Helper()
	return &caddyProc{Proc: caddytest.Start(t, site, env...), t: t}
}

func (c *caddyProc) reload(site string) { c.t.Helper(); c.Reload(site) }
