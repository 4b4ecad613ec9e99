// Package redistest runs a real redis-server for tests: one process per
// call to Start, on a free loopback port, with its own temporary directory,
// stopped when the test ends. Persistence is off unless WithAppendOnly asks
// for the append-only file, so that what Redis acknowledged survives Stop
// and Restart.
//
// A fake Redis cannot show what a client does when the server dies, hangs
// or comes back, so the Redis store's fault tests run against the real
// binary. Stop, Restart, Pause and Resume drive those faults.
//
// StartSentinel runs a primary, a replica and Sentinels (redis-server
// --sentinel, so no other package is needed) that fail over when the
// primary dies; StartCluster runs a three-node Redis Cluster, its slots
// assigned without redis-cli. Command talks to any of them without a
// client library.
//
// When redis-server is not installed the test is skipped, except in CI
// (CI=true), where a missing dependency fails the test instead of hiding
// it. scripts/install-test-deps installs it.
package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Binary is the name of the server executable looked up in PATH.
const Binary = "redis-server"

const (
	// startTimeout bounds how long a new server may take to answer PING.
	startTimeout = 10 * time.Second
	// startAttempts is how often Start picks a new port when the server
	// exits at once, which is what it does when another process took the
	// port between our probe and its bind.
	startAttempts = 3
	// logTail is how much of the server's log a failure message quotes.
	logTail = 2 << 10
)

// Option changes how Start runs the server.
type Option func(*options)

type options struct {
	// appendFsync is the appendfsync policy of the append-only file;
	// empty means no persistence at all.
	appendFsync string
}

// role is what a Server runs as.
type role int

const (
	roleStandalone role = iota // a plain server, or a Sentinel group's data server
	roleSentinel               // a Sentinel
	roleCluster                // a Cluster node, with a second port for the cluster bus
)

// WithAppendOnly turns the append-only file (AOF) on, with fsync as its
// appendfsync policy: "always" (every write is on disk before Redis
// answers it), "everysec" (up to a second of acknowledged writes can be
// lost in a crash) or "no". The file lives in the server's directory, so
// a server stopped with Stop, even by SIGKILL, comes back from Restart
// with what it had.
func WithAppendOnly(fsync string) Option {
	return func(o *options) { o.appendFsync = fsync }
}

// Server is one running redis-server. Its methods are safe for concurrent
// use.
type Server struct {
	t       testing.TB
	bin     string
	dir     string
	port    int
	busPort int // a Cluster node's cluster bus port
	opts    options
	role    role
	// conf is written to the server's config file before its first start;
	// later starts read the file as the server left it (Sentinel rewrites
	// it, and so does CONFIG REWRITE, which a Sentinel sends a server it
	// reconfigures), as a supervised server's restart would.
	conf func(s *Server) string
	// nextArgs are added to the command line of the next start only.
	nextArgs []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
}

// Start starts a redis-server on a free loopback port and waits until it
// answers PING. It is stopped when t and its subtests finish.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	return start(t, roleStandalone, nil, opts...)
}

