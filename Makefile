# fanout: `make run` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: run test check lint bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

## run: start the server (demo mode on the built-in mock upstream when no OPENAI_API_KEY)
run: $(STAMP)
	$(PY) -m server serve $(ARGS)

## test: lint, type-check, then every test with coverage (server/core must be 100% covered)
test: $(STAMP)
	$(MAKE) --no-print-directory check
	$(PY) -m pytest --cov=server --cov-branch --cov-report=term -q $(ARGS)
	$(PY) -m coverage report --include='server/core/*' --fail-under=100 --show-missing

## check: ruff (lint + format) and mypy --strict
check: $(STAMP)
	$(VENV)/bin/ruff check server tests bench
	$(VENV)/bin/ruff format --check server tests bench
	$(VENV)/bin/mypy server

## bench: run the benchmarks and rewrite docs/benchmarks.md
bench: $(STAMP)
	$(PY) -m bench.run $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov *.egg-info
