package middleware

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/wechat-login/caddy-wechat-login/wechat"
)

// Severity grades a Finding of Check.
type Severity int

// The severities, from harmless to fatal.
const (
	// SeverityOK: checked with WeChat, and it works.
	SeverityOK Severity = iota
	// SeverityNote: nothing wrong found, but something that cannot be
	// checked from here, and what to look at instead.
	SeverityNote
	// SeverityWarning: works, but not how a production site should run.
	SeverityWarning
	// SeverityProblem: logins fail until this is fixed.
	SeverityProblem
)

// String returns "ok", "note", "warning" or "PROBLEM", as the report shows
// them.
func (s Severity) String() string {
	switch s {
	case SeverityOK:
		return "ok"
	case SeverityNote:
		return "note"
	case SeverityWarning:
		return "warning"
	case SeverityProblem:
		return "PROBLEM"
	}
	return fmt.Sprintf("Severity(%d)", int(s))
}

// Finding is one thing Check looked at.
type Finding struct {
	Severity Severity
	// Topic names what was looked at: "configuration", "access token",
	// "QR login", "in-WeChat login", "website login", "pushes" or
	// "login host".
	Topic string
	// Message says what was found, in plain words.
	Message string
	// Fix says what to change; empty when there is nothing to change.
	Fix string
	// Errcode is WeChat's answer behind the finding, 0 for none.
	Errcode int
}

// CheckReport is what Check found. It never holds a secret, a token or a
// QR ticket.
type CheckReport struct {
	// AppID is the Official Account checked, empty when the site has none.
	AppID string
	// OpenAppID is the website app, empty when the site has none.
	OpenAppID string
	// Findings are in the order they were checked.
	Findings []Finding
}

// OK reports whether nothing stops logins: no finding is a problem.
func (r CheckReport) OK() bool { return r.Problems() == 0 }

// Problems counts the findings that stop logins.
func (r CheckReport) Problems() int {
	n := 0
	for _, f := range r.Findings {
		if f.Severity == SeverityProblem {
			n++
		}
	}
	return n
}

// String renders the report for a terminal, one finding a line, and on
// the line below it what to change ("fix:") or, for a note, what to look
// at ("check:"):
//
//	ok       access token: WeChat issued an access token …
//	PROBLEM  QR login: WeChat did not create a login QR code: …
//	         fix: offer code login instead of QR login (methods code …)
func (r CheckReport) String() string {
	var b strings.Builder
	for _, f := range r.Findings {
		fmt.Fprintf(&b, "%-8s %s: %s\n", f.Severity, f.Topic, f.Message)
		if f.Fix != "" {
			label := "fix"
			if f.Severity <= SeverityNote {
				label = "check"
			}
			fmt.Fprintf(&b, "%-8s %s: %s\n", "", label, f.Fix)
		}
	}
	return b.String()
}

func (r *CheckReport) add(s Severity, topic, msg, fix string, errcode int) {
	r.Findings = append(r.Findings, Finding{Severity: s, Topic: topic, Message: msg, Fix: fix, Errcode: errcode})
}

// checkQRTTL is the lifetime of the QR code Check creates: WeChat's
// default, and nobody is ever shown it.
const checkQRTTL = time.Minute

// Check asks WeChat whether logins can work with cfg, and says in plain
// words what to change when they cannot: a wrong AppSecret, a server
// address missing from the account's IP whitelist or awaiting the admin's
// confirmation, an account that may not create login QR codes. It is for
// a deployment step or an operator's terminal (the Caddy module runs it as
// `caddy wechat-login check`); ctx bounds it.
//
// It calls WeChat at most twice and changes nothing a running site depends
// on: it fetches an access token from cgi-bin/stable_token in normal mode
// (the same token every server gets, none retired; with cfg.TokenSource,
// from that source), and when the qr method is on creates one QR code that
// expires in a minute, which spends one of the account's 100,000 daily
// qrcode/create calls. Calling WeChat from an address it has not seen
// before may make it ask the account's admin to confirm that address
// (89503): that is WeChat's doing, and the report says what to do about it.
// It opens no store and no file.
//
// What no harmless call can show is reported as a note with what to look
// at instead: whether the console's push settings match (WeChat pushes only
// when someone scans), web authorization (it needs a user in WeChat), and
// a website app's credentials (WeChat checks them only with a user's code).
func Check(ctx context.Context, cfg Config) CheckReport {
	prepared, p, err := cfg.prepare()
	if err != nil {
		var r CheckReport
		r.AppID, r.OpenAppID = cfg.AppID, cfg.OpenAppID
		r.add(SeverityProblem, "configuration", strings.TrimPrefix(err.Error(), "middleware: "), "correct the setting named; nothing was asked of WeChat", 0)
		return r
	}
	wc := &wechat.Client{
		AppID:      prepared.AppID,
		AppSecret:  prepared.AppSecret,
		Endpoint:   prepared.Endpoint,
		HTTPClient: prepared.HTTPClient,
		Tokens:     prepared.TokenSource,
	}
	return runCheck(ctx, prepared, p.crypter, wc)
}

