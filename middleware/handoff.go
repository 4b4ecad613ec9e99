package middleware

// One login for many sites on unrelated domains.
//
// WeChat lets an Official Account register one server URL for its pushes
// and one or two domains for web authorization, and a website app one
// callback domain: logins can only happen on those hosts. A login host (a
// site with Config.HandoffTo) does them, and hands each one to the site
// that asked (a site with Config.LoginHost), which has no WeChat app at all:
//
//	browser                   site (LoginHost)               login host (HandoffTo)
//	GET /cart ──────────────▶ no session: state S in the handoff binding
//	                          cookie, 302 to the login host's login page with
//	                          next={prefix}/handoff/start?to=<site>&state=S&next=/cart
//	(any login method on the login host: QR code, chat code, in-WeChat
//	authorization whose redirect_uri is the login host's, website login;
//	or none, when the browser is logged in there already)
//	GET {prefix}/handoff/start?to=<site>&state=S&next=/cart ──▶ <site> must be in
//	                          HandoffTo exactly; 302 to <site>{prefix}/handoff?token=T,
//	                          T = seal{id, <site>, /cart, S, identity, expiry 60 s}
//	GET {prefix}/handoff?token=T ─▶ T opens (the shared key, the "handoff" name,
//	                          unexpired), is for this site's origin, S is in this
//	                          browser's binding, T's id is marked used in the
//	                          site's store (create-if-absent): a new session of
//	                          the site's own, 303 to /cart
//
// The state binds the handoff to the browser that asked for it, as an OAuth
// state does, so that nobody can log a victim in to a site as someone else
// with a handoff of their own (login CSRF). The handoff key is derived from
// the session keys for handoffs alone and the seal is bound to the name
// "handoff", so a session cookie never opens as a handoff or the reverse.

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/wechat-login/caddy-wechat-login/internal/loginpage"
	"github.com/wechat-login/caddy-wechat-login/internal/redirect"
	"github.com/wechat-login/caddy-wechat-login/internal/session"
	"github.com/wechat-login/caddy-wechat-login/middleware/store"
)

const (
	// handoffCookie, on a site with a LoginHost, lists the handoffs this
	// browser asked for.
	handoffCookie = "wechat_handoff"
	// handoffBindingTTL bounds a login on the login host: no QR code lives
	// longer (maxSceneTTL).
	handoffBindingTTL = maxSceneTTL
	// maxHandoffStates is how many handoffs one browser may be waiting
	// for at once, one per tab; the oldest goes first.
	maxHandoffStates = 5
	// handoffStateLen is the length of a state: 128 random bits in hex.
	handoffStateLen = 32
	// handoffUsedSlack keeps a used handoff's mark past its expiry, for a
	// site whose clock is behind the login host's.
	handoffUsedSlack = time.Minute
)

// handoffUsedKey is where a site marks a handoff used.
func handoffUsedKey(id string) string { return "handoff:" + id }

