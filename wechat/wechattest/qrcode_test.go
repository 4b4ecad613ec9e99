package wechattest

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"image/jpeg"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"rsc.io/qr"
)

func createQR(t testing.TB, s *Server, tok, body string) apiAnswer {
	t.Helper()
	return call(t, http.MethodPost, s.URL+"/cgi-bin/qrcode/create?access_token="+url.QueryEscape(tok), body)
}

func TestQRCreateValidation(t *testing.T) {
	s := newPlatformServer(t, Config{}, "", Plaintext)
	tok := fetchClassic(t, s).str("access_token")
	for _, tc := range []struct {
		name    string
		body    string
		errcode int
		expire  int64 // expected expire_seconds, 0 = absent
	}{
		{"str scene", `{"expire_seconds":300,"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"login_abc"}}}`, 0, 300},
		{"int scene", `{"expire_seconds":604800,"action_name":"QR_SCENE","action_info":{"scene":{"scene_id":123}}}`, 0, 604800},
		{"default ttl", `{"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"a"}}}`, 0, 60},
		{"zero ttl is default", `{"expire_seconds":0,"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"a"}}}`, 0, 60},
		{"capped ttl", `{"expire_seconds":99999999,"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"a"}}}`, 0, 2592000},
		{"max uint32 scene", `{"action_name":"QR_SCENE","action_info":{"scene":{"scene_id":4294967295}}}`, 0, 60},
		{"permanent int", `{"action_name":"QR_LIMIT_SCENE","action_info":{"scene":{"scene_id":100000}}}`, 0, 0},
		{"permanent str", `{"expire_seconds":30,"action_name":"QR_LIMIT_STR_SCENE","action_info":{"scene":{"scene_str":"x"}}}`, 0, 0},
		{"64-byte scene", `{"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"` + strings.Repeat("s", 64) + `"}}}`, 0, 60},
		{"no scene level", `{"action_name":"QR_STR_SCENE","action_info":{"scene_str":"x"}}`, 0, 60},
		{"bad action", `{"action_name":"QR_FOO","action_info":{"scene":{"scene_id":1}}}`, 40052, 0},
		{"no action", `{"action_info":{"scene":{"scene_id":1}}}`, 40052, 0},
		{"single quotes", `{'action_name':'QR_SCENE'}`, 40052, 0},
		{"wrong ttl type", `{"expire_seconds":"60","action_name":"QR_SCENE","action_info":{"scene":{"scene_id":1}}}`, 40052, 0},
		{"65-byte scene", `{"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"` + strings.Repeat("s", 65) + `"}}}`, 40053, 0},
		{"empty scene_str", `{"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":""}}}`, 40053, 0},
		{"numeric scene_str", `{"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":12}}}`, 40053, 0},
		{"str action with id", `{"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_id":12}}}`, 40053, 0},
		{"zero scene_id", `{"action_name":"QR_SCENE","action_info":{"scene":{"scene_id":0}}}`, 40053, 0},
		{"negative scene_id", `{"action_name":"QR_SCENE","action_info":{"scene":{"scene_id":-1}}}`, 40053, 0},
		{"string scene_id", `{"action_name":"QR_SCENE","action_info":{"scene":{"scene_id":"12"}}}`, 40053, 0},
		{"fractional scene_id", `{"action_name":"QR_SCENE","action_info":{"scene":{"scene_id":1.5}}}`, 40053, 0},
		{"scene_id over uint32", `{"action_name":"QR_SCENE","action_info":{"scene":{"scene_id":4294967296}}}`, 40053, 0},
		{"permanent id over 100000", `{"action_name":"QR_LIMIT_SCENE","action_info":{"scene":{"scene_id":100001}}}`, 40053, 0},
		{"empty body", ``, 44002, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := createQR(t, s, tok, tc.body)
			wantErrcode(t, a, tc.errcode)
			if tc.errcode != 0 {
				return
			}
			if got := a.num("expire_seconds"); got != tc.expire {
				t.Errorf("expire_seconds = %d, want %d", got, tc.expire)
			}
			_, hasExpire := a["expire_seconds"]
			if hasExpire != (tc.expire != 0) {
				t.Errorf("expire_seconds present = %v", hasExpire)
			}
			if u := a.str("url"); !qrURLShape.MatchString(u) {
				t.Errorf("url %q is not shaped like WeChat's", u)
			}
			if _, err := base64.StdEncoding.DecodeString(a.str("ticket")); err != nil {
				t.Errorf("ticket is not standard base64: %v", err)
			}
		})
	}
}

func TestQRCreateTokenAndMethod(t *testing.T) {
	s := newPlatformServer(t, Config{}, "", Plaintext)
	body := `{"action_name":"QR_SCENE","action_info":{"scene":{"scene_id":1}}}`
	wantErrcode(t, call(t, http.MethodPost, s.URL+"/cgi-bin/qrcode/create", body), 41001)
	wantErrcode(t, createQR(t, s, "bogus", body), 40014)
	wantErrcode(t, get(t, s.URL+"/cgi-bin/qrcode/create?access_token=x"), 43002)
	// Stable tokens work for cgi-bin APIs too.
	wantErrcode(t, createQR(t, s, fetchStable(t, s, false).str("access_token"), body), 0)
}

