"""batchgen.llm.attempts: the one loop that owns a request's tries, and the server's waits."""

from __future__ import annotations

import time

import pytest

from batchgen.llm import LLMClient
from batchgen.llm.errors import retry_after_seconds
from batchgen.llm.limits.budgets import key_fingerprint
from batchgen.state import shared
from batchgen.state.breakers import get_circuit_breaker, open_until

KEYS = ["sk-first-key-AAAA-SECRET", "sk-second-key-BBBB-SECRET"]


def test_attempts_are_the_requests_the_server_saw_across_keys_and_retries(llm_env):
    fake = llm_env("openai", OPENAI_API_KEYS=list(KEYS), OPENAI_API_KEY="", LLM_MAX_RETRIES=2)
    fake.control(key_faults={KEYS[0]: "401"}, retry_after_ms=1)

    results = [LLMClient().generate_detailed(f"count me [[fault:500x1]] {i}") for i in range(2)]

    seen = sum(sum(by_status.values()) for by_status in fake.stats()["by_key"].values())
    assert all(result.ok for result in results)
    assert sum(result.attempts for result in results) == seen


def test_a_permanent_error_is_not_retried(llm_env):
    fake = llm_env("openai", LLM_MAX_RETRIES=3)

    result = LLMClient().generate_detailed("bad input [[fault:400]]")

    assert (result.error_kind, result.attempts, result.retryable) == ("bad_request", 1, False)
    assert fake.stats()["requests"]["openai"] == {"400": 1}


def test_a_long_retry_after_is_not_retried_early_but_comes_back_as_a_wait(llm_env):
    fake = llm_env("openai", LLM_MAX_RETRIES=2)
    fake.control(fault="429", fault_times=1, retry_after=120)

    result = LLMClient().generate_detailed("please wait for me")

    # Before: the 120 s pause was replaced by a 0.45 s back-off and the prompt retried.
    assert fake.stats()["requests"]["openai"] == {"429": 1}
    assert (result.ok, result.error_kind, result.attempts) == (False, "rate_limit_wait", 1)
    assert result.retry_after_s == pytest.approx(120)
    assert result.retryable  # the pipeline defers it without spending an attempt
    assert "120s" in result.error_message


def test_a_retry_after_beyond_the_limiter_wait_is_a_wait_too(llm_env):
    fake = llm_env("gemini", LLM_MAX_RETRIES=2, LLM_RPM_LIMIT=6000,
                   LLM_RATE_LIMIT_MAX_WAIT=10)
    fake.control(fault="429", fault_times=1, retry_after=45)

    result = LLMClient().generate_detailed("please wait for me")

    assert fake.stats()["requests"]["gemini"] == {"429": 1}
    assert (result.error_kind, result.retry_after_s) == ("rate_limit_wait", pytest.approx(45))


def test_a_long_retry_after_on_the_last_try_still_says_how_long(llm_env):
    fake = llm_env("openai", LLM_MAX_RETRIES=0)
    fake.control(fault="429", fault_times=1, retry_after=600)

    result = LLMClient().generate_detailed("please wait for me")

    assert (result.error_kind, result.retry_after_s) == ("rate_limit_wait", pytest.approx(600))


def test_an_open_circuit_says_when_it_half_opens(llm_env, settings):
    llm_env("groq")
    breaker = get_circuit_breaker("groq_api")
    assert open_until("groq") is None
    for _ in range(settings.LLM_CIRCUIT_BREAKER_THRESHOLD):
        breaker.before_call()
        breaker.record_failure()

    result = LLMClient().generate_detailed("anyone there?")

    cooldown = settings.LLM_CIRCUIT_BREAKER_TIMEOUT
    assert (result.error_kind, result.attempts) == ("circuit_open", 0)
    assert result.retry_after_s == pytest.approx(cooldown, abs=5)
    assert open_until("groq") == pytest.approx(time.time() + cooldown, abs=5)


@pytest.mark.parametrize(("headers", "seconds"), [
    ({"retry-after": "7200"}, 7200.0),  # any length: the caller defers that long
    ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
    ({"retry-after": "Thu, 01 Jan 2026 00:02:00 GMT"}, 120.0),
    ({"retry-after": "soon"}, None),
    ({"retry-after": "nan"}, None),
    ({}, None),
])
def test_retry_after_headers_are_read_in_seconds_or_as_a_date(headers, seconds):
    assert retry_after_seconds(headers, now=lambda: 1767225600.0) == seconds


def test_when_every_key_has_its_circuit_open_the_first_to_half_open_says_when(llm_env):
    keys = ["sk-first-key-AAAA-SECRET", "sk-second-key-BBBB-SECRET"]
    fake = llm_env("openai", OPENAI_API_KEYS=keys, OPENAI_API_KEY="")
    for key, opened_ago in zip(keys, (0, 100), strict=True):
        breaker = get_circuit_breaker(f"openai_api:{key_fingerprint(key)}")
        for _ in range(breaker.threshold):
            breaker.before_call()
            breaker.record_failure()
        shared.connection().hset(shared.key("circuit", breaker.name), "opened_at",
                                 repr(time.time() - opened_ago))

    result = LLMClient().generate_detailed("no key left")

    assert (result.error_kind, result.attempts) == ("circuit_open", 0)
    assert "every openai key in rotation" in result.error_message
    cooldown = get_circuit_breaker("openai_api").cooldown
    assert result.retry_after_s == pytest.approx(cooldown - 100, abs=5)
    assert fake.stats()["total"] == 0
