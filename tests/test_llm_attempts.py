"""batchgen.llm.attempts: the one loop that owns a request's tries, and the server's waits."""

from __future__ import annotations

from batchgen.llm import LLMClient

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
