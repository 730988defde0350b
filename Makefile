# The two commands: `make run` and `make test`. Both set everything up first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PYTHONDONTWRITEBYTECODE :=
export PREFECT_HOME := $(CURDIR)/.flock/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MPLCONFIGDIR := $(CURDIR)/.flock/matplotlib
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export DVC_SITE_CACHE_DIR := $(CURDIR)/.flock/dvc-site

.PHONY: setup run test lint typecheck bench lock clean node contracts repro

setup: $(STAMP) node

# The venv is rebuilt only when the pins change. CPU torch first: a loose resolve pulls CUDA.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==24.3.1
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m compileall -q $(VENV)/lib > /dev/null || true
	touch $(STAMP)

# Node tooling (solc, anvil, forge) pinned by package-lock.json.
node: node_modules/.installed
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

run: setup
	$(BIN)/flock run

# Three workers on 2 cores, each test file on one worker (module fixtures start servers once).
# Many end-to-end tests wait (on servers starting, real-time chain phases, deadlines, Prefect
# polling), so a third worker fills those waits: the suite took 850 s on 2 cores with three
# (1661 s with two, a few commits earlier; 585 s since the worker and RPC fixes). One torch
# thread per process, or the workers would oversubscribe the cores.
# Files go out in collection order (tests/conftest.py puts the longest first), not xdist's
# default of most tests first, which left the one-test worker file running alone at the end.
TEST_WORKERS ?= 3
test: setup lint typecheck
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(BIN)/ruff check flock_pipeline flows tests bench
	$(BIN)/ruff format --check flock_pipeline flows tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

bench: setup
	$(BIN)/python bench/dp_overhead.py --quick
	$(BIN)/python bench/gas.py --quick
	$(BIN)/python bench/orchestration_overhead.py --quick

# Recompile contracts/ into flock_pipeline/chain/artifacts/ (solcjs from node_modules).
contracts: setup
	$(BIN)/python -m flock_pipeline.chain.compile

# The DVC pipeline (prepare -> federate -> evaluate); `dvc metrics show`, `dvc plots show` after.
repro: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro

# Re-resolve the full pin set from requirements.in (needs the package index).
lock:
	rm -rf .lockvenv && $(PYTHON) -m venv .lockvenv
	.lockvenv/bin/pip install --quiet torch==2.13.0 && .lockvenv/bin/pip install --quiet -r requirements.in
	.lockvenv/bin/pip freeze --exclude-editable | grep -v '^flock-pipeline' > requirements.lock
	rm -rf .lockvenv

clean:
	rm -rf $(VENV) node_modules .flock
