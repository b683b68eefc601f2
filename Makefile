# The two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Runtime and development requirements (the Docker image installs only the first).
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)

TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
TEST_POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/test

.PHONY: bootstrap demo test test-sqlite test-postgres lint bench

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $(STAMP)

bootstrap: $(STAMP)

# make demo PORT=8010 (a port in use is refused); DEMO_ARGS=--keep-db keeps the last run's data.
PORT ?= 8000
demo: bootstrap
	$(BIN)/python scripts/demo.py --port $(PORT) $(DEMO_ARGS)

# Pass one: everything on SQLite (the default database). Pass two: the
# concurrency tests on PostgreSQL. Both use the Redis at TEST_REDIS_URL.
test: test-sqlite test-postgres

test-sqlite: bootstrap
	REDIS_URL=$(TEST_REDIS_URL) DATABASE_URL= $(BIN)/pytest -m "not postgres"

test-postgres: bootstrap
	REDIS_URL=$(TEST_REDIS_URL) DATABASE_URL=$(TEST_POSTGRES_URL) $(BIN)/pytest -m postgres

lint: bootstrap
	$(BIN)/ruff check .
	$(BIN)/lint-imports

bench: bootstrap
	$(BIN)/python -m bench.run
