package middleware

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// bypassPaths are the raw request paths that once reached protected content
// through public_paths "/static/" and "/healthz", and their relatives. None
// of them may be public.
var bypassPaths = []string{
	"/static/../secret.txt",
	"/static/%2e%2e/secret.txt",
	"/static/%2E%2E/secret.txt",
	"/static/.%2e/secret.txt",
	"/static/..%2fsecret.txt",
	"/static/..%2Fsecret.txt",
	"/static%2f..%2fsecret.txt",
	"/static%2F..%2Fsecret.txt",
	"/static/..%5csecret.txt",
	"/static/..\\secret.txt",
	"/static/%252e%252e/secret.txt",
	"/static/./../secret.txt",
	"/static//../secret.txt",
	"/static/x/../../secret.txt",
	"/static/..;/secret.txt",
	"/static/.",
	"/static/./x",
	"/static//x",
	"/static/%00/../secret.txt",
	"/healthz/../admin",
	"/healthz/..",
	"/healthzANYTHING",
	"/healthzz",
	"/healthz.json",
	"/staticx/a.css",
	"/STATIC/a.css",
	"/secret.txt",
}

func TestPublicPathsMatch(t *testing.T) {
	pp, err := newPublicPaths([]string{"/static/", "/healthz"})
	if err != nil {
		t.Fatal(err)
	}
	for _, raw := range bypassPaths {
		u, err := url.ParseRequestURI(raw)
		if err != nil {
			continue // not even a request the server would accept
		}
		if pp.match(u) {
			t.Errorf("%s is public", raw)
		}
	}
	for _, raw := range []string{
		"/static/", "/static/a.css", "/static/dir/", "/static/img/logo%20big.png",
		"/static/%E4%B8%AD.txt", "/static/a.css?v=1", "/healthz", "/healthz/", "/healthz/live",
		"/static/..a", "/static/a..", "/static/.well-known",
	} {
		u, err := url.ParseRequestURI(raw)
		if err != nil {
			t.Fatal(err)
		}
		if !pp.match(u) {
			t.Errorf("%s is not public", raw)
		}
	}
}

func TestPublicPathsConfig(t *testing.T) {
	for _, bad := range []string{"static/", "/static/../x", "/a//b", "/a/./b", "/a%2fb", "/a\\b", "/a/.."} {
		if _, err := newPublicPaths([]string{bad}); err == nil {
			t.Errorf("PublicPaths %q accepted", bad)
		}
	}
	pp, err := newPublicPaths([]string{"/"})
	if err != nil {
		t.Fatal(err)
	}
	if u, _ := url.ParseRequestURI("/anything"); !pp.match(u) {
		t.Error(`"/" does not open everything`)
	}
	if u, _ := url.ParseRequestURI("/a/../b"); pp.match(u) {
		t.Error(`"/" opens a path with dot segments`)
	}
}

func TestStripIdentityHeaderSpellings(t *testing.T) {
	h := http.Header{}
	for _, k := range []string{
		"X-WeChat-OpenID", "X_WeChat_OpenID", "X.WeChat.OpenID", "x-wechat-openid", "X_WECHAT_UNIONID",
		"X-Wechat_AppID", "x.wechat-login-method", "X~WeChat~OpenID",
	} {
		h[k] = []string{"forged"}
	}
	h.Set("X-WeChatty", "kept")
	h.Set("X-Request-Id", "kept")
	stripIdentityHeaders(h)
	if len(h) != 2 || h.Get("X-WeChatty") != "kept" || h.Get("X-Request-Id") != "kept" {
		t.Fatalf("after stripping: %v", h)
	}
}

// TestPublicPathsBehindFileServer puts the middleware in front of
// net/http's FileServer, with a public /static/ directory next to a secret
// file, and sends raw request lines (no client-side cleaning) the way an
// attacker would.
func TestPublicPathsBehindFileServer(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "static"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"secret.txt": "TOP SECRET", "static/a.css": "body{}", "admin": "ADMIN"} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mw, err := New(Config{
		AppID: testAppID, AppSecret: testSecret, PushToken: testToken,
		SessionKeys: [][]byte{testSessionKey},
		PublicPaths: []string{"/static/", "/healthz"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mw.Close() })
	files := http.FileServer(http.Dir(root))
	mux := http.NewServeMux()
	mux.Handle("/healthz", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	mux.Handle("/", files)
	srv := httptest.NewServer(mw.Handler(mux))
	t.Cleanup(srv.Close)

	for _, raw := range bypassPaths {
		status, body := rawGet(t, srv.Listener.Addr().String(), raw)
		if strings.Contains(body, "TOP SECRET") || strings.Contains(body, "ADMIN") {
			t.Errorf("GET %s: %d leaked protected content", raw, status)
		}
		if status == http.StatusOK {
			t.Errorf("GET %s: 200 without a session", raw)
		}
	}
	if status, body := rawGet(t, srv.Listener.Addr().String(), "/static/a.css"); status != http.StatusOK || body != "body{}" {
		t.Errorf("public file: %d %q", status, body)
	}
	if status, body := rawGet(t, srv.Listener.Addr().String(), "/healthz"); status != http.StatusOK || body != "ok" {
		t.Errorf("health check: %d %q", status, body)
	}
}

// rawGet sends one request line exactly as given and returns the status and
// body.
func rawGet(t *testing.T, addr, target string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: application/json\r\nConnection: close\r\n\r\n", target, addr)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// FuzzPublicPath checks the property the rule exists for: whatever request
// path is public, every handler resolves it to that same path, under a
// configured prefix.
func FuzzPublicPath(f *testing.F) {
	for _, p := range bypassPaths {
		f.Add(p)
	}
	f.Add("/static/a.css")
	f.Add("/healthz/live")
	pp, err := newPublicPaths([]string{"/static/", "/healthz"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.ParseRequestURI(raw)
		if err != nil || !pp.match(u) {
			return
		}
		clean := path.Clean(u.Path)
		if clean != strings.TrimSuffix(u.Path, "/") && clean != u.Path {
			t.Fatalf("%q is public but cleans to %q", raw, clean)
		}
		again, err := url.PathUnescape(u.Path)
		if err == nil && path.Clean(again) != clean {
			t.Fatalf("%q is public but a second decoding moves it to %q", raw, again)
		}
		if strings.ContainsAny(u.Path, "\\\x00") {
			t.Fatalf("%q is public with a backslash or NUL", raw)
		}
		if clean != "/healthz" && clean != "/static" && !strings.HasPrefix(clean, "/healthz/") && !strings.HasPrefix(clean, "/static/") {
			t.Fatalf("%q is public outside the prefixes (%q)", raw, clean)
		}
	})
}
