package wechattest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// BenchmarkQRCreate measures qrcode/create through the handler alone.
func BenchmarkQRCreate(b *testing.B) {
	p, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	if err := p.AddApp(App{AppID: oaID, AppSecret: oaSecret}); err != nil {
		b.Fatal(err)
	}
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/cgi-bin/token?grant_type=client_credential&appid="+oaID+"&secret="+oaSecret, nil))
	tok := strings.Split(rec.Body.String(), `"`)[3]
	target := "/cgi-bin/qrcode/create?access_token=" + url.QueryEscape(tok)
	const body = `{"expire_seconds":300,"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"bench"}}}`
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, target, strings.NewReader(body)))
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"ticket"`) {
			b.Fatalf("answer %d %s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkScanSafeMode measures a scan and its encrypted push to a local
// callback over loopback HTTP.
func BenchmarkScanSafeMode(b *testing.B) {
	cb := newCallback(b, nil)
	s := newPlatformServer(b, Config{}, cb.URL, Safe)
	ticket := newQR(b, s, `{"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"bench"}}}`).str("ticket")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		d, err := s.Scan(ctx, oaID, ticket, "bob")
		if err != nil || d.Status != StatusAcknowledged {
			b.Fatalf("%v %+v", err, d)
		}
	}
}
