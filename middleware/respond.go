package middleware

import (
	"encoding/json"
	"errors"
	"net/http"

	"go.uber.org/zap"

	"github.com/wechat-login/caddy-wechat-login/wechat"
)

// ReasonMisconfigured is the "reason" of a JSON error answer when WeChat
// refuses this site because of how it is set up (see wechat.IsConfigError):
// the login page then tells the user to contact the site's owner instead of
// offering a retry that cannot succeed.
const ReasonMisconfigured = "misconfigured"

// MisconfigurationMetrics is implemented by a Metrics that also counts
// WeChat refusals only a change of setup cures, by reason: qr_not_allowed,
// api_unauthorized, ip_not_whitelisted, ip_needs_confirmation, ip_rejected,
// bad_app_secret, app_secret_frozen, bad_app_id, missing_credentials, and
// for pushes push_key_mismatch, push_app_id_mismatch, push_plaintext and
// push_encrypted_no_key. One alert on any of them catches a site that no
// one can log in to.
type MisconfigurationMetrics interface {
	Misconfigured(reason string)
}

// misconfiguration is a WeChat refusal that only a change of setup cures.
type misconfiguration struct {
	reason  string // the metric label
	problem string // what is wrong, for the operator
	fix     string // what to change, for the operator
	user    string // what the user may be told: nothing about the server
}

// The console's page where the account's credentials, IP whitelist and
// server settings live.
const basicConfig = "mp.weixin.qq.com → 基本配置 (Basic Configuration, under 设置与开发)"

// diagnose says what is wrong and what to change when err is a WeChat
// refusal that retrying cannot cure (wechat.IsConfigError).
func diagnose(err error) (misconfiguration, bool) {
	if !wechat.IsConfigError(err) {
		return misconfiguration{}, false
	}
	code, _ := wechat.ErrorCode(err)
	var werr *wechat.Error
	errors.As(err, &werr)
	const (
		userAccount = "this WeChat account cannot be used for this kind of login"
		userAddress = "WeChat does not accept this server's address yet"
		userApp     = "WeChat does not accept this site's app credentials"
	)
	whitelist := "add this server's outbound IP address"
	if ip := wechat.ReportedIP(err); ip != "" {
		whitelist += " (" + ip + ", as WeChat sees it)"
	}
	whitelist += " to the account's IP whitelist: " + basicConfig + " → IP白名单 (IP whitelist). Every server that calls WeChat for this account needs its address there"
	switch code {
	case wechat.CodeAPIUnauthorized:
		if werr.Path == "cgi-bin/qrcode/create" {
			return misconfiguration{
				reason:  "qr_not_allowed",
				problem: "this Official Account may not create parametric QR codes: WeChat grants them only to verified service accounts (已认证服务号) and test accounts, not to subscription accounts (订阅号) or unverified service accounts",
				fix:     "offer code login instead of QR login (methods code: the user sends a short code to the account in chat), or use a verified service account",
				user:    userAccount,
			}, true
		}
		return misconfiguration{
			reason:  "api_unauthorized",
			problem: "this account may not call " + werr.Path + ": WeChat grants it to verified accounts only",
			fix:     "verify the account (微信认证), or turn off the login method or option that needs this call",
			user:    userAccount,
		}, true
	case wechat.CodeIPNotWhitelisted, wechat.CodeIPNotRegistered:
		return misconfiguration{
			reason:  "ip_not_whitelisted",
			problem: "WeChat refuses calls from this server's IP address: it is not on the account's IP whitelist",
			fix:     whitelist,
			user:    userAddress,
		}, true
	case wechat.CodeIPNeedsConfirmation, wechat.CodeIPAwaitingAdmin:
		return misconfiguration{
			reason:  "ip_needs_confirmation",
			problem: "WeChat asked the account's admin to confirm calls from this server's IP address, and refuses them until the admin does",
			fix:     "the account's admin must approve WeChat's confirmation message (in WeChat on their phone), or " + whitelist,
			user:    userAddress,
		}, true
	case wechat.CodeIPRejectedBanned, wechat.CodeIPRejectedTwiceBanned:
		return misconfiguration{
			reason:  "ip_rejected",
			problem: "the account's admin refused calls from this server's IP address: WeChat blocks it for an hour (89507), or for a day after a second refusal (89506)",
			fix:     whitelist + "; or have the admin approve WeChat's next confirmation message",
			user:    userAddress,
		}, true
	case wechat.CodeAppSecretFrozen:
		return misconfiguration{
			reason:  "app_secret_frozen",
			problem: "the account's AppSecret is frozen",
			fix:     "unfreeze or reset the AppSecret (开发者密码) at " + basicConfig + ", and configure it as the app secret (app_secret)",
			user:    userApp,
		}, true
	case wechat.CodeInvalidAppSecret, wechat.CodeInvalidCredential:
		return misconfiguration{
			reason:  "bad_app_secret",
			problem: "WeChat rejected the AppSecret for this AppID",
			fix:     "copy the current AppSecret (开发者密码) of this AppID from " + basicConfig + " into the app secret (app_secret); after a reset there, every server needs the new one",
			user:    userApp,
		}, true
	case wechat.CodeInvalidAppID:
		return misconfiguration{
			reason:  "bad_app_id",
			problem: "WeChat does not know this AppID as an Official Account",
			fix:     "copy the AppID (开发者ID, it starts with wx) from " + basicConfig + " into the app ID (app_id); a website app's ID belongs in open_app_id",
			user:    userApp,
		}, true
	}
	return misconfiguration{
		reason:  "missing_credentials",
		problem: "WeChat says the AppID or AppSecret is missing",
		fix:     "set the app ID and app secret (app_id, app_secret) of the Official Account",
		user:    userApp,
	}, true
}

