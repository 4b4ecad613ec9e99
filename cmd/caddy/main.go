// Command caddy is Caddy with its standard modules plus wechat_login:
//
//	go run ./cmd/caddy run --config examples/sandbox/Caddyfile
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/wechat-login/caddy-wechat-login/caddymodule"
)

func main() {
	caddycmd.Main()
}
