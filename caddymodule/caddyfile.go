package caddymodule

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("wechat_login", parseCaddyfile)
	// An authentication-class position: after redirects and rewrites, before
	// anything that answers the request (respond, reverse_proxy,
	// file_server), so no `order` line is needed.
	httpcaddyfile.RegisterDirectiveOrder("wechat_login", httpcaddyfile.After, "basic_auth")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	wechat_login [<matcher>] {
//		app_id            <appid>
//		app_secret        <secret>
//		token             <push token>
//		encoding_aes_key  <43-character key>
//		allow_plaintext_pushes
//		methods           qr|oauth|open...  # default qr oauth (+ open with a website app)
//		scope             snsapi_base|snsapi_userinfo
//		open_app_id       <website app id>
//		open_app_secret   <website app secret>
//		open_display      embedded|popup|page  # website login: QR in the page (default), popup, or full page
//		open_frame_style  black|white       # embedded QR page's text colour
//		open_frame_css    <url>             # embedded QR page's CSS: https or data:text/css;base64
//		session_key       <key> [<older key>...]
//		prefix            <path>            # default /wechat
//		session_ttl       <duration>        # default 24h
//		session_refresh   <duration>        # re-issue a used session this long after its last issue
//		session_max_age   <duration>        # the longest a refreshed session lasts from its login
//		qr_ttl            <duration>        # default 5m
//		site_name         <name>
//		logo              <url>             # a path on this site or a data: URL
//		login_template    <file>            # html/template replacing the login page
//		login_reply       <text>
//		expired_reply     <text>
//		account_name      <name>            # the Official Account's name, for the code login steps
//		follow_qr         <url>             # the account's own QR code, shown with a login code
//		welcome_reply     <text>           # chat reply to ordinary follows
//		public_paths      <path prefix>...
//		allow_openids     <openid>...
//		allow_unionids    <unionid>...
//		redirect_hosts    <host>...
//		cookie_domain     <domain>          # share the login with every host under it
//		public_origin     <origin>          # this site as browsers see it, such as https://login.example.com
//		login_host        <origin>          # take logins from this login host (no WeChat app here)
//		handoff_to        <origin>...       # on a login host: the sites it may log users in to
//		fetch_unionid
//		confirm_in_chat
//		pass_through_pushes
//		use_handle_errors
//		user_id           openid|unionid
//		forward_user_headers                # X-Forwarded-User, X-Auth-Request-User, Remote-User
//		strip_session_cookie                # keep this module's cookies from the upstream
//		qr_rate_limit     <per minute> [<burst>]  # per client address (IPv6: per /64)
//		qr_ceiling        <per minute>      # whole site, whatever the addresses; default 60
//		max_waiting       <browsers>        # waiting on this instance at once; default 20000
//		api_base          <url>
//		oauth_base        <url>
//		mp_base           <url>
//		store             memory | redis <url> [<key prefix>]
//		revocation_file   <path>            # memory store; default under Caddy's data dir
//		sandbox           [subscription]    # subscription: an account without QR codes (code login)
//	}
//
// session_key, public_paths, allow_openids, allow_unionids,
// redirect_hosts and handoff_to may be repeated; their values add up. Secrets are best given
// as {env.NAME} or {file./path} placeholders.
//
// It only parses: the words, how many arguments each option takes, and that
// numbers and durations are positive numbers and durations (a zero could not
// be told from an option left out). Whether the values are acceptable is
// decided when the configuration is loaded, by Validate and Provision, with
// placeholders resolved; `caddy validate` and `caddy adapt --validate`
// report those mistakes.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		switch opt {
		case "session_key", "public_paths", "allow_openids", "allow_unionids", "redirect_hosts", "handoff_to":
		default:
			if seen[opt] {
				return d.Errf("%s given more than once", opt)
			}
		}
		seen[opt] = true

		switch opt {
		case "app_id":
			if err := oneArg(d, &h.AppID); err != nil {
				return err
			}
		case "app_secret":
			if err := oneArg(d, &h.AppSecret); err != nil {
				return err
			}
		case "token":
			if err := oneArg(d, &h.Token); err != nil {
				return err
			}
		case "encoding_aes_key":
			if err := oneArg(d, &h.EncodingAESKey); err != nil {
				return err
			}
		case "allow_plaintext_pushes":
			if err := noArgs(d); err != nil {
				return err
			}
			h.AllowPlaintextPushes = true
		case "methods":
			if err := someArgs(d, &h.Methods); err != nil {
				return err
			}
		case "scope":
			if err := oneArg(d, &h.Scope); err != nil {
				return err
			}
		case "open_app_id":
			if err := oneArg(d, &h.OpenAppID); err != nil {
				return err
			}
		case "open_display":
			if err := oneArg(d, &h.OpenDisplay); err != nil {
				return err
			}
		case "open_frame_style":
			if err := oneArg(d, &h.OpenFrameStyle); err != nil {
				return err
			}
		case "open_frame_css":
			if err := oneArg(d, &h.OpenFrameCSS); err != nil {
				return err
			}
		case "open_app_secret":
			if err := oneArg(d, &h.OpenAppSecret); err != nil {
				return err
			}
		case "session_key":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			h.SessionKeys = append(h.SessionKeys, args...)
		case "prefix":
			if err := oneArg(d, &h.Prefix); err != nil {
				return err
			}
		case "session_ttl", "qr_ttl", "session_refresh", "session_max_age":
			var s string
			if err := oneArg(d, &s); err != nil {
				return err
			}
			dur, err := caddy.ParseDuration(s)
			if err != nil || dur <= 0 {
				return d.Errf("%s: %q is not a positive duration", opt, s)
			}
			switch opt {
			case "session_ttl":
				h.SessionTTL = caddy.Duration(dur)
			case "qr_ttl":
				h.QRTTL = caddy.Duration(dur)
			case "session_refresh":
				h.SessionRefresh = caddy.Duration(dur)
			default:
				h.SessionMaxAge = caddy.Duration(dur)
			}
		case "site_name":
			if err := oneArg(d, &h.SiteName); err != nil {
				return err
			}
		case "logo":
			if err := oneArg(d, &h.Logo); err != nil {
				return err
			}
		case "login_template":
			if err := oneArg(d, &h.LoginTemplate); err != nil {
				return err
			}
		case "login_reply":
			if err := oneArg(d, &h.LoginReply); err != nil {
				return err
			}
		case "expired_reply":
			if err := oneArg(d, &h.ExpiredReply); err != nil {
				return err
			}
		case "account_name":
			if err := oneArg(d, &h.AccountName); err != nil {
				return err
			}
		case "follow_qr":
			if err := oneArg(d, &h.FollowQR); err != nil {
				return err
			}
		case "welcome_reply":
			if err := oneArg(d, &h.WelcomeReply); err != nil {
				return err
			}
		case "public_paths":
			if err := someArgs(d, &h.PublicPaths); err != nil {
				return err
			}
		case "allow_openids":
			if err := someArgs(d, &h.AllowOpenIDs); err != nil {
				return err
			}
		case "allow_unionids":
			if err := someArgs(d, &h.AllowUnionIDs); err != nil {
				return err
			}
		case "redirect_hosts":
			if err := someArgs(d, &h.RedirectHosts); err != nil {
				return err
			}
		case "handoff_to":
			if err := someArgs(d, &h.HandoffTo); err != nil {
				return err
			}
		case "cookie_domain":
			if err := oneArg(d, &h.CookieDomain); err != nil {
				return err
			}
		case "public_origin":
			if err := oneArg(d, &h.PublicOrigin); err != nil {
				return err
			}
		case "login_host":
			if err := oneArg(d, &h.LoginHost); err != nil {
				return err
			}
		case "fetch_unionid":
			if err := noArgs(d); err != nil {
				return err
			}
			h.FetchUnionID = true
		case "confirm_in_chat":
			if err := noArgs(d); err != nil {
				return err
			}
			h.ConfirmInChat = true
		case "pass_through_pushes":
			if err := noArgs(d); err != nil {
				return err
			}
			h.PassThroughPushes = true
		case "use_handle_errors":
			if err := noArgs(d); err != nil {
				return err
			}
			h.UseHandleErrors = true
		case "user_id":
			if err := oneArg(d, &h.UserID); err != nil {
				return err
			}
		case "forward_user_headers":
			if err := noArgs(d); err != nil {
				return err
			}
			h.ForwardUserHeaders = true
		case "strip_session_cookie":
			if err := noArgs(d); err != nil {
				return err
			}
			h.StripSessionCookie = true
		case "qr_ceiling", "max_waiting":
			var v string
			if err := oneArg(d, &v); err != nil {
				return err
			}
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return d.Errf("%s: %q is not a positive whole number", opt, v)
			}
			if opt == "qr_ceiling" {
				h.QRCeiling = n
			} else {
				h.MaxWaiting = n
			}
		case "qr_rate_limit":
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 {
				return d.ArgErr()
			}
			rate, err := strconv.ParseFloat(args[0], 64)
			if err != nil || rate <= 0 {
				return d.Errf("qr_rate_limit: %q is not a positive number per minute", args[0])
			}
			h.QRRateLimit = rate
			if len(args) == 2 {
				burst, err := strconv.Atoi(args[1])
				if err != nil || burst <= 0 {
					return d.Errf("qr_rate_limit: burst %q is not a positive whole number", args[1])
				}
				h.QRRateBurst = burst
			}
		case "api_base":
			if err := oneArg(d, &h.APIBase); err != nil {
				return err
			}
		case "oauth_base":
			if err := oneArg(d, &h.OAuthBase); err != nil {
				return err
			}
		case "mp_base":
			if err := oneArg(d, &h.MPBase); err != nil {
				return err
			}
		case "store":
			args := d.RemainingArgs()
			switch {
			case len(args) == 1 && args[0] == "memory":
				h.Store = "memory"
			case len(args) >= 2 && len(args) <= 3 && args[0] == "redis":
				h.Store, h.RedisURL = "redis", args[1]
				if len(args) == 3 {
					h.RedisPrefix = args[2]
				}
			default:
				return d.Errf("store: want `memory` or `redis <url> [<key prefix>]`")
			}
		case "revocation_file":
			if err := oneArg(d, &h.RevocationFile); err != nil {
				return err
			}
		case "sandbox":
			h.Sandbox = true
			if d.NextArg() {
				h.SandboxAccount = d.Val()
				if h.SandboxAccount != "subscription" {
					return d.Errf("sandbox: want no argument or `subscription`, not %q", h.SandboxAccount)
				}
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("unknown wechat_login option %q", opt)
		}
	}
	return nil
}

func oneArg(d *caddyfile.Dispenser, dst *string) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

func noArgs(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

func someArgs(d *caddyfile.Dispenser, dst *[]string) error {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.ArgErr()
	}
	*dst = append(*dst, args...)
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
