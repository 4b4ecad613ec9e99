package caddymodule

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var floodRequests = flag.Int("floodtest", 0, "anonymous requests for TestFloodKeepsLogouts (make flood); 0 skips it")

// rssKB reads a process's resident set size from /proc.
func rssKB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestFloodKeepsLogouts floods a real Caddy (embedded store) with anonymous
// OAuth starts from thousands of loopback addresses, each carrying the
// longest return address a login may store, and reports what it costs:
// Caddy's resident memory before, at its peak and after, and the store's
// evictions. A logout made before the flood must still hold after it.
// Run with `make flood` (-floodtest=N).
func TestFloodKeepsLogouts(t *testing.T) {
	if *floodRequests <= 0 {
		t.Skip("flood run: give -floodtest=N (make flood)")
	}
	l := startCaddyLogin(t)
	b := newClient(t, l.caddy.BaseURL)
	cookie := qrLoginAs(t, l, b, "alice")
	if resp, _ := b.do(http.MethodPost, "/wechat/logout", nil, "Origin", l.caddy.BaseURL); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	pid := l.caddy.Pid()
	before := rssKB(t, pid)

	next := "/" + strings.Repeat("n", 1023)
	const perAddress = 10 // the per-address burst of OAuth starts
	addresses := (*floodRequests + perAddress - 1) / perAddress
	var sent, stored atomic.Int64
	var peak atomic.Int64
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
				if r := int64(rssKB(t, pid)); r > peak.Load() {
					peak.Store(r)
				}
			}
		}
	}()
	start := time.Now()
	deadline := start.Add(10 * time.Minute)
	work := make(chan int)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for a := range work {
				src := fmt.Sprintf("127.%d.%d.%d", 10+a/65536, a/256%256, a%256)
				hc := clientFrom(src)
				for range perAddress {
					req, _ := http.NewRequest(http.MethodGet, l.caddy.BaseURL+"/wechat/oauth/start?next="+next, nil)
					req.Header.Set("User-Agent", "Mozilla/5.0 (iPhone) MicroMessenger/8.0.50")
					resp, err := hc.Do(req)
					if err != nil {
						t.Errorf("from %s: %v", src, err)
						return
					}
					resp.Body.Close()
					sent.Add(1)
					if resp.StatusCode == http.StatusFound {
						stored.Add(1)
					}
				}
				hc.CloseIdleConnections()
			}
		}()
	}
	for a := 0; a < addresses && time.Now().Before(deadline); a++ {
		work <- a
	}
	close(work)
	wg.Wait()
	close(stop)
	took := time.Since(start)
	after := rssKB(t, pid)

	status := statusWithCookie(t, l.caddy.BaseURL, "/", cookie)
	resp, err := http.Get("http://" + l.caddy.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	evictions := ""
	for _, line := range strings.Split(readAll(resp), "\n") {
		if strings.HasPrefix(line, "caddy_wechat_login_store_evictions_total ") {
			evictions = strings.TrimPrefix(line, "caddy_wechat_login_store_evictions_total ")
		}
	}
	t.Logf("%d requests from %d addresses in %v (%.0f/s), %d stored a state; Caddy RSS %d MB before, %d MB peak, %d MB after; store evictions %s",
		sent.Load(), addresses, took.Round(time.Millisecond), float64(sent.Load())/took.Seconds(), stored.Load(),
		before>>10, max(peak.Load(), int64(after))>>10, after>>10, evictions)
	if status != http.StatusUnauthorized {
		t.Fatalf("the logged-out cookie opened a page after the flood: %d", status)
	}
}
