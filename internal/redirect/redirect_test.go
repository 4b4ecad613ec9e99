package redirect

import (
	"net/url"
	"strings"
	"testing"
)

var testPolicy = Policy{AllowedHosts: []string{
	"example.com",
	"*.example.org",
	"login.example.net:8443",
	"[::1]:8080",
}}

// openRedirects are targets that some browser, proxy or server could follow
// to another origin, or that smuggle characters they would rewrite. All must
// be refused under testPolicy.
var openRedirects = []string{
	// Empty, not a path, not a URL.
	"",
	"evil.com",
	"evil.com/path",
	"example.com/path",
	"?next=//evil.com",
	"#//evil.com",
	".//evil.com",
	"../evil.com",

	// Protocol-relative and extra slashes.
	"//evil.com",
	"///evil.com",
	"////evil.com/path",
	"//example.com/",
	"/.//evil.com",
	"/..//evil.com",
	"/a/..//evil.com",
	"/./evil.com",
	"/a/../../evil.com",

	// Backslashes, which browsers read as slashes in http(s) URLs.
	"/\\evil.com",
	"\\\\evil.com",
	"\\/evil.com",
	"/\\/evil.com",
	"/a\\b",
	"https:/\\/evil.com",
	"https://example.com\\@evil.com",
	"https://evil.com\\@example.com",

	// Whitespace and controls between the slashes (browsers drop tab/CR/LF).
	"/\t/evil.com",
	"/\n/evil.com",
	"/\r/evil.com",
	"/\r\n/evil.com",
	"/\x0b/evil.com",
	"/\x0c/evil.com",
	"/%09/evil.com",
	"/%0a/evil.com",
	"/%0A/evil.com",
	"/%0b/evil.com",
	"/%0d/evil.com",
	"/%0D%0A/evil.com",
	"//%09/evil.com",
	"\t//evil.com",
	" //evil.com",
	" /path",
	"/path\n",
	"/path?x=%0d%0aSet-Cookie:a=b",
	"\x00/evil.com",
	"/\x00evil.com",
	"/%00evil.com",
	"/path\x7f",

	// Encoded slashes and backslashes, single and nested.
	"/%2f/evil.com",
	"/%2F%2Fevil.com",
	"%2f%2fevil.com",
	"/%5c/evil.com",
	"/%5Cevil.com",
	"/%252f%252fevil.com",
	"/%25252f%25252fevil.com",
	"/%255cevil.com",
	"/%2e%2e//evil.com",
	"/%2e/%2fevil.com",
	"/%252e%252e%252f%252fevil.com",
	"/%%32%66%%32%66evil.com",
	"/%2525252525252f",

	// Unicode slash and space look-alikes, invisible characters.
	"/\u2215evil.com",
	"/\uff0f\uff0fevil.com",
	"/%EF%BC%8F%EF%BC%8Fevil.com",
	"/\uff3cevil.com",
	"/\u2044evil.com",
	"/\u3000/evil.com",
	"/\u00a0/evil.com",
	"/\u200b/evil.com",
	"/\u202e/moc.live",
	"/%E2%80%AE/moc.live",
	"/%ff",

	// Absolute URLs to hosts not on the list, including suffix tricks.
	"https://evil.com",
	"http://evil.com/",
	"HTTPS://EVIL.COM/",
	"https://evilexample.com",
	"https://example.com.evil.com",
	"https://evil.com/example.com",
	"https://evil.com?example.com",
	"https://evil.com#example.com",
	"https://example.org",
	"https://.example.org",
	"https://evilexample.org",
	"https://example.org.evil.com",
	"https://a.example.org.evil.com",
	"https://evil.com%2eexample.org",
	"https://evil.com%23.example.org",
	"https://evil.com%2f.example.org",
	"https://example.com./",
	"https://example.com:443/",
	"https://example.com:8443/",
	"https://example.com:/",
	"https://example.com:99999/",
	"https://example.com:0/",
	"https://login.example.net/",
	"https://login.example.net:8444/",
	"http://0x7f000001/",
	"http://[::1]/",
	"http://[::1]:8081/",
	"https://[::ffff:127.0.0.1]:8080/",

	// Userinfo, even when the real host is allowed.
	"https://example.com@evil.com",
	"https://example.com:443@evil.com",
	"https://example.com%40evil.com",
	"https://example.com%2f@evil.com",
	"https://example.com%00@evil.com",
	"https://example.com&@evil.com#@example.com",
	"https://evil.com@example.com",
	"https://user:pass@example.com/",
	"https://@example.com/",
	"https://[::1]:8080@evil.com",

	// IDN and look-alike hosts.
	"https://\uff45xample.com",
	"https://ex\u0430mple.com",
	"https://example\u3002com",
	"https://example.com\u3002evil.com",
	"https://evil\uff0eexample.org",
	"https://xn--exmple-cua.com",
	"https://example.com\u2044evil.com",

	// Scheme tricks.
	"http:evil.com",
	"http:/evil.com",
	"https:evil.com",
	"http:\\\\evil.com",
	"https:///evil.com",
	"https:////evil.com",
	"javascript:alert(1)",
	"JaVaScRiPt:alert(1)",
	"javascript://example.com/%0aalert(1)",
	"java%0ascript:alert(1)",
	"\tjavascript:alert(1)",
	"data:text/html,<script>alert(1)</script>",
	"data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
	"vbscript:msgbox(1)",
	"file:///etc/passwd",
	"ftp://example.com/",
	"ws://example.com/",
	"https//example.com",

	// Too long.
	"/" + strings.Repeat("a", MaxLen),
	"https://example.com/" + strings.Repeat("a", MaxLen),
}

