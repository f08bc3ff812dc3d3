# berth's make targets. `make demo` and `make test` do all set-up themselves.
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go
BIN := bin
GOFLAGS_BUILD := -trimpath

.PHONY: all setup build demo test unit integration lint bench clean

all: build

setup:
	@hack/setup.sh

build:
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/berth ./cmd/berth
	@if [ -d cmd/berth-agent ]; then CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/berth-agent ./cmd/berth-agent; fi
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/berth-registry ./cmd/berth-registry
	@if [ -d cmd/berth-vm ]; then CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/berth-vm ./cmd/berth-vm; fi

demo: setup build
	@hack/demo.sh

lint:
	@out=$$(gofmt -l cmd internal test bench 2>/dev/null); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

unit:
	$(GO) test -count=1 ./internal/...
	$(GO) test -count=1 -race ./internal/engine/... ./internal/attach/ ./internal/logs/ ./internal/runtime/... ./internal/image/...

integration: build
	BERTH_BIN=$(CURDIR)/$(BIN)/berth $(GO) test -count=1 -timeout 20m -p 1 ./test/...

test: setup build lint unit integration

bench: setup build
	bench/run.sh

clean:
	rm -rf $(BIN)
