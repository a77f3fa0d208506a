# ruvector-healing: the two commands are `make run` and `make test`.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin

PG_CONFIG ?= pg_config
GO ?= go
RUN_DIR := $(CURDIR)/.run
RUN_PORT ?= 55432
REGRESS_DIR := $(CURDIR)/.tmp/regress
REGRESS_PORT ?= 55433
EXT_MAKE = $(MAKE) -C extension_stub with_llvm=no PG_CONFIG=$(PG_CONFIG)
CLUSTER = scripts/pgcluster.sh
SIDECAR = bin/ruvector-sidecar
# The server and the sidecar run as the server's OS user.
AS_PG = $(if $(filter 0,$(shell id -u)),setpriv --reuid=postgres --regid=postgres --init-groups --,)

.PHONY: all deps build ext sidecar install-ext generate run up down psql test unit regress vet rules clean chaos

all: build

deps:
	@scripts/deps.sh

build: deps ext sidecar

ext:
	@$(EXT_MAKE) -s

sidecar:
	$(GO) build -o $(SIDECAR) ./sidecar/cmd/ruvector-sidecar

# Installs the extension into the server pg_config names (needs write access
# to its lib and extension directories: root, or sudo make install-ext).
install-ext: ext
	@libdir=$$($(PG_CONFIG) --pkglibdir); \
	if [ ! -w "$$libdir" ]; then \
		echo "install-ext: $$libdir is not writable: run as root (sudo make install-ext)" >&2; exit 1; \
	fi
	@$(EXT_MAKE) -s install

# The extension into the server pg_config names, and the sidecar into
# $(PREFIX)/bin (default /usr/local/bin); DESTDIR stages both for packaging.
# uninstall removes exactly the files install listed in its manifest.
# The image build runs the same script (deploy/docker/Dockerfile).
.PHONY: install uninstall
install:
	@PG_CONFIG=$(PG_CONFIG) GO=$(GO) scripts/install.sh install

uninstall:
	@PG_CONFIG=$(PG_CONFIG) scripts/install.sh uninstall

generate:
	$(GO) generate ./shmproto

# --- the private cluster -----------------------------------------------------

$(RUN_DIR)/data/PG_VERSION:
	@$(CLUSTER) init $(RUN_DIR) $(RUN_PORT)

cluster: build install-ext $(RUN_DIR)/data/PG_VERSION
	@if ! $(AS_PG) /usr/lib/postgresql/15/bin/pg_ctl -D $(RUN_DIR)/data status >/dev/null 2>&1; then \
		$(CLUSTER) start $(RUN_DIR); fi
	@$(CLUSTER) env $(RUN_DIR) > $(RUN_DIR)/env
	@. $(RUN_DIR)/env && psql -X -q -v ON_ERROR_STOP=1 -f scripts/demo.sql >/dev/null
	@echo "PostgreSQL 15 is up on port $(RUN_PORT) (data in .run/data, log in .run/log/postgresql.log)"

# make run: everything, with the sidecar in the foreground (Ctrl-C stops it;
# `make down` stops the cluster).
run: cluster
	@echo "Connect with: make psql   (or: . .run/env && psql)"
	@echo "Stop with:    Ctrl-C here for the sidecar, then make down"
	@. $(RUN_DIR)/env && $(AS_PG) $(SIDECAR) run --changefeed --log-format console

# make up: the same in the background; the sidecar logs to .run/sidecar.log.
up: cluster
	@if [ -f $(RUN_DIR)/sidecar.pid ] && kill -0 $$(cat $(RUN_DIR)/sidecar.pid) 2>/dev/null; then \
		echo "sidecar already running (pid $$(cat $(RUN_DIR)/sidecar.pid))"; \
	else \
		. $(RUN_DIR)/env; \
		nohup $(AS_PG) $(SIDECAR) run --changefeed </dev/null >$(RUN_DIR)/sidecar.log 2>&1 & echo $$! > $(RUN_DIR)/sidecar.pid; \
		echo "sidecar started (pid $$(cat $(RUN_DIR)/sidecar.pid), log .run/sidecar.log)"; \
	fi
	@echo "Connect with: make psql   (or: . .run/env && psql).  Stop with: make down"