func TestQRCreateRawJSON(t *testing.T) {
	s := newPlatformServer(t, Config{}, "", Plaintext)
	tok := fetchClassic(t, s).str("access_token")
	resp, err := http.Post(s.URL+"/cgi-bin/qrcode/create?access_token="+url.QueryEscape(tok), "application/json",
		strings.NewReader(`{"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"a"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	// WeChat escapes slashes in URLs.
	if !bytes.Contains(b, []byte(`"url":"http:\/\/`)) {
		t.Errorf("answer %s does not escape slashes", b)
	}
}

// qrURLShape matches WeChat's QR code urls, old and new.
var qrURLShape = regexp.MustCompile(`^http://weixin\.qq\.com/q/(02)?[A-Za-z0-9]{20}$`)

// TestTicketShape decodes tickets into the record real tickets hold (the
// layout of the two real tickets of the reference) and checks that both
// base64 endings and "+" occur.
func TestTicketShape(t *testing.T) {
	s := newPlatformServer(t, Config{Now: fixedClock()}, "", Plaintext)
	tok := fetchClassic(t, s).str("access_token")
	created := s.now().Unix()
	var padded, unpadded, plus bool
	for range 60 {
		a := createQR(t, s, tok, `{"expire_seconds":240,"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"abc"}}}`)
		ticket, u := a.str("ticket"), a.str("url")
		b, err := base64.StdEncoding.DecodeString(ticket)
		if err != nil {
			t.Fatalf("ticket %q: %v", ticket, err)
		}
		want := []byte{0x81, 0x01, b[2], b[3], byte(len(b) - 12), 0, 0, 0, 0, 0, 0, 0, 0x01, byte(len(u) + 1)}
		want = append(want, u...)
		want = append(want, 0x00, 0x02, 0x04)
		want = binary.LittleEndian.AppendUint32(want, uint32(created))
		want = append(want, 0x03, 0x04)
		want = binary.LittleEndian.AppendUint32(want, 240)
		if !bytes.Equal(b, want) {
			t.Fatalf("ticket %q holds\n% x\nwant\n% x", ticket, b, want)
		}
		if !strings.HasPrefix(ticket, "gQ") {
			t.Fatalf("ticket %q does not start like WeChat's", ticket)
		}
		padded = padded || strings.HasSuffix(ticket, "==")
		unpadded = unpadded || !strings.HasSuffix(ticket, "=")
		plus = plus || strings.Contains(ticket, "+")
	}
	if !padded || !unpadded || !plus {
		t.Errorf("in 60 tickets: ending in == %v, unpadded %v, with + %v; want all", padded, unpadded, plus)
	}
	// The doc's own example decodes the same way.
	b, _ := base64.StdEncoding.DecodeString("gQH47joAAAAAAAAAASxodHRwOi8vd2VpeGluLnFxLmNvbS9xL2taZ2Z3TVRtNzJXV1Brb3ZhYmJJAAIEZ23sUwMEmm3sUw==")
	if int(b[4]) != len(b)-12 || string(b[14:14+int(b[13])-1]) != "http://weixin.qq.com/q/kZgfwMTm72WWPkovabbI" {
		t.Errorf("the reference's ticket does not have the layout encodeTicket follows")
	}
}

func TestShowQRCode(t *testing.T) {
	s := newPlatformServer(t, Config{Now: fixedClock()}, "", Plaintext)
	tok := fetchClassic(t, s).str("access_token")
	// Find a ticket with a "+", which becomes a space when not URL-encoded.
	var ticket string
	for i := 0; !strings.Contains(ticket, "+"); i++ {
		if i == 200 {
			t.Fatal("no ticket with a + in 200")
		}
		ticket = createQR(t, s, tok, `{"expire_seconds":120,"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"s"}}}`).str("ticket")
	}
	show := func(raw string) *http.Response {
		t.Helper()
		resp, err := http.Get(s.URL + "/cgi-bin/showqrcode?ticket=" + raw)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}

	resp := show(url.QueryEscape(ticket))
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "image/jpg" ||
		resp.Header.Get("Cache-Control") != "max-age=604800" || resp.Header.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("showqrcode: %d %v", resp.StatusCode, resp.Header)
	}
	img, err := jpeg.Decode(resp.Body)
	if err != nil {
		t.Fatalf("not a JPEG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 430 || b.Dy() != 430 {
		t.Fatalf("QR image is %v, want 430×430 like WeChat's", b)
	}
	// Every module reads back as what the QR code of the url holds.
	var u string
	s.mu.Lock()
	u = s.tickets[ticket].url
	s.mu.Unlock()
	c, err := qr.Encode(u, qr.M)
	if err != nil {
		t.Fatal(err)
	}
	scale, off := qrLayout(c.Size)
	if off < 4*scale {
		t.Fatalf("quiet zone %d px, modules %d px", off, scale)
	}
	for y := -1; y <= c.Size; y++ {
		for x := -1; x <= c.Size; x++ {
			r, _, _, _ := img.At(off+x*scale+scale/2, off+y*scale+scale/2).RGBA()
			if dark := r < 0x8000; dark != c.Black(x, y) {
				t.Fatalf("module (%d,%d): dark %v, want %v", x, y, dark, c.Black(x, y))
			}
		}
	}
	head, err := http.Head(s.URL + "/cgi-bin/showqrcode?ticket=" + url.QueryEscape(ticket))
	if err != nil {
		t.Fatal(err)
	}
	head.Body.Close()
	if head.StatusCode != http.StatusOK || head.Header.Get("Content-Type") != "image/jpg" {
		t.Errorf("HEAD: %d %v", head.StatusCode, head.Header)
	}

	if got := show(ticket).StatusCode; got != http.StatusNotFound {
		t.Errorf("unescaped ticket: %d, want 404", got)
	}
	if got := show("bm90IGEgdGlja2V0").StatusCode; got != http.StatusNotFound {
		t.Errorf("unknown ticket: %d, want 404", got)
	}
	s.Advance(120 * time.Second)
	if got := show(url.QueryEscape(ticket)).StatusCode; got != http.StatusNotFound {
		t.Errorf("expired ticket: %d, want 404", got)
	}
}
