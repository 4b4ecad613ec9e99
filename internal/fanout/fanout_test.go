package fanout

import (
	"sync"
	"testing"
)

func woken(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestWakeReachesOnlyItsTopic(t *testing.T) {
	var s Set
	a1, cancelA1 := s.Subscribe("a")
	a2, cancelA2 := s.Subscribe("a")
	b, cancelB := s.Subscribe("b")
	defer cancelB()
	s.Wake("a")
	if !woken(a1) || !woken(a2) || woken(b) {
		t.Fatal("Wake(a) must wake both a subscribers and not b")
	}
	// Coalescing: two wakes, one value; no blocking on a full buffer.
	s.Wake("a")
	s.Wake("a")
	if !woken(a1) || woken(a1) {
		t.Fatal("two wakes must leave exactly one value")
	}
	cancelA1()
	cancelA1() // twice is harmless
	s.Wake("a")
	if woken(a1) {
		t.Fatal("cancelled subscription woken")
	}
	if !woken(a2) {
		t.Fatal("remaining subscription not woken")
	}
	if s.Len() != 2 {
		t.Fatalf("Len %d, want 2", s.Len())
	}
	cancelA2()
	s.WakeAll()
	if !woken(b) {
		t.Fatal("WakeAll missed b")
	}
	if s.Len() != 1 {
		t.Fatalf("Len %d, want 1", s.Len())
	}
}

func TestConcurrentUse(t *testing.T) {
	var s Set
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				ch, cancel := s.Subscribe("t")
				s.Wake("t")
				if !woken(ch) {
					t.Error("own wake missed")
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	if s.Len() != 0 {
		t.Fatalf("%d subscriptions left", s.Len())
	}
}
