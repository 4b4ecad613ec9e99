module github.com/wechat-login/caddy-wechat-login

go 1.26.0

require (
	github.com/allegro/bigcache/v3 v3.1.0 // indirect
	go.uber.org/goleak v1.3.0 // indirect
	go.uber.org/multierr v1.10.0 // indirect
	go.uber.org/zap v1.28.0 // indirect
	golang.org/x/sync v0.24.0 // indirect
	rsc.io/qr v0.2.0 // indirect
)
