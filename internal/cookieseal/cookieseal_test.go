package cookieseal

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, KeySize) }

func mustNew(t testing.TB, keys ...[]byte) *Codec {
	t.Helper()
	c, err := New(keys...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func mustSeal(t testing.TB, c *Codec, name string, payload []byte, exp time.Time) string {
	t.Helper()
	v, err := c.Seal(name, payload, exp)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return v
}

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		keys    [][]byte
		wantErr string // substring; empty means success
	}{
		{"one key", [][]byte{testKey(1)}, ""},
		{"three keys", [][]byte{testKey(1), testKey(2), testKey(3)}, ""},
		{"no keys", nil, "at least one key"},
		{"short key", [][]byte{testKey(1), make([]byte, 16)}, "key 1 is 16 bytes"},
		{"long key", [][]byte{make([]byte, 33)}, "key 0 is 33 bytes"},
		{"nil key", [][]byte{testKey(1), testKey(2), nil}, "key 2 is 0 bytes"},
		{"duplicate key", [][]byte{testKey(1), testKey(2), testKey(1)}, "key 2 has the same id as key 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.keys...)
			if tt.wantErr == "" {
				if err != nil || c == nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	c := mustNew(t, testKey(1))
	payloads := [][]byte{
		{},
		[]byte("x"),
		[]byte(`{"sid":"abc","openid":"o123"}`),
		bytes.Repeat([]byte{0xff, 0x00}, 1000),
	}
	for _, p := range payloads {
		v := mustSeal(t, c, "session", p, t0.Add(time.Hour))
		if strings.ContainsAny(v, "=+/ ;,\"") {
			t.Errorf("sealed value %q is not cookie-safe base64url", v)
		}
		got, err := c.Open("session", v, t0)
		if err != nil {
			t.Fatalf("Open(%d-byte payload): %v", len(p), err)
		}
		if !bytes.Equal(got, p) {
			t.Errorf("Open = %q, want %q", got, p)
		}
	}
}

func TestSealIsRandomized(t *testing.T) {
	c := mustNew(t, testKey(1))
	a := mustSeal(t, c, "n", []byte("same"), t0.Add(time.Hour))
	b := mustSeal(t, c, "n", []byte("same"), t0.Add(time.Hour))
	if a == b {
		t.Fatal("sealing the same payload twice gave the same value; nonce is not random")
	}
}

func TestSealErrors(t *testing.T) {
	c := mustNew(t, testKey(1))
	if _, err := c.Seal("n", []byte("p"), time.Time{}); err == nil {
		t.Error("Seal with zero expiry succeeded")
	}
	// The largest payload that still encodes within MaxValueLen.
	maxPayload := MaxValueLen*3/4 - minRawLen
	v, err := c.Seal("n", make([]byte, maxPayload), t0.Add(time.Hour))
	if err != nil {
		t.Fatalf("Seal(max payload %d): %v", maxPayload, err)
	}
	if len(v) > MaxValueLen {
		t.Fatalf("sealed value is %d bytes, over MaxValueLen", len(v))
	}
	if _, err := c.Open("n", v, t0); err != nil {
		t.Fatalf("Open(max payload): %v", err)
	}
	if _, err := c.Seal("n", make([]byte, maxPayload+1), t0.Add(time.Hour)); err == nil {
		t.Error("Seal of a payload too large for a cookie succeeded")
	}
}

func TestRotation(t *testing.T) {
	oldC := mustNew(t, testKey(1))
	rotated := mustNew(t, testKey(2), testKey(1))
	newOnly := mustNew(t, testKey(2))

	old := mustSeal(t, oldC, "s", []byte("old"), t0.Add(time.Hour))
	if got, err := rotated.Open("s", old, t0); err != nil || string(got) != "old" {
		t.Fatalf("rotated codec Open(old value) = %q, %v; want old key still accepted", got, err)
	}

	fresh := mustSeal(t, rotated, "s", []byte("new"), t0.Add(time.Hour))
	if got, err := newOnly.Open("s", fresh, t0); err != nil || string(got) != "new" {
		t.Fatalf("new-key codec Open(value sealed after rotation) = %q, %v; want the first key to seal", got, err)
	}
	if _, err := oldC.Open("s", fresh, t0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("old-key codec Open(value sealed after rotation) = %v, want ErrInvalid", err)
	}
	// Once the old key is dropped, its values stop opening.
	if _, err := newOnly.Open("s", old, t0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Open(value of a dropped key) = %v, want ErrInvalid", err)
	}
}

func TestExpiry(t *testing.T) {
	c := mustNew(t, testKey(1))
	exp := t0.Add(10 * time.Minute)
	v := mustSeal(t, c, "s", []byte("p"), exp)
	tests := []struct {
		now  time.Time
		want error
	}{
		{t0, nil},
		{exp.Add(-time.Second), nil},
		{exp, ErrExpired},
		{exp.Add(time.Nanosecond), ErrExpired},
		{exp.Add(24 * time.Hour), ErrExpired},
	}
	for _, tt := range tests {
		_, err := c.Open("s", v, tt.now)
		if !errors.Is(err, tt.want) {
			t.Errorf("Open at %v = %v, want %v", tt.now.Sub(exp), err, tt.want)
		}
	}
	// Sub-second expiries round down: the value never outlives them.
	v = mustSeal(t, c, "s", []byte("p"), exp.Add(900*time.Millisecond))
	if _, err := c.Open("s", v, exp.Add(100*time.Millisecond)); !errors.Is(err, ErrExpired) {
		t.Errorf("Open after the rounded-down expiry = %v, want ErrExpired", err)
	}
	if ErrExpired == ErrInvalid || errors.Is(ErrExpired, ErrInvalid) {
		t.Error("ErrExpired must be distinguishable from ErrInvalid")
	}
}

func TestExpiredTamperedIsInvalid(t *testing.T) {
	// An attacker must not learn "expired" for a forged value: authenticity
	// is checked before expiry.
	c := mustNew(t, testKey(1))
	v := mustSeal(t, c, "s", []byte("p"), t0)
	raw, _ := base64.RawURLEncoding.DecodeString(v)
	raw[len(raw)-1] ^= 1
	if _, err := c.Open("s", base64.RawURLEncoding.EncodeToString(raw), t0.Add(time.Hour)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Open(tampered, expired) = %v, want ErrInvalid", err)
	}
}

func TestWrongName(t *testing.T) {
	c := mustNew(t, testKey(1))
	v := mustSeal(t, c, "__Host-session", []byte("p"), t0.Add(time.Hour))
	for _, name := range []string{"session", "__Host-binding", "__Host-session ", "", "__host-session"} {
		if _, err := c.Open(name, v, t0); !errors.Is(err, ErrInvalid) {
			t.Errorf("Open under name %q = %v, want ErrInvalid", name, err)
		}
	}
}

func TestTamperEveryByte(t *testing.T) {
	c := mustNew(t, testKey(1), testKey(2))
	v := mustSeal(t, c, "s", []byte("payload"), t0.Add(time.Hour))
	raw, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil {
		t.Fatal(err)
	}
	for i := range raw {
		for _, flip := range []byte{0x01, 0x80, 0xff} {
			mod := bytes.Clone(raw)
			mod[i] ^= flip
			_, err := c.Open("s", base64.RawURLEncoding.EncodeToString(mod), t0)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("byte %d ^ %#x: Open = %v, want ErrInvalid", i, flip, err)
			}
		}
	}
	// Flipping characters of the encoded form (which may also make it
	// non-canonical base64) is rejected too.
	for i := range v {
		b := []byte(v)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		if _, err := c.Open("s", string(b), t0); !errors.Is(err, ErrInvalid) {
			t.Fatalf("char %d changed: Open = %v, want ErrInvalid", i, err)
		}
	}
}

func TestGarbage(t *testing.T) {
	c := mustNew(t, testKey(1))
	// An 8-byte payload makes the raw length 49, so padded base64 differs.
	v := mustSeal(t, c, "s", []byte("payload!"), t0.Add(time.Hour))
	unknown := mustSeal(t, mustNew(t, testKey(9)), "s", []byte("payload"), t0.Add(time.Hour))
	raw, _ := base64.RawURLEncoding.DecodeString(v)
	badVersion := bytes.Clone(raw)
	badVersion[0] = 2

	tests := map[string]string{
		"empty":            "",
		"unknown key":      unknown,
		"truncated by one": v[:len(v)-1],
		"truncated half":   v[:len(v)/2],
		"header only":      base64.RawURLEncoding.EncodeToString(raw[:headSize]),
		"extended":         v + "AAAA",
		"padded base64":    base64.URLEncoding.EncodeToString(raw),
		"embedded newline": v[:10] + "\n" + v[10:],
		"embedded CR":      v[:10] + "\r" + v[10:],
		"std base64":       strings.NewReplacer("-", "+", "_", "/").Replace(v) + "+/",
		"bad base64":       "!!!!" + v[4:],
		"spaces":           " " + v,
		"huge":             strings.Repeat("A", MaxValueLen+1),
		"very huge":        strings.Repeat(v, 10000),
		"other version":    base64.RawURLEncoding.EncodeToString(badVersion),
		"zero bytes":       base64.RawURLEncoding.EncodeToString(make([]byte, 200)),
	}
	for name, value := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := c.Open("s", value, t0)
			if !errors.Is(err, ErrInvalid) || got != nil {
				t.Fatalf("Open = %q, %v; want nil, ErrInvalid", got, err)
			}
		})
	}
}

