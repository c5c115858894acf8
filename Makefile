# The two commands the README promises: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck unit bench generate check-generated clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/pool-exporter demo

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

unit: $(BIN)/.installed
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck unit

bench: $(BIN)/.installed
	$(BIN)/python bench/overhead.py

generate: $(BIN)/.installed
	$(BIN)/pool-exporter alerts generate
	$(BIN)/pool-exporter dashboards generate

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
