# The targets CI and contributors run. `make test` is the one command that
# installs what the tests need and runs every check.

GO          ?= go
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME    ?= 60s

.PHONY: test deps lint unit fuzz bench load load-logins

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