// legitimate targets are accepted unchanged under testPolicy.
var legitimate = []string{
	"/",
	"/protected",
	"/a/b/c",
	"/trailing/",
	"/path?x=1&y=2",
	"/path#section",
	"/path?next=https://evil.com/",    // "//" in a query is just data
	"/x?a=b#frag/with//slashes",       // and in a fragment
	"/search?q=a%20b&lang=zh-CN",      // percent-encoding
	"/a%2Fb",                          // an encoded slash inside a segment
	"/%E6%96%87%E6%A1%A3?q=%E5%BE%AE", // encoded UTF-8
	"/文档/中文?q=微信#页面",                  // raw Unicode
	"/café/naïve",
	"/~user/file.txt",
	"/100%", // a lone percent stays literal
	"/a+b?c=d+e",
	"/javascript:alert(1)",      // a same-origin path, harmless
	"/.well-known/security.txt", // a dot-led name, not a dot segment
	"/a/...",
	"/" + strings.Repeat("a", MaxLen-1),
	"https://example.com",
	"https://example.com/",
	"https://EXAMPLE.com/x?y=1#z",
	"HTTPS://example.com/",
	"http://example.com/path",
	"https://example.com/%2F%2Fevil", // a path on an allowed host
	"https://a.example.org/",
	"https://A.B.Example.ORG/x",
	"https://login.example.net:8443/cb?x=1",
	"http://[::1]:8080/x",
}

func TestCleanRejects(t *testing.T) {
	if len(openRedirects) < 60 {
		t.Fatalf("only %d payloads; keep at least 60", len(openRedirects))
	}
	for _, next := range openRedirects {
		if got, ok := testPolicy.Clean(next); ok || got != "" {
			t.Errorf("Clean(%q) = %q, %v; want refused", next, got, ok)
		}
	}
}

func TestCleanAccepts(t *testing.T) {
	for _, next := range legitimate {
		got, ok := testPolicy.Clean(next)
		if !ok || got != next {
			t.Errorf("Clean(%q) = %q, %v; want accepted unchanged", next, got, ok)
		}
	}
}

func TestZeroPolicyIsSameOriginOnly(t *testing.T) {
	var p Policy
	for _, next := range []string{"https://example.com/", "http://example.com", "https://a.example.org/"} {
		if _, ok := p.Clean(next); ok {
			t.Errorf("zero Policy accepted %q", next)
		}
	}
	if got, ok := p.Clean("/home?x=1"); !ok || got != "/home?x=1" {
		t.Errorf("zero Policy refused a local path: %q, %v", got, ok)
	}
}

