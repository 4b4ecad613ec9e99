package caddymodule

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/internal/caddytest"
)

// These helpers run the real Caddy binary of this repository (cmd/caddy) as
// a separate process, the way operators run it (see caddytest), under the
// names this package's tests use.

func TestMain(m *testing.M) { caddytest.Main(m) }

// freePort returns a loopback port reserved until the test ends.
var freePort = caddytest.FreePort

// caddyProc is one running Caddy.
type caddyProc struct {
	*caddytest.Proc
	t     *testing.T
	admin string       // the admin API's host:port
	logs  fmt.Stringer // what Caddy wrote to stdout and stderr
}

// procLog reads a Proc's log when asked, so that it is never out of date.
type procLog struct{ p *caddytest.Proc }

func (l procLog) String() string { return l.p.Log() }

// startCaddy runs Caddy with site (a Caddyfile site body) served at
// BaseURL.
func startCaddy(t *testing.T, site string, env ...string) *caddyProc {
	t.Helper()
	return startCaddyGlobals(t, "", site, env...)
}

// startCaddyGlobals is startCaddy with extra global options (for example a
// servers block with trusted_proxies).
func startCaddyGlobals(t *testing.T, globals, site string, env ...string) *caddyProc {
	t.Helper()
	p := caddytest.StartGlobals(t, globals, site, env...)
	return &caddyProc{Proc: p, t: t, admin: p.Admin, logs: procLog{p}}
}

func (c *caddyProc) reload(site string) { c.t.Helper(); c.Reload(site) }
func (c *caddyProc) restart()           { c.t.Helper(); c.Restart() }
func (c *caddyProc) stop()              { c.Stop() }

// runCaddy runs a caddy subcommand and returns its combined output.
func runCaddy(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, caddytest.Binary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// client is a browser-like client for a Caddy site.
type client struct {
	t    *testing.T
	base string
	hc   *http.Client
}

func newClient(t *testing.T, base string) *client {
	jar, _ := cookiejar.New(nil)
	return &client{t: t, base: base, hc: &http.Client{
		Jar:           jar,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

func (c *client) do(method, path string, body io.Reader, hdr ...string) (*http.Response, string) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}