// lookPath finds redis-server, or skips the test (fails it under CI).
func lookPath(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath(Binary)
	if err != nil {
		msg := fmt.Sprintf("redistest: %s not found in PATH; run scripts/install-test-deps", Binary)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return bin
}

// requireMajor skips the test (fails it under CI) unless redis-server is
// at least version major.
func requireMajor(t testing.TB, major int, why string) {
	t.Helper()
	bin := lookPath(t)
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("redistest: %s --version: %v", bin, err)
	}
	// "Redis server v=7.0.15 sha=..."
	_, v, _ := strings.Cut(string(out), "v=")
	got, err := strconv.Atoi(strings.SplitN(v, ".", 2)[0])
	if err != nil {
		t.Fatalf("redistest: cannot read the version in %q", out)
	}
	if got < major {
		msg := fmt.Sprintf("redistest: %s needs Redis %d or later, %s is %d; run scripts/install-test-deps", why, major, bin, got)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// start starts one server as r, with conf (if not nil) as its config file.
func start(t testing.TB, r role, conf func(*Server) string, opts ...Option) *Server {
	t.Helper()
	bin := lookPath(t)
	s := &Server{t: t, bin: bin, dir: t.TempDir(), role: r, conf: conf}
	for _, o := range opts {
		o(&s.opts)
	}
	switch s.opts.appendFsync {
	case "", "always", "everysec", "no":
	default:
		t.Fatalf("redistest: appendfsync %q is not always, everysec or no", s.opts.appendFsync)
	}
	t.Cleanup(s.Stop)

	var lastErr error
	for range startAttempts {
		port, err := freePort()
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		s.port = port
		if r == roleCluster {
			if s.busPort, err = freePort(); err != nil {
				t.Fatalf("redistest: %v", err)
			}
		}
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	t.Fatalf("redistest: %v", lastErr)
	return nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Addr returns the server's host:port.
func (s *Server) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// Dir returns the server's working directory, which holds its log and,
// with WithAppendOnly, its append-only file.
func (s *Server) Dir() string { return s.dir }

// URL returns a redis:// URL for database 0 of the server.
func (s *Server) URL() string {
	return "redis://" + s.Addr() + "/0"
}

// Stop kills the server with SIGKILL, as a crash would, and waits for it
// to exit. Everything it held in memory is lost; with WithAppendOnly, what
// reached the append-only file comes back on Restart. Stopping a stopped
// server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *Server) stopLocked() {
	if s.cmd == nil {
		return
	}
	// A paused process dies from SIGKILL too; no need to resume it.
	if err := s.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		s.t.Errorf("redistest: kill redis-server (pid %d): %v", s.cmd.Process.Pid, err)
	}
	<-s.exited
	s.cmd, s.exited = nil, nil
}

// Restart stops the server if it is running and starts a new one on the
// same port and directory, as after a crash and a restart by a supervisor.
// The new server is empty unless WithAppendOnly was given; then it has
// loaded the append-only file when Restart returns.
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.TryRestart(); err != nil {
		s.t.Fatalf("redistest: %v", err)
	}
}

// TryRestart is Restart that returns its error instead of failing the
// test, for goroutines other than the test's own (a chaos loop), which
// must not call t.Fatal.
func (s *Server) TryRestart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
	// The old process is gone, but a client may still hold the port for
	// a moment in a state that blocks bind; retry briefly.
	var err error
	for range startAttempts {
		if err = s.startLocked(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("restart on port %d: %w", s.port, err)
}

// Pause stops the server process with SIGSTOP: connections stay open and
// new ones are accepted by the kernel, but nothing is answered, as with a
// hung server or a network that drops packets. The test is skipped where
// processes cannot be paused.
func (s *Server) Pause() {
	s.t.Helper()
	s.signal(sigStop)
}

// Resume continues a paused server with SIGCONT.
func (s *Server) Resume() {
	s.t.Helper()
	s.signal(sigCont)
}

func (s *Server) signal(sig os.Signal) {
	s.t.Helper()
	if sig == nil {
		s.t.Skip("redistest: pausing a process is not supported on this system")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.t.Fatalf("redistest: %v sent to a stopped server", sig)
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("redistest: signal redis-server: %v", err)
	}
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.startLocked()
}

// startLocked starts the process and waits until it answers PING.
func (s *Server) startLocked() error {
	logFile := filepath.Join(s.dir, "redis.log")
	confFile := filepath.Join(s.dir, "redis.conf")
	if _, err := os.Stat(confFile); errors.Is(err, fs.ErrNotExist) {
		var conf string
		if s.conf != nil {
			conf = s.conf(s)
		}
		if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
			return fmt.Errorf("write %s: %w", confFile, err)
		}
	}
	// Command-line settings override the file's, on every start.
	args := []string{confFile}
	if s.role == roleSentinel {
		args = append(args, "--sentinel")
	}
	args = append(args,
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--daemonize", "no",
		"--dir", s.dir,
		"--logfile", logFile,
	)
	if s.role != roleSentinel {
		args = append(args, "--save", "")
		if s.opts.appendFsync == "" {
			args = append(args, "--appendonly", "no")
		} else {
			args = append(args, "--appendonly", "yes", "--appendfsync", s.opts.appendFsync)
		}
	}
	if s.role == roleCluster {
		args = append(args,
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf", // in dir, kept across restarts
			"--cluster-port", strconv.Itoa(s.busPort),
			"--cluster-node-timeout", strconv.Itoa(int(clusterNodeTimeout/time.Millisecond)),
		)
	}
	args = append(args, s.nextArgs...)
	cmd := exec.Command(s.bin, args...)
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	exited := make(chan struct{})
	// The only goroutine here; it ends when the process does, which
	// Stop (run by t.Cleanup at the latest) brings about.
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.cmd, s.exited = cmd, exited

	deadline := time.Now().Add(startTimeout)
	for {
		err := ping(s.Addr())
		if err == nil {
			s.nextArgs = nil
			return nil
		}
		select {
		case <-exited:
			s.cmd, s.exited = nil, nil
			return fmt.Errorf("redis-server on port %d exited during start-up; its log ends:\n%s", s.port, tail(logFile))
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stopLocked()
			return fmt.Errorf("redis-server on port %d did not answer PING within %s (%v); its log ends:\n%s",
				s.port, startTimeout, err, tail(logFile))
		}
	}
}

// ping sends one inline PING and expects +PONG, without a client library.
func ping(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	// While loading, Redis answers -LOADING; keep waiting then.
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

// tail returns the end of the file at path, for failure messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if len(b) > logTail {
		b = b[len(b)-logTail:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}
