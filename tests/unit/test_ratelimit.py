"""The Redis-shared RPM/TPM limiter: real Redis, fake or scaled clocks, real processes."""

from __future__ import annotations

import logging
from bisect import bisect_right

import pytest
import redis

from batchgen.llm.limits.budgets import (
    RateLimiter,
    RateLimitTimeout,
    all_limiter_stats,
    estimate_tokens,
    get_rate_limiter,
    key_fingerprint,
)

SECRET_KEY = "sk-test-DO-NOT-LEAK-1234567890abcdef"


class FakeClock:
    """A clock that only moves when someone sleeps: deterministic limiter arithmetic."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start
        self.on_sleep: list = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        for hook in self.on_sleep:
            hook()
        self.now += seconds


def make_limiter(redis_url: str, clock: FakeClock | None = None, *, rpm: int | None = 60,
                 tpm: int | None = None, api_key: str = SECRET_KEY,
                 provider: str = "openai") -> RateLimiter:
    if clock is None:
        return RateLimiter(provider, api_key, rpm, tpm)
    return RateLimiter(provider, api_key, rpm, tpm, clock=clock, sleep=clock.sleep)


def spend_burst(limiter: RateLimiter) -> None:
    """Take every slot that needs no wait, so the next acquire has to wait."""
    with pytest.raises(RateLimitTimeout):
        for _ in range(10_000):
            limiter.acquire(tokens=1, max_wait=0)


def max_in_window(times: list[float], window: float = 60.0,
                  weights: list[int] | None = None) -> int:
    """Most units in any half-open window (t - window, t], as a server counting it would."""
    order = sorted(range(len(times)), key=times.__getitem__)
    times = [times[i] for i in order]
    weights = [weights[i] for i in order] if weights else [1] * len(times)
    prefix = [0]
    for weight in weights:
        prefix.append(prefix[-1] + weight)
    best = 0
    for end, t in enumerate(times):
        start = bisect_right(times, t - window)
        best = max(best, prefix[end + 1] - prefix[start])
    return best


def test_a_tpm_limit_alone_caps_tokens_in_any_minute(redis_url: str,
                                                     redis_client: redis.Redis) -> None:
    clock = FakeClock()
    limiter = make_limiter(redis_url, clock, rpm=None, tpm=6000)
    sent, tokens = [], []
    for size in [400, 600, 500, 700, 300] * 40:  # prompt + max_tokens, as the LLM layer books
        limiter.acquire(tokens=size, max_wait=120)
        sent.append(clock.now)
        tokens.append(size)

    assert max_in_window(sent, weights=tokens) <= 6000
    minutes = (clock.now - 1_000_000.0) / 60
    assert sum(tokens) / minutes >= 0.8 * 6000  # the limit is reachable, not just respected
    assert not [key for key in redis_client.scan_iter() if key.endswith(b":rpm")]


def test_a_burst_from_idle_is_small_and_then_evenly_spaced(redis_url: str) -> None:
    clock = FakeClock()
    limiter = make_limiter(redis_url, clock, rpm=600)
    waits = [limiter.acquire(tokens=10, max_wait=60) for _ in range(100)]

    assert waits[:10] == [0.0] * 10  # one second's worth of the limit goes at once
    assert all(0.1 < wait < 0.11 for wait in waits[10:])  # then one every 60/573 s


def test_acquire_past_max_wait_raises_without_reserving(redis_url: str) -> None:
    clock = FakeClock()
    limiter = make_limiter(redis_url, clock, rpm=60)
    spend_burst(limiter)
    before = limiter.stats()

    with pytest.raises(RateLimitTimeout) as caught:
        limiter.acquire(tokens=1, max_wait=0.5)
    with pytest.raises(RateLimitTimeout) as again:
        limiter.acquire(tokens=1, max_wait=0.5)

    assert caught.value.needed == pytest.approx(again.value.needed)  # nothing was booked
    assert caught.value.needed > 0.5
    assert limiter.stats()["acquired"] == before["acquired"]
    assert limiter.stats()["timeouts"] == before["timeouts"] + 2
    assert limiter.acquire(tokens=1, max_wait=5) == pytest.approx(caught.value.needed)


def test_without_an_injected_clock_the_redis_server_keeps_time(redis_url: str) -> None:
    limiter = make_limiter(redis_url, rpm=180)  # 3 at once, then one every ~0.34 s
    spend_burst(limiter)

    with pytest.raises(RateLimitTimeout) as caught:
        limiter.acquire(tokens=1, max_wait=0)

    assert 0 < caught.value.needed <= 0.35
    assert limiter.stats()["acquired"] == 3


def test_penalize_blocks_every_process_until_retry_after(redis_url: str) -> None:
    clock = FakeClock()
    hit_429 = make_limiter(redis_url, clock, rpm=600)
    other_process = make_limiter(redis_url, clock, rpm=600)  # own Redis client, shared state
    start = clock.now

    hit_429.penalize(retry_after=30)

    with pytest.raises(RateLimitTimeout):
        other_process.acquire(tokens=1, max_wait=10)
    waited = other_process.acquire(tokens=1, max_wait=60)
    assert waited == pytest.approx(30, abs=0.01)
    assert clock.now >= start + 30
    assert other_process.stats()["penalties"] == 1


def test_a_penalty_during_a_booked_wait_makes_the_sleeper_wait_it_out(redis_url: str) -> None:
    clock = FakeClock()
    sleeper = make_limiter(redis_url, clock, rpm=60)
    hit_429 = make_limiter(redis_url, clock, rpm=60)
    spend_burst(sleeper)
    start = clock.now
    clock.on_sleep.append(lambda: hit_429.penalize(retry_after=20) if clock.now == start else 0)

    sleeper.acquire(tokens=1, max_wait=60)

    assert clock.now >= start + 20


def test_penalty_drains_the_burst_so_the_restart_is_paced(redis_url: str) -> None:
    clock = FakeClock()
    limiter = make_limiter(redis_url, clock, rpm=600)
    limiter.penalize(retry_after=5)
    waits = [limiter.acquire(tokens=1, max_wait=60) for _ in range(5)]

    assert waits[0] == pytest.approx(5, abs=0.01)
    assert all(0.1 < wait < 0.12 for wait in waits[1:])


def test_the_api_key_never_appears_in_redis_or_errors(redis_url: str,
                                                      redis_client: redis.Redis) -> None:
    clock = FakeClock()
    limiter = make_limiter(redis_url, clock, rpm=1, tpm=100)
    limiter.acquire(tokens=50, max_wait=1)
    limiter.penalize(retry_after=3)
    with pytest.raises(RateLimitTimeout) as caught:
        limiter.acquire(tokens=50, max_wait=0)

    keys = [key.decode() for key in redis_client.scan_iter()]
    assert keys and all(SECRET_KEY not in key for key in keys)
    assert any(key_fingerprint(SECRET_KEY) in key for key in keys)
    values = [str(redis_client.hgetall(key) if key.endswith(":stats") else redis_client.get(key))
              for key in keys]
    texts = [*values, str(caught.value), repr(limiter), str(limiter.stats())]
    assert not [text for text in texts if SECRET_KEY in text or "1234567890abcdef" in text]


def test_two_keys_of_one_provider_have_separate_limits(redis_url: str) -> None:
    clock = FakeClock()
    first = make_limiter(redis_url, clock, rpm=60, api_key="key-one")
    second = make_limiter(redis_url, clock, rpm=60, api_key="key-two")
    spend_burst(first)

    assert second.acquire(tokens=1, max_wait=0) == 0.0


def test_redis_down_lets_requests_through_with_one_warning(
        caplog: pytest.LogCaptureFixture, settings) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    limiter = RateLimiter("gemini", SECRET_KEY, 60, None)
    with caplog.at_level(logging.WARNING, logger="batchgen"):
        waits = [limiter.acquire(tokens=10, max_wait=1) for _ in range(200)]
        limiter.penalize(retry_after=0)

    assert waits == [0.0] * 200
    assert len(caplog.records) == 1
    assert SECRET_KEY not in caplog.text
    assert limiter.stats()["redis"] == "down"


def test_stats_of_every_limiter_are_readable_from_anywhere(redis_url: str) -> None:
    clock = FakeClock()
    make_limiter(redis_url, clock, rpm=60, provider="groq").acquire(tokens=1, max_wait=0)
    make_limiter(redis_url, clock, rpm=60, provider="openai").penalize(retry_after=1)

    rows = all_limiter_stats()

    assert [(row["provider"], row["acquired"], row["penalties"]) for row in rows] == [
        ("groq", 1, 0), ("openai", 0, 1)]


def test_one_limiter_per_budget_and_an_unlimited_one_without_any_limit(redis_url: str) -> None:
    groq = get_rate_limiter("groq", SECRET_KEY, 30, None, model="llama")

    assert groq is get_rate_limiter("groq", "another key of the account", 30, None, model="llama")
    assert groq.rpm.limit == 30 and groq.tpm is None
    # Nothing configured nor learned yet: no limit, but a limiter to learn and pause with.
    unlimited = get_rate_limiter("groq", SECRET_KEY, None, 0, model="other")
    assert unlimited.rpm is None and unlimited.tpm is None
    assert unlimited.acquire(tokens=100, max_wait=0.0) == 0.0


def test_a_key_scope_gives_each_key_its_own_limiter(redis_url: str) -> None:
    first = get_rate_limiter("groq", SECRET_KEY, 30, None, model="llama", scope="key")

    assert first is not get_rate_limiter("groq", "another key", 30, None, model="llama",
                                         scope="key")
    assert first.fingerprint == key_fingerprint(SECRET_KEY)


def test_estimate_tokens_is_about_a_quarter_of_the_length() -> None:
    assert estimate_tokens("") == 8
    assert estimate_tokens("x" * 400) == 108
    assert estimate_tokens("я" * 400) > estimate_tokens("x" * 400)  # Cyrillic costs more
