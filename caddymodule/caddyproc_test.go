package caddymodule

import (
	"bytes"
	"context"
	"errors"
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

// freePort returns a loopback port that stays reserved until the test ends
// (see reservePort): no other process can pick it in the meantime, while
// Caddy can bind it whenever it likes, as often as it likes (a restart
// comes back on the same ports).
func freePort(t *testing.T) int {
	t.Helper()
	port, release, err := reservePort()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	return port
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
	exited  chan struct{} // closed once cmd has exited
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
	p := &caddyProc{t: t, bin: caddyBinary(t), dir: t.TempDir(), globals: globals}
	p.config = filepath.Join(p.dir, "Caddyfile")
	p.env = append(os.Environ(),
		"HOME="+p.dir, "XDG_DATA_HOME="+p.dir, "XDG_CONFIG_HOME="+p.dir)
	p.env = append(p.env, env...)
	t.Cleanup(p.stop)
	// The ports are reserved, but where that is not possible (see
	// reservePort) another process may still bind one of them first: Caddy
	// then exits at once, and starts again on other ports.
	for attempt := 1; ; attempt++ {
		admin, port := freePort(t), freePort(t)
		for port == admin { // possible only where ports cannot be reserved
			port = freePort(t)
		}
		p.admin = fmt.Sprintf("127.0.0.1:%d", admin)
		p.BaseURL = fmt.Sprintf("http://127.0.0.1:%d", port)
		p.logs = &syncBuffer{}
		p.writeConfig(site)
		err := p.start()
		if err == nil {
			return p
		}
		if !errors.Is(err, errPortTaken) || attempt == 3 {
			t.Fatalf("%v\n%s", err, p.logs)
		}
		t.Logf("%v; starting again on other ports", err)
	}
}

var errPortTaken = errors.New("a port was taken by another process")

// run starts the Caddy process and waits for its site.
func (p *caddyProc) run() {
	t := p.t
	t.Helper()
	if err := p.start(); err != nil {
		t.Fatalf("%v\n%s", err, p.logs)
	}
}

// start runs the Caddy process and returns once its configuration is
// loaded, every listener bound: at that point `caddy run --pingback` echoes
// its standard input to an address of ours. It fails as soon as Caddy
// exits, with errPortTaken if a port was not free.
func (p *caddyProc) start() error {
	ping, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ping.Close()
	const hello = "caddy is up"
	pinged := make(chan struct{})
	go func() {
		for {
			c, err := ping.Accept()
			if err != nil {
				return
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			var b bytes.Buffer
			_, _ = b.ReadFrom(c)
			c.Close()
			if b.String() == hello {
				close(pinged)
				return
			}
		}
	}()

	cmd := exec.Command(p.bin, "run", "--config", p.config, "--adapter", "caddyfile", "--pingback", ping.Addr().String())
	cmd.Env = p.env
	cmd.Stdin = strings.NewReader(hello)
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	p.cmd, p.exited = cmd, exited

	select {
	case <-pinged:
		return nil
	case <-exited:
		if strings.Contains(p.logs.String(), "address already in use") {
			return fmt.Errorf("caddy could not bind its ports: %w", errPortTaken)
		}
		return fmt.Errorf("caddy exited at start: %v", cmd.ProcessState)
	case <-time.After(30 * time.Second):
		p.stop()
		return errors.New("caddy did not start within 30s")
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
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
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
