package middleware

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/wechat-login/caddy-wechat-login/internal/session"
)

// Gateway mode. A reverse proxy in front of an application that knows
// nothing of WeChat (Caddy's forward_auth, nginx's auth_request, Traefik's
// forwardAuth) asks {prefix}/auth about every request before passing it on.
// The question comes with the browser's own headers and cookies, plus
// headers the proxy adds to say which request it is about:
//
//   - X-Forwarded-Method, X-Forwarded-Uri and X-Forwarded-Host (Caddy and
//     Traefik send them);
//   - X-Original-URI and X-Original-Method (nginx's convention: nginx sends
//     what its configuration names, nothing by itself).
//
// The answers:
//
//   - 200 with the identity headers for a session the allowlists accept;
//   - 200 without identity for a public path;
//   - for a browser navigating (original method GET or HEAD, accepting
//     HTML) without a session, 302 to the login page with the original
//     request target as next. nginx's auth_request passes only 2xx, 401 and
//     403 on (anything else becomes a 500), so when X-Original-URI is
//     present the browser gets a 401 instead, whose X-WeChat-Login-Redirect
//     header holds that login URL for an error_page to redirect to;
//   - 401 JSON {"error", "login_url"} for other clients;
//   - 403 for a user the allowlists refuse.
//
// These headers are trustworthy only when the proxy sets them, and anybody
// can call {prefix}/auth directly with headers of their choosing. So they
// never decide what a session decides: identity comes only from the session
// cookie, and the forwarded target can at most make the answer "public",
// which tells a direct caller nothing they could not learn by asking for
// that path through the proxy. A proxy sets the header of its own
// convention and passes the client's copy of the other one on untouched,
// so a path is public only when every target header present names the same
// one. Otherwise the forwarded values only shape the caller's own login
// redirect, which the redirect policy checks like any other next.

// HeaderLoginRedirect carries the login URL on the 401 that {prefix}/auth
// gives a browser when the proxy cannot pass a redirect on (nginx).
const HeaderLoginRedirect = "X-WeChat-Login-Redirect"

// maxForwardedURI bounds the forwarded request target {prefix}/auth reads:
// a longer one is neither public nor a return address.
const maxForwardedURI = 8 << 10

// forwarded is what an auth subrequest says about the request it is about.
type forwarded struct {
	// uri is the original request target: X-Original-URI when present
	// (only nginx-style proxies set it, and those pass a client's
	// X-Forwarded-Uri on), else X-Forwarded-Uri; "" when absent or sent
	// more than once.
	uri string
	// agreed reports that uri is set and every target header present,
	// every copy of it, names that same target: only then may it be public.
	agreed bool
	// method is the original method: the forwarded one when every
	// method header present agrees, the subrequest's own when none is
	// present, "" when they disagree.
	method string
	// host and proto are X-Forwarded-Host and X-Forwarded-Proto when each
	// was sent once and looks like one ("" otherwise).
	host, proto string
	// noRedirect reports an nginx-style proxy, which cannot pass a
	// redirect on.
	noRedirect bool
}

// readForwarded reads the proxy's description of the original request.
func readForwarded(r *http.Request) forwarded {
	h := r.Header
	orig, fwd := h.Values("X-Original-Uri"), h.Values("X-Forwarded-Uri")
	f := forwarded{noRedirect: len(orig) > 0}
	switch {
	case len(orig) == 1:
		f.uri = orig[0]
	case len(orig) == 0 && len(fwd) == 1:
		f.uri = fwd[0]
	}
	f.agreed = f.uri != "" && allEqual(orig, f.uri) && allEqual(fwd, f.uri)

	methods := slices.Concat(h.Values("X-Original-Method"), h.Values("X-Forwarded-Method"))
	switch {
	case len(methods) == 0:
		f.method = r.Method
	case allEqual(methods, methods[0]):
		f.method = methods[0]
	}

	if v := h.Values("X-Forwarded-Host"); len(v) == 1 && hostChars(v[0]) {
		f.host = v[0]
	}
	if v := h.Values("X-Forwarded-Proto"); len(v) == 1 {
		if p := strings.ToLower(v[0]); p == "http" || p == "https" {
			f.proto = p
		}
	}
	return f
}

// hostChars reports whether s can be a host with an optional port: it is
// checked against the redirect policy later, but must not bring a path,
// userinfo or a list of hosts into the URL built from it.
func hostChars(s string) bool {
	if s == "" || len(s) > 260 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(".-:[]", c) >= 0) {
			return false
		}
	}
	return true
}

func allEqual(values []string, want string) bool {
	for _, v := range values {
		if v != want {
			return false
		}
	}
	return true
}

// navigating reports a browser navigating, as wantsHTML does for a request
// of its own, from the original method and the forwarded Accept header.
func (f forwarded) navigating(r *http.Request) bool {
	return (f.method == http.MethodGet || f.method == http.MethodHead) &&
		strings.Contains(r.Header.Get("Accept"), "text/html")
}

// handleAuth serves {prefix}/auth for forward_auth, auth_request and the
// like (see the top of this file).
func (m *Middleware) handleAuth(w http.ResponseWriter, r *http.Request) {
	f := readForwarded(r)
	w.Header().Set("Cache-Control", "no-store")
	if f.agreed && m.public.matchTarget(f.uri) {
		w.WriteHeader(http.StatusOK)
		return
	}
	rec, err := m.sessions.Get(r)
	switch {
	case errors.Is(err, session.ErrNone):
		m.authLoginRequired(w, r, f)
		return
	case err != nil:
		m.storeFailure(w, "check session", err)
		return
	}
	id := identityOf(rec)
	if !m.allowed(id) {
		if f.navigating(r) {
			m.serveForbidden(w, r)
			return
		}
		writeError(w, http.StatusForbidden, (&AccessError{Status: http.StatusForbidden}).Error())
		return
	}
	m.setIdentityHeaders(w.Header(), id)
	w.WriteHeader(http.StatusOK)
}

