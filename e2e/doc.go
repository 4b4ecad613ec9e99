// Package e2e holds the browser tests: a real headless Chromium against a
// real Caddy (../cmd/caddy, built from this working copy) serving the
// sandbox. It is a module of its own so that the browser driver and its
// dependencies stay out of the module graph of those who build Caddy with
// the plugin. Run it with `cd e2e && go test ./...`; `make test` does.
package e2e
