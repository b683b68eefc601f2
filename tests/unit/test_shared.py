"""batchgen.state.shared: one Redis client per process, one prefix, one outage mode."""

from __future__ import annotations

import logging

import pytest
import redis

from batchgen.state import shared


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

    with caplog.at_level(logging.WARNING, logger="batchgen.state.shared"):
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


def test_a_script_runs_on_any_client_and_survives_a_script_flush(redis_url: str) -> None:
    incr = shared.Script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    client = shared.connection(redis_url)

    assert incr(client, [shared.key("n")], [2]) == 2
    client.script_flush()  # a restarted Redis has forgotten every script
    assert incr(client, [shared.key("n")], [3]) == 5


def test_reset_forgets_every_cache_built_on_shared_state(redis_url: str) -> None:
    from batchgen.llm.limits.budgets import get_rate_limiter
    from batchgen.state.breakers import get_circuit_breaker

    breaker = get_circuit_breaker("openai_api")
    limiter = get_rate_limiter("openai", "sk-test", 60, None)

    shared.reset()

    assert get_circuit_breaker("openai_api") is not breaker
    assert get_rate_limiter("openai", "sk-test", 60, None) is not limiter
