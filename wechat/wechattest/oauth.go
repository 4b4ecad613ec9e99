package wechattest

import (
	"encoding/base64"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// authCode is an OAuth authorization code.
type authCode struct {
	appID    string
	user     string
	scope    string
	snapshot bool
	expires  time.Time
	used     bool
}

// refreshToken is an OAuth refresh token.
type refreshToken struct {
	appID    string
	user     string
	openid   string
	scope    string
	snapshot bool
	access   string // the access token it last issued
	expires  time.Time
}

// authRequest is a validated authorization page request.
type authRequest struct {
	app      *app
	redirect *url.URL
	scope    string
	state    string
	silent   bool // snsapi_base: no consent, no deny
	snapshot bool // forceSnapShot=true
	frame    *frameParams
}

// frameParams are the parameters of qrconnect's embedded mode, the iframe
// that wxLogin.js builds (login_type=jssdk).
type frameParams struct {
	selfRedirect bool   // self_redirect=true: the frame itself goes to redirect_uri
	style        string // "black" (default) or "white" text
	href         string // custom CSS: an https URL or a data:text/css;base64 URL; "" for none
	stylelite    bool
	english      bool
}

// pageError is an error shown on an authorization page. code is WeChat's
// number where it has one, otherwise a short name.
type pageError struct {
	code    string
	message string
}

func (e *pageError) Error() string { return e.code + ": " + e.message }

var (
	errPageAppIDEmpty    = &pageError{"10012", "appid 不能为空 (appid is empty)"}
	errPageRedirectEmpty = &pageError{"10011", "redirect_uri 不能为空 (redirect_uri is empty)"}
	errPageScopeEmpty    = &pageError{"10010", "scope 不能为空 (scope is empty)"}
	errPageRedirect      = &pageError{"10003", "redirect_uri 域名与后台配置不一致 (redirect_uri domain does not match the configuration)"}
	errPageScope         = &pageError{"10005", "此公众号并没有这些 scope 的权限 (no permission for this scope)"}
	errPageOpenAppID     = &pageError{"10016", "不支持微信开放平台的 Appid，请使用公众号 Appid (use an Official Account AppID)"}
	errPageOrder         = &pageError{"param_order", "该链接无法访问: 参数顺序错误 (the parameters are not in the required order)"}
	errPageQuery         = &pageError{"param", "该链接无法访问: 参数错误 (malformed parameters)"}
	errPageResponseType  = &pageError{"response_type", "该链接无法访问: response_type 参数错误 (response_type must be code)"}
	errPageAppID         = &pageError{"appid", "该链接无法访问: appid 参数错误 (unknown appid)"}
	errPageState         = &pageError{"state", "该链接无法访问: state 参数错误 (state must be at most 128 letters and digits)"}
	errPageQRRedirect    = &pageError{"redirect_uri", "redirect_uri 参数错误 (invalid redirect_uri)"}
	errPageQRScope       = &pageError{"scope", "Scope 参数错误或没有 Scope 权限 (invalid scope or no permission)"}
	errPageFollowTest    = &pageError{"10006", "必须关注此测试号 (the user must follow this test account)"}
)

// authorizeOrder is the order WeChat's authorize link must keep.
var authorizeOrder = []string{"appid", "redirect_uri", "response_type", "scope"}

// queryKeys returns the keys of a raw query in order.
func queryKeys(raw string) []string {
	var keys []string
	for part := range strings.SplitSeq(raw, "&") {
		if part == "" {
			continue
		}
		k, _, _ := strings.Cut(part, "=")
		if u, err := url.QueryUnescape(k); err == nil {
			k = u
		}
		keys = append(keys, k)
	}
	return keys
}

// checkAuthorizeQuery checks the parts of an authorize link that do not
// depend on the platform's apps: presence, order, response_type and state.
func checkAuthorizeQuery(raw string) (url.Values, *pageError) {
	vals, err := url.ParseQuery(raw)
	if err != nil {
		return nil, errPageQuery
	}
	switch {
	case vals.Get("appid") == "":
		return nil, errPageAppIDEmpty
	case vals.Get("redirect_uri") == "":
		return nil, errPageRedirectEmpty
	case vals.Get("scope") == "":
		return nil, errPageScopeEmpty
	}
	keys := queryKeys(raw)
	n := len(authorizeOrder)
	if len(keys) < n || !slices.Equal(keys[:n], authorizeOrder) {
		return nil, errPageOrder
	}
	rest := keys[n:]
	if len(rest) > 0 && rest[0] == "state" {
		rest = rest[1:]
	}
	for _, k := range rest {
		if k == "state" || slices.Contains(authorizeOrder, k) {
			return nil, errPageOrder
		}
	}
	if vals.Get("response_type") != "code" {
		return nil, errPageResponseType
	}
	if !validState(vals.Get("state")) {
		return nil, errPageState
	}
	return vals, nil
}

// validState reports whether s matches [a-zA-Z0-9]{0,128}.
func validState(s string) bool {
	if len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// hostPort is a registered redirect domain: a canonical host (a lower-case
// name or an IP address) and a port, "" for the scheme's default.
type hostPort struct{ host, port string }

// parseDomain parses a registered domain, "host" or "host:port", with an
// IPv6 address in brackets. A request's Host has the same form.
func parseDomain(d string) (hostPort, bool) {
	if d == "" || strings.ContainsAny(d, "/\\@?#%*,; \t\r\n") {
		return hostPort{}, false
	}
	host, port := d, ""
	if h, pt, err := net.SplitHostPort(d); err == nil {
		n, err := strconv.Atoi(pt)
		if err != nil || n < 1 || n > 65535 || strings.HasPrefix(pt, "+") {
			return hostPort{}, false
		}
		host, port = h, strconv.Itoa(n)
	} else if strings.HasPrefix(d, "[") && strings.HasSuffix(d, "]") {
		host = d[1 : len(d)-1]
	} else if strings.Contains(d, ":") {
		return hostPort{}, false // an IPv6 address needs brackets
	}
	host, ok := canonicalHost(host)
	return hostPort{host, port}, ok
}

// canonicalHost returns a host name in lower case, or an IPv6 address in
// its canonical form. Anything else, such as percent escapes, non-ASCII
// names or empty labels, is refused rather than interpreted.
func canonicalHost(h string) (string, bool) {
	if strings.Contains(h, ":") {
		a, err := netip.ParseAddr(h)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", false
		}
		return a.String(), true
	}
	h = strings.ToLower(h)
	if len(h) == 0 || len(h) > 253 {
		return "", false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return "", false
			}
		}
	}
	return h, true
}

