# One entry point for people and CI. `make up` and `make test` each install what they need.
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install up down status test test-sqlite test-postgres check lint typecheck imports docs bench clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh scripts/debian-packages.txt
	bash scripts/install.sh
	touch $(STAMP)

up: install            ## bring up a one-machine cloud (controller in the background)
	$(BIN)/nubes up --detach

down: install
	$(BIN)/nubes down

status: install
	$(BIN)/nubes status

test: install          ## the whole suite, on SQLite and on PostgreSQL
	bash scripts/test.sh

test-sqlite: install
	$(BIN)/pytest -q

test-postgres: install
	bash scripts/test.sh postgres

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

imports: install
	$(BIN)/lint-imports

docs: install          ## regenerate the generated docs (tests check they are current)
	$(BIN)/python -m nubes.domain.states > docs/states.md
	$(BIN)/python -m nubes.config > docs/configuration.md
	$(BIN)/python -m nubes.domain.errors > docs/errors.md

check: lint typecheck imports test

bench: install
	$(BIN)/python bench/identity.py
	$(BIN)/python bench/boot.py
	$(BIN)/python bench/scheduler.py
	$(BIN)/python bench/ipam.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
