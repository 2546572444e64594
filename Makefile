# wsgate: the two commands a new user needs are `go run ./cmd/wsgate -demo`
# and `make test`.

GO ?= go

.PHONY: all build test fmt-check vet peers unit e2e demo clean

all: build

build:
	$(GO) build -o bin/wsgate ./cmd/wsgate

# test is what CI runs: formatting, vet, the end-to-end suite's peers
# (installed when missing), then every test with the race detector (unit
# tests beside the code, end-to-end tests in tests/ that run the built
# binary, tests/e2e with real browsers and backends).
test: fmt-check vet peers
	$(GO) test -race -count=1 -timeout 15m ./...

# peers installs what tests/e2e needs when any of it is missing: Chromium,
# python3-tornado and HAProxy from Debian, node and npm, and the pinned npm
# packages. It says nothing when everything is there.
peers:
	@bash tests/e2e/setup.sh --quiet

fmt-check:
	@out="$$(find . -name '*.go' -not -path '*/node_modules/*' | xargs gofmt -l)"; \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

demo:
	$(GO) run ./cmd/wsgate -demo

clean:
	rm -rf bin

# bench runs wsgate side by side with nginx and HAProxy (Debian packages,
# installed with apt-get when missing) and writes bench/results/. Not part of
# test: it needs root for the install and takes several minutes.
.PHONY: bench
bench:
	bench/run.sh
