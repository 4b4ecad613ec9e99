package middleware

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/middleware/bigcachestore"
)

// residentBytes returns the process's resident memory (VmRSS), or 0 where
// /proc is not there.
func residentBytes() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// BenchmarkMillionPendingScenes stores 1,000,000 pending login scenes, as
// the QR route writes them (records of real WeChat's ticket and URL sizes),
// in an embedded store, and reports how many it kept and how much the
// process's resident memory grew:
//
//	capacity=1M    a store made for a million entries (MaxEntries)
//	caddy-default  the store the Caddy module makes by default: room for a
//	               million, of which 16,384 are made at once (the default
//	               qr_ceiling allows a few hundred pending logins), for the
//	               scenes' time to live only; times to live of up to 30 days
//	               for revocations
//	caddy-ceiling  the same with a qr_ceiling that allows a million pending
//	               logins (166,667 a minute): made for them at once
//
// Keys and records are made before the measurement starts, what that
// leaves behind is returned to the system, and the loop that stores them
// makes no garbage of its own, so the growth is the store's. Run each alone
// (-run '^$' -bench 'MillionPendingScenes/capacity' -benchtime 1x): the
// resident memory is the whole process's.
func BenchmarkMillionPendingScenes(b *testing.B) {
	const scenes = 1_000_000
	keys := make([]string, scenes)
	records := make([][]byte, scenes)
	exp := time.Now().Add(5 * time.Minute)
	var all []byte
	for i := range keys {
		id := randomHex(sceneIDLen / 2)
		keys[i] = sceneKey(id)
		url := wechatQRPrefix + "02" + id[:20]
		rec := sceneRecord{
			State:     StatePending,
			Ticket:    benchTicket(url, exp),
			QRURL:     url,
			Next:      "/",
			ExpiresAt: exp.Unix(),
			Client:    fmt.Sprintf("Chrome on Windows, 203.0.%d.%d", i>>8&255, i&255),
		}
		start := len(all)
		var err error
		if all, err = appendScene(all, &rec); err != nil {
			b.Fatal(err)
		}
		records[i] = all[start:len(all):len(all)]
	}
	for _, tc := range []struct {
		name string
		cfg  bigcachestore.Config
	}{
		{"capacity=1M", bigcachestore.Config{MaxEntries: scenes}},
		// As caddymodule/pool.go makes it (embeddedStoreConfig).
		{"caddy-default", bigcachestore.Config{MaxEntries: scenes, ReserveTTL: 5 * time.Minute, ReserveEntries: 16_384, MaxTTL: 30*24*time.Hour + time.Hour}},
		{"caddy-ceiling", bigcachestore.Config{MaxEntries: scenes, ReserveTTL: 5 * time.Minute, ReserveEntries: scenes, MaxTTL: 30*24*time.Hour + time.Hour}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				fillStore(b, tc.cfg, keys, records)
			}
			b.ReportMetric(float64(len(all))/scenes, "record-bytes")
		})
	}
}

// benchTicket returns a ticket laid out as WeChat's are: the standard
// base64 of a binary record that holds the QR code's URL.
func benchTicket(url string, exp time.Time) string {
	b := []byte{0x81, 0x01, 0, 0, byte(len(url) + 13), 0, 0, 0, 0, 0, 0, 0, 0x01, byte(len(url) + 1)}
	_, _ = rand.Read(b[2:4])
	b = append(b, url...)
	b = append(b, 0x00, 0x02, 0x04)
	b = binary.LittleEndian.AppendUint32(b, uint32(exp.Unix()-300))
	b = append(b, 0x03, 0x04)
	b = binary.LittleEndian.AppendUint32(b, 300)
	return base64.StdEncoding.EncodeToString(b)
}

// fillStore stores records under keys in a new store made with cfg and
// reports what it kept and the memory that took.
func fillStore(b *testing.B, cfg bigcachestore.Config, keys []string, records [][]byte) {
	ctx := context.Background()
	// Garbage left by making the records goes back to the system, so
	// that the store's memory cannot reuse pages counted before.
	debug.FreeOSMemory()
	before := residentBytes()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heapBefore := ms.HeapAlloc

	s, err := bigcachestore.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for i, key := range keys {
		if err := s.Create(ctx, key, records[i], 5*time.Minute); err != nil {
			b.Fatal(err)
		}
	}
	runtime.GC()
	grown := residentBytes() - before
	runtime.ReadMemStats(&ms)
	kept := 0
	for _, key := range keys {
		if _, err := s.Get(ctx, key); err == nil {
			kept++
		}
	}
	st := s.Stats()
	b.ReportMetric(float64(kept), "kept")
	b.ReportMetric(float64(st.Evictions), "evicted")
	b.ReportMetric(float64(grown)/(1<<20), "rss-MB")
	b.ReportMetric(float64(int64(ms.HeapAlloc)-int64(heapBefore))/(1<<20), "heap-MB")
}
