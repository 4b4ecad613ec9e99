package redistest

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestStartStopRestart(t *testing.T) {
	s := Start(t)
	if err := ping(s.Addr()); err != nil {
		t.Fatalf("PING after Start: %v", err)
	}
	if want := "redis://" + s.Addr() + "/0"; s.URL() != want {
		t.Errorf("URL() = %q, want %q", s.URL(), want)
	}
	if !strings.HasPrefix(s.Addr(), "127.0.0.1:") {
		t.Errorf("Addr() = %q, want a loopback address", s.Addr())
	}

	s.Stop()
	if err := ping(s.Addr()); err == nil {
		t.Fatal("PING answered after Stop")
	}
	s.Stop() // a second Stop is harmless

	addr := s.Addr()
	s.Restart()
	if s.Addr() != addr {
		t.Fatalf("Restart moved the server from %s to %s", addr, s.Addr())
	}
	if err := ping(s.Addr()); err != nil {
		t.Fatalf("PING after Restart: %v", err)
	}
	// Restart of a running server replaces it.
	s.Restart()
	if err := ping(s.Addr()); err != nil {
		t.Fatalf("PING after second Restart: %v", err)
	}
}

func TestPauseResume(t *testing.T) {
	s := Start(t)
	s.Pause()
	start := time.Now()
	if err := ping(s.Addr()); err == nil {
		t.Fatal("PING answered while paused")
	}
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Errorf("PING to a paused server failed after %s; want a timeout, not a refusal", d)
	}
	s.Resume()
	if err := ping(s.Addr()); err != nil {
		t.Fatalf("PING after Resume: %v", err)
	}
	// Stopping a paused server must not hang.
	s.Pause()
	s.Stop()
}

func TestServersIndependent(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.Addr() == b.Addr() {
		t.Fatalf("two servers share %s", a.Addr())
	}
	a.Stop()
	if err := ping(b.Addr()); err != nil {
		t.Fatalf("stopping one server broke the other: %v", err)
	}
}

// outcomeTB records how Start gave up instead of ending the real test.
type outcomeTB struct {
	testing.TB
	skipped, fatal string
}

func (o *outcomeTB) Skip(args ...any) {
	o.skipped = fmt.Sprint(args...)
	runtime.Goexit()
}

func (o *outcomeTB) Fatal(args ...any) {
	o.fatal = fmt.Sprint(args...)
	runtime.Goexit()
}

func TestMissingBinary(t *testing.T) {
	tests := []struct {
		ci       string
		wantSkip bool
	}{
		{"", true},
		{"false", true},
		{"true", false},
	}
	for _, tc := range tests {
		t.Run("CI="+tc.ci, func(t *testing.T) {
			t.Setenv("PATH", t.TempDir())
			t.Setenv("CI", tc.ci)
			o := &outcomeTB{TB: t}
			done := make(chan struct{})
			go func() {
				defer close(done)
				Start(o)
				t.Error("Start returned without redis-server in PATH")
			}()
			<-done
			got := o.fatal
			if tc.wantSkip {
				got = o.skipped
			}
			if !strings.Contains(got, Binary) {
				t.Errorf("skipped %q, failed %q; want the %s, naming %s", o.skipped, o.fatal,
					map[bool]string{true: "skip", false: "failure"}[tc.wantSkip], Binary)
			}
		})
	}
}

