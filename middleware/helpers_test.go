package middleware

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat"
	"github.com/wechat-login/caddy-wechat-login/wechat/wechattest"
)

const (
	testAppID  = "wx0123456789abcdef"
	testSecret = "test-app-secret-0123456789"
	testToken  = "pushtoken42"
	testAESKey = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	testGhID   = "gh_0123456789ab"
)

var testSessionKey = []byte("0123456789abcdef0123456789abcdef-session")

// testEnv is a site protected by the middleware, in front of a fake WeChat.
type testEnv struct {
	t    *testing.T
	fake *wechattest.Server
	mw   *Middleware
	srv  *httptest.Server
	cfg  Config
}

type envOption func(*Config)

// withMetrics makes the middleware report to mt.
func withMetrics(mt Metrics) envOption { return func(c *Config) { c.Metrics = mt } }

// newEnv starts the fake WeChat and a protected site whose handler echoes
// the identity it was given as JSON.
func newEnv(t *testing.T, mode wechattest.PushMode, opts ...envOption) *testEnv {
	t.Helper()
	return newEnvWithApp(t, mode, nil, opts...)
}

// newEnvWithApp is newEnv with the fake's Official Account changed by app
// (its kind, for one) before it is added.
func newEnvWithApp(t *testing.T, mode wechattest.PushMode, app func(*wechattest.App), opts ...envOption) *testEnv {
	t.Helper()
	fake := wechattest.NewServer(wechattest.Config{})
	t.Cleanup(fake.Close)

	cfg := Config{
		AppID:       testAppID,
		AppSecret:   testSecret,
		PushToken:   testToken,
		SessionKeys: [][]byte{testSessionKey},
		Endpoint:    fake.Endpoint(),
		SiteName:    "Example",
	}
	if mode != wechattest.Plaintext {
		cfg.EncodingAESKey = testAESKey
	}
	for _, o := range opts {
		o(&cfg)
	}
	mw, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = mw.Close() })
	srv := httptest.NewServer(mw.Handler(http.HandlerFunc(echoIdentity)))
	t.Cleanup(srv.Close)

	a := wechattest.App{
		AppID:          testAppID,
		AppSecret:      testSecret,
		Token:          testToken,
		EncodingAESKey: testAESKey,
		OriginalID:     testGhID,
		CallbackURL:    srv.URL + "/wechat/callback",
		Mode:           mode,
	}
	if app != nil {
		app(&a)
	}
	if err = fake.AddApp(a); err != nil {
		t.Fatalf("AddApp: %v", err)
	}
	return &testEnv{t: t, fake: fake, mw: mw, srv: srv, cfg: mw.cfg}
}

// echoIdentity is the protected application: it reports what it was told.
func echoIdentity(w http.ResponseWriter, r *http.Request) {
	id, ok := IdentityFromContext(r.Context())
	body, _ := io.ReadAll(r.Body)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"path":    r.URL.Path,
		"has_id":  ok,
		"ctx":     id,
		"openid":  r.Header.Get(HeaderOpenID),
		"unionid": r.Header.Get(HeaderUnionID),
		"appid":   r.Header.Get(HeaderAppID),
		"method":  r.Header.Get(HeaderLoginMethod),
		"body":    string(body),
	})
}

// browser is a cookie-keeping client that does not follow redirects.
type browser struct {
	t      *testing.T
	env    *testEnv
	client *http.Client
}

func (e *testEnv) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: e.t, env: e, client: &http.Client{
		Jar:           jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       30 * time.Second,
	}}
}

type response struct {
	*http.Response
	body []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("response %d is not JSON: %v: %q", r.StatusCode, err, r.body)
	}
	return v
}

func (b *browser) do(method, path string, body io.Reader, hdr map[string]string) response {
	b.t.Helper()
	req, err := http.NewRequest(method, b.env.srv.URL+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatalf("%s %s: read: %v", method, path, err)
	}
	return response{resp, data}
}

func (b *browser) get(path string, hdr map[string]string) response {
	return b.do(http.MethodGet, path, nil, hdr)
}

// createQR asks for a login scene the way the login page does.
func (b *browser) createQR(next string) map[string]any {
	b.t.Helper()
	resp := b.do(http.MethodPost, "/wechat/qr", strings.NewReader(url.Values{"next": {next}}.Encode()),
		map[string]string{"Origin": b.env.srv.URL, "Sec-Fetch-Site": "same-origin"})
	if resp.StatusCode != http.StatusOK {
		b.t.Fatalf("POST /wechat/qr: %d %s", resp.StatusCode, resp.body)
	}
	return resp.json(b.t)
}

