package e2e

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

// The few helpers the browser tests need to run this repository's Caddy
// (../cmd/caddy) as a separate process, the way operators run it. The
// caddymodule package's tests have fuller ones; these stay small on purpose.

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

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if builtBin != "" {
		_ = os.RemoveAll(filepath.Dir(builtBin))
	}
	os.Exit(code)
}

// caddyBinary builds ../cmd/caddy once per test run, in the root module:
// the Caddy under test is the plugin's, with the plugin's own dependencies.
func caddyBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs a Caddy binary; skipped with -short")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "wechat-login-e2e-caddy-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "caddy")
		_, file, _, _ := runtime.Caller(0)
		cmd := exec.Command("go", "build", "-o", builtBin, "./cmd/caddy")
		cmd.Dir = filepath.Dir(filepath.Dir(file))
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
// (see reservePort), so that no other process picks it in the meantime.
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
	config  string
	admin   string
	BaseURL string // http://127.0.0.1:<port>
	env     []string
	cmd     *exec.Cmd
	exited  chan struct{}
	logs    *syncBuffer
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

var errPortTaken = errors.New("a port was taken by another process")

// startCaddy runs Caddy with site (a Caddyfile site body) served at
// BaseURL. If another process took one of its ports first, it starts again
// on new ones.
func startCaddy(t *testing.T, site string, env ...string) *caddyProc {
	t.Helper()
	dir := t.TempDir()
	p := &caddyProc{t: t, bin: caddyBinary(t), config: filepath.Join(dir, "Caddyfile")}
	p.env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	p.env = append(p.env, env...)
	t.Cleanup(p.stop)
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

func (p *caddyProc) writeConfig(site string) {
	p.t.Helper()
	cfg := fmt.Sprintf("{\n\tadmin %s\n\tauto_https off\n\tpersist_config off\n\tgrace_period 1s\n}\n\n%s {\n%s\n}\n",
		p.admin, p.BaseURL, site)
	if err := os.WriteFile(p.config, []byte(cfg), 0o600); err != nil {
		p.t.Fatal(err)
	}
}

// start runs the Caddy process and returns once its configuration is
// loaded, every listener bound: Caddy's --pingback echoes its standard input
// to an address of ours at that point.
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