down:
	@if [ -f $(RUN_DIR)/sidecar.pid ]; then kill $$(cat $(RUN_DIR)/sidecar.pid) 2>/dev/null || true; rm -f $(RUN_DIR)/sidecar.pid; fi
	@if [ -d $(RUN_DIR)/data ]; then $(CLUSTER) stop $(RUN_DIR); fi
	@echo "stopped"

psql:
	@. $(RUN_DIR)/env && psql -X

# --- tests -------------------------------------------------------------------

# make test: the whole suite. Go unit and integration tests under -race (the
# integration tests start their own private clusters), then the extension's
# regression tests against a preloaded private server.
test: build install-ext vet rules unit regress

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted" >&2; exit 1; fi
	$(GO) vet ./...

# The alerting rules: syntax, then their unit tests (alerts_test.yml).
rules: deps
	promtool check rules deploy/prometheus/alerts.yml
	promtool test rules deploy/prometheus/alerts_test.yml

unit:
	$(GO) test -race -count=1 -timeout 15m ./...

# The seeded fault campaign at full size (make test runs a short one).
CHAOS_FAULTS ?= 100
CHAOS_SEED ?= 1
chaos: build install-ext
	$(GO) test -count=1 -run TestChaosCampaign -v -timeout 90m ./internal/chaos -args -chaos.faults=$(CHAOS_FAULTS) -chaos.seed=$(CHAOS_SEED) -chaos.results=$(CURDIR)/bench/RESULTS.md

# One shell holding a lock: the regression cluster has a fixed port and
# directory, so two runs in one checkout would collide.
regress:
	@mkdir -p $(CURDIR)/.tmp extension_stub/test/out; exec 9>$(CURDIR)/.tmp/regress.lock; flock 9; \
	rm -rf $(REGRESS_DIR) && mkdir -p $(REGRESS_DIR) && \
	$(CLUSTER) init $(REGRESS_DIR) $(REGRESS_PORT) && $(CLUSTER) start $(REGRESS_DIR) || exit 1; \
	. <($(CLUSTER) env $(REGRESS_DIR)) && \
		$(EXT_MAKE) -s installcheck; \
		rc=$$?; $(CLUSTER) stop $(REGRESS_DIR) immediate; \
		if [ $$rc -ne 0 ]; then cat extension_stub/test/out/regression.diffs 2>/dev/null; fi; exit $$rc

clean:
	@$(EXT_MAKE) -s clean
	rm -rf bin .tmp extension_stub/test/out

# --- benchmarks (results go to bench/RESULTS.md with the command) -------------

.PHONY: bench-gate bench-mincut bench-monitor
bench-gate: build install-ext
	bash bench/gate/run.sh

bench-mincut:
	bash bench/mincut/run.sh

bench-monitor: build install-ext
	bash bench/monitor/run.sh

# Search latency p50/p99 and recall@10 on a drift-skewed collection before
# and after a centroid rebuild (bench/search); SEARCH_ARGS takes its flags.
SEARCH_ARGS ?=
.PHONY: bench-search
bench-search: install-ext
	bash bench/search/run.sh "" $(SEARCH_ARGS)

# The healer's scorecard (bench/scorecard): a seeded fault campaign of every
# problem class under a steady workload with the real sidecar; SCORECARD_ARGS
# takes e.g. -scorecard.quick. bench-recovery is the same campaign;
# bench-load runs the workload at the machine's capacity instead.
SCORECARD_SEED ?= 1
SCORECARD_ARGS ?=
.PHONY: scorecard bench-recovery bench-load
scorecard bench-recovery: build install-ext
	$(GO) test -count=1 -run TestScorecard -v -timeout 150m ./bench/scorecard -args -scorecard.run -scorecard.seed=$(SCORECARD_SEED) $(SCORECARD_ARGS)

bench-load: build install-ext
	$(GO) test -count=1 -run TestScorecard -v -timeout 60m ./bench/scorecard -args -scorecard.run -scorecard.mode=load -scorecard.seed=$(SCORECARD_SEED) $(SCORECARD_ARGS)