func (b *browser) poll(scene string, wait int) response {
	p := "/wechat/poll?scene=" + scene
	if wait > 0 {
		p += "&wait=" + strconv.Itoa(wait)
	}
	return b.get(p, nil)
}

func (b *browser) cookie(base string) *http.Cookie {
	u, _ := url.Parse(b.env.srv.URL)
	for _, c := range b.client.Jar.Cookies(u) {
		if c.Name == base {
			return c
		}
	}
	return nil
}

// events opens the event stream at path (a scene's events_url) and returns
// its response and the status of each event, in order; the channel is
// closed when the stream ends. The stream is closed when the test ends.
func (b *browser) events(path string) (*http.Response, <-chan string) {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.env.srv.URL+path, nil)
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { resp.Body.Close() })
	states := make(chan string, 10)
	go func() {
		defer close(states)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var v map[string]string
				_ = json.Unmarshal([]byte(data), &v)
				states <- v["status"]
			}
		}
	}()
	return resp, states
}

// waitForWaiters blocks until n browsers wait (long-polls and event
// streams holding a waiting slot; the scenes watched since their creation
// are not browsers).
func (e *testEnv) waitForWaiters(n int) {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for e.mw.waiters.total.Load() < int64(n) {
		if time.Now().After(deadline) {
			e.t.Fatalf("only %d of %d browsers waiting", e.mw.waiters.total.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// push sends a hand-made push to the callback, signed (and encrypted) with
// the test app's secrets unless tamper changes them.
type pushReq struct {
	body      []byte
	query     url.Values
	header    http.Header
	method    string
	rawQuery  string // overrides query when set
	skipQuery bool
}

func (e *testEnv) sendPush(p pushReq) response {
	e.t.Helper()
	method := p.method
	if method == "" {
		method = http.MethodPost
	}
	u := e.srv.URL + "/wechat/callback"
	if p.rawQuery != "" {
		u += "?" + p.rawQuery
	} else if !p.skipQuery {
		u += "?" + p.query.Encode()
	}
	req, err := http.NewRequest(method, u, strings.NewReader(string(p.body)))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/xml")
	req.Header.Set("User-Agent", "Mozilla/4.0")
	for k, v := range p.header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return response{resp, data}
}

// plainPush builds a plaintext-mode push of ev.
func plainPush(ev *wechat.Event, ts int64, nonce string) pushReq {
	tss := strconv.FormatInt(ts, 10)
	q := url.Values{
		"signature": {wechat.Signature(testToken, tss, nonce)},
		"timestamp": {tss},
		"nonce":     {nonce},
		"openid":    {ev.FromUserName},
	}
	return pushReq{body: wechat.MarshalEvent(ev), query: q}
}

// safePush builds a safe-mode (encrypted) push of ev.
func safePush(t *testing.T, ev *wechat.Event, ts int64, nonce string) pushReq {
	t.Helper()
	c, err := wechat.NewCrypter(testToken, testAESKey, testAppID)
	if err != nil {
		t.Fatal(err)
	}
	tss := strconv.FormatInt(ts, 10)
	enc, msgSig, err := c.Encrypt(wechat.MarshalEvent(ev), tss, nonce)
	if err != nil {
		t.Fatal(err)
	}
	q := url.Values{
		"signature":     {wechat.Signature(testToken, tss, nonce)},
		"timestamp":     {tss},
		"nonce":         {nonce},
		"openid":        {ev.FromUserName},
		"encrypt_type":  {"aes"},
		"msg_signature": {msgSig},
	}
	body := "<xml>\n<ToUserName><![CDATA[" + ev.ToUserName + "]]></ToUserName>\n<Encrypt><![CDATA[" + enc + "]]></Encrypt>\n</xml>"
	return pushReq{body: []byte(body), query: q}
}

func scanEvent(openid, scene, ticket string, subscribe bool, at time.Time) *wechat.Event {
	ev := &wechat.Event{
		ToUserName:   testGhID,
		FromUserName: openid,
		CreateTime:   at.Unix(),
		MsgType:      "event",
		Event:        "SCAN",
		EventKey:     scene,
		Ticket:       ticket,
	}
	if subscribe {
		ev.Event = "subscribe"
		ev.EventKey = "qrscene_" + scene
	}
	return ev
}

// sceneState reads a scene's state straight from the store.
func (e *testEnv) sceneState(scene string) string {
	e.t.Helper()
	rec, _, err := e.mw.loadScene(context.Background(), scene)
	if err != nil {
		return "gone"
	}
	return rec.State
}
