# The two quick-start commands are `make run` and `make test`; the rest are for contributors.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080

.PHONY: run test install install-test lint format bench clean

run: install  ## install, then run Caddy + demo editor + sidecar in local mode on http://127.0.0.1:$(PORT)
	$(BIN)/sidecar demo --port $(PORT)

test: install-test  ## install everything, then lint, type-check and run the whole test suite
	$(BIN)/ruff check sidecar tests bench
	$(BIN)/ruff format --check sidecar tests bench
	$(BIN)/mypy sidecar
	$(BIN)/pytest

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-test: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'

lint: install-test
	$(BIN)/ruff check sidecar tests bench
	$(BIN)/mypy sidecar

format: install-test
	$(BIN)/ruff format sidecar tests bench
	$(BIN)/ruff check --fix sidecar tests bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

bench: install-test  ## the MediaMTX callback benchmark (ratios against a bare Starlette baseline, same run)
	$(BIN)/python bench/callback.py
