// Package caddytest runs this repository's Caddy (cmd/caddy, with the
// plugin) as a separate process for tests, the way operators run it: built
// once per test binary, configured by a Caddyfile, started, reloaded with
// `caddy reload`, restarted and stopped like a service. Each Caddy gets
// its own data directory and loopback ports reserved for the whole test,
// and is stopped when the test ends.
//
// The caddymodule tests and the browser tests of the e2e module both use
// it, so that a fix to how Caddy is run reaches both.
package caddytest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// Main runs the tests of m and then removes the Caddy binary that Binary
// built for them. A package's TestMain calls it; without it the binary
// stays behind in the temporary directory.
func Main(m *testing.M) {
	code := m.Run()
	if builtBin != "" {
		_ = os.RemoveAll(filepath.Dir(builtBin))
	}
	os.Exit(code)
}

// Binary builds cmd/caddy once per test binary, in the root module (the
// Caddy under test is the plugin's, with the plugin's own dependencies,
// whichever module the test is in), and returns its path. With -short the
// test is skipped instead.
func Binary(t testing.TB) string {
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
		cmd := exec.Command("go", "build", "-o", builtBin, "./cmd/caddy")
		cmd.Dir = filepath.Dir(filepath.Dir(filepath.Dir(file)))
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/caddy: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// FreePort returns a loopback port that stays reserved until the test ends
// (see reservePort): no other process can pick it in the meantime, while
// Caddy can bind it whenever it likes, as often as it likes (a restart
// comes back on the same ports).
func FreePort(t testing.TB) int {
	t.Helper()
	port, release, err := reservePort()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	return port
}

// Proc is one Caddy process. Its ports and data directory are its own for
// the whole test, across Restart.
type Proc struct {
	BaseURL string // the site: http://127.0.0.1:<port>
	Admin   string // the admin API (/metrics, /debug/pprof): 127.0.0.1:<port>

	t       testing.TB
	bin     string
	config  string
	globals string
	env     []string
	cmd     *exec.Cmd
	exited  chan struct{} // closed once cmd has exited
	logs    *logBuffer
}

// logBuffer holds what Caddy writes to its stdout and stderr, which the
// test reads while Caddy is still writing.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *logBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *logBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Start runs Caddy with site (a Caddyfile site body) served at BaseURL,
// and returns once it is up. env is added to the test's environment; HOME
// and the XDG directories point to a directory of this Caddy's own, so
// that its data (certificates, the embedded store's files) stays out of
// the real home and goes with the test. Caddy is stopped when the test
// ends.
func Start(t testing.TB, site string, env ...string) *Proc {
	t.Helper()
	return StartGlobals(t, "", site, env...)
}

// StartGlobals is Start with extra global options (for example a servers
// block with trusted_proxies).
func StartGlobals(t testing.TB, globals, site string, env ...string) *Proc {
	t.Helper()
	dir := t.TempDir()
	p := &Proc{t: t, bin: Binary(t), config: filepath.Join(dir, "Caddyfile"), globals: globals}
	p.env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	p.env = append(p.env, env...)
	t.Cleanup(p.Stop)
	// The ports are reserved, but where that is not possible (see
	// reservePort) another process may still bind one of them first: Caddy
	// then exits at once, and starts again on other ports.
	for attempt := 1; ; attempt++ {
		admin, port := FreePort(t), FreePort(t)
		for port == admin { // possible only where ports cannot be reserved
			port = FreePort(t)
		}
		p.Admin = fmt.Sprintf("127.0.0.1:%d", admin)
		p.BaseURL = fmt.Sprintf("http://127.0.0.1:%d", port)
		p.logs = &logBuffer{}
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

// Log returns everything Caddy has written to its stdout and stderr so
// far, across restarts.
func (p *Proc) Log() string { return p.logs.String() }

// Pid returns the process ID of the running Caddy (or of the last one).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

func (p *Proc) writeConfig(site string) {
	p.t.Helper()
	globals := ""
	if p.globals != "" {
		globals = p.globals + "\n"
	}
	cfg := fmt.Sprintf("{\n\tadmin %s\n\tauto_https off\n\tpersist_config off\n\tgrace_period 1s\n%s}\n\n%s {\n%s\n}\n",
		p.Admin, globals, p.BaseURL, site)
	if err := os.WriteFile(p.config, []byte(cfg), 0o600); err != nil {
		p.t.Fatal(err)
	}
}

// start runs the Caddy process and returns once its configuration is
// loaded, every listener bound: at that point `caddy run --pingback` echoes
// its standard input to an address of ours. It fails as soon as Caddy
// exits, with errPortTaken if a port was not free.
func (p *Proc) start() error {
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
		p.Stop()
		return errors.New("caddy did not start within 30s")
	}
}

// Reload replaces the site's configuration with `caddy reload`, as an
// operator would.
func (p *Proc) Reload(site string) {
	p.t.Helper()
	p.writeConfig(site)
	cmd := exec.Command(p.bin, "reload", "--config", p.config, "--adapter", "caddyfile", "--address", p.Admin)
	cmd.Env = p.env
	if out, err := cmd.CombinedOutput(); err != nil {
		p.t.Fatalf("caddy reload: %v\n%s\n%s", err, out, p.logs)
	}
}

// Restart stops Caddy and runs it again with the same configuration, data
// directory and ports, as a service manager would.
func (p *Proc) Restart() {
	p.t.Helper()
	p.Stop()
	if err := p.start(); err != nil {
		p.t.Fatalf("%v\n%s", err, p.logs)
	}
}

// Stop interrupts Caddy, as Ctrl-C would, and waits for it to exit; after
// 10s it kills it. Stopping a stopped Caddy does nothing. If the test has
// failed, Caddy's log goes to the test's.
func (p *Proc) Stop() {
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
