package middleware

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/wechat-login/caddy-wechat-login/middleware/store"
	"github.com/wechat-login/caddy-wechat-login/wechat"
)

// Code login (MethodCode), for the Official Accounts that WeChat does not
// let make parametric QR codes (errcode 48001: subscription accounts and
// unverified service accounts, most small sites' accounts).
//
// The site shows a login code; the user sends it to the account as a chat
// message, and that message, pushed to us signed by WeChat with the
// sender's openid, logs the browser that showed the code in. The direction
// matters: a code that the user typed into the site would let whoever
// guesses a code take over the account it was sent to, while a code sent
// in chat can at worst log the guesser into somebody else's browser under
// the guesser's own account.
//
// Guessing. A guess hits one of the codes live at that moment. There are
// 10^loginCodeLen codes, and at most maxLiveCodes live at once, so one guess
// hits a live code with probability at most
//
//	maxLiveCodes / 10^loginCodeLen = 10^6 / 10^10 = 10^-4.
//
// maxLiveCodes holds whatever the store: it is the embedded store's
// capacity, and the creation ceiling (codeCeilingPerMinute) keeps the codes created
// in any SceneTTL below it with a shared store too. Codes that an attacker
// creates do not help them: logging their own browser in under their own
// account gains nothing. Each WeChat account (openid) may send 5 wrong
// codes within 10 minutes, after which its codes are refused for 10 minutes,
// the right one included; WeChat accounts are costly to make in bulk.

const (
	// loginCodeLen is the number of digits of a login code.
	loginCodeLen = 10
	// maxLiveCodes bounds the login codes live at once (see above).
	maxLiveCodes = 1_000_000
	// maxWrongCodes wrong codes from one sender within wrongCodeWindow
	// refuse that sender's codes for codeLockout.
	maxWrongCodes   = 5
	wrongCodeWindow = 10 * time.Minute
	codeLockout     = 10 * time.Minute
	// Messages of this many digits (spaces and dashes aside) are taken for
	// tries at a login code, and a wrong one counts; shorter ones are the
	// six-digit chat codes or ordinary messages.
	minCodeAttempt = 7
	maxCodeAttempt = 16
	// qrRefusalMemory is how long a 48001 for QR creation is remembered:
	// meanwhile the page offers the code at once and asks WeChat nothing.
	qrRefusalMemory = 10 * time.Minute
)

// Chat texts of code login. They are not configurable: they say what
// happened to a code.
const (
	wrongLoginCode   = "这不是有效的登录码，或者它已过期。请核对网页上显示的登录码（还可以再试 %[1]d 次）。\nThat is not a valid login code, or it has expired: check the code shown on the site (%[1]d tries left)."
	loginCodesLocked = "登录码错误次数过多，请 %[1]d 分钟后再试。\nToo many wrong login codes: try again in %[1]d minutes."
	codeExpiredReply = "这个登录码已失效，请刷新网页，发送新的登录码。\nThis login code has expired: refresh the page and send the new code."
)

// randomLoginCode returns loginCodeLen random decimal digits.
func randomLoginCode() string {
	n, err := rand.Int(rand.Reader, big.NewInt(10_000_000_000))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported systems
	}
	return fmt.Sprintf("%010d", n.Int64())
}

// loginCodeKey names the record that leads from a login code to its scene.
func loginCodeKey(code string) string { return digestKey("lcode:", "login-code|"+code) }

// drawLoginCode draws a code that no live login holds and records it for
// scene. Two live logins never share a code.
func (m *Middleware) drawLoginCode(ctx context.Context, scene string, ttl time.Duration) (string, error) {
	for range 5 {
		code := randomLoginCode()
		err := m.store.Create(ctx, loginCodeKey(code), []byte(scene), ttl)
		if err == nil {
			return code, nil
		}
		if !errors.Is(err, store.ErrExists) {
			return "", err
		}
	}
	return "", errors.New("no free login code after 5 draws")
}

// codeCeilingPerMinute bounds code creation so that the codes made within
// SceneTTL, counted by the minute, stay under maxLiveCodes.
func codeCeilingPerMinute(sceneTTL time.Duration) int {
	minutes := int((sceneTTL+time.Minute-1)/time.Minute) + 1
	return maxLiveCodes / minutes
}

