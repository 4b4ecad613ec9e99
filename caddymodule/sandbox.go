package caddymodule

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"time"

	"github.com/wechat-login/caddy-wechat-login/internal/loginpage"
	"github.com/wechat-login/caddy-wechat-login/internal/qrsvg"
	"github.com/wechat-login/caddy-wechat-login/middleware"
	"github.com/wechat-login/caddy-wechat-login/wechat"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

// The sandbox's fake Official Account. Its secrets are public on purpose:
// nothing real can be reached with them.
const (
	sandboxAppID  = "wx5a4db0c0ffee0001"
	sandboxSecret = "sandbox-app-secret-not-a-secret"
	sandboxToken  = "sandboxtoken"
	sandboxAESKey = "SandboxSandboxSandboxSandboxSandboxSandbox0"
	sandboxGhID   = "gh_5a4db0c0ffee"
	// The subscription account of `sandbox subscription`: WeChat lets it
	// make no parametric QR codes, so its logins are by code.
	sandboxSubAppID   = "wx5a4db0c0ffee0003"
	sandboxSubGhID    = "gh_5a4db0c0ffef"
	sandboxSubAccount = "WeChat Login Sandbox"
	// The sandbox's website app, for website login (qrconnect).
	sandboxOpenAppID  = "wx5a4db0c0ffee0002"
	sandboxOpenSecret = "sandbox-website-secret-not-a-secret"
	// sandboxHost names the in-process fake WeChat; requests to it never
	// leave the process.
	sandboxHost = "http://wechat-sandbox.internal"
)

// sandbox is a fake WeChat living inside the Caddy process: the module's
// calls to WeChat's API reach it in memory, the browser reaches its pages
// under {prefix}/sandbox, and its "phone" pushes scans back into the current
// module instance in memory.
type sandbox struct {
	platform   *wechattest.Platform
	appID      string // the Official Account's
	ghID       string
	sessionKey []byte
	current    atomic.Pointer[middleware.Middleware] // the newest config's middleware
}

// sandboxConfig points cfg at the in-process fake WeChat, before the shared
// state is looked up (the sandbox lives in it, so that a reload in the middle
// of a sandbox login keeps its QR code scannable).
func (h *Handler) sandboxConfig(cfg *middleware.Config) error {
	if h.AppID != "" || h.AppSecret != "" || h.APIBase != "" || h.OAuthBase != "" || h.MPBase != "" {
		return errors.New("sandbox cannot be combined with app_id, app_secret or the *_base options: it replaces WeChat entirely")
	}
	h.logger.Warn("SANDBOX MODE: logins are served by a built-in fake WeChat; anyone can log in as a test user. Never use this in production.")
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = "/wechat"
	}
	cfg.AppID, cfg.AppSecret, cfg.PushToken, cfg.EncodingAESKey = sandboxAppID, sandboxSecret, sandboxToken, sandboxAESKey
	if h.SandboxAccount == "subscription" {
		// QR login stays on, to show the page falling back to a code when
		// WeChat refuses the account QR codes (48001).
		cfg.AppID = sandboxSubAppID
		if len(cfg.Methods) == 0 {
			cfg.Methods = []string{middleware.MethodQR, middleware.MethodCode, middleware.MethodOpen}
		}
		if cfg.AccountName == "" {
			cfg.AccountName = sandboxSubAccount
		}
		if cfg.FollowQR == "" {
			cfg.FollowQR = prefix + "/sandbox/follow.svg"
		}
	}
	if h.OpenAppID == "" && h.OpenAppSecret == "" {
		cfg.OpenAppID, cfg.OpenAppSecret = sandboxOpenAppID, sandboxOpenSecret
	}
	cfg.Endpoint.API = sandboxHost
	cfg.Endpoint.MP = sandboxHost
	cfg.Endpoint.Authorize = prefix + "/sandbox"
	h.sandboxPrefix = prefix + "/sandbox"
	return nil
}

// useSandbox wires cfg to the shared sandbox.
func (h *Handler) useSandbox(cfg *middleware.Config, sb *sandbox) {
	if len(cfg.SessionKeys) == 0 {
		cfg.SessionKeys = [][]byte{sb.sessionKey}
	}
	cfg.HTTPClient = &http.Client{Transport: handlerTransport{sb.platform}, Timeout: 10 * time.Second}
	h.sandboxPage = loginpage.Sandbox{ScanURL: h.sandboxPrefix + "/scan"}
	for _, u := range sb.platform.Users() {
		h.sandboxPage.Users = append(h.sandboxPage.Users, u.Name)
	}
	h.sandbox = sb
}

func newSandbox(cfg middleware.Config) (*sandbox, error) {
	sb := &sandbox{sessionKey: make([]byte, 32), appID: sandboxAppID, ghID: sandboxGhID}
	account := wechattest.VerifiedServiceAccount
	if cfg.AppID == sandboxSubAppID {
		sb.appID, sb.ghID, account = sandboxSubAppID, sandboxSubGhID, wechattest.SubscriptionAccount
	}
	_, _ = rand.Read(sb.sessionKey)
	p, err := wechattest.New(wechattest.Config{
		BaseURL:    cfg.Endpoint.Authorize,
		HTTPClient: &http.Client{Transport: callbackTransport{sb}, Timeout: 10 * time.Second},
	})
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	err = p.AddApp(wechattest.App{
		AppID:          sb.appID,
		AppSecret:      sandboxSecret,
		Token:          sandboxToken,
		EncodingAESKey: sandboxAESKey,
		OriginalID:     sb.ghID,
		Account:        account,
		CallbackURL:    sandboxHost + strings.TrimSuffix(cfg.Endpoint.Authorize, "/sandbox") + "/callback",
		Mode:           wechattest.Safe,
		// The fake's pages are served by the site they log in to, whose
		// host is only known per request: they redirect only to the host
		// they were requested on, so that the public sandbox is no open
		// redirector.
		RedirectSameHost: true,
	})
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	if err := p.AddApp(wechattest.App{
		AppID: sandboxOpenAppID, AppSecret: sandboxOpenSecret, Kind: wechattest.WebsiteApp,
		RedirectSameHost: true,
	}); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	sb.platform = p
	return sb, nil
}