// covers reports whether the registered domain d accepts host and port (""
// for the default) of a URL with the given scheme: the host must be equal,
// and so must the port once defaults are filled in.
func (d hostPort) covers(host, port, scheme string) bool {
	def := "443"
	if scheme == "http" {
		def = "80"
	}
	want := cmpOr(d.port, def)
	return d.host == host && cmpOr(port, def) == want
}

// checkRedirect parses an OAuth redirect_uri and checks it against the
// domains registered for a and, for an app with RedirectSameHost, against
// pageHost, the Host the authorization page was requested with. Only an
// absolute http or https URL without user information is considered, and
// its host must be plain enough that every browser reads it the same way;
// the caller shows an error page, never a redirect, when it is refused.
func checkRedirect(a *app, raw, pageHost string) (*url.URL, bool) {
	if strings.Contains(raw, "\\") {
		// Browsers read a backslash in an http URL as a slash.
		return nil, false
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Opaque != "" || u.User != nil || u.Host == "" {
		return nil, false
	}
	host, ok := canonicalHost(u.Hostname())
	if !ok {
		return nil, false
	}
	port := u.Port()
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
			return nil, false
		}
	}
	if a.anyHost {
		return u, true
	}
	for _, d := range a.domains {
		if d.covers(host, port, u.Scheme) {
			return u, true
		}
	}
	if a.RedirectSameHost {
		if d, ok := parseDomain(pageHost); ok && d.covers(host, port, u.Scheme) {
			return u, true
		}
	}
	return nil, false
}

