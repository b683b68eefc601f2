"""The rate limiter in the LLM request path: a 429's Retry-After waited out in real seconds."""

from __future__ import annotations

import itertools

import redis

from batchgen.llm import LLMBatchClient, LLMClient, config
from batchgen.llm.limits.budgets import get_rate_limiter
from tests.fakes import TEST_KEYS


def test_a_429_burst_pauses_the_key_then_the_request_succeeds(llm_env):
    fake = llm_env("openai", LLM_RPM_LIMIT=6000, LLM_MAX_RETRIES=3)
    fake.control(fault="429", fault_times=2, retry_after=1.0, record_arrivals=True)

    result = LLMClient().generate_detailed("please be patient")

    assert (result.ok, result.attempts) == (True, 3)
    assert fake.stats()["requests"]["openai"] == {"429": 2, "200": 1}
    arrivals = fake.stats()["arrivals"]
    # Retry-After: 1 was honoured before each retry, by the limiter (the SDKs never retry).
    assert all(later - earlier >= 0.9 for earlier, later in itertools.pairwise(arrivals))
    limiter = get_rate_limiter("openai", TEST_KEYS["openai"], 6000, None,
                               model=config.model_for("openai"))
    assert limiter.stats()["penalties"] == 2


def test_a_429_makes_every_worker_on_that_key_wait(llm_env):
    fake = llm_env("openai", LLM_RPM_LIMIT=6000, LLM_MAX_RETRIES=2)
    fake.control(fault="429", fault_times=1, retry_after=1.0, record_arrivals=True)
    LLMClient().generate_detailed("the first one is refused")  # penalizes, waits, succeeds
    penalized_at = fake.stats()["arrivals"][0]

    results = LLMBatchClient(max_workers=4).generate_batch_detailed(
        [f"after the penalty {i}" for i in range(4)])

    assert all(r.ok for r in results)
    assert min(fake.stats()["arrivals"][1:]) - penalized_at >= 0.9


def test_limiter_events_reach_the_metrics(llm_env, redis_url):
    fake = llm_env("openai", LLM_RPM_LIMIT=6000, LLM_MAX_RETRIES=1)
    fake.control(fault="429", fault_times=1, retry_after=1.0)

    LLMClient().generate_detailed("count me")

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    limited = client.hgetall("botplatform:metrics:llm_rate_limited_total")
    assert sum(map(float, limited.values())) == 1
    assert client.hgetall("botplatform:metrics:llm_ratelimit_wait_seconds")
    client.close()


def test_a_short_retry_after_is_waited_out_and_each_try_counted_once(llm_env):
    fake = llm_env("openai", LLM_MAX_RETRIES=2)
    fake.control(fault="429", fault_times=2, retry_after=0.2)

    result = LLMClient().generate_detailed("third time lucky")

    assert (result.ok, result.attempts, result.retry_after_s) == (True, 3, None)
    assert fake.stats()["requests"]["openai"] == {"429": 2, "200": 1}
