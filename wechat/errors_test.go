package wechat

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestErrorText(t *testing.T) {
	tests := []struct {
		err  *Error
		want string
	}{
		{&Error{Code: 40001, Msg: "invalid credential, access_token is invalid or not latest"}, "wechat: errcode 40001: invalid credential, access_token is invalid or not latest"},
		{&Error{Code: -1, Msg: "system error", Path: "cgi-bin/qrcode/create"}, "wechat: cgi-bin/qrcode/create: errcode -1: system error"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestErrorHelpers(t *testing.T) {
	helpers := map[string]func(error) bool{
		"isTokenInvalid":        isTokenInvalid,
		"IsCodeInvalid":         IsCodeInvalid,
		"isRefreshTokenInvalid": isRefreshTokenInvalid,
		"IsRateLimited":         IsRateLimited,
		"IsIPNotWhitelisted":    IsIPNotWhitelisted,
		"isUnauthorized":        isUnauthorized,
		"isSystemBusy":          isSystemBusy,
	}
	// Which helper (if any) claims each code.
	want := map[int]string{
		-1: "isSystemBusy", 40001: "isTokenInvalid", 40014: "isTokenInvalid", 42001: "isTokenInvalid",
		40029: "IsCodeInvalid", 40163: "IsCodeInvalid", 42003: "IsCodeInvalid",
		40030: "isRefreshTokenInvalid", 42002: "isRefreshTokenInvalid", 42007: "isRefreshTokenInvalid",
		45009: "IsRateLimited", 45011: "IsRateLimited", 40164: "IsIPNotWhitelisted", 61004: "IsIPNotWhitelisted",
		48001: "isUnauthorized", 0: "", 40003: "", 40013: "", 40053: "",
	}
	for code, owner := range want {
		base := &Error{Code: code, Msg: "m"}
		for _, err := range []error{base, fmt.Errorf("a: %w", base), fmt.Errorf("b: %w", fmt.Errorf("c: %w", base)), errors.Join(errors.New("x"), base)} {
			for name, is := range helpers {
				if got := is(err); got != (name == owner) {
					t.Errorf("%s(errcode %d via %T) = %v", name, code, err, got)
				}
			}
			if got, ok := ErrorCode(err); !ok || got != code {
				t.Errorf("ErrorCode = %d, %v; want %d", got, ok, code)
			}
		}
	}
	for name, is := range helpers {
		if is(nil) || is(errors.New("errcode 40001")) {
			t.Errorf("%s matches a non-WeChat error", name)
		}
	}
	if _, ok := ErrorCode(errors.New("x")); ok {
		t.Error("ErrorCode claims a plain error")
	}
}

func TestCleanErrMsg(t *testing.T) {
	tests := []struct{ in, want string }{
		{"invalid code, rid: 6270dbb5-47d9f324-018472b7", "invalid code, rid: 6270dbb5-47d9f324-018472b7"},
		{"line\nbreak\r\x1b[31mred\x00", "linebreak[31mred"},
		{"bad \xff utf8", "bad  utf8"},
		{"中文错误", "中文错误"},
	}
	for _, tt := range tests {
		if got := cleanErrMsg(tt.in); got != tt.want {
			t.Errorf("cleanErrMsg(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	long := cleanErrMsg(strings.Repeat("错", 200))
	if !utf8.ValidString(long) || len(long) > maxErrMsgLen+len("…") || !strings.HasSuffix(long, "…") {
		t.Errorf("long message cut badly: %d bytes, valid %v", len(long), utf8.ValidString(long))
	}
}

// TestIsConfigError: the refusals only a change of setup cures are told
// apart from transient ones and from a stale token.
func TestIsConfigError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&Error{Code: 48001, Path: "cgi-bin/qrcode/create"}, true},
		{&Error{Code: 40164, Path: "cgi-bin/stable_token"}, true},
		{&Error{Code: 61004}, true},
		{&Error{Code: 89503}, true},
		{&Error{Code: 89501}, true},
		{&Error{Code: 89506}, true},
		{&Error{Code: 89507}, true},
		{&Error{Code: 40125, Path: "cgi-bin/stable_token"}, true},
		{&Error{Code: 40013}, true},
		{&Error{Code: 40243}, true},
		{fmt.Errorf("wrapped: %w", &Error{Code: 40001, Path: "cgi-bin/stable_token"}), true},
		{&Error{Code: 40001, Path: "cgi-bin/token"}, true},
		{&Error{Code: 40001, Path: "cgi-bin/qrcode/create"}, false}, // a stale token
		{&Error{Code: 42001, Path: "cgi-bin/qrcode/create"}, false},
		{&Error{Code: -1}, false},
		{&Error{Code: 45009}, false},
		{&Error{Code: 40029}, false},
		{errors.New("errcode 48001"), false},
		{nil, false},
	} {
		if got := IsConfigError(tc.err); got != tc.want {
			t.Errorf("IsConfigError(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestReportedIP(t *testing.T) {
	for _, tc := range []struct {
		msg, want string
	}{
		{"invalid ip 1.2.3.4 ipv6 ::ffff:1.2.3.4, not in whitelist, rid: 6650a1b2-1c2d3e4f-5a6b7c8d", "1.2.3.4"},
		{"invalid ip 2001:db8::1, not in whitelist", "2001:db8::1"},
		{"invalid ip 203.0.113.9", "203.0.113.9"},
		{"invalid ip <script>, not in whitelist", ""},
		{"invalid ip 1.2.3.4.5 ipv6", ""},
		{"api unauthorized", ""},
		{"", ""},
	} {
		err := fmt.Errorf("x: %w", &Error{Code: 40164, Msg: tc.msg})
		if got := ReportedIP(err); got != tc.want {
			t.Errorf("ReportedIP(%q) = %q, want %q", tc.msg, got, tc.want)
		}
	}
	if ReportedIP(errors.New("invalid ip 1.2.3.4")) != "" {
		t.Error("an IP read from an error that is not WeChat's")
	}
}