// serveSandbox answers requests for the fake WeChat's pages and the login
// page's "Simulate scan" button. It reports whether it handled r.
func (h *Handler) serveSandbox(w http.ResponseWriter, r *http.Request) bool {
	p := r.URL.Path
	if p != h.sandboxPrefix && !strings.HasPrefix(p, h.sandboxPrefix+"/") {
		return false
	}
	switch p {
	case h.sandboxPrefix + "/scan":
		h.sandboxScan(w, r)
		return true
	case h.sandboxPrefix + "/follow.svg":
		h.sandboxFollowQR(w)
		return true
	}
	http.StripPrefix(h.sandboxPrefix, h.sandbox.platform).ServeHTTP(w, r)
	return true
}

// sandboxScan makes the fake phone scan the QR code shown on the login page
// as the chosen test user: POST {prefix}/sandbox/scan with form fields qr
// (the QR's content URL) and user. With reply=<text> the phone instead sends
// that chat message: the confirmation code from the scan's chat reply
// confirms a scan when confirm_in_chat is on, and the "not me" code from the
// login's reply ends the login. The answer carries the chat reply, from which
// the login page takes the code.
func (h *Handler) sandboxScan(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		sandboxJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed"})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	if err := r.ParseForm(); err != nil {
		sandboxJSON(w, http.StatusBadRequest, map[string]string{"error": "malformed form"})
		return
	}
	qr, user, send := r.PostForm.Get("qr"), r.PostForm.Get("user"), r.PostForm.Get("send")
	if user == "" || qr == "" && send == "" && r.PostForm.Get("reply") == "" {
		sandboxJSON(w, http.StatusBadRequest, map[string]string{"error": "user and one of qr, reply and send are required"})
		return
	}
	h.sandbox.current.Store(h.mw)
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	if send != "" {
		h.sandboxSend(ctx, w, user, send)
		return
	}
	var d *wechattest.Delivery
	var err error
	if text := r.PostForm.Get("reply"); text != "" {
		if len(text) > 64 {
			sandboxJSON(w, http.StatusBadRequest, map[string]string{"error": "reply too long"})
			return
		}
		d, err = h.sandbox.platform.Push(ctx, h.sandbox.appID, &wechat.Event{
			ToUserName:   h.sandbox.ghID,
			FromUserName: h.sandbox.platform.OpenID(h.sandbox.appID, user),
			CreateTime:   time.Now().Unix(),
			MsgType:      "text",
			Content:      text,
			MsgID:        time.Now().UnixNano(),
		})
	} else {
		d, err = h.sandbox.platform.Scan(ctx, h.sandbox.appID, qr, user)
	}
	if err != nil {
		sandboxJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	reply := ""
	if d.Reply != nil {
		reply = d.Reply.Content
	}
	sandboxJSON(w, http.StatusOK, map[string]any{"event": d.Event.Event, "reply": reply})
}

// sandboxSend makes the fake phone send a login code to the account in
// chat, as the login page's steps ask: the test user follows the account
// first when they do not yet (only followers can send it messages).
func (h *Handler) sandboxSend(ctx context.Context, w http.ResponseWriter, user, text string) {
	if len(text) > 64 {
		sandboxJSON(w, http.StatusBadRequest, map[string]string{"error": "message too long"})
		return
	}
	p := h.sandbox.platform
	if _, err := p.Follow(ctx, h.sandbox.appID, user); err != nil && !errors.Is(err, wechattest.ErrAlreadyFollowing) {
		sandboxJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	reply, err := p.SendText(ctx, h.sandbox.appID, user, text)
	if err != nil {
		sandboxJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	sandboxJSON(w, http.StatusOK, map[string]any{"event": "text", "reply": reply})
}

// sandboxFollowQR serves the sandbox account's follow QR code, as a real
// account's console offers it for download. Scanning it with a real phone
// leads nowhere: the sandbox's phone page follows the account instead.
func (h *Handler) sandboxFollowQR(w http.ResponseWriter) {
	svg, err := qrsvg.SVG("http://weixin.qq.com/r/" + h.sandbox.ghID)
	if err != nil {
		http.Error(w, "cannot render QR code", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "image/svg+xml")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(svg)
}

func sandboxJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// handlerTransport serves HTTP requests with an in-process handler.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}

// callbackTransport delivers the fake phone's pushes to the newest module
// instance, in memory.
type callbackTransport struct{ sb *sandbox }

func (t callbackTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	mw := t.sb.current.Load()
	if mw == nil {
		return nil, errors.New("sandbox: no login handler to push to")
	}
	rec := httptest.NewRecorder()
	mw.ServeNext(rec, r, http.NotFoundHandler())
	return rec.Result(), nil
}
