# The targets CI and contributors run. `make test` is the one command that
# installs what the tests need and runs every check.

GO          ?= go
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
XCADDY      ?= $(GO) run github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5
FUZZTIME    ?= 60s

.PHONY: test deps lint unit fuzz bench bench-report load load-logins soak flood chaos failover xcaddy

test: deps lint unit

deps:
	./scripts/install-test-deps

# Two modules: the root one (what plugin users build) and e2e, the browser
# tests, kept apart so that their browser driver stays out of the plugin's
# module graph. Each is linted and tested on its own; `go mod tidy -diff`
# fails when a go.mod or go.sum is not exactly what the code needs.
lint:
	@files=$$(git ls-files --cached --others --exclude-standard '*.go' 2>/dev/null || find . -name '*.go'); \
	  out=$$(for f in $$files; do [ ! -e "$$f" ] || echo "$$f"; done | xargs -r gofmt -l); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) mod tidy -diff
	$(GO) vet ./...
	$(STATICCHECK) ./...
	cd e2e && $(GO) mod tidy -diff
	cd e2e && $(GO) vet ./...
	cd e2e && $(STATICCHECK) ./...

unit:
	$(GO) test -race -count=1 -timeout 25m ./...
	cd e2e && $(GO) test -race -count=1 -timeout 10m ./...

# Longer fuzzing runs, one target at a time (go test -fuzz takes one target per package).
fuzz:
	./scripts/fuzz $(FUZZTIME)

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# Every figure of BENCHMARKS.md, measured again on this machine: wrk through
# Caddy, the Go benchmarks, connections to WeChat, the embedded store with a
# million logins, Caddy's memory with 10,000 waiting browsers, and logins
# per second; each three times, interleaved, medians. About 25 minutes.
bench-report:
	./scripts/bench-report BENCHMARKS.md

# Requests per second through Caddy with and without wechat_login (wrk).
load:
	./scripts/bench-load 10s 32

# Complete QR logins per second: one instance with the embedded store against
# two instances sharing Redis.
load-logins:
	$(GO) test -count=1 -run TestLoginThroughput -v ./caddymodule -loadtest=10s

# QR logins at a steady 210/s for DURATION against one Caddy with the
# embedded store, then against two sharing Redis: no login lost or doubled,
# at least 200/s completed, each Caddy's resident memory and goroutines
# flat after warm-up (the series is printed). Not part of `make test`.
DURATION     ?= 30m
SOAK_TIMEOUT ?= 3h
soak:
	$(GO) test -count=1 -timeout $(SOAK_TIMEOUT) -run TestSoak -v ./caddymodule -soaktest=$(DURATION)

# Anonymous requests from thousands of loopback addresses against the
# embedded store: Caddy's memory and the store's evictions, and a logout made
# before the flood still holds after it.
flood:
	$(GO) test -count=1 -run TestFloodKeepsLogouts -v -timeout 20m ./caddymodule -floodtest=300000

# Complete QR logins from 16 browsers through two instances sharing Redis
# (append-only file on) while Redis is SIGKILLed and restarted every ~10 s.
# Every login must succeed once or fail with a clear 503 that a retry fixes.
chaos:
	$(GO) test -count=1 -timeout 10m -run TestChaosRedisRestart -v ./caddymodule -chaostest=60s

# Logins through two instances while the Sentinel primary is killed (and a
# replica promoted), and while a Cluster node is killed and restarted, a
# fault about every 15 s: no login lost or doubled, a clear 503 at most.
failover:
	$(GO) test -count=1 -timeout 15m -run 'TestCaddySentinelFailover|TestCaddyClusterRestart' -v ./caddymodule -failovertest=60s

# The local-checkout build of xcaddy.md: xcaddy builds a Caddy with the
# plugin from this working copy into a temporary directory, and the module
# must be in it. Not part of `make test`, since it compiles all of Caddy once
# more (and fetches xcaddy and Caddy's sources through the module proxy).
# The module is marked private and never looked up in a VCS, here as in
# xcaddy.md: looking for the caddymodule package, Go would also ask about a
# module of that path, and a proxy or VCS answering anything but "not found"
# (no network, a private repository) would end the search before it comes to
# the local replacement.
xcaddy:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  version=$$($(GO) list -m -f '{{.Version}}' github.com/caddyserver/caddy/v2) && \
	  mod=github.com/wechat-login/caddy-wechat-login && \
	  private=$$($(GO) env GOPRIVATE) && vcs=$$($(GO) env GOVCS) && \
	  (cd "$$tmp" && GOPRIVATE="$$mod$${private:+,$$private}" GOVCS="$$mod:off$${vcs:+,$$vcs}" \
	    $(XCADDY) build "$$version" --output "$$tmp/caddy" \
	      --with $$mod/caddymodule --replace $$mod="$(CURDIR)") && \
	  "$$tmp/caddy" list-modules | grep -qx 'http.handlers.wechat_login' && \
	  echo "make xcaddy: Caddy $$version built by xcaddy from $(CURDIR) has http.handlers.wechat_login"
