package wechat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"time"
)

// Endpoint holds WeChat's base URLs, without a trailing slash. Point it at a
// fake WeChat (such as wechattest.Server) in tests. An empty field means the
// corresponding field of DefaultEndpoint.
type Endpoint struct {
	// API serves the JSON APIs (cgi-bin/*, sns/*).
	API string
	// Authorize serves the authorization pages that a user's browser is
	// sent to (connect/oauth2/authorize, connect/qrconnect).
	Authorize string
	// MP serves QR code images (cgi-bin/showqrcode).
	MP string
}

// DefaultEndpoint is the real WeChat.
var DefaultEndpoint = Endpoint{
	API:       "https://api.weixin.qq.com",
	Authorize: "https://open.weixin.qq.com",
	MP:        "https://mp.weixin.qq.com",
}

// withDefaults fills empty fields from DefaultEndpoint and drops trailing
// slashes, so URL building can simply append "/path".
func (e Endpoint) withDefaults() Endpoint {
	pick := func(v, def string) string {
		if v == "" {
			return def
		}
		return strings.TrimRight(v, "/")
	}
	return Endpoint{
		API:       pick(e.API, DefaultEndpoint.API),
		Authorize: pick(e.Authorize, DefaultEndpoint.Authorize),
		MP:        pick(e.MP, DefaultEndpoint.MP),
	}
}

// defaultTimeout bounds each HTTP exchange with WeChat when no HTTPClient is
// given. WeChat normally answers in well under a second; a hung call must not
// hold a user's request for long.
const defaultTimeout = 10 * time.Second

// maxResponseBytes caps what is read from WeChat. Real answers are a few
// hundred bytes; anything near this size is a fault, not data.
const maxResponseBytes = 1 << 20

