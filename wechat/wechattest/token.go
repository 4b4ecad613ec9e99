package wechattest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"
)

type tokenKind int

const (
	basicToken  tokenKind = iota // cgi-bin/token
	stableToken                  // cgi-bin/stable_token
	snsToken                     // sns/oauth2/access_token
)

// token is an access token of any kind.
type token struct {
	kind       tokenKind
	appID      string
	expires    time.Time
	superseded bool // expiry was cut short by a newer token

	// OAuth tokens only.
	user     string
	openid   string
	scope    string
	snapshot bool
}

// classicState is an app's cgi-bin/token state.
type classicState struct {
	current string
	day     string
	count   int
}

// stableState is an app's cgi-bin/stable_token state.
type stableState struct {
	current    string
	day        string
	forces     int
	lastForced time.Time
}

// chinaTime is the zone in which WeChat's daily quotas reset.
var chinaTime = time.FixedZone("CST", 8*60*60)

func dayOf(t time.Time) string { return t.In(chinaTime).Format(time.DateOnly) }

type tokenAnswer struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
}

func (p *Platform) handleToken(w http.ResponseWriter, r *http.Request) {
	if !requireMethod(w, r, http.MethodGet) {
		return
	}
	q := r.URL.Query()
	ans, apiErr := p.classicToken(r, q.Get("grant_type"), q.Get("appid"), q.Get("secret"))
	if apiErr != nil {
		writeAPIError(w, apiErr)
		return
	}
	writeJSON(w, http.StatusOK, ans)
}

func (p *Platform) classicToken(r *http.Request, grantType, appID, secret string) (*tokenAnswer, *apiError) {
	if e := p.checkCredentials(r, grantType, appID, secret); e != nil {
		return nil, e
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	quota := p.tokenQuota
	if a := p.apps[appID]; quota == 0 && a != nil && a.Account == TestAccount {
		quota = testTokenDailyQuota
	}
	quota = cmpOr(quota, DefaultTokenDailyQuota)
	cs := p.classic[appID]
	if cs == nil {
		cs = &classicState{}
		p.classic[appID] = cs
	}
	if d := dayOf(now); cs.day != d {
		cs.day, cs.count = d, 0
	}
	if cs.count >= quota {
		return nil, errCode(45009)
	}
	cs.count++
	// The previous token stays usable for a grace period, never longer
	// than it would have anyway.
	if old := p.tokens[cs.current]; old != nil {
		if cut := now.Add(tokenGrace); old.expires.After(cut) {
			old.expires, old.superseded = cut, true
		}
	}
	cs.current = p.mintLocked(now, &token{kind: basicToken, appID: appID, expires: now.Add(accessTokenTTL)}, 157)
	return &tokenAnswer{AccessToken: cs.current, ExpiresIn: int64(accessTokenTTL / time.Second)}, nil
}

// checkCredentials validates a client_credential request in WeChat's order.
func (p *Platform) checkCredentials(r *http.Request, grantType, appID, secret string) *apiError {
	switch {
	case grantType != "client_credential":
		return errCode(40002)
	case appID == "":
		return errCode(41002)
	case secret == "":
		return errCode(41004)
	}
	p.mu.Lock()
	a := p.apps[appID]
	p.mu.Unlock()
	switch {
	case a == nil || a.Kind != OfficialAccount:
		return errCode(40013)
	case a.AppSecret != secret:
		return errCode(40125)
	}
	return p.checkIP(r)
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap().String()
	}
	return host
}

// mintLocked stores t under a new random value of about n characters,
// shaped like WeChat's tokens ("<counter>_<random>"). p.mu must be held.
func (p *Platform) mintLocked(now time.Time, t *token, n int) string {
	p.seq++
	prefix := fmt.Sprintf("%d_", p.seq%100)
	v := prefix + randToken(n-len(prefix))
	p.tokens[v] = t
	p.pruneLocked(now)
	return v
}

// checkToken validates the access_token parameter of an API call and
// returns the token when it is live and of one of the given kinds.
func (p *Platform) checkToken(v string, kinds ...tokenKind) (*token, *apiError) {
	if v == "" {
		return nil, errCode(41001)
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.tokens[v]
	if t == nil {
		return nil, errCode(40014)
	}
	ok := false
	for _, k := range kinds {
		ok = ok || t.kind == k
	}
	switch {
	case !ok:
		return nil, errCode(40001)
	case !now.Before(t.expires) && t.superseded:
		return nil, errCode(40001)
	case !now.Before(t.expires):
		return nil, errCode(42001)
	}
	c := *t
	return &c, nil
}

// stableRequest is the JSON body of cgi-bin/stable_token.
type stableRequest struct {
	GrantType    string `json:"grant_type"`
	AppID        string `json:"appid"`
	Secret       string `json:"secret"`
	ForceRefresh bool   `json:"force_refresh"`
}

const maxBody = 64 << 10

// readBody reads a POST body of at most maxBody bytes. It answers 44002
// for an empty body and 47001 for an oversized one.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return nil, errCode(47001)
	case err != nil:
		return nil, errCode(-1)
	case len(b) == 0:
		return nil, errCode(44002)
	}
	return b, nil
}

func (p *Platform) handleStableToken(w http.ResponseWriter, r *http.Request) {
	if !requireMethod(w, r, http.MethodPost) {
		return
	}
	body, apiErr := readBody(w, r)
	if apiErr != nil {
		writeAPIError(w, apiErr)
		return
	}
	var req stableRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeAPIError(w, errCode(47001))
		return
	}
	ans, apiErr := p.stableTokenFor(r, req)
	if apiErr != nil {
		writeAPIError(w, apiErr)
		return
	}
	writeJSON(w, http.StatusOK, ans)
}

func (p *Platform) stableTokenFor(r *http.Request, req stableRequest) (*tokenAnswer, *apiError) {
	if e := p.checkCredentials(r, req.GrantType, req.AppID, req.Secret); e != nil {
		return nil, e
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	ss := p.stable[req.AppID]
	if ss == nil {
		ss = &stableState{}
		p.stable[req.AppID] = ss
	}
	if d := dayOf(now); ss.day != d {
		ss.day, ss.forces = d, 0
	}
	cur := p.tokens[ss.current]
	// A force refresh less than 30 s after the previous one does nothing.
	force := req.ForceRefresh && (ss.lastForced.IsZero() || now.Sub(ss.lastForced) >= forceRefreshGap)
	switch {
	case force && ss.forces >= forceRefreshLimit:
		return nil, errCode(45009)
	case force:
		ss.forces++
		ss.lastForced = now
		if cur != nil && now.Before(cur.expires) {
			cur.expires, cur.superseded = now, true
		}
	case cur != nil && !cur.superseded && cur.expires.Sub(now) >= tokenGrace:
		// Normal mode hands out the same token while it has 5 minutes left.
		return &tokenAnswer{AccessToken: ss.current, ExpiresIn: int64(cur.expires.Sub(now) / time.Second)}, nil
	}
	// The previous token, if any, keeps its own expiry.
	ss.current = p.mintLocked(now, &token{kind: stableToken, appID: req.AppID, expires: now.Add(accessTokenTTL)}, 157)
	return &tokenAnswer{AccessToken: ss.current, ExpiresIn: int64(accessTokenTTL / time.Second)}, nil
}