// inWeChat reports whether r may open the in-WeChat authorization page:
// it comes from WeChat's browser, whose User-Agent names MicroMessenger
// (WeChat on every platform, and WeCom, which also does). A client that
// does not present itself as a browser at all, with no "Mozilla/" in its
// User-Agent, such as Go's http.Client or curl, is let through too, so that
// tests driving the pages with a plain HTTP client play the phone's
// browser; WeChat would refuse those as well.
func inWeChat(r *http.Request) bool {
	ua := strings.ToLower(r.Header.Get("User-Agent"))
	return strings.Contains(ua, "micromessenger") || !strings.Contains(ua, "mozilla/")
}

func (p *Platform) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	if !inWeChat(r) {
		// WeChat's answer to any other browser, whatever the parameters.
		renderPage(w, http.StatusOK, "wechatonly", nil)
		return
	}
	vals, perr := checkAuthorizeQuery(r.URL.RawQuery)
	if perr != nil {
		p.renderError(w, perr)
		return
	}
	p.mu.Lock()
	a := p.apps[vals.Get("appid")]
	p.mu.Unlock()
	switch {
	case a == nil:
		perr = errPageAppID
	case a.Kind != OfficialAccount:
		perr = errPageOpenAppID
	}
	if perr != nil {
		p.renderError(w, perr)
		return
	}
	scope := vals.Get("scope")
	silent := true
	for s := range strings.SplitSeq(scope, ",") {
		switch s {
		case "snsapi_base":
		case "snsapi_userinfo":
			silent = false
		default:
			p.renderError(w, errPageScope)
			return
		}
	}
	if !a.Account.canAuthorize() {
		// Web authorization is for verified service accounts (and test
		// accounts): the scopes exist, this account just lacks them.
		p.renderError(w, errPageScope)
		return
	}
	redirect, ok := checkRedirect(a, vals.Get("redirect_uri"), r.Host)
	if !ok {
		p.renderError(w, errPageRedirect)
		return
	}
	p.authorize(w, r, &authRequest{
		app:      a,
		redirect: redirect,
		scope:    scope,
		state:    vals.Get("state"),
		silent:   silent,
		snapshot: vals.Get("forceSnapShot") == "true",
	})
}

func (p *Platform) handleQRConnect(w http.ResponseWriter, r *http.Request) {
	vals, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		p.renderError(w, errPageQuery)
		return
	}
	p.mu.Lock()
	a := p.apps[vals.Get("appid")]
	p.mu.Unlock()
	if a == nil {
		p.renderError(w, errPageAppID)
		return
	}
	if rt := vals.Get("response_type"); rt != "" && rt != "code" {
		p.renderError(w, errPageResponseType)
		return
	}
	scope := vals.Get("scope")
	if a.Kind != WebsiteApp || !slices.Contains(strings.Split(scope, ","), "snsapi_login") {
		p.renderError(w, errPageQRScope)
		return
	}
	redirect, ok := checkRedirect(a, vals.Get("redirect_uri"), r.Host)
	if !ok {
		p.renderError(w, errPageQRRedirect)
		return
	}
	req := &authRequest{app: a, redirect: redirect, scope: scope, state: vals.Get("state")}
	if vals.Get("login_type") == "jssdk" {
		req.frame = parseFrameParams(vals)
	}
	p.authorize(w, r, req)
}

// parseFrameParams reads the embedded mode's parameters. Like WeChat, it
// ignores values it does not know rather than refusing the page.
func parseFrameParams(vals url.Values) *frameParams {
	f := &frameParams{
		selfRedirect: vals.Get("self_redirect") == "true",
		style:        "black",
		stylelite:    vals.Get("stylelite") == "1",
		english:      vals.Get("lang") == "en",
	}
	if vals.Get("style") == "white" {
		f.style = "white"
	}
	if h := vals.Get("href"); !f.stylelite && validStyleHref(h) {
		// The new UI (stylelite) ignores custom CSS.
		f.href = h
	}
	return f
}

