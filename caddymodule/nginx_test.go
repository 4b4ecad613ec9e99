package caddymodule

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// nginxBinary finds nginx with the auth_request module. Without it the
// test is skipped, except in CI (CI=true), where it must run.
func nginxBinary(t *testing.T) string {
	t.Helper()
	missing := func(why string) string {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s; CI must run the nginx test (scripts/install-test-deps installs nginx)", why)
		}
		t.Skipf("%s: skipping the nginx auth_request test (scripts/install-test-deps installs nginx)", why)
		return ""
	}
	bin, err := exec.LookPath("nginx")
	if err != nil {
		for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"} {
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
				bin = p
				break
			}
		}
	}
	if bin == "" {
		return missing("nginx is not installed (looked in PATH and /usr/sbin)")
	}
	out, err := exec.Command(bin, "-V").CombinedOutput()
	if err != nil {
		return missing(fmt.Sprintf("%s -V: %v", bin, err))
	}
	if !strings.Contains(string(out), "http_auth_request_module") {
		return missing(bin + " lacks the auth_request module")
	}
	return bin
}

// gwNginxServer is the recipe of docs/gateway.md: the login routes are
// proxied to the auth service under the application's host name; every
// other request is checked with auth_request, and a browser without a
// session is redirected to the login URL the auth service names.
func gwNginxServer(listen, authAddr, appAddr string) string {
	return `
	upstream wechat_login { server ` + authAddr + `; }
	upstream app { server ` + appAddr + `; }

	server {
		listen ` + listen + ` reuseport;

		location /wechat/ {
			proxy_pass http://wechat_login;
			proxy_set_header Host $http_host;
			proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
			proxy_set_header X-Forwarded-Proto $scheme;
		}

		location = /_wechat_auth {
			internal;
			proxy_pass http://wechat_login/wechat/auth;
			proxy_pass_request_body off;
			proxy_set_header Content-Length "";
			proxy_set_header Host $http_host;
			proxy_set_header X-Original-URI $request_uri;
			proxy_set_header X-Original-Method $request_method;
			proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
			proxy_set_header X-Forwarded-Proto $scheme;
		}

		location / {
			auth_request /_wechat_auth;
			auth_request_set $wechat_openid $upstream_http_x_wechat_openid;
			auth_request_set $wechat_unionid $upstream_http_x_wechat_unionid;
			auth_request_set $wechat_appid $upstream_http_x_wechat_appid;
			auth_request_set $wechat_method $upstream_http_x_wechat_login_method;
			auth_request_set $wechat_login $upstream_http_x_wechat_login_redirect;
			error_page 401 = @wechat_login;

			proxy_pass http://app;
			proxy_set_header Host $http_host;
			proxy_set_header X-WeChat-OpenID $wechat_openid;
			proxy_set_header X-WeChat-UnionID $wechat_unionid;
			proxy_set_header X-WeChat-AppID $wechat_appid;
			proxy_set_header X-WeChat-Login-Method $wechat_method;
		}

		location @wechat_login {
			if ($wechat_login) {
				return 302 $wechat_login;
			}
			default_type application/json;
			return 401 '{"error":"login required"}\n';
		}
	}`
}

