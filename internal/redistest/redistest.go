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
// When redis-server is not installed the test is skipped, except in CI
// (CI=true), where a missing dependency fails the test instead of hiding
// it. scripts/install-test-deps installs it.
package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
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
	t    testing.TB
	bin  string
	dir  string
	port int
	opts options

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
}

// Start starts a redis-server on a free loopback port and waits until it
// answers PING. It is stopped when t and its subtests finish.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	bin, err := exec.LookPath(Binary)
	if err != nil {
		msg := fmt.Sprintf("redistest: %s not found in PATH; run scripts/install-test-deps", Binary)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir()}
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
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--daemonize", "no",
		"--dir", s.dir,
		"--logfile", logFile,
	}
	if s.opts.appendFsync == "" {
		args = append(args, "--appendonly", "no")
	} else {
		args = append(args, "--appendonly", "yes", "--appendfsync", s.opts.appendFsync)
	}
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