// newDefaultHTTPClient returns the client used when none is configured: a
// bounded timeout, and no redirects, since WeChat's JSON APIs never redirect
// and following one would carry query credentials to another URL.
func newDefaultHTTPClient() *http.Client {
	return &http.Client{
		Timeout: defaultTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

func httpClientOrDefault(hc *http.Client) *http.Client {
	if hc != nil {
		return hc
	}
	return newDefaultHTTPClient()
}

// Client calls the Official Account APIs that need an access_token. Its
// fields must be set before first use and not changed afterwards; the Client
// is then safe for concurrent use. It must not be copied after first use.
type Client struct {
	// AppID and AppSecret identify the Official Account. AppSecret is used
	// only by the default token source.
	AppID, AppSecret string
	// Endpoint locates WeChat; zero fields mean DefaultEndpoint's.
	Endpoint Endpoint
	// HTTPClient performs the calls. Nil means a client with a 10-second
	// timeout that does not follow redirects.
	HTTPClient *http.Client
	// Tokens supplies access tokens. Nil means
	// ReuseTokenSource(StableTokenSource(AppID, AppSecret, Endpoint, HTTPClient), 0),
	// created on first use. If Tokens implements Invalidator, a token WeChat
	// rejects is reported to it before the single retry.
	Tokens TokenSource

	tokensOnce sync.Once
	tokens     TokenSource
}

// Invalidator is implemented by token sources that cache. Invalidate drops
// the cached token only if it still equals stale, so a caller holding an old
// token cannot evict a newer one another caller already fetched.
type Invalidator interface {
	Invalidate(stale string)
}

func (c *Client) tokenSource() TokenSource {
	c.tokensOnce.Do(func() {
		c.tokens = c.Tokens
		if c.tokens == nil {
			c.tokens = ReuseTokenSource(StableTokenSource(c.AppID, c.AppSecret, c.Endpoint, c.HTTPClient), 0)
		}
	})
	return c.tokens
}

// AccessToken returns a currently valid access_token from the client's token
// source, for calling Official Account APIs this package does not wrap.
func (c *Client) AccessToken(ctx context.Context) (string, error) {
	t, err := c.tokenSource().Token(ctx)
	if err != nil {
		return "", err
	}
	if t.Value == "" {
		return "", errors.New("wechat: token source returned an empty token")
	}
	return t.Value, nil
}

// callWithToken performs an API call that carries access_token in its query.
// When WeChat says the token is invalid or expired, only that token is
// invalidated (never a forced refresh, which WeChat limits to 20 a day) and
// the call is retried once with whatever token the source then has: usually
// a new one, but WeChat's rejections are not always final, so the same
// token gets its one second chance too.
func (c *Client) callWithToken(ctx context.Context, req apiRequest, out statusCarrier) error {
	tok, err := c.AccessToken(ctx)
	if err != nil {
		return err
	}
	err = c.callOnce(ctx, req, tok, out)
	if !isTokenInvalid(err) {
		return err
	}
	src := c.tokenSource()
	if inv, ok := src.(Invalidator); ok {
		inv.Invalidate(tok)
	}
	fresh, ferr := c.AccessToken(ctx)
	if ferr != nil {
		return fmt.Errorf("%w (and fetching a new token failed: %w)", err, ferr)
	}
	// Start the retry from an empty answer: decoding merges into out.
	reflect.ValueOf(out).Elem().SetZero()
	return c.callOnce(ctx, req, fresh, out)
}

func (c *Client) callOnce(ctx context.Context, req apiRequest, token string, out statusCarrier) error {
	q := url.Values{}
	for k, v := range req.query {
		q[k] = v
	}
	q.Set("access_token", token)
	req.query = q
	return doJSON(ctx, httpClientOrDefault(c.HTTPClient), req, out)
}

// apiStatus is the errcode/errmsg pair every WeChat JSON answer may carry.
type apiStatus struct {
	ErrCode int    `json:"errcode"`
	ErrMsg  string `json:"errmsg"`
}

func (s *apiStatus) status() *apiStatus { return s }

// statusCarrier is a response struct embedding apiStatus.
type statusCarrier interface{ status() *apiStatus }

// apiRequest describes one JSON API call.
type apiRequest struct {
	method string
	// name identifies the call in error text, e.g. "cgi-bin/token". It must
	// never hold credentials.
	name string
	// url is the address without its query.
	url   string
	query url.Values
	body  any // JSON-encoded when non-nil
}

// newAPIRequest describes a call to path (no leading slash) under base.
func newAPIRequest(method, base, path string, query url.Values, body any) apiRequest {
	return apiRequest{method: method, name: path, url: base + "/" + path, query: query, body: body}
}

// callError is a transport-level failure of one API call. Its text names the
// API path and never the full URL: the query holds secrets, codes and tokens.
type callError struct {
	path string
	op   string
	err  error
}

func (e *callError) Error() string { return "wechat: " + e.path + ": " + e.op + ": " + e.err.Error() }
func (e *callError) Unwrap() error { return e.err }

// Timeout reports whether the failure was a timeout, like net.Error.
func (e *callError) Timeout() bool {
	var t interface{ Timeout() bool }
	return errors.Is(e.err, context.DeadlineExceeded) || (errors.As(e.err, &t) && t.Timeout())
}

// stripURL removes the *url.Error layers that net/http wraps around request
// failures: their text includes the complete URL, query and all.
func stripURL(err error) error {
	for {
		ue, ok := err.(*url.Error)
		if !ok || ue.Err == nil {
			return err
		}
		err = ue.Err
	}
}

// doJSON sends req and decodes the JSON answer into out. Any errcode other
// than 0 becomes an *Error.
func doJSON(ctx context.Context, hc *http.Client, req apiRequest, out statusCarrier) error {
	u := req.url
	if len(req.query) > 0 {
		u += "?" + req.query.Encode()
	}
	var body io.Reader
	if req.body != nil {
		b, err := json.Marshal(req.body)
		if err != nil {
			return &callError{req.name, "encode request", err}
		}
		body = bytes.NewReader(b)
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, u, body)
	if err != nil {
		return &callError{req.name, "build request", stripURL(err)}
	}
	if body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	hr.Header.Set("Accept", "application/json")
	resp, err := hc.Do(hr)
	if err != nil {
		return &callError{req.name, "send request", stripURL(err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// Drain a little so the connection can be reused; the body itself
		// is not reported (it is not WeChat's JSON and may be large).
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return &callError{req.name, "unexpected response", fmt.Errorf("HTTP status %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return &callError{req.name, "read response", stripURL(err)}
	}
	if len(b) > maxResponseBytes {
		return &callError{req.name, "read response", fmt.Errorf("%w (over %d bytes)", ErrResponseTooLarge, maxResponseBytes)}
	}
	return decodeResponse(req.name, b, out)
}

// decodeResponse parses a WeChat JSON answer into out. Content-Type is not
// consulted: WeChat sometimes labels JSON as text/plain.
func decodeResponse(name string, b []byte, out statusCarrier) error {
	if err := json.Unmarshal(b, out); err != nil {
		return &callError{name, "decode response", err}
	}
	if st := out.status(); st.ErrCode != 0 {
		return &Error{Code: st.ErrCode, Msg: cleanErrMsg(st.ErrMsg), Path: name}
	}
	return nil
}

// invalidArg builds a local validation error. The text names the argument
// and the rule, never the rejected value, which may be a credential.
func invalidArg(format string, args ...any) error {
	return fmt.Errorf("wechat: %w: %s", ErrInvalidArgument, fmt.Sprintf(format, args...))
}

// checkOpaque validates a WeChat-issued opaque string (openid, code, token)
// before it goes into a request: non-empty, bounded, visible ASCII only.
func checkOpaque(name, v string, maxLen int) error {
	if v == "" {
		return invalidArg("%s is empty", name)
	}
	if len(v) > maxLen {
		return invalidArg("%s is longer than %d bytes", name, maxLen)
	}
	for i := 0; i < len(v); i++ {
		if v[i] <= ' ' || v[i] > '~' {
			return invalidArg("%s contains a character outside visible ASCII", name)
		}
	}
	return nil
}
