# Two entry points for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: run test test-fast install lint deps docs clean-venv demo web

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/pets run

# The suite's processes fsync a lot (SQLite stores of MLflow and Prefect, git and DVC):
# eatmydata (Debian; .ci/run installs it) turns fsync into a no-op for the throw-away test data,
# when it is there. Three xdist workers on 2 cores: tests/conftest.py gives each worker's
# processes one compute thread, so the third fills the time the others wait on servers and
# subprocesses (790 s against 955 s with two workers, 2026-12-02; CPU 99 % busy).
EATMYDATA := $(shell command -v eatmydata 2>/dev/null)
TEST_WORKERS ?= 3

test: install
	$(BIN)/lint-imports
	$(EATMYDATA) $(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15; rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

# The edit-run loop: pure tests only (a test that starts a process fails there, naming itself);
# under a minute on 2 cores (docs/DEVELOPING.md). `make test` is what CI runs: everything.
test-fast: install
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not integration" --fast-tier -n 2

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# dvc.yaml's code deps (the stages/ and petsml/ lines of each stage) from each stage's imports
deps: install
	$(BIN)/python -m tools.stage_deps

# docs/ARCHITECTURE.md's tables of stages, strategies, metrics and modules, from the code
docs: install
	$(BIN)/python -m tools.docs_gen

# The whole pipeline on the 185 real photos in demo/pets, then the web page (offline, minutes).
demo: install
	$(BIN)/python demo/run.py

# The web page over this project's registered champion (after `make run`).
web: install
	$(BIN)/pets web
