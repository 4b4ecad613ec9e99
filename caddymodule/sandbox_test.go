package caddymodule

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestSandboxDemo runs the README's demo Caddyfile in a real Caddy and logs
// in the way a newcomer would, through the sandbox's "Simulate scan".
func TestSandboxDemo(t *testing.T) {
	src, err := os.ReadFile("../examples/sandbox/Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	// Serve the demo's site block on a free port instead of :8080.
	site := string(src)
	body := site[strings.Index(site, "http://localhost:8080 {")+len("http://localhost:8080 {") : strings.LastIndex(site, "}")]
	c := startCaddy(t, body)
	b := newClient(t, c.BaseURL)

	resp, _ := b.do(http.MethodGet, "/", nil, "Accept", "text/html")
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("demo root without a session: %d", resp.StatusCode)
	}
	resp, page := b.do(http.MethodGet, resp.Header.Get("Location"), nil, "Accept", "text/html")
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, "Simulate scan") || !strings.Contains(page, "Sandbox demo") {
		t.Fatalf("login page: %d\n%s", resp.StatusCode, page)
	}
	waitFor(t, 5*time.Second, "the start-up warning about the sandbox", func() bool {
		return strings.Contains(c.logs.String(), "SANDBOX MODE")
	})

	_, qrJSON := b.do(http.MethodPost, "/wechat/qr", strings.NewReader("next=%2F"), "Origin", c.BaseURL)
	var qr map[string]string
	_ = json.Unmarshal([]byte(qrJSON), &qr)
	if qr["qr_content"] == "" {
		t.Fatalf("create QR: %s", qrJSON)
	}
	resp, scan := b.do(http.MethodPost, "/wechat/sandbox/scan", strings.NewReader(url.Values{"qr": {qr["qr_content"]}, "user": {"alice"}}.Encode()))
	if resp.StatusCode != http.StatusOK || !strings.Contains(scan, "Sandbox demo") {
		t.Fatalf("simulate scan: %d %s", resp.StatusCode, scan)
	}
	if _, poll := b.do(http.MethodGet, "/wechat/poll?scene="+qr["scene"], nil); !strings.Contains(poll, `"confirmed"`) {
		t.Fatalf("poll: %s", poll)
	}
	_, greeting := b.do(http.MethodGet, "/", nil)
	if !regexp.MustCompile(`Hello, WeChat user o[A-Za-z0-9_-]{27}<`).MatchString(greeting) {
		t.Fatalf("no greeting by openid:\n%s", greeting)
	}

	// The fake WeChat's own pages are served under the prefix too.
	if resp, _ := b.do(http.MethodGet, "/wechat/sandbox/sandbox/users", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("sandbox users page: %d", resp.StatusCode)
	}
}
