package wechat

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"
)

// WeChat errcodes this package gives meaning to. Branch on these (through
// ErrorCode, or the IsCodeInvalid, IsRateLimited and IsIPNotWhitelisted
// helpers) rather than on errmsg, whose wording and request-id suffix change
// over time.
const (
	CodeSystemBusy          = -1    // system error, retry later
	CodeInvalidCredential   = 40001 // access_token invalid or superseded (or wrong secret when fetching one)
	CodeInvalidOpenID       = 40003 // openid invalid or from another account
	CodeInvalidAccessToken  = 40014 // malformed access_token
	CodeInvalidCode         = 40029 // OAuth code unknown, malformed or expired
	CodeInvalidRefreshToken = 40030 // OAuth refresh_token invalid
	CodeCodeUsed            = 40163 // OAuth code already spent
	CodeIPNotWhitelisted    = 40164 // caller IP not in the account's API IP whitelist
	CodeAccessTokenExpired  = 42001 // access_token expired
	CodeRefreshTokenExpired = 42002 // OAuth refresh_token expired
	CodeCodeExpired         = 42003 // OAuth code expired
	CodeUserChangedPassword = 42007 // user changed password: OAuth tokens revoked
	CodeDailyQuotaExceeded  = 45009 // daily API quota used up
	CodeMinuteQuotaExceeded = 45011 // per-minute API limit hit
	CodeAPIUnauthorized     = 48001 // no permission for this API (or snsapi_base token on sns/userinfo)
	CodeIPNotRegistered     = 61004 // IP not whitelisted (wording of newer docs)
	maxErrMsgLen            = 256
)

// Errcodes of a wrong setup, which IsConfigError groups: the credentials,
// and the risky-IP confirmation WeChat may ask of the account's admin
// before it serves a new server address.
const (
	CodeInvalidGrantType      = 40002 // grant_type is not client_credential
	CodeInvalidAppID          = 40013 // AppID unknown, or not an Official Account's
	CodeInvalidAppSecret      = 40125 // AppSecret wrong
	CodeAppSecretFrozen       = 40243 // AppSecret frozen by the admin
	CodeAppIDMissing          = 41002 // appid missing
	CodeAppSecretMissing      = 41004 // secret missing
	CodeIPAwaitingAdmin       = 89501 // the admin has not yet answered WeChat's question about this IP
	CodeIPNeedsConfirmation   = 89503 // WeChat just asked the admin to confirm calls from this IP
	CodeIPRejectedTwiceBanned = 89506 // the admin refused this IP twice within 24 h: blocked for 24 h
	CodeIPRejectedBanned      = 89507 // the admin refused this IP: blocked for 1 h
)

// ErrResponseTooLarge is returned (wrapped) when WeChat answers with a body
// larger than the client is willing to read.
var ErrResponseTooLarge = errors.New("response body too large")

// ErrInvalidArgument is returned (wrapped) when a method rejects its input
// before any network call, for example a malformed OAuth code or an
// over-long QR scene. Callers can map it to a 400 for the user.
var ErrInvalidArgument = errors.New("invalid argument")

// Error is a failure reported by WeChat itself: an HTTP 200 answer whose JSON
// carries a non-zero errcode. Inspect it with errors.As, ErrorCode or the Is*
// helpers.
type Error struct {
	// Code is WeChat's errcode.
	Code int
	// Msg is WeChat's errmsg, with control characters removed and its length
	// capped. It is meant for operators; never branch on it.
	Msg string
	// Path is the API path that answered, such as "cgi-bin/token". It may be
	// empty for errors built by hand.
	Path string
}

// Error implements error.
func (e *Error) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("wechat: errcode %d: %s", e.Code, e.Msg)
	}
	return fmt.Sprintf("wechat: %s: errcode %d: %s", e.Path, e.Code, e.Msg)
}

// ErrorCode returns the WeChat errcode carried by err (through any wrapping),
// and false when err is not a WeChat-reported failure.
func ErrorCode(err error) (int, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e.Code, true
	}
	return 0, false
}

func hasCode(err error, codes ...int) bool {
	code, ok := ErrorCode(err)
	if !ok {
		return false
	}
	for _, c := range codes {
		if code == c {
			return true
		}
	}
	return false
}

// isTokenInvalid reports whether WeChat rejected the access_token used for a
// call (40001, 40014, 42001). The Client reacts by dropping that token and
// retrying once.
func isTokenInvalid(err error) bool {
	return hasCode(err, CodeInvalidCredential, CodeInvalidAccessToken, CodeAccessTokenExpired)
}

