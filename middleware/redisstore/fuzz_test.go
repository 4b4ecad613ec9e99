package redisstore

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/internal/redistest"
	"github.com/wechat-login/caddy-wechat-login/middleware/store"
)

// FuzzValues checks that any key and any bytes survive the trip through
// Redis exactly, and that the Lua compare-and-swap compares them exactly:
// values come from outside (WeChat pushes, OAuth callbacks) by way of the
// middleware's records.
func FuzzValues(f *testing.F) {
	f.Add("scene:0123456789abcdef", []byte("pending"), []byte("pendinG"))
	f.Add("k", []byte{}, []byte{0})
	f.Add("nul\x00key", []byte("a\x00b"), []byte("a\x00c"))
	f.Add("utf8:场景", []byte{0xff, 0xfe, 0xc0, 0x80}, []byte{0xff, 0xfe, 0xc0})
	f.Add("lua", []byte("'); return 2 --"), []byte("%s%d"))
	f.Add("resp", []byte("*1\r\n$4\r\nPING\r\n"), []byte("$-1\r\n"))

	srv := redistest.Start(f)
	client := newClient(f, srv)
	s := New(client, uniquePrefix())
	ctx := context.Background()

	f.Fuzz(func(t *testing.T, key string, a, b []byte) {
		if len(key) > maxKeyLen || len(a) > maxValueLen || len(b) > maxValueLen {
			t.Skip()
		}
		if err := s.Delete(ctx, key); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if err := s.Create(ctx, key, a, time.Minute); err != nil {
			t.Fatalf("Create: %v", err)
		}
		if got, err := s.Get(ctx, key); err != nil || !bytes.Equal(got, a) || got == nil {
			t.Fatalf("Get = %q, %v; want %q", got, err, a)
		}
		err := s.Update(ctx, key, b, []byte("next"))
		switch {
		case bytes.Equal(a, b) && err != nil:
			t.Fatalf("Update with the stored value as old = %v", err)
		case !bytes.Equal(a, b) && !errors.Is(err, store.ErrChanged):
			t.Fatalf("Update with old %q over %q = %v, want ErrChanged", b, a, err)
		}
		want := a
		if err == nil {
			want = []byte("next")
		}
		if got, err := s.Take(ctx, key); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Take = %q, %v; want %q", got, err, want)
		}
	})
}

// FuzzNewClient checks that no URL of any form, however broken, panics or
// has its password quoted back in the error.
func FuzzNewClient(f *testing.F) {
	for _, u := range []string{
		"redis://127.0.0.1:6379/0",
		"rediss://user:secretpw@host:6380/2?dial_timeout=3s",
		"redis://:secretpw@host:notaport",
		"redis://:secretpw@host/x",
		"unix:///tmp/redis.sock?db=1&password=secretpw",
		"redis://:secretpw@[::1",
		"%zz://secretpw",
		"redis-sentinel://:secretpw@h1:26379,h2/0?master_name=m&sentinel_password=secretpw",
		"rediss-sentinel://u:secretpw@[::1]:26379,h2?master_name=m&dial_timeout=secretpw",
		"redis-cluster://:secretpw@h1:7000,h2:7001/0?read_timeout=2s",
		"redis-cluster://:secretpw@h1,,h2",
	} {
		f.Add(u)
	}
	f.Fuzz(func(t *testing.T, rawURL string) {
		c, err := NewUniversalClient(rawURL)
		if err != nil {
			if strings.Contains(rawURL, "secretpw") && strings.Contains(err.Error(), "secretpw") {
				t.Fatalf("error quotes the password: %v", err)
			}
			return
		}
		_ = c.Close()
	})
}