// Check is the package-level Check for m's configuration, through m's own
// WeChat client: a token m already holds is used as it is, so the access
// token finding then says that WeChat issued one before.
func (m *Middleware) Check(ctx context.Context) CheckReport {
	return runCheck(ctx, m.cfg, m.crypter, m.wc)
}

// runCheck checks a prepared configuration.
func runCheck(ctx context.Context, cfg Config, crypter *wechat.Crypter, wc *wechat.Client) CheckReport {
	r := CheckReport{AppID: cfg.AppID, OpenAppID: cfg.OpenAppID}
	if cfg.LoginHost != "" {
		r.add(SeverityNote, "login host", "this site has no WeChat app of its own: users log in at "+cfg.LoginHost+", which hands the login over",
			"check the login host's configuration; its handoff_to must list this site's origin", 0)
		return r
	}
	qr, code, inWeChat := cfg.enabled(MethodQR), cfg.enabled(MethodCode), cfg.enabled(MethodOAuth)
	if qr || code || inWeChat {
		qrRefused := checkAccount(ctx, &r, cfg, wc, qr)
		if code {
			r.add(SeverityOK, "code login",
				"code login needs no permission beyond the access token: every kind of Official Account may receive messages. Users must follow the account, then send the code the page shows",
				"", 0)
		}
		if inWeChat {
			checkInWeChat(&r, cfg, qrRefused)
		}
	}
	if cfg.PushToken != "" {
		checkPushes(&r, cfg, crypter)
	}
	if cfg.enabled(MethodOpen) {
		r.add(SeverityNote, "website login",
			"the website app "+cfg.OpenAppID+" cannot be checked without a user: WeChat has no call that tests a website app's ID and secret without the code of a real login",
			"log in once with the website login button; if it fails, the log names the cause (\"OAuth code exchange failed\", with WeChat's errcode). The app's authorization callback domain (授权回调域) at open.weixin.qq.com must be this site's host", 0)
	}
	return r
}

// checkAccount gets an access token and, when QR login is on, creates a QR
// code. It reports whether WeChat refused QR codes to this account (48001).
func checkAccount(ctx context.Context, r *CheckReport, cfg Config, wc *wechat.Client, qr bool) (qrRefused bool) {
	source := "WeChat issued an access token for " + cfg.AppID + " (cgi-bin/stable_token, which retires no token other servers hold)"
	if cfg.TokenSource != nil {
		source = "the configured token source supplied an access token for " + cfg.AppID
	}
	if _, err := wc.AccessToken(ctx); err != nil {
		r.add(SeverityProblem, "access token", "no access token: "+failureText(err), failureFix(err, cfg.Endpoint), errcode(err))
		if qr {
			r.add(SeverityNote, "QR login", "not checked: it needs an access token", "", 0)
		}
		return false
	}
	r.add(SeverityOK, "access token", source, "", 0)
	if !qr {
		return false
	}
	_, err := wc.CreateTempQR(ctx, randomHex(sceneIDLen/2), checkQRTTL)
	if err != nil {
		code, _ := wechat.ErrorCode(err)
		refused := code == wechat.CodeAPIUnauthorized
		if refused && cfg.enabled(MethodCode) {
			r.add(SeverityWarning, "QR login", "WeChat did not create a login QR code: "+failureText(err)+"; the login page falls back to code login by itself",
				"take qr out of the methods, so that the page starts with the code", code)
			return true
		}
		r.add(SeverityProblem, "QR login", "WeChat did not create a login QR code: "+failureText(err), failureFix(err, cfg.Endpoint), code)
		return refused
	}
	r.add(SeverityOK, "QR login", "WeChat created a login QR code (cgi-bin/qrcode/create; it expires in a minute and nobody is shown it)", "", 0)
	return false
}

