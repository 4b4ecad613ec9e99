package wechat

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// OAuth scopes.
const (
	// ScopeBase silently yields the user's openid (Official Account).
	ScopeBase = "snsapi_base"
	// ScopeUserInfo asks for consent and yields nickname and avatar too
	// (Official Account).
	ScopeUserInfo = "snsapi_userinfo"
	// ScopeLogin is website login on the Open Platform (QR on a PC).
	ScopeLogin = "snsapi_login"
)

// MaxStateLen is the longest OAuth state WeChat accepts.
const MaxStateLen = 128

// Input bounds for OAuth values issued by WeChat. Real codes are 32 bytes
// and tokens about 110; the slack is for format changes, not for garbage.
const (
	maxCodeLen        = 256
	maxOAuthTokenLen  = 1024
	maxRedirectURILen = 2048
)

// OAuthApp performs WeChat OAuth 2.0 for one app: an Official Account (web
// authorization inside WeChat's browser) or an Open Platform website app
// (QR login on a PC). Both use the same sns/* endpoints with their own AppID
// and AppSecret. An OAuthApp is safe for concurrent use.
type OAuthApp struct {
	AppID, AppSecret string
	// Endpoint locates WeChat; zero fields mean DefaultEndpoint's.
	Endpoint Endpoint
	// HTTPClient performs the calls. Nil means a client with a 10-second
	// timeout that does not follow redirects.
	HTTPClient *http.Client
}

// OAuthToken is the answer of a code exchange.
type OAuthToken struct {
	// AccessToken authorizes sns/* calls about this user only. It is a
	// credential, as is RefreshToken (valid 30 days).
	AccessToken, RefreshToken string
	// OpenID identifies the user within this app.
	OpenID string
	// UnionID identifies the user across the apps of one Open Platform
	// account; often empty (snsapi_base, or no Open Platform binding).
	UnionID string
	// Scope is what the user granted, comma-separated.
	Scope string
	// ExpiresIn is AccessToken's lifetime.
	ExpiresIn time.Duration
	// IsSnapshotUser is set for the virtual user of WeChat's read-only
	// snapshot page: the openid and profile are not the real user's. Do
	// not log such a user in; ask them to authorize again.
	IsSnapshotUser bool
}

// UserInfo is the profile from sns/userinfo. Since 2021 WeChat reports Sex
// as 0 and Province, City and Country as empty strings.
type UserInfo struct {
	OpenID, UnionID string
	Nickname        string
	// HeadImgURL is the avatar; empty when there is none. Its last path
	// segment selects the size.
	HeadImgURL              string
	Sex                     int
	Province, City, Country string
	Privilege               []string
}

// AuthorizeURL returns the Official Account authorization URL to open inside
// WeChat's browser. scope is ScopeBase or ScopeUserInfo. state is echoed back
// to redirectURI and must be at most MaxStateLen ASCII letters and digits.
// WeChat matches the link with a strict pattern, so the parameters are
// emitted in its documented order and end with "#wechat_redirect".
func (a *OAuthApp) AuthorizeURL(redirectURI, scope, state string) (string, error) {
	if scope != ScopeBase && scope != ScopeUserInfo {
		return "", invalidArg("scope must be %s or %s", ScopeBase, ScopeUserInfo)
	}
	return a.pageURL("/connect/oauth2/authorize", redirectURI, scope, state)
}

// QRConnectURL returns the Open Platform website-login URL (scope
// snsapi_login): WeChat's own page showing a QR code the user scans with the
// WeChat app. a must be the website app, not an Official Account. state
// follows the same rules as in AuthorizeURL.
func (a *OAuthApp) QRConnectURL(redirectURI, state string) (string, error) {
	return a.pageURL("/connect/qrconnect", redirectURI, ScopeLogin, state)
}

func (a *OAuthApp) pageURL(path, redirectURI, scope, state string) (string, error) {
	if err := checkOpaque("app ID", a.AppID, 128); err != nil {
		return "", err
	}
	if err := checkRedirectURI(redirectURI); err != nil {
		return "", err
	}
	if err := checkState(state); err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString(a.Endpoint.withDefaults().Authorize)
	b.WriteString(path)
	b.WriteString("?appid=")
	b.WriteString(url.QueryEscape(a.AppID))
	b.WriteString("&redirect_uri=")
	b.WriteString(url.QueryEscape(redirectURI))
	b.WriteString("&response_type=code&scope=")
	b.WriteString(scope)
	b.WriteString("&state=")
	b.WriteString(state)
	b.WriteString("#wechat_redirect")
	return b.String(), nil
}

// checkRedirectURI accepts absolute http(s) URLs without a fragment: WeChat
// appends code and state to the query, and with a fragment present it has
// been seen to put them in the wrong place.
func checkRedirectURI(s string) error {
	if len(s) > maxRedirectURILen {
		return invalidArg("redirect URI longer than %d bytes", maxRedirectURILen)
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return invalidArg("redirect URI must be an absolute http(s) URL without user info")
	}
	if strings.Contains(s, "#") {
		return invalidArg("redirect URI must not contain a fragment")
	}
	return nil
}

