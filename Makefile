# airlock: the two commands a newcomer needs are `make demo` and `make test`.
GO      ?= go
PKGS    := ./...
TIMEOUT ?= 25m

.PHONY: all build deps demo test fmt-check vet unit e2e bench compose-test clean

all: build

build:
	$(GO) build -o bin/airlock ./cmd/airlock

# deps installs what the demo and the tests run: Debian packages for the
# real servers and clients, and the Go modules.
deps:
	scripts/install-deps.sh

# demo starts a throwaway PostgreSQL and MariaDB with a sample schema, an
# sshd box to ssh into, and the gateway with its embedded JetStream
# recorder, and prints how to connect once every listener accepts.
demo: deps
	scripts/demo.sh

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

# test: formatting, vet, then every package's tests (unit and end-to-end,
# against real PostgreSQL, NATS and psql) with the race detector.
test: deps fmt-check vet
	$(GO) test -race -count=1 -timeout $(TIMEOUT) $(PKGS)

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /e2e)

e2e:
	$(GO) test -count=1 -v -timeout $(TIMEOUT) ./e2e/...

clean:
	rm -rf bin demo

# bench: not part of test. Measures airlock (embedded R1 and a 3-node R3
# recorder) against direct PostgreSQL, MariaDB and sshd and against
# PgBouncer, in one run, and writes docs/benchmarks.md, docs/benchmarks.png
# and CPU profiles under docs/profiles/. AIRLOCK_BENCH_ONLY=pgbench,latency
# runs only those parts and writes nothing under docs/ (names in
# bench/bench_test.go); AIRLOCK_BENCH_ROUNDS and AIRLOCK_BENCH_SECONDS
# shorten the pgbench runs; AIRLOCK_BENCH_STATEMENT_MIB=16,200 sets the
# sizes of the large-statement part; AIRLOCK_BENCH_TRACE=file saves a
# runtime trace of the R1 gateway during the 1-client latency part.
bench: deps
	$(GO) test -run '^$$' -bench Suite -benchtime 1x -timeout 60m -v ./bench

# compose-test: not part of test (it needs a running Docker engine, which CI
# has not). Builds every image of docker-compose.yml, starts the stack with
# fresh secrets as its own Compose project, runs psql, mysql and ssh through
# the gateway as an agent would (request, approval, token), checks the
# events on all three NATS nodes, stops and starts the stack with its data
# and checks it comes back by itself, then removes containers, networks and
# volumes. Where the base images cannot be pulled it builds local stand-ins
# (airlock-standin/*) from Debian's packages and says so. Without Docker it
# fails and names what is missing. See docs/recorder.md, "Deployment".
compose-test:
	scripts/compose-test.sh
