# The two commands of the README:
#   make test   — install what is missing, lint, type-check, run the whole test suite
#   make demo   — run the whole stack locally with simulated feeds (README "Try it")
.PHONY: test deps demo-deps lint pytest format demo migrate

PYTEST_ARGS ?=
# pytest-xdist workers: one per CPU (each starts its own throwaway PostgreSQL cluster); whole
# test files go to one worker (--dist loadfile), so module fixtures are built once.
# `make pytest PYTEST_WORKERS=0` runs everything in one process.
PYTEST_WORKERS ?= auto
# Extra flags for scripts/demo.py, e.g. make demo DEMO_ARGS="--devices 20 --api-port 8899"
DEMO_ARGS ?=

test: deps lint pytest

deps:
	@./scripts/ensure_deps.sh

lint:
	.venv/bin/ruff check .
	.venv/bin/mypy --strict .

pytest:
	.venv/bin/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

format:
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

# Only the runtime dependencies and the `demo` group (no test toolchain). `exec`: the demo is
# make's own child, so the SIGTERM make forwards reaches it; scripts/demo.py also stops when
# make itself is interrupted (make does not forward SIGINT) or goes away.
demo-deps:
	@./scripts/ensure_deps.sh demo

demo: demo-deps
	@exec .venv/bin/python scripts/demo.py $(DEMO_ARGS)

migrate: deps
	.venv/bin/python run_migrations.py