// IsCodeInvalid reports whether an OAuth code was refused because it is
// unknown, expired or already spent (40029, 40163, 42003). A refresh or the
// back button in WeChat's browser routinely replays a spent code, so this is
// not by itself a sign of attack: restart the login.
func IsCodeInvalid(err error) bool {
	return hasCode(err, CodeInvalidCode, CodeCodeUsed, CodeCodeExpired)
}

// isRefreshTokenInvalid reports whether an OAuth refresh_token can no longer
// be used (40030, 42002, 42007): the user has to authorize again.
func isRefreshTokenInvalid(err error) bool {
	return hasCode(err, CodeInvalidRefreshToken, CodeRefreshTokenExpired, CodeUserChangedPassword)
}

// IsRateLimited reports whether WeChat refused the call because a quota is
// used up (45009 daily, 45011 per minute). Retrying immediately only burns
// more quota.
func IsRateLimited(err error) bool {
	return hasCode(err, CodeDailyQuotaExceeded, CodeMinuteQuotaExceeded)
}

// IsIPNotWhitelisted reports whether the calling server's IP address is not
// in the account's API IP whitelist (40164, or 61004 in newer docs). This is
// an operator configuration problem; retries cannot fix it.
func IsIPNotWhitelisted(err error) bool {
	return hasCode(err, CodeIPNotWhitelisted, CodeIPNotRegistered)
}

// isUnauthorized reports whether the account or token lacks permission for
// the API (48001), for example sns/userinfo called with a snsapi_base token.
func isUnauthorized(err error) bool {
	return hasCode(err, CodeAPIUnauthorized)
}

// isSystemBusy reports whether WeChat answered with its transient "system
// error" (-1).
func isSystemBusy(err error) bool {
	return hasCode(err, CodeSystemBusy)
}

// cleanErrMsg makes a server-supplied errmsg safe to put into logs: no
// control characters (no log line injection) and a bounded length.
func cleanErrMsg(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return -1
		}
		return r
	}, s)
	if len(s) > maxErrMsgLen {
		// Cut on a rune boundary.
		cut := maxErrMsgLen
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// IsConfigError reports whether WeChat refused the call because of how the
// account, the app or this server is set up: a wrong, missing or frozen
// AppID or AppSecret (40001 from a token endpoint, 40002, 40013, 40125,
// 40243, 41002, 41004), a server address that is not on the account's API
// IP whitelist (40164, 61004) or awaits, or was refused, the admin's
// confirmation (89501, 89503, 89506, 89507), or an account whose type does
// not grant the API (48001: parametric QR codes and web authorization are
// for verified service accounts). Retrying cannot help until someone
// changes the account's settings or this server's configuration; telling
// users to try again only sends them in circles.
//
// A 40001 from any other API is a stale access_token, which the Client
// retries by itself, not a configuration problem.
func IsConfigError(err error) bool {
	code, ok := ErrorCode(err)
	if !ok {
		return false
	}
	switch code {
	case CodeInvalidGrantType, CodeInvalidAppID, CodeInvalidAppSecret, CodeAppSecretFrozen,
		CodeAppIDMissing, CodeAppSecretMissing,
		CodeIPNotWhitelisted, CodeIPNotRegistered,
		CodeIPAwaitingAdmin, CodeIPNeedsConfirmation, CodeIPRejectedTwiceBanned, CodeIPRejectedBanned,
		CodeAPIUnauthorized:
		return true
	case CodeInvalidCredential:
		return IsTokenEndpointError(err)
	}
	return false
}

// IsTokenEndpointError reports whether err is WeChat's refusal to issue an
// access_token (cgi-bin/token or cgi-bin/stable_token). There a 40001
// means the AppSecret is wrong, not that a token went stale.
func IsTokenEndpointError(err error) bool {
	var e *Error
	return errors.As(err, &e) && (e.Path == "cgi-bin/token" || e.Path == "cgi-bin/stable_token")
}

// ReportedIP returns the caller address WeChat names in a 40164 errmsg
// ("invalid ip 1.2.3.4 ipv6 ::ffff:1.2.3.4, not in whitelist"), the one to
// add to the IP whitelist, or "" when err carries none. It is for telling
// the operator only: the errmsg's wording is not a contract, so never
// branch on it. Only a well-formed IP address is returned.
func ReportedIP(err error) string {
	var e *Error
	if !errors.As(err, &e) {
		return ""
	}
	_, rest, ok := strings.Cut(e.Msg, "invalid ip ")
	if !ok {
		return ""
	}
	end := strings.IndexAny(rest, " ,;")
	if end >= 0 {
		rest = rest[:end]
	}
	addr, err := netip.ParseAddr(rest)
	if err != nil {
		return ""
	}
	return addr.String()
}
