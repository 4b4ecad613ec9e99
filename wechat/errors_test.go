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