// handoffOptions checks and canonicalizes PublicOrigin, CookieDomain,
// LoginHost and HandoffTo, and makes sure a site with a LoginHost has no
// WeChat app of its own.
func (c *Config) handoffOptions() error {
	var err error
	if c.PublicOrigin != "" {
		o, err := canonicalOrigin(c.PublicOrigin)
		if err != nil {
			return fieldError("PublicOrigin", "%q %v", c.PublicOrigin, err)
		}
		c.PublicOrigin = o
	}
	if c.CookieDomain != "" {
		d, err := cookieDomain(c.CookieDomain)
		if err != nil {
			return fieldError("CookieDomain", "%q %v", c.CookieDomain, err)
		}
		c.CookieDomain = d
		if c.PublicOrigin != "" && !session.UnderDomain(originHost(c.PublicOrigin), d) {
			return fieldError("CookieDomain", "%q does not contain the host of this site's public origin (%s), so no session cookie would be shared", d, c.PublicOrigin)
		}
	}
	to := make([]string, len(c.HandoffTo))
	for i, o := range c.HandoffTo {
		if to[i], err = canonicalOrigin(o); err != nil {
			return elementError("HandoffTo", i, "%q %v", o, err)
		}
		if slices.Contains(to[:i], to[i]) {
			return elementError("HandoffTo", i, "%q is listed twice", o)
		}
		if to[i] == c.PublicOrigin {
			return elementError("HandoffTo", i, "%q is this site's own public origin", o)
		}
	}
	c.HandoffTo = to
	if c.LoginHost == "" {
		return nil
	}
	host, err := canonicalOrigin(c.LoginHost)
	if err != nil {
		return fieldError("LoginHost", "%q %v", c.LoginHost, err)
	}
	if host == c.PublicOrigin {
		return fieldError("LoginHost", "%q is this site's own public origin", c.LoginHost)
	}
	c.LoginHost = host
	if len(c.HandoffTo) > 0 {
		return fieldError("HandoffTo", "is for a login host, and this site takes its logins from a login host")
	}
	for _, f := range []struct{ name, v string }{
		{"AppID", c.AppID}, {"AppSecret", c.AppSecret}, {"PushToken", c.PushToken}, {"EncodingAESKey", c.EncodingAESKey},
		{"OpenAppID", c.OpenAppID}, {"OpenAppSecret", c.OpenAppSecret},
	} {
		if f.v != "" {
			return fieldError(f.name, "is set on a site with a login host: its logins happen on the login host, which has the WeChat apps")
		}
	}
	switch {
	case len(c.PreviousEncodingAESKeys) > 0:
		return fieldError("PreviousEncodingAESKeys", "are set on a site with a login host, which takes no WeChat pushes")
	case len(c.Methods) > 0:
		return fieldError("Methods", "are set on a site with a login host: the login host offers the methods")
	}
	return nil
}

// canonicalOrigin checks that s is an http or https origin, alone, and
// returns it in the one spelling used for comparisons: scheme and host in
// lower case, the scheme's default port left out.
func canonicalOrigin(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return "", errors.New("must be an origin, such as https://login.example.com")
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", errors.New("must start with https:// (or http://)")
	}
	if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Path != "" && u.Path != "/" || strings.HasSuffix(u.Host, ":") {
		return "", errors.New("must be a scheme and a host (and port) alone, with no path, query or user")
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if ip := net.ParseIP(host); ip != nil && strings.Contains(host, ":") {
		host = "[" + host + "]"
	} else if ip == nil && !validHostName(host) {
		return "", errors.New("has an invalid host name")
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || port[0] == '0' {
			return "", errors.New("has an invalid port")
		}
		if scheme == "https" && n == 443 || scheme == "http" && n == 80 {
			port = ""
		}
	}
	if port != "" {
		host += ":" + port
	}
	return scheme + "://" + host, nil
}

// validHostName reports whether s is a DNS name of letters, digits and
// hyphens, in lower case.
func validHostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// cookieDomain checks a CookieDomain and returns it in lower case, without
// the leading dot some write.
func cookieDomain(s string) (string, error) {
	d := strings.ToLower(strings.TrimPrefix(s, "."))
	if !validHostName(d) {
		return "", errors.New("must be a domain name, such as example.com, with no scheme or port")
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return "", errors.New("must have at least two labels (example.com): browsers refuse cookies for a top-level domain")
	}
	if _, err := strconv.Atoi(labels[len(labels)-1]); err == nil {
		return "", errors.New("is an IP address, for which cookies cannot be shared")
	}
	return d, nil
}

// originHost is the host name of a canonical origin, without its port.
func originHost(origin string) string {
	u, err := url.Parse(origin)
	if err != nil {
		return ""
	}
	return u.Hostname()
}

