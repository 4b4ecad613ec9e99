# The targets CI and contributors run. `make test` is the one command that
# installs what the tests need and runs every check.

GO          ?= go
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME    ?= 60s

.PHONY: test deps lint unit fuzz bench load load-logins flood chaos

test: deps lint unit

deps:
	./scripts/install-test-deps

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

unit:
	$(GO) test -race -count=1 -timeout 25m ./...

# Longer fuzzing runs, one target at a time (go test -fuzz takes one target per package).
fuzz:
	./scripts/fuzz $(FUZZTIME)

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# Requests per second through Caddy with and without wechat_login (wrk).
load:
	./scripts/bench-load 10s 32

# Complete QR logins per second: one instance with the embedded store against
# two instances sharing Redis.
load-logins:
	$(GO) test -count=1 -run TestLoginThroughput -v ./caddymodule -loadtest=10s

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
