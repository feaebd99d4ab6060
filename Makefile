# The two commands of the README:
#   make test   — install what is missing, lint, type-check, run the whole test suite
#   make demo   — run the stack locally (see README; arrives with the deployment issue)
.PHONY: test deps lint pytest format demo migrate

PYTEST_ARGS ?=

test: deps lint pytest

deps:
	@./scripts/ensure_deps.sh

lint:
	.venv/bin/ruff check .
	.venv/bin/mypy --strict .

pytest:
	.venv/bin/python -m pytest $(PYTEST_ARGS)

format:
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

demo: deps
	.venv/bin/python scripts/demo.py

migrate: deps
	.venv/bin/python run_migrations.py
