# wsgate: the two commands a new user needs are `go run ./cmd/wsgate -demo`
# and `make test`.

GO ?= go

# BIN is where build writes the binary: make build BIN=/out/wsgate.
BIN ?= bin/wsgate
# VERSION is what `wsgate -version` prints: the checkout's `git describe`
# (tag, commits since it, commit, -dirty), or "dev" outside a git checkout
# (a source tarball, a Docker build without .git). make build VERSION=1.2.3
# overrides it; an environment variable does not, so a stray VERSION in a
# shell cannot mislabel a binary.
VERSION = $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

# KUBECHECK is a Go module of its own (its k8s.io dependencies stay out of
# wsgate's go.mod), so ./... from here does not reach it: test and vet run
# it by name.
KUBECHECK = deploy/kubernetes/check

.PHONY: all build test fmt-check vet peers unit e2e demo clean

all: build

# build makes the binary the Dockerfile ships: static (CGO_ENABLED=0, so it
# runs on an image without a C library), without the build machine's paths
# (-trimpath), stamped with VERSION.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/wsgate

# test is what CI runs: formatting, vet, the end-to-end suite's peers
# (installed when missing), then every test with the race detector (unit
# tests beside the code, end-to-end tests in tests/ that run the built
# binary, tests/e2e with real browsers and backends), and the Kubernetes
# manifests' check.
test: fmt-check vet peers
	$(GO) test -race -count=1 -timeout 15m ./...
	cd $(KUBECHECK) && $(GO) test -count=1 ./...

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
	cd $(KUBECHECK) && $(GO) vet ./...

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