// misconfigured tells the operator, once per occurrence, what to change.
// The fields never hold secrets: error texts from package wechat hold none.
func (m *Middleware) misconfigured(mc misconfiguration, fields ...zap.Field) {
	fields = append(fields, zap.String("reason", mc.reason), zap.String("fix", mc.fix))
	m.log.Error("WeChat login is misconfigured: "+mc.problem, fields...)
	if mm, ok := m.metrics.(MisconfigurationMetrics); ok {
		mm.Misconfigured(mc.reason)
	}
}

// wechatFailure answers a request whose WeChat call failed, with a precise
// line for the operator (the error text never holds secrets). A refusal
// only a change of setup cures is a 502, as in the OAuth flows, with
// reason "misconfigured" and no Retry-After: a retry cannot succeed, so
// none is suggested. Anything else (WeChat busy or unreachable, a quota
// used up) is a 503 with the Retry-After that fits.
func (m *Middleware) wechatFailure(w http.ResponseWriter, what string, err error) {
	fields := []zap.Field{zap.String("call", what), zap.Error(err)}
	if code, ok := wechat.ErrorCode(err); ok {
		fields = append(fields, zap.Int("errcode", code))
	}
	m.metrics.WeChatFailure(what)
	if mc, ok := diagnose(err); ok {
		m.misconfigured(mc, fields...)
		m.writeMisconfigured(w, mc)
		return
	}
	m.log.Error("WeChat call failed", fields...)
	if wechat.IsRateLimited(err) {
		w.Header().Set("Retry-After", "60")
		writeError(w, http.StatusServiceUnavailable, "WeChat is refusing more login codes right now; try again later")
		return
	}
	w.Header().Set("Retry-After", "5")
	writeError(w, http.StatusServiceUnavailable, "WeChat is unavailable; try again in a moment")
}

// writeMisconfigured answers a request that a misconfiguration makes fail.
// When WeChat refuses the account QR codes and the site also offers code
// login, "fallback": "code" tells the page to switch to it.
func (m *Middleware) writeMisconfigured(w http.ResponseWriter, mc misconfiguration) {
	body := map[string]string{
		"error":  "WeChat login is misconfigured on this site (" + mc.user + "). Please tell the site's owner.",
		"reason": ReasonMisconfigured,
	}
	if mc.reason == "qr_not_allowed" && m.cfg.enabled(MethodCode) {
		body["error"] = "this WeChat account cannot make login QR codes; log in with a code instead"
		body["fallback"] = MethodCode
	}
	writeJSON(w, http.StatusBadGateway, body)
}

// pushMisconfigured tells the operator when a push carrying a valid URL
// signature (so sent by WeChat, which knows the token) is refused for its
// encryption: the account's message settings and this site's disagree, and
// no scan can log anyone in until they match. Refusals that anyone can
// cause (bad signatures, stale or malformed requests) are only counted.
func (m *Middleware) pushMisconfigured(pe *wechat.PushError) {
	var mc misconfiguration
	switch {
	case pe.Kind == "decrypt":
		mc = misconfiguration{
			reason:  "push_key_mismatch",
			problem: "a push from WeChat cannot be decrypted: the EncodingAESKey configured here differs from the account's",
			fix:     "copy the EncodingAESKey (消息加解密密钥) from " + basicConfig + " → 服务器配置 (server configuration) into encoding_aes_key; after changing it there, keep the old key among the previous keys until WeChat uses the new one",
		}
	case pe.Kind == "appid":
		mc = misconfiguration{
			reason:  "push_app_id_mismatch",
			problem: "a push from WeChat is encrypted for another AppID than the one configured here",
			fix:     "set the app ID (app_id) to the AppID of the account whose server URL points at this site, with that account's EncodingAESKey",
		}
	case pe.Kind == "mode" && m.crypter == nil:
		mc = misconfiguration{
			reason:  "push_encrypted_no_key",
			problem: "WeChat sends encrypted pushes, but no EncodingAESKey is configured here",
			fix:     "copy the EncodingAESKey (消息加解密密钥) from " + basicConfig + " → 服务器配置 into encoding_aes_key",
		}
	case pe.Kind == "mode":
		mc = misconfiguration{
			reason:  "push_plaintext",
			problem: "WeChat sends plaintext pushes, but this site requires encrypted ones (an EncodingAESKey is configured)",
			fix:     "set 消息加解密方式 (message encryption) to 安全模式 (safe mode) at " + basicConfig + " → 服务器配置; while switching, allow_plaintext_pushes accepts both. A test account (接口测试号) has no encryption: configure no EncodingAESKey for it",
		}
	default:
		return
	}
	m.misconfigured(mc, zap.String("push", pe.Reason))
}

func (m *Middleware) storeFailure(w http.ResponseWriter, what string, err error) {
	m.log.Error("store failure", zap.String("op", what), zap.Error(err))
	w.Header().Set("Retry-After", "5")
	writeError(w, http.StatusServiceUnavailable, "login is temporarily unavailable; try again in a moment")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, reason string) {
	writeJSON(w, status, map[string]string{"error": reason})
}

func writeText(w http.ResponseWriter, status int, body string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeError(w, http.StatusMethodNotAllowed, "method not allowed")
}