// authLoginRequired answers for a request without a session: a browser is
// sent to log in, and comes back to the very request it made.
func (m *Middleware) authLoginRequired(w http.ResponseWriter, r *http.Request, f forwarded) {
	login := m.loginURL(m.returnTo(r, f))
	body := map[string]string{"error": (&AccessError{Status: http.StatusUnauthorized}).Error(), "login_url": login}
	switch {
	case !f.navigating(r):
		writeJSON(w, http.StatusUnauthorized, body)
	case f.noRedirect:
		w.Header().Set(HeaderLoginRedirect, login)
		writeJSON(w, http.StatusUnauthorized, body)
	default:
		http.Redirect(w, r, login, http.StatusFound)
	}
}

// returnTo is the next for a login started by a forwarded request: the
// original target, absolute when it was made to another host that the
// redirect policy allows; without its query when the whole would be too
// long; "/" when the target is unknown, odd or refused by the policy. A
// host the policy does not allow gives the plain target, which the browser
// resolves against the host it is on: the one the login page is served on.
func (m *Middleware) returnTo(r *http.Request, f forwarded) string {
	t, ok := parseTarget(f.uri)
	if !ok {
		return "/"
	}
	candidates := []string{f.uri, t.rawPath}
	if f.host != "" && !strings.EqualFold(f.host, r.Host) {
		scheme := f.proto
		if scheme == "" {
			scheme = "http"
			if m.isHTTPS(r) {
				scheme = "https"
			}
		}
		origin := scheme + "://" + f.host
		candidates = append([]string{origin + f.uri, origin + t.rawPath}, candidates...)
	}
	for _, c := range candidates {
		if next, ok := m.redirects.Next([]string{c}); ok {
			return next
		}
	}
	return "/"
}

// target is a forwarded request target in origin form ("/path?query").
type target struct {
	rawPath string // as sent, still escaped
	path    string // decoded
}

// parseTarget reads an origin-form request target. It refuses what no
// browser sends and proxies disagree about: anything but printable ASCII
// (raw spaces, control bytes, raw UTF-8), a fragment, an escape that is not
// two hex digits, an absolute or asterisk form, and very long targets.
func parseTarget(s string) (target, bool) {
	if s == "" || len(s) > maxForwardedURI || s[0] != '/' {
		return target{}, false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '#' {
			return target{}, false
		}
	}
	rawPath, _, _ := strings.Cut(s, "?")
	path, err := url.PathUnescape(rawPath)
	if err != nil {
		return target{}, false
	}
	return target{rawPath: rawPath, path: path}, true
}

// matchTarget reports whether a forwarded request target is public. On top
// of what match requires of a request's path (paths.go), the raw path may
// only hold characters a URL path carries unescaped, so that every parser
// splits it the same way, and the decoded path must be valid UTF-8 without
// controls, non-ASCII spaces or characters that some normalisation (NFKC,
// "best fit" code pages) turns into a dot or a slash. A proxy hands the
// application the target exactly as the client sent it, and the
// application may read it in any of these ways.
func (pp publicPaths) matchTarget(uri string) bool {
	if len(pp) == 0 {
		return false
	}
	t, ok := parseTarget(uri)
	if !ok || !pathChars(t.rawPath) || hasEncodedSeparator(t.rawPath) || !plainText(t.path) {
		return false
	}
	return pp.match(&url.URL{Path: t.path, RawPath: t.rawPath})
}

// pathChars reports whether raw holds only what RFC 3986 allows in a path:
// unreserved characters, sub-delimiters, ":", "@", "/" and escapes.
func pathChars(raw string) bool {
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-._~!$&'()*+,;=:@/%", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// plainText reports whether a decoded path is valid UTF-8 (which also rules
// out overlong encodings of "." and "/") with no control, space or format
// characters, and none from the Unicode blocks that hold compatibility
// forms of ".", "/" or "\" (fullwidth and small forms, dot leaders,
// enclosed "1." and the like) or slash look-alikes.
func plainText(p string) bool {
	if !utf8.ValidString(p) {
		return false
	}
	for _, r := range p {
		switch {
		case r < 0x80:
			if r < 0x20 || r == 0x7f {
				return false
			}
		case unicode.IsControl(r), unicode.IsSpace(r), unicode.Is(unicode.Cf, r),
			0x2000 <= r && r <= 0x206f,   // general punctuation: dot leaders, fraction slash
			0x2100 <= r && r <= 0x214f,   // letterlike symbols: "a/c", "c/o"
			0x2215 <= r && r <= 0x2216,   // division slash, set minus
			0x2460 <= r && r <= 0x24ff,   // enclosed alphanumerics: "1." to "20."
			0x29f5 <= r && r <= 0x29f9,   // reverse solidus operator, big solidus
			0x3300 <= r && r <= 0x33ff,   // CJK compatibility: "a.m.", "Co."
			0xfe10 <= r && r <= 0xfe1f,   // vertical forms: ellipsis
			0xfe30 <= r && r <= 0xfe6f,   // compatibility and small forms: "‥", "﹒", "﹨"
			0xff00 <= r && r <= 0xffef,   // halfwidth and fullwidth forms: "．", "／", "＼"
			0x1f100 <= r && r <= 0x1f1ff: // enclosed alphanumeric supplement: "0."
			return false
		}
	}
	return true
}
