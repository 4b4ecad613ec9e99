// Package wechattest is a fake WeChat platform for tests and for an
// interactive sandbox, in the spirit of net/http/httptest.
//
// A [Platform] is an [http.Handler] that serves the paths of all three WeChat
// hosts (api.weixin.qq.com, open.weixin.qq.com and mp.weixin.qq.com) from one
// root, so a client whose three base URLs all point at it behaves as it would
// against WeChat. It can be mounted under a prefix with [http.StripPrefix];
// every URL it generates (QR code content, showqrcode links, page links) is
// built from [Config.BaseURL], which must then include the prefix.
// [NewServer] runs a Platform on a local [httptest.Server].
//
// The platform also plays the user's phone: [Platform.Scan] scans a
// parametric QR code as a test user and pushes the resulting subscribe or
// SCAN event to the Official Account's callback URL, signed and (in
// compatible and safe mode) encrypted exactly as WeChat does, with WeChat's
// timeout and retries. Every push is recorded as a [Delivery].
//
// # WeChat paths
//
//	GET  /cgi-bin/token              classic access_token (client_credential)
//	POST /cgi-bin/stable_token       stable access_token (JSON body only)
//	POST /cgi-bin/qrcode/create      parametric QR ticket
//	GET  /cgi-bin/showqrcode         QR image (PNG) for a ticket, 404 when unknown or expired
//	GET  /cgi-bin/user/info          follower information
//	GET  /connect/oauth2/authorize   OA web authorization page
//	GET  /connect/qrconnect          website login page (Open Platform)
//	GET  /sns/oauth2/access_token    OAuth code exchange
//	GET  /sns/oauth2/refresh_token   OAuth token refresh
//	GET  /sns/userinfo               OAuth user information
//	GET  /sns/auth                   OAuth token check
//
// JSON answers are HTTP 200 with an errcode body on failure, errmsg carries a
// ", rid: xxxxxxxx-xxxxxxxx-xxxxxxxx" suffix, and "/" is escaped as "\/" as
// WeChat does. The authorization pages answer errors with an HTML page, as
// WeChat does; the page carries the error code (for example 10003) and a
// reason in a data-errcode attribute so tests can assert on it.
//
// # Sandbox paths (not part of WeChat)
//
//	GET  /q/{id}               the page a QR code's url opens: the QR and one "scan as" button per test user
//	GET  /sandbox/users        JSON: test users and apps (never secrets)
//	POST /sandbox/scan         the phone scans: form or JSON fields ticket (a ticket, QR url or scene),
//	                           user, and optionally appid; answers JSON describing the delivery
//	                           (an HTML page when the client prefers text/html)
//	GET  /sandbox/deliveries   JSON: the push log, newest last
//
// # Choices where WeChat's behaviour is undocumented
//
//   - qrcode/create without the "scene" level succeeds with scene "0", as
//     observed on WeChat; a present but invalid scene gives 40053; an
//     unparseable body gives 40052. scene_str is limited to 64 bytes.
//     expire_seconds defaults to 60, is capped at 2592000, and a value of 0 or
//     less is treated as absent.
//   - The url of a QR code is <BaseURL>/q/<id> instead of
//     http://weixin.qq.com/q/<id>, so that a sandbox can resolve it.
//     Tickets are standard base64 of a WeChat-like binary record and always
//     end in "=="; most contain "+" or "/".
//   - stable_token force_refresh within 30 s of the previous one returns the
//     current token without refreshing; past 20 force refreshes a day it
//     gives 45009. Normal stable_token calls have no quota here.
//   - cgi-bin/token and stable_token accept only Official Account appids
//     (40013 otherwise). The IP allow-list knob affects only these two.
//   - An expired OAuth code gives 40029; a spent code gives 40163 even after
//     it would have expired. unionid is returned for snsapi_userinfo and
//     snsapi_login tokens of bound apps, not for snsapi_base ones.
//   - Snapshot users (and authorizations with forceSnapShot=true) get
//     virtual openid and unionid values and is_snapshotuser 1 for
//     snsapi_userinfo; snsapi_base and website logins are unaffected.
//   - Pushes are attempted up to three times in total with the same URL and
//     body. A reply counts as acknowledged when it is "success" or empty
//     (surrounding white space ignored).
//   - Without an OAuth user (Config.OAuthUser), the authorization pages ask
//     which test user holds the phone, even for the otherwise silent
//     snsapi_base; only consent scopes offer a deny button, which redirects
//     with state alone. qrconnect does not restrict state.
//   - The "#wechat_redirect" fragment of an authorize URL never reaches a
//     server, so it cannot be checked.
package wechattest
