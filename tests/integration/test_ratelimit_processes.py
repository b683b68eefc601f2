"""The Redis-shared RPM/TPM limiter: real Redis, fake or scaled clocks, real processes."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from batchgen.llm.limits.budgets import RateLimiter

# Two processes counted in real (scaled) seconds: alone, after the parallel part.
pytestmark = pytest.mark.serial

SECRET_KEY = "sk-test-DO-NOT-LEAK-1234567890abcdef"
SCALE = 20.0  # the two-process test runs 20 simulated seconds per real second


from tests.unit.test_ratelimit import max_in_window  # noqa: E402,I001


def _scaled_clock() -> float:
    return time.time() * SCALE


def _scaled_sleep(seconds: float) -> None:
    time.sleep(seconds / SCALE)


def _worker_process(redis_url: str, rpm: int, until: float, threads: int,
                    results: multiprocessing.Queue) -> None:
    """One 'worker machine': several threads sending as fast as the limiter lets them."""
    limiter = RateLimiter("groq", SECRET_KEY, rpm, None,
                          clock=_scaled_clock, sleep=_scaled_sleep)
    sent: list[float] = []
    lock = threading.Lock()

    def run() -> None:
        while _scaled_clock() < until:
            limiter.acquire(tokens=100, max_wait=600)
            with lock:
                sent.append(_scaled_clock())

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    results.put(sent)


def test_two_processes_sharing_a_limit_never_exceed_it_in_any_minute(redis_url: str) -> None:
    rpm = 300
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    until = _scaled_clock() + 75.0  # 75 simulated seconds: spans a window edge after a burst
    workers = [context.Process(target=_worker_process, args=(redis_url, rpm, until, 4, results))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    batches = [results.get(timeout=30) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)
        assert worker.exitcode == 0

    assert all(batches), "both processes got requests through"
    sent = [t for batch in batches for t in batch]
    assert max_in_window(sent) <= rpm