// requestHost is the host name the browser asked for: PublicOrigin's when
// set, else the request's Host without its port.
func (m *Middleware) requestHost(r *http.Request) string {
	if m.cfg.PublicOrigin != "" {
		return originHost(m.cfg.PublicOrigin)
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.Trim(host, "[]")
}

// siteOrigin is this site's origin in canonical form, or "" when the
// request's Host is not a valid one.
func (m *Middleware) siteOrigin(r *http.Request) string {
	o, err := canonicalOrigin(m.origin(r))
	if err != nil {
		return ""
	}
	return o
}

// setUpHandoffs prepares both sides of handoffs: the key, and on a login
// host the sites it may hand logins to, which may also be the target of
// next after a logout.
func (m *Middleware) setUpHandoffs() error {
	if m.cfg.LoginHost == "" && len(m.cfg.HandoffTo) == 0 {
		return nil
	}
	var err error
	if m.handoffs, err = session.NewHandoffs(m.cfg.SessionKeys, m.cfg.Now); err != nil {
		return fmt.Errorf("middleware: SessionKeys: %w", err)
	}
	m.handoffTo = make(map[string]bool, len(m.cfg.HandoffTo))
	// Clipped, so that appending never writes into Config.RedirectHosts.
	m.redirects.AllowedHosts = slices.Clip(m.redirects.AllowedHosts)
	for _, o := range m.cfg.HandoffTo {
		m.handoffTo[o] = true
		m.redirects.AllowedHosts = append(m.redirects.AllowedHosts, strings.SplitN(o, "://", 2)[1])
	}
	return nil
}

// handoffBinding is what the handoff cookie seals: the states of the
// handoffs this browser is waiting for.
type handoffBinding struct {
	States []handoffState `json:"h"`
}

type handoffState struct {
	State   string `json:"s"`
	Started int64  `json:"t"` // unix seconds
}

func (b handoffBinding) has(state string) bool {
	return slices.ContainsFunc(b.States, func(s handoffState) bool { return s.State == state })
}

// bindingOf returns the handoffs this browser is waiting for.
func (m *Middleware) handoffBindingOf(r *http.Request) handoffBinding {
	var b handoffBinding
	if payload := m.cookies.Open(r, handoffCookie); payload != nil {
		_ = json.Unmarshal(payload, &b)
	}
	return b
}

// setHandoffBinding writes the binding with add added (when not "") and
// drop removed, leaving out what expired and the oldest beyond
// maxHandoffStates; an empty binding clears the cookie.
func (m *Middleware) setHandoffBinding(w http.ResponseWriter, r *http.Request, b handoffBinding, add, drop string) error {
	now := m.cfg.Now()
	var kept []handoffState
	if add != "" {
		kept = append(kept, handoffState{State: add, Started: now.Unix()})
	}
	for _, s := range slices.Backward(b.States) {
		if len(kept) == maxHandoffStates {
			break
		}
		if s.State != drop && s.State != add && now.Unix()-s.Started < int64(handoffBindingTTL/time.Second) && validHandoffState(s.State) {
			kept = append(kept, s)
		}
	}
	if len(kept) == 0 {
		m.cookies.Clear(w, r, handoffCookie)
		return nil
	}
	slices.Reverse(kept)
	payload, err := json.Marshal(handoffBinding{States: kept})
	if err != nil {
		return err
	}
	return m.cookies.Set(w, r, handoffCookie, payload, now.Add(handoffBindingTTL), handoffBindingTTL)
}

func validHandoffState(s string) bool {
	if len(s) != handoffStateLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// beginHandoff sends a browser without a session on a site with a
// LoginHost to the login host's login page, which comes back with a
// handoff for this browser. next has been validated.
func (m *Middleware) beginHandoff(w http.ResponseWriter, r *http.Request, next string) {
	origin := m.siteOrigin(r)
	if origin == "" {
		writeError(w, http.StatusBadRequest, "invalid Host")
		return
	}
	state := randomHex(handoffStateLen / 2)
	if err := m.setHandoffBinding(w, r, m.handoffBindingOf(r), state, ""); err != nil {
		m.log.Error("cannot bind the handoff", zap.Error(err))
		writeError(w, http.StatusInternalServerError, "cannot start the login")
		return
	}
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, m.handoffLoginURL(origin, state, next), http.StatusFound)
}

// handoffLoginURL is the login host's login page, going on to the handoff
// for this site. The login page keeps at most redirect.MaxNext of where it
// goes on to, so a long next is cut to its path, or to "/".
func (m *Middleware) handoffLoginURL(origin, state, next string) string {
	path, _, _ := strings.Cut(next, "?")
	var start string
	for _, n := range []string{next, path, "/"} {
		start = m.cfg.Prefix + "/handoff/start?" + url.Values{"to": {origin}, "state": {state}, "next": {n}}.Encode()
		if len(start) <= redirect.MaxNext {
			break
		}
	}
	return m.cfg.LoginHost + m.cfg.Prefix + "/login?next=" + url.QueryEscape(start)
}

// serveHandoffSite answers the routes that a site with a LoginHost serves
// differently, and reports whether it did: its login page is the login
// host's, and the routes of the login methods are not served at all.
func (m *Middleware) serveHandoffSite(w http.ResponseWriter, r *http.Request, sub string) bool {
	switch sub {
	case "/userinfo", "/auth", "/logout", "/ready", "/handoff":
		return false
	case "/login", "", "/":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			methodNotAllowed(w, http.MethodGet)
			return true
		}
		next, ok := m.redirects.Next(r.URL.Query()["next"])
		if !ok {
			next = "/"
		}
		if _, err := m.sessions.Get(r); err == nil {
			w.Header().Set("Cache-Control", "no-store")
			http.Redirect(w, r, next, http.StatusFound)
			return true
		}
		m.beginHandoff(w, r, next)
		return true
	}
	writeError(w, http.StatusNotFound, "logins for this site happen on "+m.cfg.LoginHost)
	return true
}

