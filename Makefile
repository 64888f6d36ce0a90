# The only entry points; CI calls the same targets.
#   make dev    create .venv, install, run the API + worker + page on http://127.0.0.1:8000
#   make test   create .venv, install, lint, run every test (installs chromium for the
#               browser tests unless MEDIAJOBS_SKIP_BROWSER=1; see the browser target)
#   make lint   ruff (lint + format check) and mypy --strict
#   make bench  the benchmarks in bench/ (results go to docs/benchmarks.md)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: dev test lint format browser bench bench-queue bench-sse bench-imaging bench-api clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

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

test: lint browser
	$(BIN)/pytest $(PYTEST_ARGS)

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: bench-queue bench-sse bench-imaging bench-api

bench-queue: $(STAMP)
	$(BIN)/python bench/queue_throughput.py

bench-sse: $(STAMP)
	$(BIN)/python bench/sse_fanout.py

bench-imaging: $(STAMP)
	$(BIN)/python bench/imaging.py

bench-api: $(STAMP)
	$(BIN)/python bench/api_load.py --rate 67

clean:
	rm -rf $(VENV) .mediajobs .pytest_cache .mypy_cache .ruff_cache