// TestSentinelFailover: the Sentinels of a group promote the replica when
// the primary is killed, and a rejoined primary becomes its replica.
func TestSentinelFailover(t *testing.T) {
	g := StartSentinel(t, 1)
	if got, want := g.URL(), "redis-sentinel://"+g.Sentinels[0].Addr()+"/0?master_name="+MasterName; got != want {
		t.Errorf("URL() = %q, want %q", got, want)
	}
	p, err := g.Primary()
	if err != nil || p != g.Servers[0] {
		t.Fatalf("Primary() = %v, %v; want the first server", p, err)
	}
	if _, err := Command(p.Addr(), "SET", "k", "v"); err != nil {
		t.Fatal(err)
	}
	// Replication is asynchronous: a write can be acknowledged and die
	// with the primary. Kill it once the replica has the key.
	if err := waitUntil(5*time.Second, func() error {
		got, err := Command(g.Servers[1].Addr(), "GET", "k")
		if err == nil && (len(got) != 1 || got[0] != "v") {
			err = fmt.Errorf("replica has %q", got)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	p.Stop()
	promoted, err := g.WaitFailover(p, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("failover took %s", time.Since(start).Round(time.Millisecond))
	if promoted != g.Servers[1] {
		t.Fatalf("promoted %s, want the replica", promoted.Addr())
	}
	if got, err := Command(promoted.Addr(), "GET", "k"); err != nil || len(got) != 1 || got[0] != "v" {
		t.Fatalf("GET on the promoted replica = %q, %v", got, err)
	}
	if err := g.Rejoin(p); err != nil {
		t.Fatal(err)
	}
	if err := g.Ready(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	if got, err := Command(p.Addr(), "GET", "k"); err != nil || len(got) != 1 || got[0] != "v" {
		t.Fatalf("GET on the rejoined server = %q, %v", got, err)
	}
}

// TestCluster: the three nodes share the slots, a key lives on the node
// NodeFor names, and a node restarted with its append-only file comes
// back with its keys while the others go on serving.
func TestCluster(t *testing.T) {
	c := StartCluster(t, WithAppendOnly("always"))
	if !strings.HasPrefix(c.URL(), "redis-cluster://127.0.0.1:") || strings.Count(c.URL(), ",") != 2 {
		t.Errorf("URL() = %q", c.URL())
	}
	seen := map[*Server]string{}
	for i := 0; len(seen) < 3 && i < 1000; i++ {
		key := fmt.Sprintf("key%d", i)
		n, err := c.NodeFor(key)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := seen[n]; ok {
			continue
		}
		seen[n] = key
		if _, err := Command(n.Addr(), "SET", key, "v"); err != nil {
			t.Fatalf("SET %s on the node NodeFor names: %v", key, err)
		}
		if _, err := Command(c.Nodes[(slices.Index(c.Nodes, n)+1)%3].Addr(), "GET", key); err == nil || !strings.Contains(err.Error(), ": MOVED ") {
			t.Fatalf("GET %s on another node = %v, want MOVED", key, err)
		}
	}
	if len(seen) != 3 {
		t.Fatalf("keys landed on %d nodes", len(seen))
	}
	down := c.Nodes[1]
	down.Stop()
	other := c.Nodes[0]
	if _, err := Command(other.Addr(), "SET", seen[other], "w"); err != nil {
		t.Fatalf("a node's slots while another is down: %v", err)
	}
	down.Restart()
	if err := c.Healthy(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	if got, err := Command(down.Addr(), "GET", seen[down]); err != nil || len(got) != 1 || got[0] != "v" {
		t.Fatalf("GET on the restarted node = %q, %v", got, err)
	}
}

func TestCommand(t *testing.T) {
	s := Start(t)
	for _, tc := range []struct {
		args []string
		want []string
		err  string
	}{
		{[]string{"PING"}, []string{"PONG"}, ""},
		{[]string{"SET", "k", "a b\r\nc"}, []string{"OK"}, ""},
		{[]string{"GET", "k"}, []string{"a b\r\nc"}, ""},
		{[]string{"GET", "missing"}, nil, ""},
		{[]string{"INCR", "n"}, []string{"1"}, ""},
		{[]string{"RPUSH", "l", "x", "y"}, []string{"2"}, ""},
		{[]string{"LRANGE", "l", "0", "-1"}, []string{"x", "y"}, ""},
		{[]string{"NOSUCHCOMMAND"}, nil, "ERR unknown command"},
	} {
		got, err := Command(s.Addr(), tc.args...)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%q = %q, %v; want %q", tc.args, got, err, tc.want)
		}
	}
}
