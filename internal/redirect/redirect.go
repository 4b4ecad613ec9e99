// Package redirect decides whether a caller-supplied "next" target is safe to
// redirect a browser to after login.
//
// The rules are deliberately narrow. A target is either a same-origin path
// or an absolute http(s) URL on an explicit host allowlist; everything else is
// refused. Browsers and servers disagree on how to read odd URLs (backslashes
// as slashes, tabs and newlines silently dropped, percent-decoding in
// redirects), so any spelling that some reader could take for a different
// origin is refused too, even when Go's own parser would read it harmlessly.
package redirect

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxLen is the longest target Clean accepts, in bytes.
const MaxLen = 2048

// maxDecodeRounds bounds repeated percent-decoding. A target still changing
// after this many rounds is nested suspiciously deep and is refused.
const maxDecodeRounds = 4

// Policy says which redirect targets are acceptable. The zero Policy accepts
// same-origin paths only.
type Policy struct {
	// AllowedHosts lists the hosts that absolute http and https targets may
	// name. An entry is either an exact host with optional port
	// ("example.com", "login.example.com:8443", "[::1]:8080"), or
	// "*.example.com", which matches any subdomain of example.com but not
	// example.com itself. Matching ignores ASCII case. A port in the target
	// must appear in the entry: "example.com" does not match
	// "https://example.com:443/". Internationalized names must be listed in
	// their ASCII (punycode) form.
	AllowedHosts []string
}

// Validate reports the first malformed AllowedHosts entry, for checking a
// configuration up front. Clean never matches a malformed entry.
func (p Policy) Validate() error {
	for i, h := range p.AllowedHosts {
		if !validEntry(h) {
			return fmt.Errorf("redirect: allowed host %d (%q) is not a host[:port] or *.domain[:port]", i, h)
		}
	}
	return nil
}

// Clean returns next unchanged and true if it is a safe redirect target
// under p, or "" and false otherwise. Safe targets are:
//
//   - a path on this origin: it starts with exactly one "/", and neither it
//     nor any of its repeated percent-decodings contain a backslash, a
//     control character, a slash look-alike, or in the path part a "//" or
//     a "." or ".." segment;
//   - an absolute http or https URL without userinfo whose host is on
//     p.AllowedHosts.
//
// Empty targets and targets longer than [MaxLen] are refused.
func (p Policy) Clean(next string) (string, bool) {
	if next == "" || len(next) > MaxLen {
		return "", false
	}
	local := next[0] == '/'
	// Check the target and each successive percent-decoding of it, so
	// that no depth of encoding hides a forbidden character.
	form := next
	for round := 0; ; round++ {
		if !cleanChars(form) || local && !cleanPath(form) {
			return "", false
		}
		decoded := lenientUnescape(form)
		if decoded == form {
			break
		}
		if round == maxDecodeRounds {
			return "", false
		}
		form = decoded
	}
	if local || p.allowedAbsolute(next) {
		return next, true
	}
	return "", false
}

// lenientUnescape decodes every well-formed %XX escape and keeps malformed
// ones literally, as browsers do. "+" is left alone: it means a space only in
// form-encoded queries, and a space is harmless either way.
func lenientUnescape(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// cleanChars refuses characters that browsers drop, rewrite or treat as
// separators: ASCII controls (tab, CR, LF, NUL...), backslashes, non-ASCII
// spaces, invisible format characters, and Unicode characters that look like
// or normalize to a slash or backslash. The ASCII space is allowed: browsers
// only trim it at the ends, where a target never starts with one. Invalid
// UTF-8 (possible after decoding, e.g. "%ff") is refused.
func cleanChars(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		switch {
		case r < 0x20, r == 0x7f, r == '\\':
			return false
		case r < 0x80:
			continue
		case unicode.IsSpace(r), unicode.IsControl(r), unicode.Is(unicode.Cf, r), isSlashLike(r):
			return false
		}
	}
	return true
}