// validStyleHref reports whether href is custom CSS the embedded page
// accepts: an https URL, or CSS inline as data:text/css;base64.
func validStyleHref(href string) bool {
	if b64, ok := strings.CutPrefix(href, "data:text/css;base64,"); ok {
		_, err := base64.StdEncoding.DecodeString(b64)
		return err == nil
	}
	u, err := url.Parse(href)
	return err == nil && u.Scheme == "https" && u.Host != "" && u.User == nil
}

// authorize finishes a valid authorization request: at once as the
// configured OAuth user, on a POST from the choice page, or by showing that
// page.
func (p *Platform) authorize(w http.ResponseWriter, r *http.Request, req *authRequest) {
	user := p.autoUser()
	if r.Method == http.MethodPost {
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		if r.PostForm.Get("decision") == "deny" && !req.silent {
			http.Redirect(w, r, withQuery(req.redirect, "state="+url.QueryEscape(req.state)), http.StatusFound)
			return
		}
		user = r.PostForm.Get("user")
	}
	if user == "" {
		p.renderChoice(w, r, req)
		return
	}
	code, perr := p.issueCode(req, user)
	switch {
	case perr == errUnknownTestUser:
		http.Error(w, "unknown test user", http.StatusBadRequest)
		return
	case perr != nil:
		p.renderError(w, perr)
		return
	}
	target := withQuery(req.redirect, "code="+code+"&state="+url.QueryEscape(req.state))
	if r.Method == http.MethodGet && req.frame != nil && !req.frame.selfRedirect {
		// Approved at once inside the frame, which must move the top
		// window: only a script can, as WeChat's own page does.
		renderTopRedirect(w, target)
		return
	}
	// A POST from the embedded page was sent with the form target that
	// self_redirect asks for, so this redirect already moves the right
	// window.
	http.Redirect(w, r, target, http.StatusFound)
}

// errUnknownTestUser is issueCode's answer for a user that does not exist,
// which is the sandbox's problem rather than a WeChat error page.
var errUnknownTestUser = &pageError{"user", "unknown test user"}

// withQuery appends extra to u's query, as WeChat does with redirect_uri.
func withQuery(u *url.URL, extra string) string {
	c := *u
	if c.RawQuery == "" {
		c.RawQuery = extra
	} else {
		c.RawQuery += "&" + extra
	}
	return c.String()
}