func TestWildcardMatching(t *testing.T) {
	tests := []struct {
		entry, host string
		want        bool
	}{
		{"*.example.com", "a.example.com", true},
		{"*.example.com", "a.b.example.com", true},
		{"*.example.com", "A.EXAMPLE.COM", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", ".example.com", false},
		{"*.example.com", "evilexample.com", false},
		{"*.example.com", "a.example.com:443", false},
		{"*.example.com:8443", "a.example.com:8443", true},
		{"*.example.com:8443", "a.example.com", false},
		{"*.example.com:8443", "a.example.com:8444", false},
		{"example.com", "example.com", true},
		{"example.com", "a.example.com", false},
		{"Example.COM", "example.com", true},
		{"*.com", "example.com", false}, // too broad: refused entry
		{"*.example.com/x", "a.example.com", false},
		{"*", "example.com", false},
		{"", "example.com", false},
	}
	for _, tt := range tests {
		if got := matchHost(tt.entry, tt.host); got != tt.want {
			t.Errorf("matchHost(%q, %q) = %v, want %v", tt.entry, tt.host, got, tt.want)
		}
	}
}

func TestValidate(t *testing.T) {
	good := Policy{AllowedHosts: []string{"example.com", "*.example.org", "a.example.net:8443", "[::1]:8080", "127.0.0.1:9000"}}
	if err := good.Validate(); err != nil {
		t.Errorf("Validate(good) = %v", err)
	}
	for _, bad := range []string{"", "*", "*.com", "https://example.com", "example.com/", "user@example.com",
		"example.com:", "example.com:http", "ex ample.com", "exa\u0301mple.com", "*.[::1]", "example.com.", "-a.com"} {
		err := Policy{AllowedHosts: []string{"example.com", bad}}.Validate()
		if err == nil {
			t.Errorf("Validate accepted entry %q", bad)
			continue
		}
		if !strings.Contains(err.Error(), "allowed host 1") {
			t.Errorf("Validate(%q) error %q does not name the entry's index", bad, err)
		}
	}
}

// BenchmarkClean measures the common case: a local path with a query.
func BenchmarkClean(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := testPolicy.Clean("/dashboard/settings?tab=profile&x=%20y"); !ok {
			b.Fatal("refused")
		}
	}
}

// FuzzClean checks that whatever Clean accepts is returned unchanged and is
// either an allowlisted absolute URL, or a path that a browser still reads as
// same-origin after its own normalization: backslashes to slashes, tab/CR/LF
// removed, one round of percent-decoding.
func FuzzClean(f *testing.F) {
	for _, s := range openRedirects {
		f.Add(s)
	}
	for _, s := range legitimate {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, next string) {
		got, ok := testPolicy.Clean(next)
		if !ok {
			if got != "" {
				t.Fatalf("refused %q but returned %q", next, got)
			}
			return
		}
		if got != next {
			t.Fatalf("Clean(%q) changed it to %q", next, got)
		}
		if len(next) > MaxLen {
			t.Fatalf("accepted %d bytes", len(next))
		}
		if !strings.HasPrefix(next, "/") {
			u, err := url.Parse(next)
			if err != nil {
				t.Fatalf("accepted unparsable %q: %v", next, err)
			}
			if s := strings.ToLower(u.Scheme); s != "http" && s != "https" || u.User != nil {
				t.Fatalf("accepted %q: scheme %q, userinfo %v", next, u.Scheme, u.User)
			}
			allowed := false
			for _, e := range testPolicy.AllowedHosts {
				allowed = allowed || matchHost(e, u.Host)
			}
			if !allowed {
				t.Fatalf("accepted %q with host %q not on the allowlist", next, u.Host)
			}
			return
		}
		norm := browserNormalize(next)
		if !strings.HasPrefix(norm, "/") || strings.HasPrefix(norm, "//") {
			t.Fatalf("accepted %q, which a browser reads as %q", next, norm)
		}
		if u, err := url.Parse(norm); err == nil && (u.Host != "" || u.Scheme != "") {
			t.Fatalf("accepted %q, which normalizes to %q with scheme %q host %q", next, norm, u.Scheme, u.Host)
		}
	})
}

// browserNormalize applies, independently of the code under test, the
// rewrites a browser or lenient server may do before reading a URL.
func browserNormalize(s string) string {
	s = strings.ReplaceAll(s, `\`, "/")
	s = strings.NewReplacer("\t", "", "\r", "", "\n", "").Replace(s)
	if d, err := url.PathUnescape(s); err == nil {
		s = d
	}
	return strings.ReplaceAll(s, `\`, "/")
}
