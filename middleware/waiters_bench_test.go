package middleware

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The waiter memory measurement is not part of the normal tests: it starts
// Caddy and opens tens of thousands of loopback connections.
var (
	waitersN      = flag.Int("waiters", 0, "measure Caddy's resident memory with this many idle keep-alive connections, waiting long-polls and event streams (0: skip)")
	waitersCaddy  = flag.String("waiters.caddy", "", "Caddy binary with wechat_login to measure (default: built from ./cmd/caddy)")
	waitersKinds  = flag.String("waiters.kinds", "idle,poll,events", "what the connections do, in the order measured each round")
	waitersRounds = flag.Int("waiters.rounds", 3, "rounds of measurements, each of every kind once")
)

// waiterSample is one measurement: Caddy's resident memory with the
// connections open, and the same before they were opened.
type waiterSample struct {
	kind               string
	rssBefore, rss     int64 // bytes
	goroutines         int
	goroutinesBefore   int
	waiting            float64 // Caddy's waiting_browsers gauge
	established, conns int
}

// TestWaiterMemory measures the resident memory of a Caddy process (the
// plugin's cmd/caddy) holding N connections that each do one of:
//
//	idle    one request to a plain `respond` site, then kept alive, idle
//	poll    a long-poll of a pending login (wait=25), behind wechat_login
//	events  an event stream of a pending login, behind wechat_login
//
// Every measurement starts a fresh Caddy with the same configuration and
// the same N/4 pending logins (four browsers' tabs wait on each), so that
// only the connections differ. Caddy's garbage is collected twice (through
// its pprof endpoint) before each reading. Rounds interleave the kinds; the
// medians and their ratios to idle are printed. Loopback only; every step
// has a deadline.
//
//	go test -run TestWaiterMemory -v ./middleware -waiters=10000
func TestWaiterMemory(t *testing.T) {
	n := *waitersN
	if n == 0 {
		t.Skip("run with -waiters=N")
	}
	bin := *waitersCaddy
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "caddy")
		build := exec.Command("go", "build", "-o", bin, "github.com/wechat-login/caddy-wechat-login/cmd/caddy")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build Caddy: %v\n%s", err, out)
		}
	}
	raiseFileLimit(t, n+1000)
	kinds := strings.Split(*waitersKinds, ",")
	samples := map[string][]waiterSample{}
	m := 0
	for round := range *waitersRounds {
		for _, kind := range kinds {
			m++
			s := measureWaiters(t, bin, kind, n, m)
			samples[kind] = append(samples[kind], s)
			t.Logf("round %d %-6s rss %7.1f MB (before the connections %6.1f MB), %d goroutines (%d before), waiting gauge %.0f, %d of %d connections established",
				round+1, kind, mb(s.rss), mb(s.rssBefore), s.goroutines, s.goroutinesBefore, s.waiting, s.established, s.conns)
		}
	}
	median := func(kind string, f func(waiterSample) float64) float64 {
		var v []float64
		for _, s := range samples[kind] {
			v = append(v, f(s))
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	idle := median("idle", func(s waiterSample) float64 { return float64(s.rss) })
	for _, kind := range kinds {
		rss := median(kind, func(s waiterSample) float64 { return float64(s.rss) })
		growth := median(kind, func(s waiterSample) float64 { return float64(s.rss - s.rssBefore) })
		gor := median(kind, func(s waiterSample) float64 { return float64(s.goroutines-s.goroutinesBefore) / float64(n) })
		ratio := 0.0
		if idle > 0 {
			ratio = rss / idle
		}
		// One line per kind, for scripts.
		fmt.Printf("WAITERS kind=%s conns=%d runs=%d rss_mb=%.1f growth_mb=%.1f per_conn_kb=%.2f goroutines_per_conn=%.2f vs_idle=%.3f\n",
			kind, n, len(samples[kind]), rss/(1<<20), growth/(1<<20), growth/float64(n)/1024, gor, ratio)
	}
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// raiseFileLimit raises the soft limit on open files to at least want (or
// the hard limit), for this process and the Caddy it starts.
func raiseFileLimit(t *testing.T, want int) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < uint64(want) {
		lim.Cur = min(uint64(want), lim.Max)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
	}
	if lim.Cur < uint64(want) {
		t.Fatalf("open files limited to %d; %d needed (raise the hard limit: ulimit -Hn)", lim.Cur, want)
	}
}

// freePorts returns n loopback ports nobody listens on now.
func freePorts(t *testing.T, n int) []int {
	var ports []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// localAddr spreads the connections of measurement m over loopback source
// addresses, so that no run runs out of ports and per-address limits see
// many clients.
func localAddr(m, i int) *net.TCPAddr {
	return &net.TCPAddr{IP: net.IPv4(127, byte(1+m%250), byte(i/250), byte(1+i%250))}
}

func measureWaiters(t *testing.T, bin, kind string, n, m int) waiterSample {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	p := freePorts(t, 3)
	plain, site, admin := fmt.Sprintf("127.0.0.1:%d", p[0]), fmt.Sprintf("127.0.0.1:%d", p[1]), fmt.Sprintf("127.0.0.1:%d", p[2])
	caddyfile := fmt.Sprintf(`{
	admin %s
	auto_https off
	log default {
		output discard
	}
}
http://%s {
	respond "ok"
}
http://%s {
	wechat_login {
		sandbox
		qr_ceiling 1000000
		qr_rate_limit 1000000 1000000
		max_waiting %d
	}
	respond "ok"
}
`, admin, plain, site, 2*n)
	cfgPath := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfgPath, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bin, "run", "--config", cfgPath)
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	hc := &http.Client{Timeout: 10 * time.Second}
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := hc.Get("http://" + site + "/wechat/login")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Caddy did not start: %v\n%s", err, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	scenes := createScenes(t, site, (n+3)/4, m)
	settle(t, admin)
	s := waiterSample{kind: kind, conns: n}
	s.rssBefore = processRSS(t, cmd.Process.Pid)
	s.goroutinesBefore = goroutines(t, admin)

	conns := openWaiters(t, kind, plain, site, scenes, n, m)
	defer func() {
		for _, c := range conns {
			// Reset rather than close: no TIME_WAIT left for the next run.
			_ = c.(*net.TCPConn).SetLinger(0)
			_ = c.Close()
		}
	}()
	s.established = len(conns)
	time.Sleep(2 * time.Second)
	settle(t, admin)
	s.rss = processRSS(t, cmd.Process.Pid)
	s.goroutines = goroutines(t, admin)
	s.waiting = waitingGauge(t, admin)
	if kind != "idle" && int(s.waiting) != n {
		t.Errorf("%s: Caddy counts %.0f waiting browsers, want %d", kind, s.waiting, n)
	}
	return s
}

// scene is a pending login and the cookie binding it to its browser.
type benchScene struct{ id, cookie string }

func createScenes(t *testing.T, site string, count, m int) []benchScene {
	t.Helper()
	scenes := make([]benchScene, count)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	next := make(chan int)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
				DialContext: (&net.Dialer{LocalAddr: localAddr(m, 2000+w)}).DialContext,
			}}
			defer hc.CloseIdleConnections()
			for i := range next {
				resp, err := hc.Post("http://"+site+"/wechat/qr", "application/x-www-form-urlencoded", strings.NewReader("next=/"))
				if err != nil {
					errs <- err
					return
				}
				var qr struct{ Scene string }
				err = json.NewDecoder(resp.Body).Decode(&qr)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK {
					errs <- fmt.Errorf("POST /wechat/qr: %d %v", resp.StatusCode, err)
					return
				}
				for _, c := range resp.Cookies() {
					if strings.HasSuffix(c.Name, bindingCookie) {
						scenes[i] = benchScene{qr.Scene, c.Name + "=" + c.Value}
					}
				}
			}
		}()
	}
	deadline := time.After(3 * time.Minute)
