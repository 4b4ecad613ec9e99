package cookieseal

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestRemembering: a remembering Codec answers every value as opening it
// again would (the payload, under its own name only, until its expiry),
// keeps only values that opened, and hands out copies.
func TestRemembering(t *testing.T) {
	c := mustNew(t, testKey(1)).Remembering(16)
	exp := t0.Add(time.Hour)
	v := mustSeal(t, c, "n", []byte("payload"), exp)
	tampered := []byte(v)
	tampered[len(tampered)/2] ^= 'A' ^ 'B'

	for i := range 3 { // the first opening decrypts, the others remember
		got, err := c.Open("n", v, t0)
		if err != nil || string(got) != "payload" {
			t.Fatalf("opening %d: %q, %v", i, got, err)
		}
		got[0] = 'X' // the caller's copy, not the memory's
		if n := c.memo.size(); n != 1 {
			t.Fatalf("after opening %d, %d values remembered, want 1", i, n)
		}
	}
	for _, tc := range []struct {
		name, value string
		now         time.Time
		want        error
	}{
		{"other", v, t0, ErrInvalid},            // remembered, but for "n" only
		{"n", string(tampered), t0, ErrInvalid}, // never opened, never remembered
		{"n", v, exp.Add(-time.Second), nil},
		{"n", v, exp, ErrExpired}, // and forgotten
		{"n", v, exp.Add(time.Hour), ErrExpired},
		{"n", v, t0, nil}, // opened again: a clock set back, as Open would
	} {
		got, err := c.Open(tc.name, tc.value, tc.now)
		if !errors.Is(err, tc.want) || (err == nil) != (string(got) == "payload") {
			t.Errorf("Open(%q, …, %s) = %q, %v; want %v", tc.name, tc.now.Format(time.TimeOnly), got, err, tc.want)
		}
	}
	if n := c.memo.size(); n != 1 {
		t.Errorf("%d values remembered, want 1 (the value, opened again)", n)
	}
}

// TestRememberingBounded: no more values are kept than asked for, and every
// value still opens once its memory was given to another.
func TestRememberingBounded(t *testing.T) {
	c := mustNew(t, testKey(1)).Remembering(8)
	values := make([]string, 40)
	for i := range values {
		values[i] = mustSeal(t, c, "n", fmt.Appendf(nil, "payload %d", i), t0.Add(time.Hour))
	}
	for round := range 2 {
		for i, v := range values {
			got, err := c.Open("n", v, t0)
			if err != nil || string(got) != fmt.Sprintf("payload %d", i) {
				t.Fatalf("round %d, value %d: %q, %v", round, i, got, err)
			}
			if n := c.memo.size(); n > 8 {
				t.Fatalf("%d values remembered, want at most 8", n)
			}
		}
	}
	if plain := mustNew(t, testKey(1)).Remembering(0); plain.memo != nil {
		t.Error("Remembering(0) remembers")
	}
}

// TestRememberingConcurrent opens, expires and replaces values from several
// goroutines at once (for the race detector), every answer checked.
func TestRememberingConcurrent(t *testing.T) {
	c := mustNew(t, testKey(1)).Remembering(4)
	values := make([]string, 12)
	for i := range values {
		values[i] = mustSeal(t, c, "n", fmt.Appendf(nil, "p%d", i), t0.Add(time.Duration(i+1)*time.Minute))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				k := (i*7 + g) % len(values)
				now := t0.Add(time.Duration(i%15) * time.Minute)
				got, err := c.Open("n", values[k], now)
				want := fmt.Sprintf("p%d", k)
				expired := !now.Before(t0.Add(time.Duration(k+1) * time.Minute))
				if expired && !errors.Is(err, ErrExpired) || !expired && (err != nil || string(got) != want) {
					errs <- fmt.Errorf("value %d at +%dm: %q, %v", k, i%15, got, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func BenchmarkAppendOpenRemembered(b *testing.B) {
	c := mustNew(b, testKey(1), testKey(2)).Remembering(4096)
	v := mustSeal(b, c, "__Host-wechat_session", make([]byte, 120), t0.Add(time.Hour))
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.AppendOpen(buf[:0], "__Host-wechat_session", v, t0); err != nil {
			b.Fatal(err)
		}
	}
}
