"""The shared rate limiter in the LLM request path, against the fake provider."""

from __future__ import annotations

import multiprocessing
import time
from bisect import bisect_right

import pytest

from batchgen.llm import LLMBatchClient
from batchgen.llm.limits.budgets import Budget

# Counted and timed in real seconds: alone, after the parallel part.
pytestmark = pytest.mark.serial

RPM = 600
THREADS_PER_PROCESS = 4


def max_in_window(times: list[float], window: float) -> int:
    """Most arrivals in any window (t - window, t], as a server counting them would."""
    times = sorted(times)
    return max(i + 1 - bisect_right(times, t - window) for i, t in enumerate(times))


def _worker(prompts: list[str], results: multiprocessing.Queue) -> None:
    """One forked 'worker machine' (settings come from the parent test)."""
    client = LLMBatchClient(max_workers=THREADS_PER_PROCESS)
    results.put([(r.ok, r.error_kind) for r in client.generate_many_detailed(prompts)])


def run_in_processes(count: int, per_process: int) -> list[tuple[bool, str | None]]:
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [context.Process(target=_worker, args=(
        [f"process {n} prompt {i}" for i in range(per_process)], results))
        for n in range(count)]
    for worker in workers:
        worker.start()
    outcomes = [outcome for _ in workers for outcome in results.get(timeout=60)]
    for worker in workers:
        worker.join(timeout=10)
        assert worker.exitcode == 0
    return outcomes


def test_two_processes_share_one_limit_and_the_fake_never_sees_more(llm_env):
    fake = llm_env("groq", GROQ_RPM_LIMIT=RPM)
    fake.control(rpm=RPM, rpm_window=60.0, record_arrivals=True)

    outcomes = run_in_processes(2, 40)

    assert outcomes == [(True, None)] * 80
    stats = fake.stats()
    assert stats["requests"]["groq"] == {"200": 80}  # not one 429 from the fake's limit
    budget = Budget.per_minute(RPM)
    burst, per_second = budget.burst_seconds / budget.interval, 1 / budget.interval
    in_flight = 2 * THREADS_PER_PROCESS  # a booked request may arrive a little late
    for window in (1.0, 3.0):
        # GCRA's promise for any window, shared: two separate budgets would allow twice it.
        assert max_in_window(stats["arrivals"], window) <= burst + per_second * window + in_flight


def test_prompts_stream_through_a_limit_without_loss(llm_env):
    fake = llm_env("openai", LLM_RPM_LIMIT=1200)
    started = time.monotonic()

    results = LLMBatchClient(max_workers=20).generate_many_detailed(
        [f"stream {i}" for i in range(80)])

    assert all(r.ok for r in results)
    assert fake.stats()["total"] == 80
    assert time.monotonic() - started >= (80 - 20) / 20 * 0.9  # burst 20, then ~19/s