// nginxProc is one nginx, run from a configuration in a temporary
// directory: no root, nothing outside that directory.
type nginxProc struct {
	BaseURL string
	dir     string
	cmd     *exec.Cmd
	exited  chan struct{}
	out     *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startNginx runs nginx with an http block holding server (which gets
// its listen address from the function) and returns once it accepts
// connections.
func startNginx(t *testing.T, server func(listen string) string) *nginxProc {
	t.Helper()
	bin := nginxBinary(t)
	dir := t.TempDir()
	port := freePort(t)
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	p := filepath.ToSlash(dir)
	conf := `daemon off;
worker_processes 1;
pid ` + p + `/nginx.pid;
error_log ` + p + `/error.log info;
events { worker_connections 256; }
http {
	access_log ` + p + `/access.log;
	client_body_temp_path ` + p + `/client_body;
	proxy_temp_path ` + p + `/proxy;
	fastcgi_temp_path ` + p + `/fastcgi;
	uwsgi_temp_path ` + p + `/uwsgi;
	scgi_temp_path ` + p + `/scgi;
` + server(listen) + `
}
`
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	n := &nginxProc{BaseURL: "http://" + listen, dir: dir, exited: make(chan struct{}), out: &syncBuffer{}}
	n.cmd = exec.Command(bin, "-e", filepath.Join(dir, "error.log"), "-p", dir, "-c", confPath)
	n.cmd.Stdout, n.cmd.Stderr = n.out, n.out
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = n.cmd.Wait(); close(n.exited) }()
	t.Cleanup(func() { n.stop(t) })

	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", listen, time.Second)
		if err == nil {
			c.Close()
			return n
		}
		select {
		case <-n.exited:
			t.Fatalf("nginx exited at start: %v\n%s\n%s", n.cmd.ProcessState, n.out, n.errorLog())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx does not accept connections on %s after 15s\n%s", listen, n.errorLog())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (n *nginxProc) errorLog() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "error.log"))
	return string(b)
}

// stop asks nginx to finish (SIGQUIT: graceful), and kills it after 10s.
func (n *nginxProc) stop(t *testing.T) {
	select {
	case <-n.exited:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-n.exited:
	case <-time.After(10 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.exited
	}
	if t.Failed() {
		t.Logf("nginx output:\n%s\nerror.log:\n%s", n.out, n.errorLog())
	}
}

// TestNginxAuthRequest: nginx's auth_request in front of an application,
// wechat_login served by Caddy as the auth service. The deep URL survives
// the login, API clients get 401, public paths pass without a session and
// without identity, and raw non-canonical targets are not public.
func TestNginxAuthRequest(t *testing.T) {
	nginxBinary(t) // skip before building or starting anything
	fake := wechattest.NewServer(wechattest.Config{})
	t.Cleanup(fake.Close)
	app := startGWApp(t)
	auth := startCaddyGlobals(t, gwAuthGlobals, gwAuthSite(fake.URL), itEnv...)
	authAddr := strings.TrimPrefix(auth.BaseURL, "http://")
	ngx := startNginx(t, func(listen string) string { return gwNginxServer(listen, authAddr, app.addr()) })
	ngxAddr := strings.TrimPrefix(ngx.BaseURL, "http://")
	addFakeApp(t, fake, ngx.BaseURL)

	b := gwLoginRoundTrip(t, ngx.BaseURL, fake, app)

	t.Run("API client gets 401", func(t *testing.T) {
		api := newClient(t, ngx.BaseURL)
		resp, body := api.do(http.MethodGet, "/a/b?c=d", nil, "Accept", "application/json")
		var got map[string]string
		if resp.StatusCode != http.StatusUnauthorized || json.Unmarshal([]byte(body), &got) != nil || got["error"] != "login required" {
			t.Fatalf("API client: %d %q", resp.StatusCode, body)
		}
		if loc := resp.Header.Get("Location"); loc != "" {
			t.Fatalf("API client sent to %q", loc)
		}
		resp, _ = api.do(http.MethodPost, gwDeep, strings.NewReader("x=1"), "Accept", gwHTML)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("form post without a session: %d, want 401", resp.StatusCode)
		}
		app.none(t, "API client without a session")
	})

	t.Run("public path passes without a session and without identity", func(t *testing.T) {
		gwPublicPaths(t, ngx.BaseURL, app, b)
	})

	t.Run("non-canonical targets are not public", func(t *testing.T) {
		gwOddTargetsRefused(t, ngxAddr, app)
	})

	t.Run("forged forwarded headers open nothing", func(t *testing.T) {
		status, body := rawRequest(t, ngxAddr, "/secret",
			"X-Forwarded-Uri: /public/x", "X-Original-URI: /public/x", "X-Original-Method: GET")
		if status != http.StatusUnauthorized {
			t.Fatalf("forged target headers through nginx: %d %q", status, body)
		}
		app.none(t, "forged target headers")
	})

	t.Run("logout ends access through the gateway", func(t *testing.T) {
		resp, _ := b.do(http.MethodPost, "/wechat/logout", nil, "Origin", ngx.BaseURL)
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("logout: %d", resp.StatusCode)
		}
		if resp, _ := b.do(http.MethodGet, gwDeep, nil, "Accept", gwHTML); resp.StatusCode != http.StatusFound {
			t.Fatalf("after logout: %d, want 302", resp.StatusCode)
		}
		app.none(t, "after logout")
	})
}
