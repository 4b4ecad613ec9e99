package middleware

import (
	"fmt"
	"net/url"
	"strings"
)

// Public paths are a hole in the gate by design, so the rule that opens one
// is strict about which request it applies to. The handler behind the
// middleware (a file server, a reverse proxy, a PHP router) may clean, decode
// or re-split the path after we have looked at it; whatever it does, a public
// decision must be about the very path it will serve. So a path is public
// only when it is already in the one form every such handler agrees on:
//
//   - absolute, with no empty, "." or ".." segments (also not "..;x", which
//     some Java servers read as ".."), no backslash and no NUL;
//   - with no percent-encoded separator or dot (%2f, %5c, %2e) and no
//     encoded percent sign (%25, a second round of decoding waiting to
//     happen) in the raw request path;
//
// and then it matches a configured prefix only at a segment boundary:
// "/healthz" opens "/healthz" and "/healthz/…", never "/healthzz". Anything
// else simply needs a session, which is never a hole.

// publicPaths is the validated PublicPaths: each entry is a canonical path
// without a trailing slash ("" stands for "/", everything).
type publicPaths []string

// newPublicPaths validates the configured prefixes. A prefix that is not in
// canonical form could never match a request the rule accepts, so it is
// reported as a mistake rather than silently ignored.
func newPublicPaths(prefixes []string) (publicPaths, error) {
	out := make(publicPaths, 0, len(prefixes))
	for i, p := range prefixes {
		base := p
		if len(base) > 1 {
			base = strings.TrimSuffix(base, "/")
		}
		if !strings.HasPrefix(p, "/") || !canonicalPath(base) || strings.ContainsRune(p, '%') {
			return nil, fmt.Errorf("middleware: PublicPaths[%d] %q must be an absolute path without dot segments, empty segments, backslashes or escapes", i, p)
		}
		if base == "/" {
			base = ""
		}
		out = append(out, base)
	}
	return out, nil
}

// match reports whether the request path u is public.
func (pp publicPaths) match(u *url.URL) bool {
	if len(pp) == 0 {
		return false
	}
	p := u.Path
	if !canonicalPath(p) || hasEncodedSeparator(u.EscapedPath()) {
		return false
	}
	for _, base := range pp {
		if p == base || strings.HasPrefix(p, base) && p[len(base)] == '/' {
			return true
		}
	}
	return false
}

// canonicalPath reports whether p is an absolute path that no cleaning step
// would change: no empty, "." or ".." segments (a trailing slash is allowed),
// no backslash, no NUL.
func canonicalPath(p string) bool {
	if p == "" || p[0] != '/' || strings.ContainsAny(p, "\\\x00") {
		return false
	}
	for rest := p[1:]; rest != ""; {
		seg, after, more := strings.Cut(rest, "/")
		if seg == "" && more {
			return false // "//"
		}
		if s, _, _ := strings.Cut(seg, ";"); s == "." || s == ".." {
			return false
		}
		rest = after
	}
	return true
}

// hasEncodedSeparator reports whether a raw (still escaped) path encodes a
// slash, a backslash, a dot or a percent sign: characters that would change
// the path's segments if some handler decoded it once more.
func hasEncodedSeparator(raw string) bool {
	for i := strings.IndexByte(raw, '%'); i >= 0; {
		if i+2 < len(raw) {
			switch strings.ToLower(raw[i+1 : i+3]) {
			case "2f", "5c", "2e", "25", "00":
				return true
			}
		}
		j := strings.IndexByte(raw[i+1:], '%')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return false
}