// checkInWeChat reports on web authorization, which only a user in WeChat
// can exercise. An account refused QR codes is refused web authorization
// too: WeChat grants both to the same accounts.
func checkInWeChat(r *CheckReport, cfg Config, qrRefused bool) {
	if qrRefused {
		r.add(SeverityProblem, "in-WeChat login",
			"an account that may not create QR codes has no web authorization either: WeChat grants both only to verified service accounts and test accounts, and shows everyone else its error page 10005",
			"take oauth out of the methods, or use a verified service account", wechat.CodeAPIUnauthorized)
		return
	}
	r.add(SeverityNote, "in-WeChat login",
		"web authorization ("+cfg.OAuthScope+") cannot be checked without a user in WeChat",
		"the account must be a verified service account (or a test account), and this site's domain must be its web authorization domain (网页授权域名, at 设置与开发 → 公众号设置 → 功能设置), which WeChat accepts once the MP_verify_….txt file it offers is served at the site's root; then open the site once in WeChat", 0)
}

// checkPushes reports on the push settings, which WeChat does not reveal:
// they show only when someone scans.
func checkPushes(r *CheckReport, cfg Config, crypter *wechat.Crypter) {
	url := cfg.PublicOrigin
	if url == "" {
		url = "https://<this site>"
	}
	url += cfg.Prefix + "/callback"
	settings := "the console's server configuration (" + basicConfig + " → 服务器配置) must say URL " + url + ", this Token"
	switch {
	case crypter == nil:
		r.add(SeverityWarning, "pushes",
			"pushes are taken in plaintext, whose signature does not cover the message: anyone who sees one push URL can forge logins with it for five minutes. That is only right for a test account (接口测试号), which has no encryption",
			"set 消息加解密方式 (message encryption) to 安全模式 (safe mode) in the console and configure its EncodingAESKey (encoding_aes_key)", 0)
	case cfg.AllowPlaintextPushes:
		r.add(SeverityWarning, "pushes",
			"pushes are taken encrypted and in plaintext (allow_plaintext_pushes), which leaves plaintext's forgeable pushes open",
			"once the console is in 安全模式 (safe mode), remove allow_plaintext_pushes", 0)
	default:
		r.add(SeverityNote, "pushes",
			"pushes must arrive encrypted; whether the console agrees cannot be checked until WeChat pushes a scan",
			settings+", this EncodingAESKey and 消息加解密方式 安全模式 (safe mode). A mismatch is logged at the first scan as \"WeChat login is misconfigured\", with the fix", 0)
		return
	}
	r.add(SeverityNote, "pushes", "the push settings cannot be checked until WeChat pushes a scan",
		settings+" and the message encryption chosen above. A mismatch is logged at the first scan as \"WeChat login is misconfigured\", with the fix", 0)
}

// failureText says what went wrong with a WeChat call, for a report.
func failureText(err error) string {
	if mc, ok := diagnose(err); ok {
		return mc.problem + errSuffix(err)
	}
	var werr *wechat.Error
	switch {
	case wechat.IsRateLimited(err):
		return "WeChat says a quota is used up" + errSuffix(err)
	case errors.As(err, &werr):
		return "WeChat refused the call" + errSuffix(err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "WeChat did not answer in time (" + err.Error() + ")"
	}
	return "WeChat could not be reached (" + err.Error() + ")"
}

// errSuffix quotes WeChat's errcode and errmsg, which hold no secret (a
// 40164's names the server's address, which the operator needs).
func errSuffix(err error) string {
	var werr *wechat.Error
	if !errors.As(err, &werr) {
		return ""
	}
	return fmt.Sprintf(" (errcode %d: %s)", werr.Code, werr.Msg)
}

// failureFix says what to change after a failed call to ep.
func failureFix(err error, ep wechat.Endpoint) string {
	if mc, ok := diagnose(err); ok {
		return mc.fix
	}
	var werr *wechat.Error
	switch {
	case wechat.IsRateLimited(err):
		return "wait for the quota to renew (daily quotas at midnight, Beijing time), or reset it with WeChat's cgi-bin/clear_quota (ten times a month)"
	case errors.As(err, &werr):
		return "run the check again in a minute; if WeChat keeps refusing, look the errcode up in docs/real-account.md"
	}
	api := ep.API
	if api == "" {
		api = wechat.DefaultEndpoint.API
	}
	return "make sure this server reaches " + api + " (through any proxy it must use), then run the check again"
}

func errcode(err error) int {
	code, _ := wechat.ErrorCode(err)
	return code
}
