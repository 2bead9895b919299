# fanout: `make run` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
ARGS   ?=

.PHONY: run test check lint bench clean venv sysdeps lock locked

# Every install comes from uv.lock (hashes included) through uv, itself pinned by hash in
# requirements-uv.txt; a machine with only python3 gets uv from PyPI into .venv first.
UV       := $(VENV)/bin/uv
UV_SYNC  := UV_PYTHON_DOWNLOADS=never $(UV) sync --locked --quiet

venv: $(UV)

$(UV): requirements-uv.txt
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	@[ -x $(VENV)/bin/pip ] || $(PY) -m ensurepip --upgrade >/dev/null
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements-uv.txt
	@# pip and setuptools came with the venv, not from the lock: uv installs from here on.
	$(UV) pip uninstall --quiet --python $(PY) pip setuptools
	@touch $(UV)

## lock: re-resolve uv.lock to the newest versions pyproject.toml allows (uv stays at its pin)
lock: $(UV)
	$(UV) lock --upgrade
	$(UV) export --locked --quiet --only-group tools --no-emit-project --format requirements-txt \
		--output-file requirements-uv.txt

## locked: the packages in .venv are exactly the lock's (uv's own check, then an independent one)
locked: $(UV)
	UV_PYTHON_DOWNLOADS=never $(UV) sync --locked --check --quiet $(SYNC_EXTRAS)
	$(PY) -m tests.lock_matches $(SYNC_EXTRAS)

# The tests drive the official openai npm package too (tests/node, pinned by its lock file).
NODE_STAMP := tests/node/node_modules/.installed

$(NODE_STAMP): tests/node/package.json tests/node/package-lock.json
	@command -v npm >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	@touch $(NODE_STAMP)

# The browser tests (tests/browser) drive Debian's Chromium, never a downloaded browser;
# the Redis tests (tests/redis) start Debian's redis-server on a free loopback port.
CHROMIUM := /usr/bin/chromium
SYSPKGS  := $(if $(wildcard $(CHROMIUM)),,chromium) \
	$(if $(shell command -v redis-server 2>/dev/null),,redis-server)

## sysdeps: install Debian's chromium and redis-server for the tests when missing (as root)
sysdeps:
	@if [ -n "$(strip $(SYSPKGS))" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSPKGS); \
		else \
			echo "warning: missing $(strip $(SYSPKGS)); install them from Debian (their tests skip, or fail under CI)"; \
		fi; \
	fi

## run: start the server (demo mode on the built-in mock upstream when no OPENAI_API_KEY)
run: $(UV)
	$(UV_SYNC) --inexact
	$(PY) -m server serve $(ARGS)

## test: lint, type-check, then every test with coverage (server/core must be 100% covered)
test: $(UV) $(NODE_STAMP) sysdeps
	$(UV_SYNC) --extra test
	$(MAKE) --no-print-directory locked SYNC_EXTRAS="--extra test"
	$(MAKE) --no-print-directory check
	$(PY) -m pytest --cov=server --cov-branch --cov-report=term -q $(ARGS)
	$(PY) -m coverage report --include='server/core/*' --fail-under=100 --show-missing

## check: import-linter (imports go one way), ruff (lint + format), mypy --strict (server and tests)
check: $(UV)
	$(UV_SYNC) --inexact --extra test
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/ruff check server tests bench
	$(VENV)/bin/ruff format --check server tests bench
	$(VENV)/bin/mypy

## bench: run the benchmarks (the bench extra) and rewrite docs/benchmarks.md
bench: $(UV)
	$(UV_SYNC) --extra test --extra bench
	$(PY) -m bench.run $(ARGS)
	$(PY) -m bench.scale_out $(SCALE_OUT_ARGS)
	$(PY) -m bench.long_line

clean:
	rm -rf $(VENV) tests/node/node_modules .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov *.egg-info
