# The only entry points; CI calls the same targets.
#   make dev        create .venv, install, run the API + worker + page on http://127.0.0.1:8000
#   make test       create .venv, install, lint, run every test with the coverage report and
#                   its floor (installs chromium for the browser tests unless
#                   MEDIAJOBS_SKIP_BROWSER=1; see the browser target)
#   make test-fast  the unit tier only: no Postgres, no Redis, no lint, no coverage (seconds)
#   make lint       ruff (lint + format check) and mypy --strict
#   make lock       re-resolve requirements/*.txt from pyproject.toml (after changing a
#                   dependency; LOCK_ARGS=--upgrade moves every pin to the newest release)
#   make bench      the benchmarks in bench/ (results go to docs/benchmarks.md)
#   make bench-ingest  bulk ingest alone (INGEST_ARGS=--quick: a small run of a few minutes)
#
# Installs come from the lock files (requirements/dev.txt for dev and test,
# requirements/bench.txt, which adds the benchmark peers, for bench), then the project
# itself with --no-deps, so every machine gets the same versions.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
LOCK := requirements/dev.txt
BENCH_LOCK := requirements/bench.txt
PYTEST_ARGS ?=
INGEST_ARGS ?=
LOCK_ARGS ?=
# The resolver behind `make lock`, pinned so the lock files come out the same everywhere.
UV_VERSION := 0.13.9
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --quiet --universal --python-version 3.11 \
	--annotation-style line \
	--custom-compile-command 'make lock' $(LOCK_ARGS)

.PHONY: dev test test-fast lint format lock browser bench bench-queue bench-sse bench-imaging \
	bench-api bench-public bench-ingest clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# requirements/check.py fails when the lock no longer covers pyproject.toml (a dependency
# was added or raised without `make lock`).
STALE_LOCK = { echo "requirements/ is out of date with pyproject.toml: run make lock"; exit 1; }

$(STAMP): $(LOCK) pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip check
	$(BIN)/python requirements/check.py dev || $(STALE_LOCK)
	touch $(STAMP)

$(BENCH_STAMP): $(BENCH_LOCK) $(STAMP)
	$(BIN)/python -m pip install --quiet -r $(BENCH_LOCK)
	$(BIN)/python requirements/check.py dev bench || $(STALE_LOCK)
	touch $(BENCH_STAMP)

# The bench lock is resolved first (dev and bench together); the dev lock is then held to
# its pins, so installing the bench peers on top of a dev install never moves a version.
lock: | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet 'uv==$(UV_VERSION)'
	mkdir -p requirements
	$(UV_COMPILE) --extra dev --extra bench -o $(BENCH_LOCK)
	$(UV_COMPILE) --extra dev --constraint $(BENCH_LOCK) -o $(LOCK)

dev: $(STAMP)
	$(BIN)/mediajobs dev

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# Debian's chromium for the browser tests (Playwright drives it; it never downloads one):
# about 400 MB of system packages, installed with apt as root (sudo -n when not root).
# MEDIAJOBS_SKIP_BROWSER=1 skips the install and the browser tests, except in CI
# (MEDIAJOBS_REQUIRE_SERVICES=1), which always runs them.
browser:
	@if [ "$$MEDIAJOBS_SKIP_BROWSER" = 1 ] && [ "$$MEDIAJOBS_REQUIRE_SERVICES" != 1 ]; then \
	  echo "MEDIAJOBS_SKIP_BROWSER=1: chromium not installed, the browser tests are skipped"; \
	  exit 0; fi; \
	command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium (about 400 MB, apt as root) for the browser tests;" \
	    "MEDIAJOBS_SKIP_BROWSER=1 make test skips them"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get install -y -q --no-install-recommends chromium \
	  || { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends chromium; } \
	  || echo "could not install chromium: the browser tests will not run"; }

# Coverage of this process and of the Python processes the tests start (coverage's
# `patch = subprocess`, see [tool.coverage] in pyproject.toml); the floor is fail_under.
test: lint browser
	$(BIN)/pytest --cov --cov-report=term-missing:skip-covered $(PYTEST_ARGS)

# The inner loop: the unit tier needs no services (tests/unit/conftest.py refuses them).
# The schemathesis and hypothesis pytest plugins are not loaded (no unit test uses them;
# importing them costs seconds).
test-fast: $(STAMP)
	$(BIN)/pytest tests/unit -q -p no:schemathesis -p no:hypothesispytest $(PYTEST_ARGS)

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: bench-queue bench-sse bench-imaging bench-api bench-public bench-ingest

bench-queue: $(BENCH_STAMP)
	$(BIN)/python bench/queue_throughput.py

bench-sse: $(BENCH_STAMP)
	$(BIN)/python bench/sse_fanout.py

bench-imaging: $(BENCH_STAMP)
	$(BIN)/python bench/imaging.py

bench-api: $(BENCH_STAMP)
	$(BIN)/python bench/api_load.py --rate 67

bench-public: $(BENCH_STAMP)
	$(BIN)/python bench/public_reads.py

# Needs only the dev install (moto's server, psutil): no peer library is compared.
bench-ingest: $(STAMP)
	$(BIN)/python bench/ingest.py $(INGEST_ARGS)

clean:
	rm -rf $(VENV) .mediajobs .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* htmlcov
