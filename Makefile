# liqheat — `make help` lists the targets. Everything installs into ./.venv (created on first use).
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PYTHON3 ?= python3

.PHONY: help run test lint typecheck bench snapshots system-deps assets clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON3) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

assets: $(STAMP)  ## fetch the pinned Lightweight Charts build (npm registry, checksum-verified)
	$(PY) -m server.assets

run: $(STAMP) assets  ## set up and start the chart server on the simulated market (http://127.0.0.1:8000)
	$(VENV)/bin/liqheat serve

system-deps:  ## Debian packages the tests drive (chromium, tmux, openssh)
	bash scripts/system-deps.sh

test: $(STAMP) assets system-deps  ## set up and run the whole test suite (lint and type checks included)
	$(VENV)/bin/ruff check engine server tui tests benchmarks
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

lint: $(STAMP)  ## ruff only
	$(VENV)/bin/ruff check engine server tui tests benchmarks

typecheck: $(STAMP)  ## mypy on engine/
	$(VENV)/bin/mypy

bench: $(STAMP)  ## performance runs; they print tables of measured ratios
	$(PY) -m benchmarks

snapshots: $(STAMP)  ## re-record the TUI snapshot tests after an intended visual change (review the diff)
	$(PY) -m pytest -q tests/tui --snapshot-update

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache artifacts
