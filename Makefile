# Everything runs from the project's own virtual environment, created on demand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo demo-clean test test-fast check format lint types bench bench-quick chaos flower up down clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/apexsync demo

demo-clean:
	rm -rf .state/demo

test: $(STAMP)
	$(BIN)/pytest -q

test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not processes and not slow"

format: $(STAMP)
	$(BIN)/ruff format .

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

types: $(STAMP)
	$(BIN)/mypy

check: lint types test

bench: $(STAMP)
	$(BIN)/python -m tests.bench

bench-quick: $(STAMP)
	$(BIN)/python -m tests.bench --quick

chaos: $(STAMP)
	$(BIN)/python -m tests.chaos

flower: $(STAMP)
	$(BIN)/apexsync flower --address 127.0.0.1 --port 5555

up:
	docker compose up -d

down:
	docker compose down

clean:
	rm -rf $(VENV) .state .pytest_cache .mypy_cache .ruff_cache
