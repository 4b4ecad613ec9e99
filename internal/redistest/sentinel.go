package redistest

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// MasterName is the name the Sentinels of StartSentinel monitor the
// primary by.
const MasterName = "wechat-login"

// Failover timing of StartSentinel's Sentinels: a primary that has not
// answered for sentinelDownAfter is down, and a Sentinel that started a
// failover that has not completed tries again after twice
// sentinelFailoverTimeout. Production values are 30 s and 3 min; these
// make a failover take two or three seconds.
const (
	sentinelDownAfter       = time.Second
	sentinelFailoverTimeout = 3 * time.Second
)

// readyTimeout bounds how long StartSentinel and StartCluster wait for
// the servers to find each other, and Ready for a group to settle.
const readyTimeout = 30 * time.Second

// SentinelGroup is a primary, its replica and the Sentinels that watch
// them, all on loopback ports, stopped when the test ends. The Sentinels
// promote the replica when the primary stops answering.
type SentinelGroup struct {
	t testing.TB

	// Servers holds the data servers: Servers[0] started as the primary,
	// Servers[1] as its replica. Which is the primary now, Primary says.
	Servers []*Server
	// Sentinels holds the Sentinels, redis-server --sentinel processes.
	Sentinels []*Server
}

// StartSentinel starts a primary, a replica of it and sentinels Sentinels
// (one, or three for a realistic quorum of two) monitoring it as
// MasterName, and waits until the replica is in sync and every Sentinel
// knows the replica and the other Sentinels, so that a failover can
// happen at once. opts apply to the data servers; the Sentinels keep their
// state in their config files, across Restart, as real ones do. It needs
// Redis 6.2 or later; skipped (failed under CI) without redis-server.
func StartSentinel(t testing.TB, sentinels int, opts ...Option) *SentinelGroup {
	t.Helper()
	if sentinels < 1 {
		t.Fatalf("redistest: %d Sentinels; want at least one", sentinels)
	}
	g := &SentinelGroup{t: t}
	primary := start(t, roleStandalone, dataConf(nil), opts...)
	replica := start(t, roleStandalone, dataConf(primary), opts...)
	g.Servers = []*Server{primary, replica}
	// Sentinels learn of replicas from the primary's INFO, which they read
	// every ten seconds: start them once the replica is attached, so that
	// their first look finds it.
	if err := waitUntil(readyTimeout, func() error { return replicaInSync(primary, replica) }); err != nil {
		t.Fatalf("redistest: replica never synced: %v", err)
	}
	quorum := sentinels/2 + 1
	conf := func(*Server) string {
		return strings.Join([]string{
			fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d %d", MasterName, primary.port, quorum),
			fmt.Sprintf("sentinel down-after-milliseconds %s %d", MasterName, sentinelDownAfter.Milliseconds()),
			fmt.Sprintf("sentinel failover-timeout %s %d", MasterName, sentinelFailoverTimeout.Milliseconds()),
			fmt.Sprintf("sentinel parallel-syncs %s 1", MasterName),
			"",
		}, "\n")
	}
	for range sentinels {
		g.Sentinels = append(g.Sentinels, start(t, roleSentinel, conf))
	}
	if err := g.Ready(readyTimeout); err != nil {
		t.Fatalf("redistest: Sentinel group not ready: %v", err)
	}
	return g
}

// dataConf is the config file of a Sentinel group's data server: a
// replica of primary, or the primary if primary is nil. Sentinel rewrites
// the file (CONFIG REWRITE) when it reconfigures the server.
func dataConf(primary *Server) func(*Server) string {
	return func(*Server) string {
		// Diskless sync without Redis 7's five-second wait for more
		// replicas: a replica (a restarted primary included) is in sync
		// at once.
		conf := "repl-diskless-sync yes\nrepl-diskless-sync-delay 0\n"
		if primary != nil {
			conf += fmt.Sprintf("replicaof 127.0.0.1 %d\n", primary.port)
		}
		return conf
	}
}

// URL returns the group's redis-sentinel:// URL, database 0, in the form
// middleware/redisstore's Open takes.
func (g *SentinelGroup) URL() string {
	return "redis-sentinel://" + strings.Join(g.SentinelAddrs(), ",") + "/0?master_name=" + MasterName
}

