"""Shared fixtures: real Redis and PostgreSQL, never skipped under CI=true."""

from __future__ import annotations

import os

import pytest
import redis
from django.conf import settings

# The fake servers', pipeline, browser and live demo fixtures, for every test module.
pytest_plugins = ["tests.fakes", "tests.pipeline_support", "tests.browser_support",
                  "tests.demo_support"]


def _need_service(what: str, error: Exception) -> None:
    message = f"{what} is not reachable: {error}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: a missing service is a failure)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _fresh_shared_state() -> None:
    """Every test starts with no remembered Redis outage and no cached breaker, limiter or
    key ring (one reset: ``batchgen.state.shared`` forgets everything built on top of it)."""
    from batchgen.state import shared

    shared.reset()
    yield
    shared.reset()


@pytest.fixture
def redis_url() -> str:
    """The test Redis (REDIS_URL, db 15 under `make test`), flushed before the test."""
    url = settings.REDIS_URL
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        _need_service(f"Redis at {url}", exc)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def redis_client(redis_url: str) -> redis.Redis:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """PostgreSQL tests run only when the default database is PostgreSQL. ``serial`` tests
    time real seconds, so they belong to tests/integration/ (the Makefile's serial passes
    collect only that tier)."""
    on_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    skip = pytest.mark.skip(reason="needs DATABASE_URL=postgres://… (make test's second pass)")
    for item in items:
        if "serial" in item.keywords and not item.nodeid.startswith("tests/integration/"):
            raise pytest.UsageError(f"{item.nodeid} is marked serial: move it to "
                                    "tests/integration/, where `make test` runs serial tests")
        if "postgres" in item.keywords and not on_postgres:
            item.add_marker(skip)
    if on_postgres and any("postgres" in item.keywords for item in items):
        _check_postgres()


def _check_postgres() -> None:
    import psycopg

    db = settings.DATABASES["default"]
    try:
        psycopg.connect(host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"],
                        password=db["PASSWORD"] or None, dbname=db["NAME"],
                        connect_timeout=3).close()
    except psycopg.Error as exc:
        message = f"PostgreSQL at {db['HOST']}:{db['PORT']} is not reachable: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            raise pytest.UsageError(f"{message} (CI=true: a missing service is a failure)") from exc
        pytest.exit(f"skipping the PostgreSQL pass: {message}", returncode=0)
