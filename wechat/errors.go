package wechat

import (
	"errors"
	"fmt"
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