func TestOpenHugeAllocatesNothing(t *testing.T) {
	// Oversized values must be rejected before decoding.
	c := mustNew(t, testKey(1))
	huge := strings.Repeat("A", 1<<20)
	allocs := testing.AllocsPerRun(10, func() {
		if _, err := c.Open("s", huge, t0); err == nil {
			t.Fatal("huge value opened")
		}
	})
	if allocs != 0 {
		t.Fatalf("Open(huge) made %v allocations, want 0", allocs)
	}
}

func TestErrorTextHasNoSecrets(t *testing.T) {
	c := mustNew(t, testKey(1))
	v := mustSeal(t, c, "s", []byte("secret-openid"), t0.Add(time.Hour))
	for _, err := range []error{
		func() error { _, err := c.Open("s", v+"x", t0); return err }(),
		func() error { _, err := c.Open("s", v, t0.Add(2*time.Hour)); return err }(),
	} {
		if strings.Contains(err.Error(), v[:10]) || strings.Contains(err.Error(), "secret") {
			t.Errorf("error %q leaks the value", err)
		}
	}
}

func TestDeriveKey(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	a := DeriveKey(secret, "session")
	b := DeriveKey(secret, "binding")
	if len(a) != KeySize || len(b) != KeySize {
		t.Fatalf("derived key lengths %d, %d; want %d", len(a), len(b), KeySize)
	}
	if bytes.Equal(a, b) {
		t.Fatal("different purposes gave the same key")
	}
	if !bytes.Equal(a, DeriveKey(secret, "session")) {
		t.Fatal("DeriveKey is not deterministic")
	}
	if bytes.Equal(a, DeriveKey([]byte("0123456789abcdef0123456789abcdeF"), "session")) {
		t.Fatal("different secrets gave the same key")
	}
	if bytes.Equal(a, secret) {
		t.Fatal("derived key equals the secret")
	}
	for _, short := range [][]byte{nil, {}, []byte("fifteen bytes!!")} {
		if k := DeriveKey(short, "session"); k != nil {
			t.Errorf("DeriveKey(%d-byte secret) = %x, want nil", len(short), k)
		}
	}
	if _, err := New(DeriveKey(nil, "session")); err == nil {
		t.Error("New accepted the key derived from an empty secret")
	}

	// Keys for separate purposes keep their values apart.
	sess, bind := mustNew(t, a), mustNew(t, b)
	v := mustSeal(t, sess, "c", []byte("p"), t0.Add(time.Hour))
	if _, err := bind.Open("c", v, t0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("binding codec opened a session value: %v", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	c := mustNew(t, testKey(1), testKey(2))
	done := make(chan error)
	for g := range 4 {
		go func() {
			var err error
			for i := range 200 {
				p := []byte{byte(g), byte(i)}
				v, serr := c.Seal("s", p, t0.Add(time.Hour))
				if serr != nil {
					err = serr
					break
				}
				got, oerr := c.Open("s", v, t0)
				if oerr != nil || !bytes.Equal(got, p) {
					err = errors.New("round trip failed under concurrency")
					break
				}
			}
			done <- err
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

func BenchmarkSeal(b *testing.B) {
	c := mustNew(b, testKey(1), testKey(2))
	payload := bytes.Repeat([]byte("a"), 200) // about a session record
	exp := t0.Add(time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Seal("__Host-wechat_session", payload, exp); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	c := mustNew(b, testKey(1), testKey(2))
	v := mustSeal(b, c, "__Host-wechat_session", bytes.Repeat([]byte("a"), 200), t0.Add(time.Hour))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Open("__Host-wechat_session", v, t0); err != nil {
			b.Fatal(err)
		}
	}
}

// TestAppendOpen: the payload is appended to the caller's buffer, which an
// error leaves as it was.
func TestAppendOpen(t *testing.T) {
	c := mustNew(t, testKey(1))
	v := mustSeal(t, c, "n", []byte("payload"), t0.Add(time.Hour))
	tampered := []byte(v)
	tampered[len(tampered)/2] ^= 'A' ^ 'B'
	buf := append(make([]byte, 0, 64), "kept:"...)
	got, err := c.AppendOpen(buf, "n", v, t0)
	if err != nil || string(got) != "kept:payload" {
		t.Fatalf("AppendOpen = %q, %v", got, err)
	}
	for _, tc := range []struct {
		name, value string
		now         time.Time
		want        error
	}{
		{"other", v, t0, ErrInvalid},
		{"n", string(tampered), t0, ErrInvalid},
		{"n", v, t0.Add(time.Hour), ErrExpired},
	} {
		got, err := c.AppendOpen(buf, tc.name, tc.value, tc.now)
		if !errors.Is(err, tc.want) || string(got) != "kept:" {
			t.Errorf("AppendOpen(%q, …) = %q, %v; want %q, %v", tc.name, got, err, "kept:", tc.want)
		}
	}
}

func BenchmarkAppendOpen(b *testing.B) {
	c := mustNew(b, testKey(1), testKey(2))
	v := mustSeal(b, c, "__Host-wechat_session", bytes.Repeat([]byte("a"), 200), t0.Add(time.Hour))
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.AppendOpen(buf[:0], "__Host-wechat_session", v, t0); err != nil {
			b.Fatal(err)
		}
	}
}