func checkState(s string) error {
	if len(s) > MaxStateLen {
		return invalidArg("state longer than %d characters", MaxStateLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return invalidArg("state may contain only ASCII letters and digits")
		}
	}
	return nil
}

type oauthTokenResponse struct {
	apiStatus
	AccessToken    string `json:"access_token"`
	ExpiresIn      int64  `json:"expires_in"`
	RefreshToken   string `json:"refresh_token"`
	OpenID         string `json:"openid"`
	Scope          string `json:"scope"`
	UnionID        string `json:"unionid"`
	IsSnapshotUser int    `json:"is_snapshotuser"`
}

// Exchange trades the code from the authorization redirect for tokens and
// the user's openid (sns/oauth2/access_token). A code works once and only
// for minutes; IsCodeInvalid tells a spent or expired one. The code's shape
// is checked before any network call.
func (a *OAuthApp) Exchange(ctx context.Context, code string) (*OAuthToken, error) {
	if err := checkOpaque("OAuth code", code, maxCodeLen); err != nil {
		return nil, err
	}
	if err := checkCredentials(a.AppID, a.AppSecret); err != nil {
		return nil, err
	}
	q := url.Values{}
	q.Set("appid", a.AppID)
	q.Set("secret", a.AppSecret)
	q.Set("code", code)
	q.Set("grant_type", "authorization_code")
	return a.tokenCall(ctx, "sns/oauth2/access_token", q)
}

// refresh obtains a new access token with a refresh token
// (sns/oauth2/refresh_token). isRefreshTokenInvalid tells when the user
// must authorize again. The login flow never refreshes tokens, so this stays
// unexported until something needs it.
func (a *OAuthApp) refresh(ctx context.Context, refreshToken string) (*OAuthToken, error) {
	if err := checkOpaque("refresh token", refreshToken, maxOAuthTokenLen); err != nil {
		return nil, err
	}
	if err := checkOpaque("app ID", a.AppID, 128); err != nil {
		return nil, err
	}
	q := url.Values{}
	q.Set("appid", a.AppID)
	q.Set("grant_type", "refresh_token")
	q.Set("refresh_token", refreshToken)
	return a.tokenCall(ctx, "sns/oauth2/refresh_token", q)
}

func (a *OAuthApp) tokenCall(ctx context.Context, path string, q url.Values) (*OAuthToken, error) {
	var resp oauthTokenResponse
	req := newAPIRequest(http.MethodGet, a.Endpoint.withDefaults().API, path, q, nil)
	if err := doJSON(ctx, httpClientOrDefault(a.HTTPClient), req, &resp); err != nil {
		return nil, err
	}
	if resp.AccessToken == "" || resp.OpenID == "" {
		return nil, fmt.Errorf("wechat: %s: response lacks access_token or openid", path)
	}
	if resp.ExpiresIn <= 0 {
		return nil, fmt.Errorf("wechat: %s: implausible expires_in %d", path, resp.ExpiresIn)
	}
	return &OAuthToken{
		AccessToken:    resp.AccessToken,
		RefreshToken:   resp.RefreshToken,
		OpenID:         resp.OpenID,
		UnionID:        strings.TrimSpace(resp.UnionID),
		Scope:          resp.Scope,
		ExpiresIn:      time.Duration(resp.ExpiresIn) * time.Second,
		IsSnapshotUser: resp.IsSnapshotUser == 1,
	}, nil
}

type userInfoResponse struct {
	apiStatus
	OpenID     string   `json:"openid"`
	UnionID    string   `json:"unionid"`
	Nickname   string   `json:"nickname"`
	HeadImgURL string   `json:"headimgurl"`
	Sex        int      `json:"sex"`
	Province   string   `json:"province"`
	City       string   `json:"city"`
	Country    string   `json:"country"`
	Privilege  []string `json:"privilege"`
}

// UserInfo fetches the profile of the user an OAuth access token belongs to
// (sns/userinfo). It needs a ScopeUserInfo or ScopeLogin token; with a
// ScopeBase token WeChat refuses with errcode 48001 (CodeAPIUnauthorized).
func (a *OAuthApp) UserInfo(ctx context.Context, accessToken, openid string) (*UserInfo, error) {
	if err := checkOpaque("access token", accessToken, maxOAuthTokenLen); err != nil {
		return nil, err
	}
	if err := checkOpaque("openid", openid, maxOpenIDLen); err != nil {
		return nil, err
	}
	const path = "sns/userinfo"
	q := url.Values{}
	q.Set("access_token", accessToken)
	q.Set("openid", openid)
	q.Set("lang", "zh_CN")
	var resp userInfoResponse
	req := newAPIRequest(http.MethodGet, a.Endpoint.withDefaults().API, path, q, nil)
	if err := doJSON(ctx, httpClientOrDefault(a.HTTPClient), req, &resp); err != nil {
		return nil, err
	}
	if resp.OpenID != openid {
		return nil, fmt.Errorf("wechat: %s: response is about a different openid", path)
	}
	return &UserInfo{
		OpenID:     resp.OpenID,
		UnionID:    strings.TrimSpace(resp.UnionID),
		Nickname:   resp.Nickname,
		HeadImgURL: resp.HeadImgURL,
		Sex:        resp.Sex,
		Province:   resp.Province,
		City:       resp.City,
		Country:    resp.Country,
		Privilege:  resp.Privilege,
	}, nil
}

