module github.com/wechat-login/caddy-wechat-login/e2e

go 1.26.0

require (
	github.com/chromedp/cdproto v0.159.0
	github.com/chromedp/chromedp v0.23.0
	github.com/wechat-login/caddy-wechat-login v0.0.0-00010101000000-000000000000
)

require (
	github.com/go-json-experiment/json v0.0.0-20260213210345-44df1a37e875 // indirect
	golang.org/x/sync v0.24.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	rsc.io/qr v0.2.0 // indirect
)

// The tests run against the working copy around them, never a published version.
replace github.com/wechat-login/caddy-wechat-login => ../
