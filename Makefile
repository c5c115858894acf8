# The two commands the README promises: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The instrumentation's tests run a second time on the newest SQLAlchemy 2.0.x, under the
# newest Python here (the main run is SQLAlchemy 2.1 on Python 3.11, the oldest supported).
COMPAT_PY ?= 3.13
COMPAT_VENV ?= .venv-sqlalchemy20
COMPAT_BIN := $(COMPAT_VENV)/bin
COMPAT_TESTS := tests/test_instrument_api.py tests/test_correctness.py tests/test_correctness_async.py \
	tests/test_pool_events.py tests/test_long_checkouts.py tests/test_close_reasons.py \
	tests/test_waits.py tests/test_pool_info.py tests/test_routes.py

.PHONY: demo test lint typecheck unit compat bench generate clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,servers,load]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/pool-exporter demo

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

# The tests run in passes. First the parallel pass: WORKERS processes (pytest-xdist), each
# taking a whole module at a time, so that a module-scoped fixture is made once (loadscope;
# not loadgroup, which pytest 9.2 breaks: pytest-xdist issue 1386), in the order
# tests/conftest.py gives: modules with slow tests first. Then the tests marked `serial`, one
# at a time in each of two lanes that share nothing but a machine they leave mostly idle:
# `replays` (pushes replayed on SQLite against a calibration replay) beside the rest (they take
# nearly all of the database's connections, or fork past Python's fork hooks), each in
# pytest's own process. `make test` runs the compatibility run in the second lane's place once
# it is done. MARKS narrows every run (MARKS="not root"); a run that MARKS leaves empty
# (pytest's exit status 5) is not a failure.
WORKERS ?= 4
MARKS ?=
and_marks = $(if $(MARKS), and ($(MARKS)))
side_by_side = $(MAKE) --no-print-directory --keep-going -j2 --output-sync=target

.PHONY: parallel serial-replays serial-rest
parallel: $(BIN)/.installed
	$(BIN)/pytest -n $(WORKERS) --dist loadscope --no-loadscope-reorder -m "not serial$(and_marks)" $(PYTEST_ARGS) || [ $$? -eq 5 ]

serial-replays: $(BIN)/.installed
	$(BIN)/pytest -m "serial and replays$(and_marks)" $(PYTEST_ARGS) || [ $$? -eq 5 ]

serial-rest: $(BIN)/.installed
	$(BIN)/pytest -m "serial and not replays$(and_marks)" $(PYTEST_ARGS) || [ $$? -eq 5 ]

unit: parallel
	$(side_by_side) serial-replays serial-rest

$(COMPAT_BIN)/.installed: pyproject.toml
	PYENV_VERSION=$(COMPAT_PY) python$(COMPAT_PY) -m venv $(COMPAT_VENV)  # PYENV_VERSION: for pyenv
	$(COMPAT_BIN)/python -m pip install -q --upgrade pip
	$(COMPAT_BIN)/python -m pip install -q -e '.[dev]' 'sqlalchemy[asyncio]>=2.0.40,<2.1'
	touch $@

compat: $(COMPAT_BIN)/.installed
	$(COMPAT_BIN)/python -c 'import sqlalchemy, sys; print("SQLAlchemy", sqlalchemy.__version__, "on Python", sys.version.split()[0])'
	$(COMPAT_BIN)/pytest -q $(COMPAT_TESTS)  # in one process: some fork past Python's hooks

# Both virtualenvs are made first: pip beside the replays would be measured by them.
test: lint typecheck $(COMPAT_BIN)/.installed parallel
	$(side_by_side) serial-replays serial-rest compat

bench: $(BIN)/.installed
	$(BIN)/python bench/overhead.py

generate: $(BIN)/.installed
	$(BIN)/pool-exporter alerts generate
	$(BIN)/pool-exporter dashboards generate
	$(BIN)/python -m tests.support.promtool_cases

clean:
	rm -rf $(VENV) $(COMPAT_VENV) .pytest_cache .mypy_cache .ruff_cache