// qrFailure answers a failed QR creation. WeChat's refusal to make
// parametric QR codes for this account (48001) is remembered, so that the
// page offers code login at once instead of asking WeChat again and again.
func (m *Middleware) qrFailure(w http.ResponseWriter, err error) {
	if mc, ok := diagnose(err); ok && mc.reason == "qr_not_allowed" {
		m.qrRefusedUntil.Store(m.cfg.Now().Add(qrRefusalMemory).UnixNano())
	}
	m.wechatFailure(w, "create QR ticket", err)
}

// qrRefusedNow reports whether WeChat refused this account QR codes in the
// last qrRefusalMemory.
func (m *Middleware) qrRefusedNow() bool {
	return m.cfg.Now().UnixNano() < m.qrRefusedUntil.Load()
}

// qrRefused answers a QR creation while a 48001 is remembered, with the
// answer WeChat's refusal got, and reports whether it did.
func (m *Middleware) qrRefused(w http.ResponseWriter) bool {
	if !m.qrRefusedNow() {
		return false
	}
	mc, _ := diagnose(&wechat.Error{Code: wechat.CodeAPIUnauthorized, Path: "cgi-bin/qrcode/create"})
	m.writeMisconfigured(w, mc)
	return true
}

// loginCodeAttempt returns the digits of a message that is a try at a login
// code: minCodeAttempt to maxCodeAttempt digits, ASCII or full-width, with
// surrounding spaces ignored and spaces or dashes between digits (as codes
// are read out in groups) dropped.
func loginCodeAttempt(content string) (string, bool) {
	s := strings.TrimSpace(content)
	if len(s) > 4*maxCodeAttempt*2 {
		return "", false
	}
	var b [maxCodeAttempt]byte
	n := 0
	for _, r := range s {
		if r == ' ' || r == '\u3000' || r == '-' || r == '－' {
			continue
		}
		d, ok := asciiDigit(r)
		if !ok || n == len(b) {
			return "", false
		}
		b[n] = d
		n++
	}
	if n < minCodeAttempt {
		return "", false
	}
	return string(b[:n]), true
}

// loginByCode handles a chat message that tries a login code: the right
// code moves its scene as a scan of a QR code would (confirmed, or scanned
// under ConfirmInChat) for the sender, once; a wrong or expired one counts
// against the sender. marker identifies the message, for WeChat's retries.
func (m *Middleware) loginByCode(ctx context.Context, ev *wechat.Event, attempt, marker string) pushResult {
	openID := ev.FromUserName
	guesses, _, err := m.loadGuesses(ctx, openID)
	if err != nil {
		return pushResult{failure: err}
	}
	now := m.cfg.Now()
	if left := guesses.lockedFor(now); left > 0 {
		m.metrics.Limited("code_guess")
		return pushResult{reply: fmt.Sprintf(loginCodesLocked, minutesUp(left))}
	}
	if len(attempt) == loginCodeLen {
		key := loginCodeKey(attempt)
		raw, err := m.pushStore().Get(ctx, key)
		switch {
		case err == nil && validSceneID(string(raw)):
			res := m.confirmScene(ctx, string(raw), ev, marker)
			if res.failure != nil {
				return res
			}
			// A code serves one login: from now on it is a wrong code,
			// for its sender as for anybody else.
			if err := m.pushStore().Delete(ctx, key); err != nil {
				m.log.Warn("cannot remove a used login code", zap.Error(err))
			}
			if res.reply == m.cfg.ExpiredReply {
				res.reply = codeExpiredReply
			}
			return res
		case err != nil && !errors.Is(err, store.ErrNotFound):
			return pushResult{failure: fmt.Errorf("look up login code: %w", err)}
		}
	}
	left, err := m.countWrongCode(ctx, openID)
	if err != nil {
		return pushResult{failure: err}
	}
	m.metrics.Scan("wrong_code")
	if left == 0 {
		m.log.Warn("login codes refused after too many wrong ones", zap.String("openid", logID(openID)))
		return pushResult{reply: fmt.Sprintf(loginCodesLocked, minutesUp(codeLockout))}
	}
	return pushResult{reply: fmt.Sprintf(wrongLoginCode, left)}
}

