// Package wechat speaks the WeChat protocols that "log in with WeChat" needs,
// for Official Accounts and Open Platform website apps. It holds no policy and
// no sessions: it is the wire layer under a login product.
//
// # API calls
//
// [Client] calls the Official Account APIs that need an access_token:
// temporary parametric QR codes ([Client.CreateTempQR], shown through
// [Endpoint.ShowQRCodeURL]) and follower info ([Client.FollowerInfo]).
// Access tokens come from a [TokenSource]. The default,
// [StableTokenSource] cached by [ReuseTokenSource], lets any number of
// servers share an app without knocking out each other's tokens; when
// WeChat rejects a token the client drops only that token and retries once.
// [ClassicTokenSource] and [RemoteTokenSource] serve setups built around a
// central token service.
//
// [OAuthApp] covers web authorization inside WeChat's browser
// ([OAuthApp.AuthorizeURL]) and website login on a PC
// ([OAuthApp.QRConnectURL]), then the code exchange, refresh, profile and
// token check.
//
// Failures that WeChat reports (HTTP 200 with a non-zero errcode) are
// [*Error] values; helpers such as [IsTokenInvalid], [IsCodeInvalid],
// [IsRateLimited] and [IsIPNotWhitelisted] classify them through any
// wrapping. Transport failures name the API path only: error text never
// contains request URLs or bodies, which carry the app secret, OAuth codes
// and tokens.
//
// # Pushes
//
// WeChat pushes events (a QR code scanned, an account followed) to the
// account's server URL as signed XML, normally AES-encrypted. [CheckSignature]
// verifies the signature, [Crypter] decrypts pushes and encrypts replies,
// [ParseEvent] reads event XML, and [TextReply] builds a passive reply.
//
// Tests can point every URL at a fake WeChat through [Endpoint]; the
// wechattest package provides one.
package wechat
