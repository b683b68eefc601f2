"""The shared circuit breaker: real Redis, two processes, an injected clock."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import pytest

from batchgen.fakes.ports import free_port
from batchgen.state import shared
from batchgen.state.breakers import (
    CircuitBreaker,
    CircuitOpenError,
    get_circuit_breaker,
    get_circuit_breaker_stats,
)


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def _fresh_breakers() -> None:
    shared.reset()
    yield
    shared.reset()


@pytest.fixture(params=["redis", "memory"])
def make_breaker(request: pytest.FixtureRequest, redis_url: str,
                 settings) -> Callable[..., CircuitBreaker]:
    """Breakers on the real Redis, or on the in-memory fallback (Redis at an unused port)."""
    if request.param == "memory":
        settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"

    def make(clock: FakeClock, **kwargs: object) -> CircuitBreaker:
        kwargs.setdefault("threshold", 3)
        kwargs.setdefault("cooldown", 120.0)
        return CircuitBreaker("test_api", clock=clock, **kwargs)

    return make


def make_open(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.threshold):
        breaker.before_call()
        breaker.record_failure()


def passes(breaker: CircuitBreaker) -> bool:
    try:
        breaker.before_call()
    except CircuitOpenError:
        return False
    return True


def passes_in_another_thread(breaker: CircuitBreaker) -> bool:
    outcome: list[bool] = []
    thread = threading.Thread(target=lambda: outcome.append(passes(breaker)))
    thread.start()
    thread.join()
    return outcome[0]


def test_an_open_circuit_fails_fast_with_the_time_left(make_breaker: Callable) -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    make_open(breaker)
    clock.advance(27)

    with pytest.raises(CircuitOpenError) as caught:
        breaker.before_call()

    assert caught.value.name == "test_api"
    assert caught.value.retry_after == pytest.approx(93)
    assert str(caught.value) == "circuit test_api is open; retry in 93s"


def test_successes_reset_the_consecutive_failure_count(make_breaker: Callable) -> None:
    breaker = make_breaker(FakeClock())
    for _ in range(4):
        breaker.before_call()
        breaker.record_failure()
        breaker.before_call()
        breaker.record_success()

    assert breaker.get_state()["state"] == "closed"
    assert breaker.get_state()["failures"] == 0


def test_after_the_cooldown_exactly_one_of_many_threads_probes(make_breaker: Callable) -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    make_open(breaker)
    clock.advance(120)
    barrier = threading.Barrier(40)
    outcomes: list[bool] = []

    def call() -> None:
        barrier.wait()
        outcomes.append(passes(breaker))

    threads = [threading.Thread(target=call) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outcomes.count(True) == 1
    assert breaker.get_state()["state"] == "half_open"


def test_a_successful_probe_closes_the_circuit(make_breaker: Callable) -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    make_open(breaker)
    clock.advance(121)

    assert passes(breaker)
    breaker.record_success()

    assert breaker.get_state()["state"] == "closed"
    assert breaker.get_state()["failures"] == 0
    assert all(passes(breaker) for _ in range(5))


def test_a_failed_probe_reopens_for_a_new_cooldown(make_breaker: Callable) -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    make_open(breaker)
    clock.advance(121)

    assert passes(breaker)
    breaker.record_failure()

    state = breaker.get_state()
    assert state["state"] == "open"
    assert state["retry_after"] == pytest.approx(120)
    assert not passes(breaker)


def test_replies_from_other_callers_do_not_decide_the_probe(make_breaker: Callable) -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    make_open(breaker)
    clock.advance(121)
    assert passes_in_another_thread(breaker)

    breaker.record_success()  # a late reply of a call started before the circuit opened
    breaker.record_failure()

    assert breaker.get_state()["state"] == "half_open"


def test_ignored_outcomes_do_not_count(make_breaker: Callable) -> None:
    breaker = make_breaker(FakeClock())
    for _ in range(10):
        breaker.before_call()
        breaker.record_ignored()

    assert breaker.get_state()["state"] == "closed"
    assert breaker.get_state()["failures"] == 0


def test_an_ignored_probe_lets_another_caller_probe(make_breaker: Callable) -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    make_open(breaker)
    clock.advance(121)

    assert passes(breaker)
    assert not passes_in_another_thread(breaker)
    breaker.record_ignored()  # e.g. the probe's prompt was refused with a 400

    assert passes_in_another_thread(breaker)


def test_a_probe_that_never_reports_expires(make_breaker: Callable) -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, probe_ttl=30.0)
    make_open(breaker)
    clock.advance(121)
    assert passes(breaker)  # ... and this caller's process dies

    clock.advance(10)
    assert not passes(breaker)
    clock.advance(21)
    assert passes(breaker)


def test_stats_have_the_documented_shape(redis_url: str, settings: object) -> None:
    settings.REDIS_URL = redis_url
    get_circuit_breaker("groq_api").before_call()
    get_circuit_breaker("groq_api").record_failure()

    stats = get_circuit_breaker_stats("groq_api")

    assert stats == {
        "name": "groq_api",
        "state": "closed",
        "failures": 1,
        "retry_after": None,
        "threshold": settings.LLM_CIRCUIT_BREAKER_THRESHOLD,
        "cooldown": settings.LLM_CIRCUIT_BREAKER_TIMEOUT,
        "opened_at": None,
        "backend": "redis",
    }
    assert get_circuit_breaker("groq_api") is get_circuit_breaker("groq_api")


def test_open_stats_give_the_time_left(redis_url: str) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("gemini_api", threshold=2, cooldown=60, clock=clock)
    make_open(breaker)
    clock.advance(15)

    stats = breaker.get_state()

    assert (stats["state"], stats["failures"], stats["retry_after"]) == ("open", 2, 45)
    assert stats["opened_at"] == clock.now - 15


def test_without_redis_it_keeps_state_in_memory_and_warns_once(
    caplog: pytest.LogCaptureFixture, settings,
) -> None:
    caplog.set_level(logging.WARNING, logger="batchgen")
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    openai = CircuitBreaker("openai_api", threshold=2, clock=FakeClock())
    gemini = CircuitBreaker("gemini_api", threshold=2, clock=FakeClock())

    make_open(openai)
    gemini.before_call()

    assert openai.get_state()["state"] == "open"
    assert openai.get_state()["backend"] == "memory"
    assert gemini.get_state()["state"] == "closed"
    warnings = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(warnings) == 1
    assert "per-process" in warnings[0].getMessage()


def test_when_redis_answers_again_the_breaker_goes_back_to_the_shared_state(
        redis_url: str, settings) -> None:
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    breaker = CircuitBreaker("openai_api", threshold=2, clock=FakeClock())
    make_open(breaker)
    assert breaker.get_state()["backend"] == "memory"

    settings.REDIS_URL = redis_url
    shared.mark_up()  # the outage is over; the next call reaches Redis

    state = breaker.get_state()
    assert (state["backend"], state["state"]) == ("redis", "closed")
    assert passes(breaker)  # what this process learnt alone was dropped
