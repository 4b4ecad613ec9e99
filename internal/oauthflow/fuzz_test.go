package oauthflow

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzParseOAuthCallback: whatever WeChat, a browser or an attacker puts in
// the callback's query, parsing never panics, and what it accepts is exactly
// one well-formed state and at most one well-formed code.
func FuzzParseOAuthCallback(f *testing.F) {
	const state = "0123456789abcdef0123456789abcdef"
	for _, seed := range []string{
		"code=061Xx7Ga1QwBmH0x4gFa1M2BbN2Xx7Gn&state=" + state,
		"state=" + state,
		"state=" + state + "&connect_redirect=1",
		"code=a&code=b&state=" + state,
		"code=a&state=" + state + "&state=" + state,
		"code=a&state=" + state + "http://maxthon.example/",
		"code=%00&state=" + state,
		"code=a%0d%0a&state=" + state,
		"state=" + strings.Repeat("a", 129),
		"code=&state=",
		"%zz",
		"",
		";;&&==",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := parseCallback(raw)
		if err != nil {
			return
		}
		q, qerr := url.ParseQuery(raw)
		if qerr != nil {
			t.Fatalf("accepted a query url.ParseQuery refuses: %q", raw)
		}
		if !validState(p.State) || len(q["state"]) != 1 || q.Get("state") != p.State {
			t.Fatalf("accepted state %q from %q", p.State, raw)
		}
		if p.HasCode != (len(q["code"]) == 1) || (p.HasCode && (!validCode(p.Code) || p.Code != q.Get("code"))) {
			t.Fatalf("accepted code %q (has %v) from %q", p.Code, p.HasCode, raw)
		}
	})
}

// FuzzParseOAuthStart: the start route's parameters parse without panics
// into a known method.
func FuzzParseOAuthStart(f *testing.F) {
	for _, seed := range []string{"", "method=open&popup=1", "method=oauth", "method=x", "popup=2", "method=open&method=open", "popup=1&popup=0"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		method, popup, err := parseStart(q)
		if err != nil {
			return
		}
		if method != MethodOAuth && method != MethodOpen {
			t.Fatalf("method %q from %q", method, raw)
		}
		if popup && q.Get("popup") != "1" {
			t.Fatalf("popup from %q", raw)
		}
	})
}
