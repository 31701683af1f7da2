# Two commands do all the set-up on a fresh machine:
#   make demo   run ftq's main job (the article's four steps) on the embedded default
#   make test   run the whole test suite (needs Postgres and Redis; see .ci/run)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test dev lint bench-validate bench-train bench-jobs bench-evals bench-webhooks bench-api

$(VENV)/.installed-base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed-base
	$(BIN)/pip install -q -e '.[dev,train]'
	touch $@

demo: $(VENV)/.installed-base
	$(BIN)/ftq demo

dev: $(VENV)/.installed-base
	$(BIN)/ftq dev

# The suite runs only on code that passes `make lint` (CI runs exactly `make test`).
# Integration tests mostly wait on real processes, so test files run side by side
# (TEST_WORKERS processes, one file per worker at a time: a file's private stack is
# started once); tests marked `serial` (they restart a shared service) run alone after.
# pytest exits 5 when it collected no test: that is a failure here, never a pass.
TEST_WORKERS ?= 4
test: lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not serial"; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; rc=1; fi; \
	$(BIN)/python -m pytest -m serial; serial=$$?; \
	if [ $$serial -eq 5 ]; then echo "pytest collected no serial tests" >&2; serial=1; fi; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi; exit $$serial

# Formatting and lint (ruff, pinned), types (mypy over service, api, workers and cli, as
# configured in pyproject.toml) and the architecture (import-linter contracts, same file).
lint: $(VENV)/.installed-test
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo

bench-validate: $(VENV)/.installed-test
	$(BIN)/python bench/validate.py

bench-train: $(VENV)/.installed-test
	$(BIN)/python bench/train.py

bench-jobs: $(VENV)/.installed-test
	$(BIN)/python bench/jobs.py

bench-evals: $(VENV)/.installed-test
	$(BIN)/python bench/evals.py

bench-webhooks: $(VENV)/.installed-test
	$(BIN)/python bench/webhooks.py

bench-api: $(VENV)/.installed-test
	$(BIN)/python bench/api.py