func minutesUp(d time.Duration) int {
	return max(int((d+time.Minute-1)/time.Minute), 1)
}

// codeGuesses is a sender's recent wrong login codes, under guessKey.
type codeGuesses struct {
	// Wrong holds the times (unix seconds) of the wrong codes within the
	// last wrongCodeWindow, oldest first.
	Wrong []int64 `json:"w,omitempty"`
	// Until is when a lockout ends (unix seconds), or 0.
	Until int64 `json:"u,omitempty"`
	// Made is when the record was written under its current time to live
	// (unix seconds).
	Made int64 `json:"c"`
}

func (g codeGuesses) lockedFor(now time.Time) time.Duration {
	if g.Until == 0 {
		return 0
	}
	return max(time.Unix(g.Until, 0).Sub(now), 0)
}

// guessKey names a sender's wrong-code record.
func guessKey(openID string) string { return digestKey("lguess:", "code-guesses|"+openID) }

func (m *Middleware) loadGuesses(ctx context.Context, openID string) (codeGuesses, []byte, error) {
	raw, err := m.pushStore().Get(ctx, guessKey(openID))
	if errors.Is(err, store.ErrNotFound) {
		return codeGuesses{}, nil, nil
	}
	if err != nil {
		return codeGuesses{}, nil, fmt.Errorf("look up wrong login codes: %w", err)
	}
	var g codeGuesses
	if err := json.Unmarshal(raw, &g); err != nil {
		// A record this version cannot read counts as none rather than
		// locking its sender out for good.
		return codeGuesses{}, raw, nil
	}
	return g, raw, nil
}

// countWrongCode records a wrong code from openID and returns how many more
// it may send before its codes are refused (0: they are, from now on).
//
// An update keeps a record's time to live, which is guessTTL from when it
// was written. A record older than wrongCodeWindow is written anew instead,
// so that after every update it lives longer than both the window of the
// code just counted and a lockout that code starts.
func (m *Middleware) countWrongCode(ctx context.Context, openID string) (int, error) {
	key := guessKey(openID)
	const guessTTL = wrongCodeWindow + codeLockout + time.Minute
	for range 5 {
		g, raw, err := m.loadGuesses(ctx, openID)
		if err != nil {
			return 0, err
		}
		now := m.cfg.Now()
		from := now.Add(-wrongCodeWindow).Unix()
		kept := g.Wrong[:0]
		for _, t := range g.Wrong {
			if t > from {
				kept = append(kept, t)
			}
		}
		g.Wrong = append(kept, now.Unix())
		if len(g.Wrong) > maxWrongCodes {
			g.Wrong = g.Wrong[len(g.Wrong)-maxWrongCodes:]
		}
		left := maxWrongCodes - len(g.Wrong)
		if left == 0 {
			g.Wrong, g.Until = nil, now.Add(codeLockout).Unix()
		}
		renew := raw == nil || now.Unix()-g.Made > int64(wrongCodeWindow/time.Second)
		if renew {
			g.Made = now.Unix()
		}
		updated, err := json.Marshal(g)
		if err != nil {
			return 0, err
		}
		switch {
		case raw == nil:
			err = m.pushStore().Create(ctx, key, updated, guessTTL)
		case renew:
			// Not atomic: a wrong code sent at this very moment by the
			// same account may go uncounted.
			if err = m.pushStore().Delete(ctx, key); err == nil {
				err = m.pushStore().Create(ctx, key, updated, guessTTL)
			}
		default:
			err = m.pushStore().Update(ctx, key, raw, updated)
		}
		switch {
		case err == nil:
			return left, nil
		case errors.Is(err, store.ErrExists), errors.Is(err, store.ErrChanged), errors.Is(err, store.ErrNotFound):
			continue // another message of the sender's came first
		default:
			return 0, fmt.Errorf("count wrong login code: %w", err)
		}
	}
	return 0, errors.New("count wrong login code: too much contention")
}
