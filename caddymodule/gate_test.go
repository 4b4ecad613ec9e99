package caddymodule

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// gateBypassPaths are raw request paths that try to reach protected content
// through public_paths "/static/" and "/healthz".
var gateBypassPaths = []string{
	"/static/../secret.txt",
	"/static/%2e%2e/secret.txt",
	"/static/..%2fsecret.txt",
	"/static%2f..%2fsecret.txt",
	"/static/./../secret.txt",
	"/static//../secret.txt",
	"/static/..%5csecret.txt",
	"/static/%252e%252e/secret.txt",
	"/static/..;/secret.txt",
	"/healthz/../admin.php",
	"/healthz/../secret.txt",
	"/healthzANYTHING",
	"/healthz%2f..%2fsecret.txt",
	"/static/../admin.php",
	"/static/x.php/../../admin.php",
	"/secret.txt",
	"/admin.php",
}

// TestCaddyPublicPathsHold sends raw request lines to a real Caddy whose
// wechat_login has public_paths /static/ and /healthz, with each of the
// handlers operators put behind it: file_server, reverse_proxy to an
// upstream that cleans paths itself, and PHP-style routing (try_files into
// a front controller). No unauthenticated request may reach protected
// content, and the public paths must still work.
func TestCaddyPublicPathsHold(t *testing.T) {
	root := t.TempDir()
	for name, body := range map[string]string{
		"secret.txt": "TOP SECRET", "admin.php": "SECRET PHP SOURCE", "index.php": "front controller source",
		"static/a.css": "body{}", "healthz": "ok",
	} {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The upstream serves the same tree after cleaning the path, the way
	// most application servers do, and plays PHP for *.php.
	files := http.FileServer(http.Dir(root))
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, ".php") {
			if strings.Contains(r.URL.Path, "admin") {
				_, _ = io.WriteString(w, "SECRET PHP OUTPUT")
				return
			}
			fmt.Fprintf(w, "front controller for %s, user %q", r.URL.Path, r.Header.Get("X_WeChat_OpenID")+r.Header.Get("X.WeChat.OpenID"))
			return
		}
		files.ServeHTTP(w, r)
	}))
	t.Cleanup(upstream.Close)
	up := strings.TrimPrefix(upstream.URL, "http://")

	gate := `	wechat_login {
		app_id ` + itAppID + `
		app_secret {env.IT_WECHAT_SECRET}
		token ` + itToken + `
		encoding_aes_key {env.IT_WECHAT_AES_KEY}
		session_key {env.IT_SESSION_KEY}
		api_base http://127.0.0.1:9
		public_paths /static/ /healthz
	}
`
	sites := map[string]string{
		"file_server":   "\troot * " + root + "\n" + gate + "\tfile_server\n",
		"reverse_proxy": gate + "\treverse_proxy " + up + "\n",
		"php-style": "\troot * " + root + "\n" + gate + `	try_files {path} {path}/index.php /index.php
	@php path *.php
	reverse_proxy @php ` + up + `
	file_server
`,
	}
	for name, site := range sites {
		t.Run(name, func(t *testing.T) {
			c := startCaddy(t, site, itEnv...)
			addr := strings.TrimPrefix(c.BaseURL, "http://")
			for _, raw := range gateBypassPaths {
				status, body := rawRequest(t, addr, raw, "X_WeChat_OpenID: forged")
				if strings.Contains(body, "SECRET") {
					t.Errorf("%s: GET %s → %d leaked %q", name, raw, status, body)
				}
				if status == http.StatusOK {
					t.Errorf("%s: GET %s → 200 without a session: %q", name, raw, body)
				}
			}
			if status, body := rawRequest(t, addr, "/static/a.css"); status != http.StatusOK || body != "body{}" {
				t.Errorf("%s: public file: %d %q", name, status, body)
			}
			if name != "php-style" {
				if status, body := rawRequest(t, addr, "/healthz"); status != http.StatusOK || body != "ok" {
					t.Errorf("%s: /healthz: %d %q", name, status, body)
				}
			}
		})
	}
}

// TestCaddyIdentityHeaderSpellings: a public path proxied to an upstream
// that reads headers the CGI way must not receive a forged identity in any
// spelling.
func TestCaddyIdentityHeaderSpellings(t *testing.T) {
	seen := make(chan http.Header, 1)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
	}))
	t.Cleanup(upstream.Close)
	c := startCaddy(t, `	wechat_login {
		app_id `+itAppID+`
		app_secret {env.IT_WECHAT_SECRET}
		token `+itToken+`
		encoding_aes_key {env.IT_WECHAT_AES_KEY}
		session_key {env.IT_SESSION_KEY}
		api_base http://127.0.0.1:9
		public_paths /public/
	}
	reverse_proxy `+strings.TrimPrefix(upstream.URL, "http://"), itEnv...)
	status, _ := rawRequest(t, strings.TrimPrefix(c.BaseURL, "http://"), "/public/x",
		"X-WeChat-OpenID: forged1", "X_WeChat_OpenID: forged2", "X.WeChat.OpenID: forged3",
		"x_wechat_unionid: forged4", "X-Wechat_Login-Method: forged5")
	if status != http.StatusOK {
		t.Fatalf("public path: %d", status)
	}
	h := <-seen
	for k, v := range h {
		if strings.Contains(strings.Join(v, ","), "forged") {
			t.Errorf("upstream received %s: %v", k, v)
		}
	}
}

// rawRequest sends one GET with the request target exactly as given (no
// client-side cleaning or escaping) and extra header lines.
func rawRequest(t *testing.T, addr, target string, headers ...string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: application/json\r\nConnection: close\r\n", target, addr)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}
