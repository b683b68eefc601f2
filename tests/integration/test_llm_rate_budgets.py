"""Issue 12's four cases at a small scale, against the fake provider, through the real LLM layer.

Time runs twenty times faster: the limiter's "minute" and the fake's sliding window are both
3 s, so 90 "RPM" is thirty requests a second and each case takes a few seconds. What is asserted is
what a user would notice: 429s answered and prompts lost. Throughput is the benchmark's
business (``python -m bench.ratelimit_scopes_section``), not a timed test's.
"""

from __future__ import annotations

import multiprocessing
import time
from bisect import bisect_right

import pytest

from batchgen.llm import LLMBatchClient
from batchgen.llm.errors import UNAVAILABLE_KINDS
from batchgen.llm.limits import budgets, learned
from batchgen.llm.limits import rules as limits

# Real seconds, timed: alone, after the parallel part (see the Makefile).
pytestmark = pytest.mark.serial

MINUTE = 3.0
LIMIT = 90  # per MINUTE


@pytest.fixture
def fast(llm_env, monkeypatch):
    """The fake with an account-wide limit of LIMIT per 3-s minute; the client's minute too."""
    monkeypatch.setattr(limits, "MINUTE", MINUTE)
    learned._learners.clear()
    budgets._limiters.clear()

    def configure(**overrides: object):
        environment = {"LLM_MAX_RETRIES": 2, "LLM_RATE_LIMIT_MAX_WAIT": 10.0,
                       **{k: v for k, v in overrides.items() if k.isupper()}}
        fake = llm_env("openai", **environment)
        fake.control(latency=0.05, rpm=LIMIT, rpm_window=MINUTE, record_arrivals=True,
                     **{k: v for k, v in overrides.items() if not k.isupper()})
        return fake

    yield configure
    learned._learners.clear()
    budgets._limiters.clear()


def like_the_queue(count: int, tag: str) -> int:
    """Send ``count`` prompts; a prompt that found no slot in time goes round again, as the
    queue returns it without spending an attempt. Returns the prompts lost."""
    client = LLMBatchClient(max_workers=8)
    prompts = [f"[{tag} {i}] hello" for i in range(count)]
    lost = 0
    for _ in range(10):
        results = client.generate_many_detailed(prompts)
        again = [p for p, r in zip(prompts, results, strict=True)
                 if not r.ok and r.error_kind in UNAVAILABLE_KINDS]
        lost += sum(1 for r in results if not r.ok and r.error_kind not in UNAVAILABLE_KINDS)
        if not again:
            return lost
        prompts = again
        time.sleep(0.5)
    return lost + len(prompts)


def share_429(fake) -> float:
    statuses = fake.stats()["requests"]["openai"]
    return statuses.get("429", 0) / sum(statuses.values())


def most_in_any_window(fake, window: float = MINUTE) -> int:
    times = sorted(fake.stats()["arrivals"])
    return max(i + 1 - bisect_right(times, t - window) for i, t in enumerate(times))


def table() -> list[dict]:
    return learned.budget_table(lambda provider: (None, None))


def test_three_keys_of_one_account_share_its_limit(fast):
    fake = fast(OPENAI_API_KEYS=["k-one", "k-two", "k-three"], OPENAI_API_KEY="k-one",
                LLM_RPM_LIMIT=LIMIT,
                rate_headers=False)

    assert like_the_queue(120, "keys") == 0
    assert share_429(fake) < 0.01
    assert len(fake.stats()["by_key"]) == 3  # all three keys did take turns


def test_limits_advertised_in_headers_need_no_configuration(fast):
    fake = fast(rate_headers=True)

    assert like_the_queue(120, "advertised") == 0
    assert share_429(fake) < 0.02
    [row] = table()
    assert (row["rpm"], row["rpm_source"]) == (LIMIT, "advertised")


def test_without_headers_a_429_teaches_the_budget_a_rate(fast):
    fake = fast(rate_headers=False)

    assert like_the_queue(180, "bare") == 0
    assert share_429(fake) < 0.05
    [row] = table()
    assert row["rpm_source"] == "inferred" and row["rpm"] <= LIMIT * 1.2


def test_a_limit_halved_mid_run_is_followed_and_nothing_is_lost(fast):
    fake = fast(rate_headers=True)
    assert like_the_queue(100, "before") == 0
    refused_before = fake.stats()["requests"]["openai"].get("429", 0)
    fake.control(rpm=LIMIT // 2)  # the fake's window still holds the last minute's requests

    assert like_the_queue(60, "after") == 0
    [row] = table()
    assert (row["rpm"], row["rpm_source"]) == (LIMIT // 2, "advertised")
    refused = fake.stats()["requests"]["openai"].get("429", 0) - refused_before
    # The refusals that announced the change (at most one per worker then in flight), not a
    # stream of them: the old limit would have earned one for every third request.
    assert refused <= 8


def _worker(tag: str, results: multiprocessing.Queue) -> None:
    """One forked 'worker machine': the parent's settings, its own Redis connections."""
    outcomes = LLMBatchClient(max_workers=4).generate_many_detailed(
        [f"[{tag} {i}] hello" for i in range(60)])
    results.put([(r.ok, r.error_kind) for r in outcomes])


def test_two_processes_on_two_keys_spend_one_account_budget(fast):
    fake = fast(OPENAI_API_KEYS=["k-one", "k-two"], OPENAI_API_KEY="k-one",
                LLM_RPM_LIMIT=LIMIT, LLM_RATE_LIMIT_MAX_WAIT=30.0, rate_headers=False)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [context.Process(target=_worker, args=(f"p{n}", results)) for n in range(2)]
    for worker in workers:
        worker.start()
    outcomes = [outcome for _ in workers for outcome in results.get(timeout=60)]
    for worker in workers:
        worker.join(timeout=10)

    assert outcomes == [(True, None)] * 120
    assert fake.stats()["requests"]["openai"] == {"200": 120}
    assert most_in_any_window(fake) <= LIMIT  # two budgets of 90 would have sent 120 at once
