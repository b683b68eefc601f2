"""batchgen.shared: one Redis client per process, one prefix, one outage mode."""

from __future__ import annotations

import logging

import pytest
import redis

from batchgen import shared


@pytest.fixture(autouse=True)
def _fresh_shared_state():
    shared.reset()
    yield
    shared.reset()


def test_every_key_carries_the_one_prefix() -> None:
    assert shared.key("circuit", "openai_api") == "botplatform:circuit:openai_api"


def test_one_client_per_url_and_process(redis_url: str) -> None:
    assert shared.connection(redis_url) is shared.connection(redis_url)
    shared.connection(redis_url).set(shared.key("t"), "x")
    assert shared.connection(redis_url).get(shared.key("t")) == "x"  # strings decoded


def test_attempt_returns_the_default_during_an_outage_and_logs_it_once(
        settings, caplog: pytest.LogCaptureFixture) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    calls = []

    def operation(client: redis.Redis) -> str:
        calls.append(1)
        return client.get("x")

    with caplog.at_level(logging.WARNING, logger="batchgen.shared"):
        assert shared.attempt(operation, default="fallback") == "fallback"
        assert shared.attempt(operation, default="fallback") == "fallback"
    assert len(calls) == 1  # the second call did not wait on a dead Redis again
    assert not shared.available()
    assert sum("Redis unreachable" in r.message for r in caplog.records) == 1
    assert "127.0.0.1:1" not in caplog.text  # no URL (it may carry a password)


def test_attempt_resumes_once_redis_answers(settings, redis_url: str) -> None:
    shared.mark_down(redis.ConnectionError("boom"), clock=lambda: 0.0)
    assert shared.available(clock=lambda: 0.0) is False
    assert shared.available(clock=lambda: shared.RETRY_SECONDS + 1)
    shared.reset()
    settings.REDIS_URL = redis_url
    assert shared.attempt(lambda r: r.ping(), default=False) is True
    assert shared.available()
