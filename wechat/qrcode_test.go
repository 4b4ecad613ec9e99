package wechat_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat"
)

// TestCreateTempQRRequestGolden pins the request WeChat gets, byte for byte:
// the scene must be nested under action_info.scene, or every scan reports
// scene 0.
func TestCreateTempQRRequestGolden(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ttl      time.Duration
		wantBody string
	}{
		{5 * time.Minute, `{"expire_seconds":300,"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"login-AbC_09"}}}`},
		{1500 * time.Millisecond, `{"expire_seconds":2,"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"login-AbC_09"}}}`},
		{time.Second + time.Nanosecond, `{"expire_seconds":2,"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"login-AbC_09"}}}`},
		{wechat.MinQRTTL, `{"expire_seconds":1,"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"login-AbC_09"}}}`},
		{wechat.MaxQRTTL, `{"expire_seconds":2592000,"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"login-AbC_09"}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.ttl.String(), func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				if r.Method != http.MethodPost || r.URL.Path != "/cgi-bin/qrcode/create" {
					t.Errorf("request %s %s", r.Method, r.URL.Path)
				}
				if got := r.URL.Query().Get("access_token"); got != testAccessToken {
					t.Errorf("access_token = %q", got)
				}
				if string(body) != tt.wantBody {
					t.Errorf("body\n got %s\nwant %s", body, tt.wantBody)
				}
				fmt.Fprintf(w, `{"ticket":"gQH47joAAAAAAAAAASxodHRwOi8vd2VpeGluLnFxLmNvbS9xL2taZ2Z3TVRtNzJXV1Brb3ZhYmJJAAIEZ23sUwMEmm3sUw==","expire_seconds":%s,"url":"http:\/\/weixin.qq.com\/q\/kZgfwMTm72WWPkovabbI"}`,
					tt.wantBody[len(`{"expire_seconds":`):strings.Index(tt.wantBody, ",")])
			}))
			defer srv.Close()
			qr, err := clientFor(wechat.Endpoint{API: srv.URL}, nil).CreateTempQR(context.Background(), "login-AbC_09", tt.ttl)
			if err != nil {
				t.Fatal(err)
			}
			if qr.URL != "http://weixin.qq.com/q/kZgfwMTm72WWPkovabbI" || !strings.HasSuffix(qr.Ticket, "Uw==") {
				t.Errorf("QRCode = %+v", qr)
			}
			if want := time.Duration((tt.ttl+time.Second-1)/time.Second) * time.Second; qr.ExpiresIn != want {
				t.Errorf("ExpiresIn = %v, want %v", qr.ExpiresIn, want)
			}
		})
	}
}

func TestCreateTempQRAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		body    string
		wantErr string
		wantTTL time.Duration
	}{
		{"no expire_seconds: what was asked", `{"ticket":"t","url":"u"}`, "", time.Minute},
		{"longer than asked: what was asked", `{"ticket":"t","url":"u","expire_seconds":999999}`, "", time.Minute},
		{"shorter than asked", `{"ticket":"t","url":"u","expire_seconds":30}`, "", 30 * time.Second},
		{"no ticket", `{"url":"u","expire_seconds":60}`, "lacks ticket", 0},
		{"no url", `{"ticket":"t","expire_seconds":60}`, "lacks ticket", 0},
		{"bad action info", `{"errcode":40053,"errmsg":"invalid action info, please check document"}`, "errcode 40053", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, tt.body)
			}))
			defer srv.Close()
			qr, err := clientFor(wechat.Endpoint{API: srv.URL}, nil).CreateTempQR(context.Background(), "s", time.Minute)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if qr.ExpiresIn != tt.wantTTL {
				t.Errorf("ExpiresIn = %v, want %v", qr.ExpiresIn, tt.wantTTL)
			}
		})
	}
}

// TestCreateTempQRValidation: bad input is refused before any request.
func TestCreateTempQRValidation(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprint(w, `{"ticket":"t","url":"u","expire_seconds":60}`)
	}))
	defer srv.Close()
	c := clientFor(wechat.Endpoint{API: srv.URL}, nil)
	tests := []struct {
		name  string
		scene string
		ttl   time.Duration
	}{
		{"empty scene", "", time.Minute},
		{"65-byte scene", strings.Repeat("a", 65), time.Minute},
		{"space", "a b", time.Minute},
		{"control", "a\x00b", time.Minute},
		{"non-ASCII", "场景", time.Minute},
		{"zero ttl", "s", 0},
		{"negative ttl", "s", -time.Minute},
		{"under a second", "s", 999 * time.Millisecond},
		{"over 30 days", "s", wechat.MaxQRTTL + time.Nanosecond},
	}
	for _, tt := range tests {
		_, err := c.CreateTempQR(context.Background(), tt.scene, tt.ttl)
		if !errors.Is(err, wechat.ErrInvalidArgument) {
			t.Errorf("%s: err = %v, want ErrInvalidArgument", tt.name, err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("%d requests reached WeChat", n)
	}
	if _, err := c.CreateTempQR(context.Background(), strings.Repeat("z", 64), time.Minute); err != nil {
		t.Errorf("64-byte scene refused: %v", err)
	}
}

func TestShowQRCodeURLEscaping(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ticket string
		want   string
	}{
		{"a+b/c=", "https://mp.weixin.qq.com/cgi-bin/showqrcode?ticket=a%2Bb%2Fc%3D"},
		{
			"gQH47joAAAAAAAAAASxodHRwOi8vd2VpeGluLnFxLmNvbS9xL2taZ2Z3TVRtNzJXV1Brb3ZhYmJJAAIEZ23sUwMEmm3sUw==",
			"https://mp.weixin.qq.com/cgi-bin/showqrcode?ticket=gQH47joAAAAAAAAAASxodHRwOi8vd2VpeGluLnFxLmNvbS9xL2taZ2Z3TVRtNzJXV1Brb3ZhYmJJAAIEZ23sUwMEmm3sUw%3D%3D",
		},
		{"&ticket=evil#x", "https://mp.weixin.qq.com/cgi-bin/showqrcode?ticket=%26ticket%3Devil%23x"},
	}
	for _, tt := range tests {
		got := wechat.DefaultEndpoint.ShowQRCodeURL(tt.ticket)
		if got != tt.want {
			t.Errorf("ShowQRCodeURL(%q)\n got %s\nwant %s", tt.ticket, got, tt.want)
		}
		u, err := url.Parse(got)
		if err != nil || u.Query().Get("ticket") != tt.ticket || len(u.Query()["ticket"]) != 1 {
			t.Errorf("ShowQRCodeURL(%q) does not round-trip: %s", tt.ticket, got)
		}
	}
}

// BenchmarkCreateTempQR measures a full QR creation against a local server
// (JSON encode, HTTP round trip over loopback, decode), the client's share
// of every QR login.
func BenchmarkCreateTempQR(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, `{"ticket":"gQH47joAAAAAAAAAASxodHRwOi8vd2VpeGluLnFxLmNvbS9xL2taZ2Z3TVRtNzJXV1Brb3ZhYmJJAAIEZ23sUwMEmm3sUw==","expire_seconds":300,"url":"http:\/\/weixin.qq.com\/q\/kZgfwMTm72WWPkovabbI"}`)
	}))
	defer srv.Close()
	c := clientFor(wechat.Endpoint{API: srv.URL}, srv.Client())
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.CreateTempQR(ctx, "login-0123456789abcdef", 5*time.Minute); err != nil {
			b.Fatal(err)
		}
	}
}
