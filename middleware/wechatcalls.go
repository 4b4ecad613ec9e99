package middleware

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// maxObservedBody bounds what instrumentation reads of a WeChat answer; the
// client applies the same cap.
const maxObservedBody = 1 << 20

// observedTransport reports every call to WeChat (which endpoint, its
// outcome, its latency) to the metrics, without changing what the client
// sees. Only the URL path is reported: queries hold secrets and codes.
type observedTransport struct {
	base    http.RoundTripper
	metrics Metrics
}

func (t observedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	call := strings.TrimPrefix(r.URL.Path, "/")
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		t.metrics.WeChatCall(call, "transport_error", time.Since(start))
		return resp, err
	}
	outcome := "http_" + strconv.Itoa(resp.StatusCode)
	// WeChat reports failures inside 200 answers; images (showqrcode) are
	// not inspected.
	if resp.StatusCode == http.StatusOK && !strings.HasPrefix(resp.Header.Get("Content-Type"), "image/") {
		body, rerr := io.ReadAll(io.LimitReader(resp.Body, maxObservedBody+1))
		_ = resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		if rerr != nil {
			// Let the client see the same failure when it reads.
			resp.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), errReader{rerr}))
		}
		outcome = "ok"
		var status struct {
			Errcode *int `json:"errcode"`
		}
		if json.Unmarshal(body, &status) == nil && status.Errcode != nil && *status.Errcode != 0 {
			outcome = "errcode_" + strconv.Itoa(*status.Errcode)
		}
	}
	t.metrics.WeChatCall(call, outcome, time.Since(start))
	return resp, nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// instrumentedClient returns a copy of hc (or of the default client) whose
// calls are reported to the middleware's metrics.
func (m *Middleware) instrumentedClient(hc *http.Client) *http.Client {
	return ObservedClient(hc, m.cfg.Metrics)
}

// Limits of the connections to WeChat. Logins come in bursts (a page that
// many people open at once), and every QR code is a call to WeChat: without
// a pool sized for that, each call of a burst opens a connection of its own
// (a TCP and TLS handshake to a server that may be far away) and all but two
// are closed again afterwards. A few connections kept open serve a burst
// one call after another (a call that finds all of them busy waits for one,
// within the client's timeout): WeChat answers in tens of milliseconds, so
// eight connections carry hundreds of calls a second, well above the QR
// ceiling.
const (
	maxWeChatConnsPerHost = 8
	// Three hosts (API, authorization pages, mp) at most.
	maxWeChatIdleConns    = 3 * maxWeChatConnsPerHost
	wechatIdleConnTimeout = 90 * time.Second
	wechatDialTimeout     = 5 * time.Second
	wechatTLSTimeout      = 5 * time.Second
	// WeChat's headers are a few hundred bytes.
	maxWeChatHeaderBytes = 64 << 10
)

// wechatTransport is the transport of the default client to WeChat, shared
// by every middleware of the process, so a config reload (which builds a new
// middleware) keeps the connections already open.
var wechatTransport = sync.OnceValue(func() *http.Transport {
	dialer := &net.Dialer{Timeout: wechatDialTimeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            dialer.DialContext,
		ForceAttemptHTTP2:      true,
		MaxConnsPerHost:        maxWeChatConnsPerHost,
		MaxIdleConnsPerHost:    maxWeChatConnsPerHost,
		MaxIdleConns:           maxWeChatIdleConns,
		IdleConnTimeout:        wechatIdleConnTimeout,
		TLSHandshakeTimeout:    wechatTLSTimeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: maxWeChatHeaderBytes,
	}
})

// noRedirects is the wechat package's rule for its own default client:
// WeChat's JSON APIs never redirect, and following a redirect would carry a
// call that holds credentials to an address WeChat did not give.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// ObservedClient returns a copy of hc that reports every call to WeChat to
// mt: the endpoint path, the outcome ("ok", "errcode_N", "http_N",
// "transport_error") and the latency. Adapters that make calls of their own
// (the Caddy module's access-token cache, shared across reloads) use it so
// that those calls are counted too.
//
// A nil hc means the default client to WeChat: a 10 s timeout, no
// redirects followed, and a pool of at most eight kept-alive connections
// per WeChat host, shared by the whole process. A client given without a
// Transport gets that pool too; everything else about it is kept.
func ObservedClient(hc *http.Client, mt Metrics) *http.Client {
	c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: noRedirects}
	if hc != nil {
		cp := *hc
		c = &cp
	}
	base := c.Transport
	if base == nil {
		base = wechatTransport()
	}
	if mt == nil {
		mt = nopMetrics{}
	}
	c.Transport = observedTransport{base: base, metrics: mt}
	return c
}
