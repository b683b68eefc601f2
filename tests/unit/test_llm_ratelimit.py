"""The shared rate limiter in the LLM request path, against the fake provider."""

from __future__ import annotations

from batchgen.llm import LLMBatchClient, LLMClient
from batchgen.llm.limits.budgets import all_limiter_stats


def test_a_wait_beyond_the_budget_after_a_429_returns_rate_limit_wait(llm_env):
    fake = llm_env("openai", LLM_RPM_LIMIT=6000, LLM_MAX_RETRIES=3,
                   LLM_RATE_LIMIT_MAX_WAIT=0.5)
    fake.control(fault="429", fault_times=1, retry_after=5.0)

    result = LLMClient().generate_detailed("retry-after longer than we can wait")

    assert (result.error_kind, result.retryable, result.attempts) == ("rate_limit_wait", True, 1)
    assert fake.stats()["total"] == 1


def test_without_any_limit_known_no_request_is_held_back(llm_env):
    llm_env("openai")

    assert all(LLMBatchClient(max_workers=4).generate_batch(
        [f"unlimited {i}" for i in range(8)]))

    [stats] = all_limiter_stats()  # booked, to learn from the replies, but never waited
    assert (stats["acquired"], stats["waits"], stats["timeouts"]) == (8, 0, 0)


def test_each_request_books_its_prompt_estimate_plus_max_tokens(llm_env, redis_url):
    llm_env("openai", LLM_TPM_LIMIT=2000, LLM_RATE_LIMIT_MAX_WAIT=0.0)
    client = LLMClient()

    # The token burst is 15% of 2000 = 300: one request of ~106 (system prompt + prompt)
    # + 100 tokens fits, a second would need 412 at once and has to wait.
    first = client.generate_detailed("x" * 100, max_tokens=100)
    second = client.generate_detailed("x" * 100, max_tokens=100)

    assert first.ok and second.error_kind == "rate_limit_wait"
    [stats] = all_limiter_stats()
    assert (stats["provider"], stats["acquired"], stats["timeouts"]) == ("openai", 1, 1)
