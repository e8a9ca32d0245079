# The two quick-start commands are `make run` and `make test`; the rest are for contributors.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080

.PHONY: run test install install-test player browser lint format bench clean

run: install  ## install, then run Caddy + demo editor + sidecar in local mode on http://127.0.0.1:$(PORT)
	$(BIN)/sidecar demo --port $(PORT)

test: install-test browser  ## install everything, then lint, type-check and run the whole test suite
	$(BIN)/ruff check sidecar tests bench
	$(BIN)/ruff format --check sidecar tests bench
	$(BIN)/mypy sidecar
	$(BIN)/pytest

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python player
	$(BIN)/pip install -q -e .

install-test: $(BIN)/python player
	$(BIN)/pip install -q -e '.[test]'

player:  ## hls.js from the npm registry (package-lock.json), served from /overlay/vendor/: no CDN at runtime
	npm ci --omit=dev --no-audit --no-fund
	mkdir -p sidecar/overlay_static/vendor
	cp node_modules/hls.js/dist/hls.min.js sidecar/overlay_static/vendor/hls.min.js
	cp node_modules/hls.js/LICENSE sidecar/overlay_static/vendor/hls.js.LICENSE

browser:  ## Debian's chromium for the browser tests (Playwright drives it; no browser download)
	bash scripts/install-chromium.sh

lint: install-test
	$(BIN)/ruff check sidecar tests bench
	$(BIN)/mypy sidecar

format: install-test
	$(BIN)/ruff format sidecar tests bench
	$(BIN)/ruff check --fix sidecar tests bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis node_modules sidecar/overlay_static/vendor

bench: install-test  ## the MediaMTX callback benchmark (ratios against a bare Starlette baseline, same run)
	$(BIN)/python bench/callback.py
