package caddymodule

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	goredis "github.com/redis/go-redis/v9"
)

// tripCounter is a TCP relay in front of Redis that counts round trips:
// on each connection, client bytes that arrive while no reply is awaited
// start one. A pipeline written at once is one round trip however many
// commands it holds; replies pushed on a subscription start none.
type tripCounter struct {
	ln     net.Listener
	target string
	trips  atomic.Int64
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

func startTripCounter(t *testing.T, target string) *tripCounter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tc := &tripCounter{ln: ln, target: target}
	tc.wg.Add(1)
	go tc.accept()
	t.Cleanup(tc.close)
	return tc
}

func (tc *tripCounter) addr() string { return tc.ln.Addr().String() }

func (tc *tripCounter) accept() {
	defer tc.wg.Done()
	for {
		c, err := tc.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", tc.target)
		if err != nil {
			c.Close()
			continue
		}
		tc.mu.Lock()
		tc.conns = append(tc.conns, c, s)
		tc.mu.Unlock()
		// awaiting is 1 from a client write until the server's next bytes.
		var awaiting atomic.Int32
		tc.wg.Add(2)
		go func() {
			defer tc.wg.Done()
			defer s.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if awaiting.Swap(1) == 0 {
						tc.trips.Add(1)
					}
					if _, werr := s.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
		go func() {
			defer tc.wg.Done()
			defer c.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := s.Read(buf)
				if n > 0 {
					awaiting.Store(0)
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

func (tc *tripCounter) close() {
	tc.ln.Close()
	tc.mu.Lock()
	for _, c := range tc.conns {
		c.Close()
	}
	tc.mu.Unlock()
	tc.wg.Wait()
}

// commandCalls reads INFO commandstats: calls by command name. Commands a
// script runs are counted under their own names as well as under the
// script's EVAL or EVALSHA.
func commandCalls(ctx context.Context, rc *goredis.Client) (map[string]int64, error) {
	info, err := rc.Info(ctx, "commandstats", "stats").Result()
	if err != nil {
		return nil, err
	}
	calls := map[string]int64{}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "total_connections_received:"); ok {
			if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				calls["new connections"] = n
			}
			continue
		}
		// cmdstat_get:calls=12,usec=...
		name, rest, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "cmdstat_"), ":calls=")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(rest, ",")
		if v, err := strconv.ParseInt(n, 10, 64); err == nil {
			calls[name] = v
		}
	}
	return calls, sc.Err()
}

// callsPerLogin formats the commands run between before and after, per
// login, largest first.
func callsPerLogin(before, after map[string]int64, logins int64) string {
	type kv struct {
		name string
		n    int64
	}
	var l []kv
	for name, n := range after {
		if d := n - before[name]; d > 0 && name != "info" {
			l = append(l, kv{name, d})
		}
	}
	slices.SortFunc(l, func(a, b kv) int { return int(b.n - a.n) })
	var parts []string
	for _, e := range l {
		parts = append(parts, fmt.Sprintf("%s %.2f", strings.ToUpper(e.name), float64(e.n)/float64(logins)))
	}
	return strings.Join(parts, ", ")
}