// isSlashLike reports non-ASCII characters that resemble "/" or "\" or turn
// into them under Unicode compatibility normalization, which some servers
// and proxies apply.
func isSlashLike(r rune) bool {
	switch r {
	case '\u2044', // fraction slash
		'\u2215', // division slash
		'\u2216', // set minus
		'\u29f5', // reverse solidus operator
		'\u29f8', // big solidus
		'\u29f9', // big reverse solidus
		'\ufe68', // small reverse solidus
		'\uff0f', // fullwidth solidus
		'\uff3c': // fullwidth reverse solidus
		return true
	}
	return false
}

// cleanPath checks the path part (before any "?" or "#") of a relative
// target. It must start with a slash and contain no empty or dot segments:
// "//" is how protocol-relative URLs begin, and "/./" or "/../" can collapse
// into one wherever a server cleans the path before redirecting. A trailing
// slash is fine.
func cleanPath(s string) bool {
	if end := strings.IndexAny(s, "?#"); end >= 0 {
		s = s[:end]
	}
	if s == "" || s[0] != '/' || strings.Contains(s, "//") {
		return false
	}
	for seg := range strings.SplitSeq(s[1:], "/") {
		if seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// allowedAbsolute reports whether s is an absolute http(s) URL without
// userinfo whose host is on the allowlist.
func (p Policy) allowedAbsolute(s string) bool {
	if len(p.AllowedHosts) == 0 {
		return false
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || !strings.EqualFold(scheme, "http") && !strings.EqualFold(scheme, "https") {
		return false
	}
	// Find the authority ourselves, the way browsers do, rather than trust
	// a parser's idea of where it ends.
	authority := rest
	if end := strings.IndexAny(rest, "/?#"); end >= 0 {
		authority = rest[:end]
	}
	if !validHostPort(authority) {
		return false // also refuses userinfo ("@") and percent-escapes
	}
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" || u.User != nil || !strings.EqualFold(u.Host, authority) {
		return false
	}
	for _, entry := range p.AllowedHosts {
		if matchHost(entry, authority) {
			return true
		}
	}
	return false
}

// validHostPort reports whether s is an ASCII hostname or IP literal with an
// optional numeric port, and nothing else.
func validHostPort(s string) bool {
	host, port := s, ""
	if i := strings.LastIndexByte(s, ':'); i >= 0 && !strings.HasSuffix(s, "]") {
		host, port = s[:i], s[i+1:]
		if !validPort(port) {
			return false
		}
	}
	if strings.HasPrefix(host, "[") {
		if !strings.HasSuffix(host, "]") {
			return false
		}
		ip := net.ParseIP(host[1 : len(host)-1])
		return ip != nil && ip.To4() == nil
	}
	return validHostname(host)
}

func validPort(p string) bool {
	if p == "" || len(p) > 5 {
		return false
	}
	n := 0
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
		n = n*10 + int(p[i]-'0')
	}
	return n > 0 && n <= 65535
}

// validHostname accepts dot-separated labels of ASCII letters, digits and
// hyphens. No trailing dot: "example.com." reaches example.com but would not
// match its allowlist entry, and there is no reason to allow it.
func validHostname(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// validEntry reports whether an AllowedHosts entry is well formed.
func validEntry(e string) bool {
	if rest, ok := strings.CutPrefix(e, "*."); ok {
		// A wildcard needs a registrable-looking base ("*.com" is refused)
		// and no IP literal.
		host := rest
		if i := strings.LastIndexByte(rest, ':'); i >= 0 {
			host = rest[:i]
		}
		return !strings.HasPrefix(rest, "[") && strings.Contains(host, ".") && validHostPort(rest)
	}
	return validHostPort(e)
}

// matchHost reports whether the authority of a target (already checked by
// validHostPort) matches one allowlist entry.
func matchHost(entry, authority string) bool {
	if !validEntry(entry) {
		return false
	}
	base, ok := strings.CutPrefix(entry, "*.")
	if !ok {
		return strings.EqualFold(entry, authority)
	}
	// The target must be "<one or more labels>." + base, compared as a
	// whole suffix that starts at a label boundary, so that
	// "evilexample.com" never matches "*.example.com".
	if len(authority) <= len(base)+1 {
		return false
	}
	cut := len(authority) - len(base)
	return authority[cut-1] == '.' && strings.EqualFold(authority[cut:], base)
}
