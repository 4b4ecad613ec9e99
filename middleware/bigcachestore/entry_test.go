package bigcachestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/middleware/store"
	"github.com/wechat-login/caddy-wechat-login/middleware/store/storetest"
)

func TestEntryRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		key     string
		expires int64
		value   []byte
	}{
		{"typical", "wechat_login:wx1:scene:abc", 1_772_000_000_000_000_000, []byte(`{"state":"pending"}`)},
		{"empty key and value", "", 0, []byte{}},
		{"negative expiry", "k", -1, []byte("v")},
		{"binary value", "k", 1, []byte{0, 0xff, 0, 0xfe}},
		{"longest key", strings.Repeat("k", maxKeyLen), 7, []byte("v")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := appendEntry(nil, tc.key, tc.expires, tc.value)
			if want := entryHeaderSize + len(tc.key) + len(tc.value); len(b) != want {
				t.Fatalf("encoded length %d, want %d", len(b), want)
			}
			e, err := decodeEntry(b)
			if err != nil {
				t.Fatalf("decodeEntry: %v", err)
			}
			if e.expires != tc.expires || string(e.key) != tc.key || !bytes.Equal(e.value, tc.value) || e.value == nil {
				t.Fatalf("decodeEntry = {%d %q %q}, want {%d %q %q}", e.expires, e.key, e.value, tc.expires, tc.key, tc.value)
			}
			if exp, ok := entryExpiry(b); !ok || exp != tc.expires {
				t.Fatalf("entryExpiry = %d, %t; want %d, true", exp, ok, tc.expires)
			}
			if !e.liveAt(tc.expires-1) || e.liveAt(tc.expires) {
				t.Fatalf("liveAt: want live just before %d and expired at it", tc.expires)
			}
		})
	}
}

func TestDecodeEntryCorrupt(t *testing.T) {
	valid := appendEntry(nil, "key", 1, []byte("value"))
	for _, b := range [][]byte{
		nil,
		{},
		valid[:entryHeaderSize-1],
		valid[:entryHeaderSize+2], // key cut short
	} {
		if _, err := decodeEntry(b); !errors.Is(err, errCorrupt) {
			t.Errorf("decodeEntry(%q) = %v, want errCorrupt", b, err)
		}
	}
	if _, ok := entryExpiry(valid[:7]); ok {
		t.Error("entryExpiry of 7 bytes reported ok")
	}
}

// FuzzDecodeEntry feeds arbitrary bytes to the decoder: it must never
// panic, and whatever it accepts must encode back to the same bytes.
func FuzzDecodeEntry(f *testing.F) {
	f.Add(appendEntry(nil, "wechat_login:wx1:scene:abc", 1_772_000_000_000_000_000, []byte("pending")))
	f.Add(appendEntry(nil, "", 0, nil))
	f.Add([]byte{1, 2, 3})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 'k'})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEntry(b)
		if err != nil {
			return
		}
		if len(e.key) > 0xffff {
			t.Fatalf("key of %d bytes", len(e.key))
		}
		if got := appendEntry(nil, string(e.key), e.expires, e.value); !bytes.Equal(got, b) {
			t.Fatalf("re-encoded %q as %q", b, got)
		}
	})
}

// FuzzOperations runs arbitrary sequences of operations against the store
// and a plain map with the same semantics; they must agree on every result.
// Each operation takes three bytes: what to do, which key, and a value,
// time to live or clock step.
func FuzzOperations(f *testing.F) {
	f.Add([]byte{0, 1, 5, 1, 1, 0, 2, 1, 7, 3, 1, 0, 3, 1, 0})
	f.Add([]byte{0, 2, 1, 5, 0, 11, 1, 2, 0, 0, 2, 3, 2, 2, 9})
	f.Add([]byte{0, 3, 3, 2, 3, 4, 5, 0, 25, 2, 3, 4, 0, 3, 1, 4, 3, 0, 1, 3, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		clock := storetest.NewFakeClock(epoch)
		s, err := New(Config{MaxEntries: 100, MaxTTL: 5 * time.Second, Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		type modelEntry struct {
			value   []byte
			expires time.Time
		}
		model := map[string]modelEntry{}
		live := func(k string) (modelEntry, bool) {
			e, ok := model[k]
			return e, ok && clock.Now().Before(e.expires)
		}
		ctx := context.Background()
		for ; len(ops) >= 3; ops = ops[3:] {
			op, k, arg := ops[0]%6, fmt.Sprint("key-", ops[1]%4), ops[2]
			val := bytes.Repeat([]byte{arg}, int(arg%5))
			switch op {
			case 0:
				ttl := time.Duration(arg%5+1) * time.Second
				err := s.Create(ctx, k, val, ttl)
				if _, ok := live(k); ok {
					if !errors.Is(err, store.ErrExists) {
						t.Fatalf("Create(%s) over live entry = %v", k, err)
					}
				} else {
					if err != nil {
						t.Fatalf("Create(%s) = %v", k, err)
					}
					model[k] = modelEntry{val, clock.Now().Add(ttl)}
				}
			case 1, 3:
				var got []byte
				var err error
				if op == 1 {
					got, err = s.Get(ctx, k)
				} else {
					got, err = s.Take(ctx, k)
				}
				e, ok := live(k)
				switch {
				case !ok && !errors.Is(err, store.ErrNotFound):
					t.Fatalf("op %d on absent %s = %q, %v", op, k, got, err)
				case ok && (err != nil || !bytes.Equal(got, e.value)):
					t.Fatalf("op %d on %s = %q, %v; want %q", op, k, got, err, e.value)
				}
				if op == 3 {
					delete(model, k)
				}
			case 2:
				e, ok := live(k)
				old := val
				if ok && arg%2 == 0 {
					old = e.value
				}
				next := append(bytes.Clone(val), 'u')
				err := s.Update(ctx, k, old, next)
				switch {
				case !ok:
					if !errors.Is(err, store.ErrNotFound) {
						t.Fatalf("Update of absent %s = %v", k, err)
					}
				case !bytes.Equal(old, e.value):
					if !errors.Is(err, store.ErrChanged) {
						t.Fatalf("Update of %s with stale old = %v", k, err)
					}
				default:
					if err != nil {
						t.Fatalf("Update(%s) = %v", k, err)
					}
					model[k] = modelEntry{next, e.expires}
				}
			case 4:
				if err := s.Delete(ctx, k); err != nil {
					t.Fatalf("Delete(%s) = %v", k, err)
				}
				delete(model, k)
			case 5:
				clock.Advance(time.Duration(arg) * 100 * time.Millisecond)
			}
		}
	})
}