// checkToken asks WeChat whether an OAuth access token is still valid for
// openid (sns/auth). It returns nil when it is, and otherwise the error
// WeChat gave (for example errcode 40003 or 42001). Like refresh, it stays
// unexported until something needs it.
func (a *OAuthApp) checkToken(ctx context.Context, accessToken, openid string) error {
	if err := checkOpaque("access token", accessToken, maxOAuthTokenLen); err != nil {
		return err
	}
	if err := checkOpaque("openid", openid, maxOpenIDLen); err != nil {
		return err
	}
	q := url.Values{}
	q.Set("access_token", accessToken)
	q.Set("openid", openid)
	var resp apiStatus
	req := newAPIRequest(http.MethodGet, a.Endpoint.withDefaults().API, "sns/auth", q, nil)
	return doJSON(ctx, httpClientOrDefault(a.HTTPClient), req, &resp)
}

// FrameOptions are the embedded website-login page's display options, as
// wxLogin.js passes them (reference §9.2).
type FrameOptions struct {
	// Style is "black" (dark text, for light backgrounds; WeChat's default)
	// or "white" (light text, for dark backgrounds). Empty leaves it out.
	Style string
	// Href is custom CSS for the frame: an https URL, or a
	// data:text/css;base64 URL. Empty for none.
	Href string
	// English asks for the English page (lang=en).
	English bool
}

// QRConnectFrameURL returns the URL of WeChat's embedded website-login page,
// the one wxLogin.js puts in its iframe (login_type=jssdk): a QR code for
// the website app a, which after the scan sends the frame itself to
// redirectURI with code and state (self_redirect=true), never the top
// window. Its parameters follow wxLogin.js's order; unlike QRConnectURL it
// has no response_type and no "#wechat_redirect". state follows the same
// rules as in AuthorizeURL.
func (a *OAuthApp) QRConnectFrameURL(redirectURI, state string, o FrameOptions) (string, error) {
	if err := checkOpaque("app ID", a.AppID, 128); err != nil {
		return "", err
	}
	if err := checkRedirectURI(redirectURI); err != nil {
		return "", err
	}
	if err := checkState(state); err != nil {
		return "", err
	}
	if o.Style != "" && o.Style != "black" && o.Style != "white" {
		return "", invalidArg("frame style must be black or white")
	}
	if o.Href != "" && !ValidFrameCSS(o.Href) {
		return "", invalidArg("frame CSS must be an https URL or a data:text/css;base64 URL")
	}
	var b strings.Builder
	b.WriteString(a.Endpoint.withDefaults().Authorize)
	b.WriteString("/connect/qrconnect?appid=")
	b.WriteString(url.QueryEscape(a.AppID))
	b.WriteString("&scope=")
	b.WriteString(ScopeLogin)
	b.WriteString("&redirect_uri=")
	b.WriteString(url.QueryEscape(redirectURI))
	b.WriteString("&state=")
	b.WriteString(state)
	// The empty pass-throughs are what wxLogin.js sends when the caller
	// leaves them out.
	b.WriteString("&login_type=jssdk&self_redirect=true&styletype=&sizetype=&bgcolor=&rst=")
	if o.Style != "" {
		b.WriteString("&style=")
		b.WriteString(o.Style)
	}
	if o.Href != "" {
		b.WriteString("&href=")
		b.WriteString(url.QueryEscape(o.Href))
	}
	if o.English {
		b.WriteString("&lang=en")
	}
	return b.String(), nil
}

// maxFrameCSSLen bounds a frame's custom CSS URL: it rides in the frame's
// URL, which WeChat and browsers limit.
const maxFrameCSSLen = 2048

// ValidFrameCSS reports whether href is custom CSS WeChat's embedded page
// takes: an https URL without user info, or inline CSS as a
// data:text/css;base64 URL, at most 2048 bytes either way.
func ValidFrameCSS(href string) bool {
	if len(href) > maxFrameCSSLen {
		return false
	}
	if b64, ok := strings.CutPrefix(href, "data:text/css;base64,"); ok {
		_, err := base64.StdEncoding.DecodeString(b64)
		return err == nil && b64 != ""
	}
	u, err := url.Parse(href)
	return err == nil && u.Scheme == "https" && u.Host != "" && u.User == nil && !strings.ContainsAny(href, " \t\r\n\"'<>\\")
}

// PageOrigin returns the scheme and host of e's authorization pages, the
// origin a page that embeds WeChat's login frame must allow (for
// Content-Security-Policy frame-src), or "" when Authorize is not an
// absolute URL (a path on the site itself, as the Caddy module's sandbox
// uses).
func (e Endpoint) PageOrigin() string {
	u, err := url.Parse(e.withDefaults().Authorize)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return ""
	}
	return u.Scheme + "://" + u.Host
}
