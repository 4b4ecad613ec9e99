package redirect

import "net/http"

// MaxNext caps the return address an anonymous request may have stored with
// its login: it is kept for the life of a QR code or an OAuth state.
const MaxNext = 1024

// Next validates a `next` parameter given as all its form values: absent or
// empty means "/"; more than one value, a value longer than MaxNext, or a
// target Clean refuses is refused.
func (p Policy) Next(values []string) (string, bool) {
	switch len(values) {
	case 0:
		return "/", true
	case 1:
		if values[0] == "" {
			return "/", true
		}
		if len(values[0]) > MaxNext {
			return "", false
		}
		return p.Clean(values[0])
	}
	return "", false
}

// ReturnAddress is the `next` for a request that needs a login: the page it
// asked for, or, when that is longer than MaxNext, the page without its
// query, or the home page.
func ReturnAddress(r *http.Request) string {
	if uri := r.URL.RequestURI(); len(uri) <= MaxNext {
		return uri
	}
	if p := r.URL.EscapedPath(); len(p) <= MaxNext {
		return p
	}
	return "/"
}
