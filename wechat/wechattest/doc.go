// Package wechattest is a fake WeChat platform for tests and for an
// interactive sandbox, in the spirit of net/http/httptest.
//
// A [Platform] is an [http.Handler] that serves the paths of all three WeChat
// hosts (api.weixin.qq.com, open.weixin.qq.com and mp.weixin.qq.com) from one
// root, so a client whose three base URLs all point at it behaves as it would
// against WeChat. It can be mounted under a prefix with [http.StripPrefix];
// every URL it generates for itself (showqrcode links, page links) is built
// from [Config.BaseURL], which must then include the prefix. QR code urls
// point at weixin.qq.com, as WeChat's do.
// [NewServer] runs a Platform on a local [httptest.Server].
//
// The platform also plays the user's phone: [Platform.Scan] scans a
// parametric QR code as a test user and pushes the resulting subscribe or
// SCAN event to the Official Account's callback URL, signed and (in
// compatible and safe mode) encrypted exactly as WeChat does, with WeChat's
// timeout and retries. [Platform.ScanWithoutFollowing] stops on the
// account's page as WeChat does for a non-follower, pushing nothing until
// [Platform.Follow]; [Platform.Unfollow] and [Platform.SendText] (a chat
// message, answered by the account's passive reply) complete the phone.
// Every push is recorded as a [Delivery].
//
// # What each account may do
//
// [App.Account] is the sort of Official Account: a verified service
// account (the zero value, which may call everything), an unverified
// service account, a subscription account (verified or not), or a test
// account (接口测试号). Parametric QR codes answer 48001 except for verified
// service accounts and test accounts, and so does cgi-bin/user/info for
// unverified accounts; web authorization shows error page 10005 except for
// verified service accounts and test accounts, whose non-followers get
// 10006. A test account pushes in plaintext only and has smaller quotas.
// See [AccountType].
//
// [Platform.SetIPStatus] sets how WeChat sees the caller's IP: not on the
// API IP whitelist (40164), or needing the admin's confirmation (89503,
// then 89501; [Platform.ConfirmIP] answers, and refusals give 89507 and
// 89506).
//
// # WeChat paths
//
//	GET  /cgi-bin/token              classic access_token (client_credential)
//	POST /cgi-bin/stable_token       stable access_token (JSON body only)
//	POST /cgi-bin/qrcode/create      parametric QR ticket
//	GET  /cgi-bin/showqrcode         QR image (430×430 JPEG) for a ticket, 404 when unknown or expired
//	GET  /cgi-bin/user/info          follower information
//	GET  /connect/oauth2/authorize   OA web authorization page, in WeChat's browser only
//	GET  /connect/qrconnect          website login page (Open Platform), and with
//	                                 login_type=jssdk the page inside wxLogin.js's iframe
//	GET  /sns/oauth2/access_token    OAuth code exchange
//	GET  /sns/oauth2/refresh_token   OAuth token refresh
//	GET  /sns/userinfo               OAuth user information
//	GET  /sns/auth                   OAuth token check
//
// JSON answers are HTTP 200 with an errcode body on failure, errmsg carries a
// ", rid: xxxxxxxx-xxxxxxxx-xxxxxxxx" suffix, and "/" is escaped as "\/" as
// WeChat does. The authorization pages answer errors with an HTML page, as
// WeChat does; the page carries the error code (for example 10003) and a
// reason in a data-errcode attribute so tests can assert on it. A browser
// other than WeChat's opening /connect/oauth2/authorize gets WeChat's
// "请在微信客户端打开链接" page (data-errcode "wechat_client").
//
// # Sandbox paths (not part of WeChat)
//
//	GET  /q/{id}               a QR code's page (id is the last segment of its url): the QR and
//	                           one "scan as" button per test user
//	GET  /sandbox/phone        a test user's phone (query user, appid): follow, unfollow, the chat
//	                           with the account and a box to send it a message
//	GET  /sandbox/users        JSON: test users and apps (never secrets)
//	POST /sandbox/scan         the phone scans: form or JSON fields ticket (a ticket, QR url or scene),
//	                           user, and optionally appid and nofollow (scan without following);
//	                           answers JSON describing the delivery (an HTML page when the client
//	                           prefers text/html)
//	POST /sandbox/follow       the phone's follow button: appid (optional), user, follow (1 or true
//	                           to follow, else unfollow)
//	POST /sandbox/message      the phone sends a text message: appid (optional), user, content;
//	                           JSON describing the delivery ("chat" is what the chat shows), or for a
//	                           browser form a redirect back to the phone page
//	GET  /sandbox/deliveries   JSON: the push log, newest last
//
// # Choices where WeChat's behaviour is undocumented
//
//   - qrcode/create without the "scene" level succeeds with scene "0", as
//     observed on WeChat; a present but invalid scene gives 40053; an
//     unparseable body gives 40052. scene_str is limited to 64 bytes.
//     expire_seconds defaults to 60, is capped at 2592000, and a value of 0 or
//     less is treated as absent.
//   - The url of a QR code is http://weixin.qq.com/q/<id>, with an id of
//     20 characters or "02" and 20 more, both shapes WeChat has used; the
//     sandbox serves that QR code's page at <BaseURL>/q/<id>. A ticket is
//     base64 of the binary record real tickets hold, embedding that url, so
//     it ends in "==" or in no padding at all; half of them contain "+".
//   - The apps' API IP whitelist and the risky-IP confirmation apply to
//     cgi-bin/token and cgi-bin/stable_token only, after the credentials are
//     checked. Refusals older than 24 hours are forgotten.
//   - stable_token force_refresh within 30 s of the previous one returns the
//     current token without refreshing; past 20 force refreshes a day it
//     gives 45009. Normal stable_token calls have no quota here.
//   - cgi-bin/token and stable_token accept only Official Account appids
//     (40013 otherwise).
//   - An account type's refusal (48001) comes before the request body is
//     read; every qrcode/create call it allows counts against the daily
//     quota, valid or not.
//   - /connect/oauth2/authorize refuses other browsers before looking at
//     its parameters. A client that does not present itself as a browser
//     (no "Mozilla/" in its User-Agent, as Go's http.Client) is treated as
//     WeChat's browser, so tests can drive the pages with a plain client.
//     qrconnect accepts every browser, WeChat's included.
//   - A test account's web authorization checks that the user follows it
//     once the user is known (10006), after every other check.
//   - The account page a non-follower opened by scanning stays open until
//     the user follows or scans another code of the account, however long
//     that takes; a follow from it carries the scene even if the QR code
//     has since expired.
//   - Only followers can send messages. In embedded qrconnect, an approval
//     moves the frame or the top window through the target of the page's
//     form; with an OAuth user configured there is no click, and a script
//     with its own CSP moves the top window. Unknown style values are
//     black; href must be https or data:text/css;base64 and is ignored
//     with stylelite=1.
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