func (p *Platform) issueCode(req *authRequest, user string) (string, *pageError) {
	now := p.now()
	ttl := oaCodeTTL
	if req.app.Kind == WebsiteApp {
		ttl = websiteCodeTTL
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	u := p.users[user]
	if u == nil {
		return "", errUnknownTestUser
	}
	if req.app.Account == TestAccount && !p.peekFollowLocked(subject{req.app.AppID, user}).subscribed {
		return "", errPageFollowTest
	}
	p.pruneLocked(now)
	code := randString(32, alnum)
	p.codes[code] = &authCode{
		appID:    req.app.AppID,
		user:     user,
		scope:    req.scope,
		snapshot: req.app.Kind == OfficialAccount && !req.silent && (u.Snapshot || req.snapshot),
		expires:  now.Add(ttl),
	}
	return code, nil
}

// SetOAuthUser makes authorization pages approve at once as the named user;
// an empty name restores the page that lets a person choose.
func (p *Platform) SetOAuthUser(name string) {
	p.knobMu.Lock()
	defer p.knobMu.Unlock()
	p.oauthUser = name
}

func (p *Platform) autoUser() string {
	p.knobMu.Lock()
	defer p.knobMu.Unlock()
	return p.oauthUser
}

// snsTokenAnswer is sns/oauth2/access_token's and refresh_token's answer.
type snsTokenAnswer struct {
	AccessToken    string `json:"access_token"`
	ExpiresIn      int64  `json:"expires_in"`
	RefreshToken   string `json:"refresh_token"`
	OpenID         string `json:"openid"`
	Scope          string `json:"scope"`
	IsSnapshotUser int    `json:"is_snapshotuser,omitempty"`
	UnionID        string `json:"unionid,omitempty"`
}

func (p *Platform) handleSNSToken(w http.ResponseWriter, r *http.Request) {
	if !requireMethod(w, r, http.MethodGet) {
		return
	}
	q := r.URL.Query()
	ans, apiErr := p.exchangeCode(q.Get("appid"), q.Get("secret"), q.Get("code"), q.Get("grant_type"))
	if apiErr != nil {
		writeAPIError(w, apiErr)
		return
	}
	writeJSON(w, http.StatusOK, ans)
}

func (p *Platform) exchangeCode(appID, secret, code, grantType string) (*snsTokenAnswer, *apiError) {
	switch {
	case appID == "":
		return nil, errCode(41002)
	case secret == "":
		return nil, errCode(41004)
	case code == "":
		return nil, errCode(41008)
	case grantType != "authorization_code":
		return nil, errCode(40002)
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.apps[appID]
	switch {
	case a == nil:
		return nil, errCode(40013)
	case a.AppSecret != secret:
		return nil, errCode(40125)
	}
	c := p.codes[code]
	switch {
	case c == nil || c.appID != appID:
		return nil, errCode(40029)
	case c.used:
		return nil, errCode(40163)
	case !now.Before(c.expires):
		return nil, errCode(40029)
	}
	c.used = true

	openid, unionid := openID(appID, c.user), p.UnionID(c.user)
	if c.snapshot {
		// The snapshot page hands out virtual identities.
		openid, unionid = derive("snapshot-openid", appID, c.user), derive("snapshot-unionid", c.user)
	}
	at := p.mintLocked(now, &token{
		kind: snsToken, appID: appID, expires: now.Add(accessTokenTTL),
		user: c.user, openid: openid, scope: c.scope, snapshot: c.snapshot,
	}, 110)
	rt := randToken(110)
	p.refreshs[rt] = &refreshToken{
		appID: appID, user: c.user, openid: openid, scope: c.scope, snapshot: c.snapshot,
		access: at, expires: now.Add(refreshTokenTTL),
	}
	ans := &snsTokenAnswer{
		AccessToken:  at,
		ExpiresIn:    int64(accessTokenTTL / time.Second),
		RefreshToken: rt,
		OpenID:       openid,
		Scope:        c.scope,
	}
	if c.snapshot {
		ans.IsSnapshotUser = 1
	}
	if !a.Unbound && scopeHasUserInfo(c.scope) {
		ans.UnionID = unionid
	}
	return ans, nil
}

// scopeHasUserInfo reports whether scope grants the user's profile.
func scopeHasUserInfo(scope string) bool {
	for s := range strings.SplitSeq(scope, ",") {
		if s == "snsapi_userinfo" || s == "snsapi_login" {
			return true
		}
	}
	return false
}

func (p *Platform) handleSNSRefresh(w http.ResponseWriter, r *http.Request) {
	if !requireMethod(w, r, http.MethodGet) {
		return
	}
	q := r.URL.Query()
	ans, apiErr := p.refresh(q.Get("appid"), q.Get("grant_type"), q.Get("refresh_token"))
	if apiErr != nil {
		writeAPIError(w, apiErr)
		return
	}
	writeJSON(w, http.StatusOK, ans)
}

func (p *Platform) refresh(appID, grantType, v string) (*snsTokenAnswer, *apiError) {
	switch {
	case appID == "":
		return nil, errCode(41002)
	case grantType != "refresh_token":
		return nil, errCode(40002)
	case v == "":
		return nil, errCode(41003)
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.apps[appID] == nil {
		return nil, errCode(40013)
	}
	rt := p.refreshs[v]
	switch {
	case rt == nil || rt.appID != appID:
		return nil, errCode(40030)
	case !now.Before(rt.expires):
		return nil, errCode(42002)
	}
	// A live access token is extended; an expired one is replaced.
	if at := p.tokens[rt.access]; at != nil && now.Before(at.expires) {
		at.expires = now.Add(accessTokenTTL)
	} else {
		rt.access = p.mintLocked(now, &token{
			kind: snsToken, appID: appID, expires: now.Add(accessTokenTTL),
			user: rt.user, openid: rt.openid, scope: rt.scope, snapshot: rt.snapshot,
		}, 110)
	}
	return &snsTokenAnswer{
		AccessToken:  rt.access,
		ExpiresIn:    int64(accessTokenTTL / time.Second),
		RefreshToken: v,
		OpenID:       rt.openid,
		Scope:        rt.scope,
	}, nil
}

// snsUserInfo is sns/userinfo's answer. Sex and region are neutral since
// WeChat's 2021 change.
type snsUserInfo struct {
	OpenID     string   `json:"openid"`
	Nickname   string   `json:"nickname"`
	Sex        int      `json:"sex"`
	Language   string   `json:"language"`
	City       string   `json:"city"`
	Province   string   `json:"province"`
	Country    string   `json:"country"`
	HeadImgURL string   `json:"headimgurl"`
	Privilege  []string `json:"privilege"`
	UnionID    string   `json:"unionid,omitempty"`
}

// snapshotAvatar is the grey default avatar WeChat shows for "微信用户".
const snapshotAvatar = "https://thirdwx.qlogo.cn/mmopen/vi_32/POgEwh4mIHO4nibH0KlMECNjjGxQUq24ZEaGT4poC6icRiccVGKSyXwibcPq4BWmiaIGuG1icwxaQX6grC9VemZoJ8rg/132"

func (p *Platform) handleSNSUserInfo(w http.ResponseWriter, r *http.Request) {
	if !requireMethod(w, r, http.MethodGet) {
		return
	}
	q := r.URL.Query()
	tok, apiErr := p.checkToken(q.Get("access_token"), snsToken)
	if apiErr == nil {
		switch openid := q.Get("openid"); {
		case openid == "":
			apiErr = errCode(41009)
		case openid != tok.openid:
			apiErr = errCode(40003)
		case !scopeHasUserInfo(tok.scope):
			apiErr = errCode(48001)
		}
	}
	if apiErr != nil {
		writeAPIError(w, apiErr)
		return
	}
	p.mu.Lock()
	u := p.users[tok.user]
	a := p.apps[tok.appID]
	p.mu.Unlock()
	if u == nil || a == nil {
		// The user or app was replaced after the token was issued.
		writeAPIError(w, errCode(40003))
		return
	}
	info := snsUserInfo{OpenID: tok.openid, Nickname: u.Nickname, HeadImgURL: u.HeadImgURL, Privilege: []string{}}
	unionid := p.UnionID(u.Name)
	if tok.snapshot {
		info.Nickname, info.HeadImgURL = "微信用户", snapshotAvatar
		unionid = derive("snapshot-unionid", u.Name)
	}
	if !a.Unbound {
		info.UnionID = unionid
	}
	writeJSON(w, http.StatusOK, info)
}

func (p *Platform) handleSNSAuth(w http.ResponseWriter, r *http.Request) {
	if !requireMethod(w, r, http.MethodGet) {
		return
	}
	q := r.URL.Query()
	tok, apiErr := p.checkToken(q.Get("access_token"), snsToken)
	if apiErr == nil && q.Get("openid") != tok.openid {
		apiErr = errCode(40003)
	}
	if apiErr != nil {
		writeAPIError(w, apiErr)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Errcode int    `json:"errcode"`
		Errmsg  string `json:"errmsg"`
	}{0, "ok"})
}
