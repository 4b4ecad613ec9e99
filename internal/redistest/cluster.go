package redistest

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// clusterNodeTimeout is how long a Cluster node may not answer before the
// others count it as failing. It is longer than the one or two seconds
// a test's Restart takes, as a supervisor's restart is shorter than a
// production cluster's default of 15 s: the other nodes go on serving
// their slots meanwhile.
const clusterNodeTimeout = 5 * time.Second

// clusterSlots is the number of hash slots of a Redis Cluster.
const clusterSlots = 16384

// Cluster is a Redis Cluster of three primaries without replicas, each
// serving a third of the hash slots, on loopback ports, stopped when the
// test ends. While a node is stopped, the keys in its slots cannot be
// reached; the others keep serving theirs (a Restart within the node
// timeout goes unnoticed by the cluster), so give the nodes WithAppendOnly
// to have a restarted node come back with its keys.
type Cluster struct {
	t testing.TB
	// Nodes holds the cluster's nodes; Nodes[i] serves slots
	// [i*16384/3, (i+1)*16384/3).
	Nodes []*Server
}

// slotRange returns the first and last slot of node i of n.
func slotRange(i, n int) (lo, hi int) {
	return i * clusterSlots / n, (i+1)*clusterSlots/n - 1
}

// StartCluster starts three cluster nodes, assigns them the slots, joins
// them (CLUSTER ADDSLOTSRANGE and CLUSTER MEET, with no need for
// redis-cli) and waits until every node reports the cluster ok. opts
// apply to every node. It needs Redis 7 (cluster-port, ADDSLOTSRANGE);
// skipped (failed under CI) without redis-server.
func StartCluster(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	requireMajor(t, 7, "a Cluster with cluster-port and ADDSLOTSRANGE")
	const n = 3
	c := &Cluster{t: t}
	for range n {
		c.Nodes = append(c.Nodes, start(t, roleCluster, nil, opts...))
	}
	for i, node := range c.Nodes {
		lo, hi := slotRange(i, n)
		// Distinct epochs up front, as redis-cli does, spare the nodes
		// resolving a collision of their equal ones.
		for _, cmd := range [][]string{
			{"CLUSTER", "SET-CONFIG-EPOCH", strconv.Itoa(i + 1)},
			{"CLUSTER", "ADDSLOTSRANGE", strconv.Itoa(lo), strconv.Itoa(hi)},
		} {
			if _, err := Command(node.Addr(), cmd...); err != nil {
				t.Fatalf("redistest: %v", err)
			}
		}
	}
	for _, node := range c.Nodes[1:] {
		if _, err := Command(c.Nodes[0].Addr(), "CLUSTER", "MEET", "127.0.0.1",
			strconv.Itoa(node.port), strconv.Itoa(node.busPort)); err != nil {
			t.Fatalf("redistest: %v", err)
		}
	}
	if err := c.Healthy(readyTimeout); err != nil {
		t.Fatalf("redistest: cluster never became healthy: %v", err)
	}
	return c
}

// URL returns the cluster's redis-cluster:// URL, listing every node, in
// the form middleware/redisstore's Open takes.
func (c *Cluster) URL() string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr()
	}
	return "redis-cluster://" + strings.Join(addrs, ",")
}

// Healthy waits up to limit until every running node knows all the nodes,
// sees every slot served and reports the cluster state ok.
func (c *Cluster) Healthy(limit time.Duration) error {
	return waitUntil(limit, func() error {
		for _, node := range c.Nodes {
			if !node.Running() {
				continue
			}
			reply, err := Command(node.Addr(), "CLUSTER", "INFO")
			if err != nil {
				return err
			}
			if len(reply) != 1 {
				return fmt.Errorf("CLUSTER INFO to %s: %d replies", node.Addr(), len(reply))
			}
			m := fields(reply[0], ":")
			if m["cluster_state"] != "ok" || m["cluster_known_nodes"] != strconv.Itoa(len(c.Nodes)) ||
				m["cluster_slots_ok"] != strconv.Itoa(clusterSlots) {
				return fmt.Errorf("node %s: state %s, %s nodes known, %s slots ok", node.Addr(),
					m["cluster_state"], m["cluster_known_nodes"], m["cluster_slots_ok"])
			}
		}
		return nil
	})
}

// NodeFor returns the node that serves key's hash slot, which a running
// node computes (CLUSTER KEYSLOT, hash tags included).
func (c *Cluster) NodeFor(key string) (*Server, error) {
	var lastErr error
	for _, node := range c.Nodes {
		if !node.Running() {
			continue
		}
		reply, err := Command(node.Addr(), "CLUSTER", "KEYSLOT", key)
		if err != nil {
			lastErr = err
			continue
		}
		if len(reply) != 1 {
			return nil, fmt.Errorf("CLUSTER KEYSLOT answered %q", reply)
		}
		slot, err := strconv.Atoi(reply[0])
		if err != nil || slot < 0 || slot >= clusterSlots {
			return nil, fmt.Errorf("CLUSTER KEYSLOT answered %q", reply)
		}
		for i, node := range c.Nodes {
			if lo, hi := slotRange(i, len(c.Nodes)); slot >= lo && slot <= hi {
				return node, nil
			}
		}
	}
	if lastErr == nil {
		lastErr = fmt.Errorf("no node is running")
	}
	return nil, lastErr
}
