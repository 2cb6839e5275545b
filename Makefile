# lambdagraph — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
# pytest workers: the suite is I/O bound on moto; two cores on CI.
PYTEST_WORKERS ?= auto

.PHONY: install run test lint bench synth deploy destroy clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python -m infra.local

test: install
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup

lint: install
	$(BIN)/ruff check functions graphs infra tests bench
	$(BIN)/ruff format --check functions graphs infra tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench

synth: install
	@echo "synth lands with the AWS deployment issue"; exit 1

clean:
	rm -rf $(VENV) cdk.out .pytest_cache .mypy_cache .ruff_cache