// SentinelAddrs returns the Sentinels' host:port addresses.
func (g *SentinelGroup) SentinelAddrs() []string {
	addrs := make([]string, len(g.Sentinels))
	for i, s := range g.Sentinels {
		addrs[i] = s.Addr()
	}
	return addrs
}

// Primary returns the data server the Sentinels name as the primary now,
// asking each Sentinel in turn until one answers.
func (g *SentinelGroup) Primary() (*Server, error) {
	var lastErr error
	for _, sn := range g.Sentinels {
		s, err := g.primaryOf(sn)
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// primaryOf returns the data server Sentinel sn names as the primary.
func (g *SentinelGroup) primaryOf(sn *Server) (*Server, error) {
	reply, err := Command(sn.Addr(), "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MasterName)
	if err != nil {
		return nil, err
	}
	if len(reply) != 2 {
		return nil, fmt.Errorf("sentinel %s does not know %s", sn.Addr(), MasterName)
	}
	addr := net.JoinHostPort(reply[0], reply[1])
	for _, s := range g.Servers {
		if s.Addr() == addr {
			return s, nil
		}
	}
	return nil, fmt.Errorf("sentinel %s names %s as the primary, which is none of the group's servers", sn.Addr(), addr)
}

// WaitFailover waits up to limit for the Sentinels to have promoted a
// server other than old, and for that server to say it is a primary, and
// returns it.
func (g *SentinelGroup) WaitFailover(old *Server, limit time.Duration) (*Server, error) {
	var promoted *Server
	err := waitUntil(limit, func() error {
		for _, sn := range g.running(g.Sentinels) {
			p, err := g.primaryOf(sn)
			if err != nil {
				return err
			}
			if p == old {
				return fmt.Errorf("sentinel %s still names %s", sn.Addr(), old.Addr())
			}
			promoted = p
		}
		if promoted == nil {
			return fmt.Errorf("no Sentinel is running")
		}
		m, err := info(promoted.Addr(), "replication")
		if err != nil {
			return err
		}
		if m["role"] != "master" {
			return fmt.Errorf("promoted server %s says it is a %s", promoted.Addr(), m["role"])
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("no failover from %s within %s: %w", old.Addr(), limit, err)
	}
	return promoted, nil
}

// Rejoin restarts s, a stopped or running data server, as a replica of
// the current primary, as an orchestrator brings a failed primary back
// (Restart brings it back as a primary, which the Sentinels demote only
// after about eight seconds), and waits until it is in sync and
// acknowledges writes.
func (g *SentinelGroup) Rejoin(s *Server) error {
	p, err := g.Primary()
	if err != nil {
		return err
	}
	if p == s {
		return fmt.Errorf("%s is the primary", s.Addr())
	}
	s.mu.Lock()
	s.nextArgs = []string{"--replicaof", "127.0.0.1", strconv.Itoa(p.port)}
	s.mu.Unlock()
	if err := s.TryRestart(); err != nil {
		return err
	}
	return waitUntil(readyTimeout, func() error {
		if err := replicaInSync(p, s); err != nil {
			return err
		}
		return replicasAcknowledge(p, 1)
	})
}

// Ready waits up to limit until the group can fail over again: all the
// Sentinels name the same primary, every other running data server is its
// replica, in sync and acknowledging writes (WAIT, after a write to
// redistest:wait-probe, which expires in a second), and every running
// Sentinel sees every running replica and enough other Sentinels to
// authorise a failover.
func (g *SentinelGroup) Ready(limit time.Duration) error {
	return waitUntil(limit, func() error {
		sentinels := g.running(g.Sentinels)
		if len(sentinels) == 0 {
			return fmt.Errorf("no Sentinel is running")
		}
		var primary *Server
		for _, sn := range sentinels {
			p, err := g.primaryOf(sn)
			if err != nil {
				return err
			}
			if primary != nil && p != primary {
				return fmt.Errorf("sentinels disagree on the primary: %s and %s", primary.Addr(), p.Addr())
			}
			primary = p
		}
		var replicas []string
		for _, s := range g.running(g.Servers) {
			if s == primary {
				continue
			}
			if err := replicaInSync(primary, s); err != nil {
				return err
			}
			replicas = append(replicas, s.Addr())
		}
		for _, sn := range sentinels {
			if err := sentinelSees(sn, replicas, len(g.Sentinels)); err != nil {
				return err
			}
		}
		return replicasAcknowledge(primary, len(replicas))
	})
}

// waitProbeKey is the key replicasAcknowledge writes, with a time to live
// of a second, to see replicas acknowledge it.
const waitProbeKey = "redistest:wait-probe"

// replicasAcknowledge reports whether n replicas acknowledge a write on
// primary promptly (WAIT), as a store that waits for replicas needs.
// After a diskless sync a replica is online before the primary streams it
// commands, which starts with the replica's first acknowledgement, sent
// once a second: until then WAIT counts it out.
func replicasAcknowledge(primary *Server, n int) error {
	if n == 0 {
		return nil
	}
	replies, err := Commands(primary.Addr(),
		[]string{"SET", waitProbeKey, "1", "PX", "1000"},
		[]string{"WAIT", strconv.Itoa(n), "200"})
	if err != nil {
		return err
	}
	if got := replies[1]; len(got) != 1 || got[0] != strconv.Itoa(n) {
		return fmt.Errorf("primary %s: WAIT %d answered %q", primary.Addr(), n, got)
	}
	return nil
}

// running returns the servers of list that are running.
func (g *SentinelGroup) running(list []*Server) []*Server {
	var out []*Server
	for _, s := range list {
		if s.Running() {
			out = append(out, s)
		}
	}
	return out
}

// replicaInSync reports whether replica is an online replica of primary,
// as both see it.
func replicaInSync(primary, replica *Server) error {
	m, err := info(replica.Addr(), "replication")
	if err != nil {
		return err
	}
	if m["role"] != "slave" || m["master_port"] != strconv.Itoa(primary.port) || m["master_link_status"] != "up" {
		return fmt.Errorf("%s: role %s of port %s, link %s; want an up replica of %s",
			replica.Addr(), m["role"], m["master_port"], m["master_link_status"], primary.Addr())
	}
	p, err := info(primary.Addr(), "replication")
	if err != nil {
		return err
	}
	// slaveN:ip=127.0.0.1,port=6380,state=online,offset=...,lag=0
	for k, v := range p {
		if !strings.HasPrefix(k, "slave") || !strings.Contains(v, "state=") {
			continue
		}
		f := fields(strings.ReplaceAll(v, ",", "\n"), "=")
		if f["port"] == strconv.Itoa(replica.port) && f["state"] == "online" {
			return nil
		}
	}
	return fmt.Errorf("primary %s does not count %s as an online replica yet", primary.Addr(), replica.Addr())
}

// sentinelSees reports whether Sentinel sn sees each of replicas healthy
// and the quorum can be reached.
func sentinelSees(sn *Server, replicas []string, sentinels int) error {
	reply, err := Command(sn.Addr(), "SENTINEL", "REPLICAS", MasterName)
	if err != nil {
		return err
	}
	healthy := map[string]bool{}
	for _, r := range records(reply) {
		if !strings.Contains(r["flags"], "s_down") && !strings.Contains(r["flags"], "disconnected") {
			healthy[net.JoinHostPort(r["ip"], r["port"])] = true
		}
	}
	for _, r := range replicas {
		if !healthy[r] {
			return fmt.Errorf("sentinel %s does not see replica %s healthy", sn.Addr(), r)
		}
	}
	if sentinels > 1 {
		reply, err := Command(sn.Addr(), "SENTINEL", "SENTINELS", MasterName)
		if err != nil {
			return err
		}
		if n := len(records(reply)); n < sentinels-1 {
			return fmt.Errorf("sentinel %s knows %d other Sentinels, want %d", sn.Addr(), n, sentinels-1)
		}
	}
	if _, err := Command(sn.Addr(), "SENTINEL", "CKQUORUM", MasterName); err != nil {
		return fmt.Errorf("sentinel %s: %w", sn.Addr(), err)
	}
	return nil
}

// records splits the flattened reply of SENTINEL REPLICAS or SENTINELS,
// a list of field/value lists each starting with "name", into maps.
func records(reply []string) []map[string]string {
	var out []map[string]string
	for i := 0; i+1 < len(reply); i += 2 {
		if reply[i] == "name" {
			out = append(out, map[string]string{})
		}
		if len(out) > 0 {
			out[len(out)-1][reply[i]] = reply[i+1]
		}
	}
	return out
}

// Running reports whether the server's process is running (it may be
// paused).
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}
