package caddymodule

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// These helpers run the real Caddy binary of this repository (cmd/caddy) as
// a separate process, the way operators run it.

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// caddyBinary builds cmd/caddy once per test run.
func caddyBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs a Caddy binary; skipped with -short")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "wechat-login-caddy-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "caddy")
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Dir(filepath.Dir(file))
		cmd := exec.Command("go", "build", "-o", builtBin, "./cmd/caddy")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/caddy: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// caddyProc is one running Caddy.
type caddyProc struct {
	t       *testing.T
	bin     string
	dir     string
	config  string
	admin   string
	BaseURL string // http://127.0.0.1:<port>
	cmd     *exec.Cmd
	logs    *syncBuffer
	env     []string
	globals string // extra global options
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startCaddy runs Caddy with site (a Caddyfile site body) served at
// BaseURL. In site, SITE stands for the site address.
func startCaddy(t *testing.T, site string, env ...string) *caddyProc {
	t.Helper()
	return startCaddyGlobals(t, "", site, env...)
}

// startCaddyGlobals is startCaddy with extra global options (for example a
// servers block with trusted_proxies).
func startCaddyGlobals(t *testing.T, globals, site string, env ...string) *caddyProc {
	t.Helper()
	p := &caddyProc{t: t, bin: caddyBinary(t), dir: t.TempDir(), logs: &syncBuffer{}, globals: globals}
	port := freePort(t)
	p.admin = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p.BaseURL = fmt.Sprintf("http://127.0.0.1:%d", port)
	p.config = filepath.Join(p.dir, "Caddyfile")
	p.env = append(os.Environ(),
		"HOME="+p.dir, "XDG_DATA_HOME="+p.dir, "XDG_CONFIG_HOME="+p.dir)
	p.env = append(p.env, env...)
	p.writeConfig(site)
	t.Cleanup(p.stop)
	p.run()
	return p
}

// run starts the Caddy process and waits for its site.
func (p *caddyProc) run() {
	t := p.t
	t.Helper()
	p.cmd = exec.Command(p.bin, "run", "--config", p.config, "--adapter", "caddyfile")
	p.cmd.Env = p.env
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if resp, err := http.Get("http://" + p.admin + "/config/"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy did not start:\n%s", p.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The admin endpoint comes up before the config's servers finish.
	for {
		if c, err := net.Dial("tcp", strings.TrimPrefix(p.BaseURL, "http://")); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy's site did not start:\n%s", p.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *caddyProc) writeConfig(site string) {
	p.t.Helper()
	cfg := fmt.Sprintf("{\n\tadmin %s\n\tauto_https off\n\tpersist_config off\n\tgrace_period 1s\n%s\n}\n\n%s {\n%s\n}\n",
		p.admin, p.globals, p.BaseURL, site)
	if err := os.WriteFile(p.config, []byte(cfg), 0o600); err != nil {
		p.t.Fatal(err)
	}
}

// reload replaces the site's configuration with `caddy reload`, as an
// operator would.
func (p *caddyProc) reload(site string) {
	p.t.Helper()
	p.writeConfig(site)
	cmd := exec.Command(p.bin, "reload", "--config", p.config, "--adapter", "caddyfile", "--address", p.admin)
	cmd.Env = p.env
	if out, err := cmd.CombinedOutput(); err != nil {
		p.t.Fatalf("caddy reload: %v\n%s\n%s", err, out, p.logs)
	}
}

// restart stops Caddy and runs it again with the same configuration, data
// directory and ports, as a service manager would.
func (p *caddyProc) restart() {
	p.t.Helper()
	p.stop()
	p.run()
}

func (p *caddyProc) stop() {
	if p.cmd.Process == nil || p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
	if p.t.Failed() {
		p.t.Logf("caddy logs:\n%s", p.logs)
	}
}

// runCaddy runs a caddy subcommand and returns its combined output.
func runCaddy(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, caddyBinary(t), args...)
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
