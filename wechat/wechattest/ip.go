package wechattest

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// IPStatus is how the platform sees the IP address that calls
// cgi-bin/token and cgi-bin/stable_token, the two APIs WeChat guards with
// the account's API IP whitelist.
type IPStatus int

// The statuses. The zero value lets every caller through.
const (
	// IPWhitelisted: the caller's IP is on the whitelist.
	IPWhitelisted IPStatus = iota
	// IPNotWhitelisted: calls get 40164, "invalid ip <ip> ipv6
	// ::ffff:<ip>, not in whitelist".
	IPNotWhitelisted
	// IPNeedsConfirmation: WeChat judges calls from the IP risky. The next
	// call gets 89503 and WeChat sends the admin a confirmation message;
	// calls while the admin has not answered get 89501. See
	// [Platform.ConfirmIP] for the admin's answer.
	IPNeedsConfirmation
)

// Block lengths after the admin refuses an IP.
const (
	ipRejectedBlock      = time.Hour
	ipRejectedTwiceBlock = 24 * time.Hour
)

// ErrNoConfirmationPending is returned by [Platform.ConfirmIP] when WeChat
// has not asked the admin anything.
var ErrNoConfirmationPending = errors.New("wechattest: no IP confirmation is pending")

// ipState is the platform's view of the caller's IP. knobMu guards it.
type ipState struct {
	status       IPStatus
	asked        bool        // 89503 was answered: the admin has a pending question
	rejections   []time.Time // refusals in the last 24 hours
	blockedUntil time.Time
	blockCode    int // 89507 or 89506 while blocked
}

// SetIPStatus sets how the platform sees the caller's IP from now on. It
// forgets any pending confirmation, refusals and blocks.
func (p *Platform) SetIPStatus(s IPStatus) {
	p.knobMu.Lock()
	defer p.knobMu.Unlock()
	p.ip = ipState{status: s}
}

// SetIPAllowed is SetIPStatus(IPWhitelisted) when allowed is true, and
// SetIPStatus(IPNotWhitelisted) otherwise.
func (p *Platform) SetIPAllowed(allowed bool) {
	if allowed {
		p.SetIPStatus(IPWhitelisted)
	} else {
		p.SetIPStatus(IPNotWhitelisted)
	}
}

// ConfirmIP is the admin's answer to the confirmation WeChat sent after an
// 89503. Approving whitelists the IP. Refusing blocks it for an hour (89507
// until then), or for 24 hours (89506) when it is the second refusal within
// 24 hours; after a block the next call asks the admin again. It returns
// ErrNoConfirmationPending unless an 89503 is awaiting an answer.
func (p *Platform) ConfirmIP(approve bool) error {
	now := p.now()
	p.knobMu.Lock()
	defer p.knobMu.Unlock()
	if p.ip.status != IPNeedsConfirmation || !p.ip.asked {
		return ErrNoConfirmationPending
	}
	if approve {
		p.ip = ipState{status: IPWhitelisted}
		return nil
	}
	p.ip.asked = false
	recent := p.ip.rejections[:0]
	for _, at := range p.ip.rejections {
		if now.Sub(at) < 24*time.Hour {
			recent = append(recent, at)
		}
	}
	p.ip.rejections = append(recent, now)
	if len(p.ip.rejections) >= 2 {
		p.ip.blockedUntil, p.ip.blockCode = now.Add(ipRejectedTwiceBlock), 89506
	} else {
		p.ip.blockedUntil, p.ip.blockCode = now.Add(ipRejectedBlock), 89507
	}
	return nil
}

// checkIP answers a token request as the IP whitelist would, nil when the
// caller may proceed.
func (p *Platform) checkIP(r *http.Request) *apiError {
	now := p.now()
	p.knobMu.Lock()
	defer p.knobMu.Unlock()
	switch p.ip.status {
	case IPNotWhitelisted:
		ip := clientIP(r)
		return &apiError{code: 40164, msg: fmt.Sprintf("invalid ip %s ipv6 ::ffff:%s, not in whitelist", ip, ip)}
	case IPNeedsConfirmation:
		switch {
		case now.Before(p.ip.blockedUntil):
			return errCode(p.ip.blockCode)
		case p.ip.asked:
			return errCode(89501)
		}
		p.ip.asked = true
		return errCode(89503)
	}
	return nil
}
