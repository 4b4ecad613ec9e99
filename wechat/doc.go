// Package wechat speaks the WeChat protocols that "log in with WeChat" needs,
// for Official Accounts and Open Platform website apps. It holds no policy and
// no sessions: it is the wire layer under a login product.
//
// # Client and access tokens
//
// [Client] calls the Official Account APIs that need an access_token. It gets
// tokens from a [TokenSource]; by default [StableTokenSource] cached by
// [ReuseTokenSource], which lets any number of servers share an app without
// knocking out each other's tokens. A company whose tokens are already handed
// out by a central token service uses [RemoteTokenSource] instead. When
// WeChat rejects a token the client drops only that token and retries once.
//
// # QR tickets
//
// [Client.CreateTempQR] creates a temporary QR code carrying a login scene;
// render its URL yourself, or show WeChat's image from
// [Endpoint.ShowQRCodeURL]. Scanning it makes WeChat push an event (see
// Pushes) whose [Event.LoginScene] names the scene; [Client.FollowerInfo]
// then tells more about the user who scanned, such as their unionid.
//
// # OAuth
//
// [OAuthApp] sends the user's browser to WeChat's authorization page, inside
// WeChat ([OAuthApp.AuthorizeURL]) or as a QR page for a PC
// ([OAuthApp.QRConnectURL]), then trades the returned code for the user's
// openid ([OAuthApp.Exchange]) and, with consent, profile
// ([OAuthApp.UserInfo]).
//
// # Pushes
//
// WeChat pushes events (a QR code scanned, an account followed) to the
// account's server URL as signed XML, normally AES-encrypted. [PushVerifier]
// is the one entry point for them: [PushVerifier.Handshake] answers the
// server URL check (signature, freshness, echostr), and [PushVerifier.Verify]
// checks a push's signature, freshness and mode, decrypts it with a
// [Crypter] and parses the [Event]. The [Push] it returns builds the passive
// reply ([Push.ReplyText]). The pieces it is built from ([Crypter],
// [Signature], [ParseEvent], [TextReply] and the like) remain available for
// other kinds of reply and for tests that play WeChat's part.
//
// # Errors
//
// Failures that WeChat reports (HTTP 200 with a non-zero errcode) are
// [*Error] values; [ErrorCode] and the helpers [IsCodeInvalid],
// [IsRateLimited] and [IsIPNotWhitelisted] classify them through any
// wrapping. Transport failures name the API path only: error text never
// contains request URLs or bodies, which carry the app secret, OAuth codes
// and tokens.
//
// Tests point every URL at a fake WeChat through [Endpoint]; the wechattest
// package provides one.
package wechat
