# lbd: the two quick-start commands are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint check bench bench-quick clean venv

run: $(STAMP)  ## start demo targets and lbd on conf/lbd.yaml
	$(BIN)/lbd demo -c conf/lbd.yaml

test: $(STAMP) lint  ## lint, type-check and run the whole test suite
	scripts/test-tools.sh
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy lbd benchmarks

check: $(STAMP)  ## lbd check on every example config
	@for f in conf/*.yaml; do $(BIN)/lbd check -c $$f || exit 1; done

bench: $(STAMP)  ## the benchmark harness (installs haproxy, nginx, wrk with apt-get if missing)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m benchmarks

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks --quick

venv: $(STAMP)

# The compiled data path (lbd/build.py's COMPILED): an edit to one of its sources rebuilds it, since a
# stale compiled module would otherwise shadow the edited .py.
COMPILED_SOURCES := $(shell $(PYTHON) -c 'import runpy; print(" ".join(m.replace(".", "/") + ext for m in runpy.run_path("lbd/build.py")["COMPILED"] for ext in (".py", ".pxd")))' 2>/dev/null)

$(STAMP): pyproject.toml setup.py $(wildcard $(COMPILED_SOURCES))
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "lbd needs Python 3.11 or newer, found " + sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: on Debian run 'apt-get install python3-venv'"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	@command -v cc >/dev/null 2>&1 && $(BIN)/python -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
		|| echo "lbd: no C compiler or Python headers, so the data path runs interpreted (slower); for the compiled build: apt-get install gcc python3-dev"
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info benchmarks/results
