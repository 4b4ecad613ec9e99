package redirect

import (
	"net/http/httptest"
	"strings"
	"testing"
)

func TestNext(t *testing.T) {
	p := Policy{AllowedHosts: []string{"app.example.com"}}
	long := "/" + strings.Repeat("a", MaxNext-1)
	for _, tc := range []struct {
		name   string
		values []string
		want   string
		ok     bool
	}{
		{"absent", nil, "/", true},
		{"empty", []string{""}, "/", true},
		{"path", []string{"/dash?a=1"}, "/dash?a=1", true},
		{"allowed host", []string{"https://app.example.com/x"}, "https://app.example.com/x", true},
		{"other host", []string{"https://evil.example/x"}, "", false},
		{"scheme-relative", []string{"//evil.example/x"}, "", false},
		{"twice", []string{"/a", "/b"}, "", false},
		{"at the cap", []string{long}, long, true},
		{"over the cap", []string{long + "a"}, "", false},
	} {
		got, ok := p.Next(tc.values)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: Next(%q) = %q, %v; want %q, %v", tc.name, tc.values, got, ok, tc.want, tc.ok)
		}
	}
}

func TestReturnAddress(t *testing.T) {
	long := strings.Repeat("q", MaxNext)
	for _, tc := range []struct{ target, want string }{
		{"/dash?tab=1", "/dash?tab=1"},
		{"/dash?q=" + long, "/dash"},
		{"/" + long, "/"},
	} {
		if got := ReturnAddress(httptest.NewRequest("GET", tc.target, nil)); got != tc.want {
			t.Errorf("ReturnAddress(%.40q...) = %.40q, want %.40q", tc.target, got, tc.want)
		}
	}
}