feed:
	for i := range count {
		select {
		case next <- i:
		case err := <-errs:
			t.Fatal(err)
		case <-deadline:
			break feed
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	for i, s := range scenes {
		if s.cookie == "" {
			t.Fatalf("scene %d of %d not created", i, count)
		}
	}
	return scenes
}

// openWaiters opens n connections of the given kind and returns those
// that got as far as the kind needs: a full answer (idle), a request sent
// (poll), the stream's first event (events).
func openWaiters(t *testing.T, kind, plain, site string, scenes []benchScene, n, m int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	next := make(chan int)
	var failures sync.Map
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c, err := openWaiter(kind, plain, site, scenes[i/4], localAddr(m, i))
				if err != nil {
					failures.Store(i, err)
					continue
				}
				conns[i] = c
			}
		}()
	}
	deadline := time.After(2 * time.Minute)
feed:
	for i := range n {
		select {
		case next <- i:
		case <-deadline:
			break feed
		}
	}
	close(next)
	wg.Wait()
	failures.Range(func(k, v any) bool {
		t.Errorf("%s connection %d: %v", kind, k, v)
		return false
	})
	return slices.DeleteFunc(conns, func(c net.Conn) bool { return c == nil })
}

func openWaiter(kind, plain, site string, s benchScene, local *net.TCPAddr) (net.Conn, error) {
	d := net.Dialer{LocalAddr: local, Timeout: 10 * time.Second}
	var req string
	addr := site
	switch kind {
	case "idle":
		addr = plain
		req = "GET / HTTP/1.1\r\nHost: " + plain + "\r\n\r\n"
	case "poll":
		req = "GET /wechat/poll?scene=" + s.id + "&wait=25 HTTP/1.1\r\nHost: " + site + "\r\nCookie: " + s.cookie + "\r\n\r\n"
	case "events":
		req = "GET /wechat/events?scene=" + s.id + " HTTP/1.1\r\nHost: " + site + "\r\nCookie: " + s.cookie + "\r\nAccept: text/event-stream\r\n\r\n"
	default:
		return nil, fmt.Errorf("unknown kind %q", kind)
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		c.Close()
		return nil, err
	}
	switch kind {
	case "idle":
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if err != nil {
			c.Close()
			return nil, err
		}
	case "events":
		// The stream's headers, its retry line and the first status
		// event come in one or two writes; wait for the event.
		var got []byte
		buf := make([]byte, 1024)
		for !bytes.Contains(got, []byte("event: status")) {
			k, err := c.Read(buf)
			if err != nil {
				c.Close()
				return nil, fmt.Errorf("event stream: %w (%q)", err, got)
			}
			got = append(got, buf[:k]...)
		}
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// settle has Caddy collect its garbage twice: the second collection also
// shrinks the stacks the first left oversized.
func settle(t *testing.T, admin string) {
	for range 2 {
		resp, err := http.Get("http://" + admin + "/debug/pprof/heap?gc=1")
		if err != nil {
			t.Fatalf("pprof: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

func processRSS(t *testing.T, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

func goroutines(t *testing.T, admin string) int {
	resp, err := http.Get("http://" + admin + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatalf("pprof: %v", err)
	}
	defer resp.Body.Close()
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "goroutine profile: total")))
	if err != nil {
		t.Fatalf("goroutine profile: %q", line)
	}
	return n
}

func waitingGauge(t *testing.T, admin string) float64 {
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "caddy_wechat_login_waiting_browsers "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}
