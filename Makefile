# The two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Runtime and development requirements (the Docker image installs only the first).
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)

TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
TEST_POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/test

.PHONY: bootstrap demo test test-fast test-sqlite test-postgres fuzz-doors lint bench

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

# Three tiers: tests/unit (no process, no sleep), tests/integration (starts processes),
# tests/browser (chromium). `make test` runs them all, in two passes: everything on SQLite
# (the default database), then the concurrency tests on PostgreSQL. Tests run on every core
# (pytest-xdist, one Redis database per worker, counted down from TEST_REDIS_URL's), except
# those marked `serial`: they time real seconds, so they run alone afterwards. `--dist loadgroup`
# hands each test to whichever worker is free; the tests on the one live demo go together, first
# (tests/demo_support.py).
XDIST ?= -n auto --maxprocesses=4 --dist loadgroup
PYTEST_SQLITE := REDIS_URL=$(TEST_REDIS_URL) DATABASE_URL= $(BIN)/pytest
PYTEST_POSTGRES := REDIS_URL=$(TEST_REDIS_URL) DATABASE_URL=$(TEST_POSTGRES_URL) $(BIN)/pytest
# pytest exits with 5 when a marker selects no test: no failure here.
NONE_IS_OK := || [ $$? -eq 5 ]

test: test-sqlite test-postgres

# The unit tier alone, in under a minute: run it before every commit.
test-fast: bootstrap
	$(PYTEST_SQLITE) $(XDIST) -m "not postgres" tests/unit

# WITH_LINT=1 (CI): `make lint` runs beside the serial tests, which wait on real seconds and
# leave a core idle; its failure fails the target like a test's.
test-sqlite: bootstrap
	$(PYTEST_SQLITE) $(XDIST) -m "not postgres and not serial"
	@if [ -n "$(WITH_LINT)" ]; then $(MAKE) --no-print-directory lint & lint=$$!; fi; \
	$(PYTEST_SQLITE) -m "not postgres and serial" tests/integration $(NONE_IS_OK); status=$$?; \
	if [ -n "$(WITH_LINT)" ]; then wait $$lint || status=1; fi; exit $$status

test-postgres: bootstrap
	$(PYTEST_POSTGRES) $(XDIST) -m "postgres and not serial"
	$(PYTEST_POSTGRES) -m "postgres and serial" tests/integration $(NONE_IS_OK)

# The doors fuzz at the issue's target counts, on PostgreSQL (whose refusals of NUL made the
# 500s): 10,000 webhook bodies and 333 inputs at each of ten admin and dashboard doors, the
# answers printed per door (by status code; the webhook's also by outcome). A few minutes.
FUZZ_EXAMPLES ?= 10000
fuzz-doors: bootstrap
	DOORS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PYTEST_POSTGRES) -p no:xdist -s -q -m postgres \
		tests/unit/test_doors_fuzz.py

lint: bootstrap
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

bench: bootstrap
	$(BIN)/python -m bench.run