// handoffPage answers a handoff that logs nobody in, with a link that
// starts the login again.
func (m *Middleware) handoffPage(w http.ResponseWriter, r *http.Request, status int, msg loginpage.Message, retry string) {
	m.pageDone(w, m.page.Outcome(w, r, status, loginpage.Outcome{Message: msg, RetryURL: retry, Origin: m.origin(r)}))
}

// handleHandoff serves GET {prefix}/handoff?token=… on a site with a
// LoginHost: the handoff the login host made for this browser starts this
// site's own session, once, and the browser goes on to next.
func (m *Middleware) handleHandoff(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	if m.cfg.LoginHost == "" {
		writeError(w, http.StatusNotFound, "this site takes no handoffs")
		return
	}
	if r.Method != http.MethodGet {
		methodNotAllowed(w, http.MethodGet)
		return
	}
	retry := m.loginURL("/")
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil || len(q["token"]) != 1 {
		m.handoffPage(w, r, http.StatusBadRequest, loginpage.MsgBadRequest, retry)
		return
	}
	ho, err := m.handoffs.Open(q["token"][0])
	switch {
	case errors.Is(err, session.ErrHandoffExpired):
		m.log.Info("expired handoff refused")
		m.handoffPage(w, r, http.StatusBadRequest, loginpage.MsgExpired, retry)
		return
	case err != nil:
		m.log.Warn("handoff that does not open refused")
		m.handoffPage(w, r, http.StatusBadRequest, loginpage.MsgBadRequest, retry)
		return
	}
	if ho.Target != m.siteOrigin(r) {
		m.log.Warn("handoff for another site refused", zap.String("target", ho.Target))
		m.handoffPage(w, r, http.StatusBadRequest, loginpage.MsgBadNext, retry)
		return
	}
	b := m.handoffBindingOf(r)
	if !b.has(ho.State) {
		m.log.Warn("handoff for another browser refused", zap.String("openid", logID(ho.Identity.OpenID)))
		m.handoffPage(w, r, http.StatusForbidden, loginpage.MsgOtherBrowser, retry)
		return
	}
	id := identityOf(ho.Identity)
	if !m.allowed(id) {
		m.log.Info("handed-over login refused by allowlist", zap.String("openid", logID(id.OpenID)))
		m.metrics.LoginDenied(id.Method)
		m.serveForbidden(w, r)
		return
	}
	// Once, whichever browser or instance comes first: the mark lives as
	// long as the handoff could still open.
	ttl := ho.ExpiresAt.Sub(m.cfg.Now()) + handoffUsedSlack
	if err := m.store.Create(r.Context(), handoffUsedKey(ho.ID), []byte{1}, ttl); err != nil {
		if errors.Is(err, store.ErrExists) {
			m.log.Warn("handoff used again refused", zap.String("openid", logID(id.OpenID)))
			m.handoffPage(w, r, http.StatusBadRequest, loginpage.MsgExpired, retry)
			return
		}
		m.storeFailure(w, "mark handoff used", err)
		return
	}
	next, ok := m.redirects.Next([]string{ho.Next})
	if !ok {
		next = "/"
	}
	if err := m.startSession(w, r, id, ""); err != nil {
		m.log.Error("cannot issue session", zap.Error(err))
		m.handoffPage(w, r, http.StatusInternalServerError, loginpage.MsgUnavailable, retry)
		return
	}
	if err := m.setHandoffBinding(w, r, b, "", ho.State); err != nil {
		m.log.Warn("cannot update the handoff binding", zap.Error(err))
	}
	m.log.Info("login handed over", zap.String("method", id.Method), zap.String("openid", logID(id.OpenID)))
	m.metrics.Login(id.Method)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// handleHandoffStart serves GET {prefix}/handoff/start?to=…&state=…&next=…
// on a login host: a browser logged in here is sent to the site named by
// to, which must be in HandoffTo, with a handoff of its login; one that is
// not logs in first, and comes back here.
func (m *Middleware) handleHandoffStart(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	if len(m.handoffTo) == 0 {
		writeError(w, http.StatusNotFound, "this site hands logins to no other site")
		return
	}
	if r.Method != http.MethodGet {
		methodNotAllowed(w, http.MethodGet)
		return
	}
	login := m.cfg.Prefix + "/login"
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil || len(q["to"]) != 1 || len(q["state"]) != 1 || len(q["next"]) > 1 {
		m.handoffPage(w, r, http.StatusBadRequest, loginpage.MsgBadRequest, login)
		return
	}
	to, state, next := q.Get("to"), q.Get("state"), q.Get("next")
	// Sites send their origin in its canonical spelling, and only that is
	// taken: the comparison is exact.
	target := to
	if canon, err := canonicalOrigin(to); err != nil || canon != to || !m.handoffTo[target] {
		m.log.Warn("handoff to a site not in HandoffTo refused", zap.String("to", truncate(to, 100)))
		m.handoffPage(w, r, http.StatusForbidden, loginpage.MsgBadNext, "")
		return
	}
	if !validHandoffState(state) || len(next) > redirect.MaxNext {
		m.handoffPage(w, r, http.StatusBadRequest, loginpage.MsgBadRequest, login)
		return
	}
	rec, err := m.sessions.Get(r)
	switch {
	case errors.Is(err, session.ErrNone):
		// Log in here first, by any method, and come back.
		back := r.URL.RequestURI()
		if m.oauth.AutoStart(w, r, back) {
			return
		}
		http.Redirect(w, r, m.loginURL(back), http.StatusFound)
		return
	case err != nil:
		m.storeFailure(w, "check session", err)
		return
	case !m.allowed(identityOf(rec)):
		m.serveForbidden(w, r)
		return
	}
	token, _, err := m.handoffs.Seal(session.Handoff{Target: target, Next: next, State: state, Identity: rec})
	if err != nil {
		m.log.Error("cannot seal a handoff", zap.Error(err))
		m.handoffPage(w, r, http.StatusInternalServerError, loginpage.MsgUnavailable, "")
		return
	}
	m.log.Debug("login handed to another site", zap.String("to", target), zap.String("openid", logID(rec.OpenID)))
	http.Redirect(w, r, target+m.cfg.Prefix+"/handoff?token="+token, http.StatusFound)
}

// logoutTarget is where a logout goes on to: next, or for a logout
// everywhere on a site with a LoginHost, the login host's logout (which
// asks the user to confirm, as for any logout link from another site) and
// then next, made absolute.
func (m *Middleware) logoutTarget(r *http.Request, next string, everywhere bool) string {
	if !everywhere || m.cfg.LoginHost == "" {
		return next
	}
	if strings.HasPrefix(next, "/") {
		next = m.siteOrigin(r) + next
	}
	return m.cfg.LoginHost + m.cfg.Prefix + "/logout?next=" + url.QueryEscape(next)
}

// truncate shortens untrusted text for a log line.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
