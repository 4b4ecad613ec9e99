package revocation

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestSurvivesReopen(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	path := filepath.Join(t.TempDir(), "sub", "revocations")
	l, err := Open(path, c.now)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := l.Revoke(fmt.Sprintf("sid-%d", i), c.now().Add(time.Duration(i+1)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	// No Close: the process dies.
	c.add(50*time.Minute + time.Second)
	l2, err := Open(path, c.now)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	for i := range 100 {
		want := i >= 50
		if got := l2.Revoked(fmt.Sprintf("sid-%d", i)); got != want {
			t.Errorf("sid-%d revoked=%v after restart, want %v", i, got, want)
		}
	}
	if l2.Len() != 50 {
		t.Errorf("reopened list holds %d entries, want the 50 live ones", l2.Len())
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(len(magic) + 50*recordLen); fi.Size() != want {
		t.Errorf("compacted file is %d bytes, want %d", fi.Size(), want)
	}
	if l2.Revoked("sid-unknown") {
		t.Error("unknown id revoked")
	}
}

func TestTornRecordAndForeignFile(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	path := filepath.Join(t.TempDir(), "revocations")
	l, err := Open(path, c.now)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Revoke("kept", c.now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	_ = l.Close()
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	_, _ = f.Write([]byte{1, 2, 3}) // a write cut short by a crash
	_ = f.Close()
	l, err = Open(path, c.now)
	if err != nil {
		t.Fatalf("torn record: %v", err)
	}
	if !l.Revoked("kept") {
		t.Error("record before the torn one lost")
	}
	if err := l.Revoke("after", c.now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	_ = l.Close()
	l, err = Open(path, c.now)
	if err != nil || !l.Revoked("after") || !l.Revoked("kept") {
		t.Fatalf("after a torn record: err=%v", err)
	}
	_ = l.Close()
	if err := l.Revoke("x", c.now().Add(time.Hour)); err != ErrClosed {
		t.Errorf("Revoke after Close: %v", err)
	}

	other := filepath.Join(t.TempDir(), "notes.txt")
	_ = os.WriteFile(other, []byte("somebody's notes"), 0o600)
	if _, err := Open(other, c.now); err == nil {
		t.Fatal("a foreign file was taken for a revocation list")
	}
	if b, _ := os.ReadFile(other); string(b) != "somebody's notes" {
		t.Fatal("a foreign file was overwritten")
	}
}

func TestMemoryOnlyAndExpiry(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	l, err := Open("", c.now)
	if err != nil {
		t.Fatal(err)
	}
	_ = l.Revoke("a", c.now().Add(time.Minute))
	_ = l.Revoke("past", c.now().Add(-time.Second))
	if !l.Revoked("a") || l.Revoked("past") {
		t.Fatal("wrong answers")
	}
	c.add(2 * time.Minute)
	if l.Revoked("a") {
		t.Fatal("expired revocation still holds")
	}
	_ = l.Revoke("b", c.now().Add(time.Minute)) // sweeps
	if l.Len() != 1 {
		t.Fatalf("Len %d after sweep, want 1", l.Len())
	}
}

func TestConcurrent(t *testing.T) {
	l, err := Open(filepath.Join(t.TempDir(), "r"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				id := fmt.Sprintf("%d-%d", g, i)
				if err := l.Revoke(id, time.Now().Add(time.Hour)); err != nil {
					t.Error(err)
					return
				}
				if !l.Revoked(id) {
					t.Errorf("%s not revoked right after Revoke", id)
				}
			}
		}()
	}
	wg.Wait()
	if l.Len() != 400 {
		t.Fatalf("Len %d", l.Len())
	}
}

func BenchmarkRevoked(b *testing.B) {
	l, _ := Open("", nil)
	for i := range 10000 {
		_ = l.Revoke(fmt.Sprint(i), time.Now().Add(time.Hour))
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_ = l.Revoked("not-revoked-session-id-0123456789")
		}
	})
}

// TestRevokeAfterNotRevoked: a session found not revoked, and so
// remembered, is revoked the moment Revoke returns; the memory of checked
// sessions filling up changes no answer.
func TestRevokeAfterNotRevoked(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	l, err := Open("", c.now)
	if err != nil {
		t.Fatal(err)
	}
	if l.Revoked("s1") {
		t.Fatal("s1 revoked in an empty list")
	}
	_ = l.Revoke("other", c.now().Add(time.Hour))
	for range 3 {
		if l.Revoked("s1") || l.Revoked("s2") {
			t.Fatal("s1 or s2 revoked")
		}
	}
	_ = l.Revoke("s1", c.now().Add(time.Hour))
	if !l.Revoked("s1") {
		t.Fatal("s1 not revoked after Revoke, having been checked before")
	}
	if l.Revoked("s2") || !l.Revoked("other") {
		t.Fatal("wrong answers for s2 or other")
	}
	for i := range maxChecked + 10 {
		if l.Revoked(fmt.Sprint("fill-", i)) {
			t.Fatalf("fill-%d revoked", i)
		}
	}
	_ = l.Revoke("s2", c.now().Add(time.Hour))
	if !l.Revoked("s1") || !l.Revoked("s2") || l.Revoked("fill-1") || l.Revoked(fmt.Sprint("fill-", maxChecked+5)) {
		t.Fatal("wrong answers after filling the memory of checked sessions")
	}
	c.add(2 * time.Hour)
	if l.Revoked("s1") || l.Revoked("s2") {
		t.Fatal("expired revocations still hold")
	}
}
