"""Sections 1-3: the document's table, scaling to 1,000 prompts, long tails.

All of them run the LLM layer in this process against the fake provider in
another. Efficiency is measured throughput over the ideal ``min(n, workers) /
latency`` (the configured mean latency: what a perfect pool over a perfect
network would reach).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bench.harness import (
    API_KEY,
    Services,
    configure_fake,
    fake_llm,
    fixed_with_jitter,
    lognormal_sigma_for_p99,
    percentile,
    timed,
)

# The document's figures: 10 prompts of ~500 tokens, max_tokens 220, gpt-4o-mini.
DOCUMENT_LATENCY = 2.84
DOCUMENT_ROWS = {1: 28.4, 5: 6.2, 10: 3.8}   # workers -> total seconds
_FILLER = ("The group has been discussing the central bank's decision, the lira, gold and "
           "the BIST100 all morning; some are worried, some see an opportunity. ")


def make_prompts(count: int, tag: str) -> list[str]:
    """~500-token prompts (about 2,000 characters), each distinct."""
    body = _FILLER * 13
    return [f"[{tag} {i}] Write a short reply for the chat. Context: {body}" for i in range(count)]


@dataclass
class Measure:
    """One timed run of ``count`` prompts."""

    label: str
    count: int
    workers: int
    seconds: float
    ok: int
    call_latencies: list[float]
    latency: float   # the configured mean latency per call

    @property
    def throughput(self) -> float:
        return self.ok / self.seconds

    @property
    def ideal_throughput(self) -> float:
        return min(self.count, self.workers) / self.latency

    @property
    def efficiency(self) -> float:
        return self.throughput / self.ideal_throughput

    def as_dict(self) -> dict[str, Any]:
        lat = self.call_latencies
        return {"label": self.label, "prompts": self.count, "workers": self.workers,
                "seconds": round(self.seconds, 4), "ok": self.ok,
                "mean_latency_per_message_s": round(self.seconds / self.count, 4),
                "mean_call_latency_s": round(statistics.fmean(lat), 4) if lat else None,
                "p99_call_latency_s": _round(percentile(lat, 0.99)),
                "throughput_msg_s": round(self.throughput, 4),
                "ideal_throughput_msg_s": round(self.ideal_throughput, 4),
                "efficiency": round(self.efficiency, 4), "configured_latency_s": self.latency}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _measure(label: str, prompts: Sequence[str], workers: int, latency: float,
             run: Callable[[Sequence[str]], list[tuple[bool, float]]]) -> Measure:
    seconds, outcomes = timed(lambda: run(prompts))
    return Measure(label, len(prompts), workers, seconds, sum(ok for ok, _ in outcomes),
                   [lat for _, lat in outcomes], latency)


# --- the three ways of generating --------------------------------------------------------


def project_sequential(prompts: Sequence[str]) -> list[tuple[bool, float]]:
    """The document's sequential mode: one LLMClient call after another."""
    from batchgen.llm import LLMClient

    client = LLMClient()
    return [(r.ok, r.latency_s) for r in (client.generate_detailed(p) for p in prompts)]


def project_batch(workers: int, many: bool = False) -> Callable[[Sequence[str]], list]:
    """LLMBatchClient: generate_batch (up to 50) or generate_many_detailed (any number)."""
    from batchgen.llm import LLMBatchClient

    client = LLMBatchClient(max_workers=workers)

    def run(prompts: Sequence[str]) -> list[tuple[bool, float]]:
        call = client.generate_many_detailed if many else client.generate_batch_detailed
        return [(r.ok, r.latency_s) for r in call(list(prompts))]

    return run


def lockstep_chunks(workers: int, chunk: int = 50) -> Callable[[Sequence[str]], list]:
    """The document's batch_in_chunks: each chunk of 50 waits for its slowest prompt."""
    from batchgen.llm import LLMBatchClient

    client = LLMBatchClient(max_workers=workers)

    def run(prompts: Sequence[str]) -> list[tuple[bool, float]]:
        out: list[tuple[bool, float]] = []
        for start in range(0, len(prompts), chunk):
            out += [(r.ok, r.latency_s)
                    for r in client.generate_batch_detailed(list(prompts[start:start + chunk]))]
        return out

    return run


class BarePool:
    """The document's design as written: a fresh ThreadPoolExecutor per batch over one
    shared openai.OpenAI client (its default connection pool), no breaker, no filters."""

    def __init__(self, services: Services) -> None:
        import openai

        self.client = openai.OpenAI(api_key=API_KEY, base_url=f"{services.llm_url}/v1",
                                    max_retries=2, timeout=30.0)

    def one(self, prompt: str) -> tuple[bool, float]:
        import time

        started = time.perf_counter()
        try:
            reply = self.client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}],
                max_tokens=220, temperature=0.7)
            ok = bool(reply.choices[0].message.content)
        except Exception:  # the document's code logs and returns None
            ok = False
        return ok, time.perf_counter() - started

    def runner(self, workers: int) -> Callable[[Sequence[str]], list[tuple[bool, float]]]:
        def run(prompts: Sequence[str]) -> list[tuple[bool, float]]:
            if workers == 1:
                return [self.one(p) for p in prompts]
            with ThreadPoolExecutor(max_workers=workers) as pool:
                return list(pool.map(self.one, prompts))

        return run


# --- section 1 -----------------------------------------------------------------------------


def warm_up(services: Services, bare: BarePool, worker_counts: Sequence[int]) -> None:
    """Zero-latency batches so both sides start with warm connections (and the project's
    pools with their threads): the table compares steady states, not first calls."""
    configure_fake(services)
    for workers in worker_counts:
        project_batch(workers)(make_prompts(workers, f"warm {workers}"))
        bare.runner(workers)(make_prompts(workers, f"warm bare {workers}"))
    project_sequential(make_prompts(1, "warm seq"))


def document_table(services: Services, latency: float, jitter: float) -> dict[str, Any]:
    """Section 1: 10 prompts, sequential / 5 / 10 workers, project and bare side by side."""
    bare = BarePool(services)
    warm_up(services, bare, (5, 10))
    configure_fake(services, **fixed_with_jitter(latency, jitter))
    rows = []
    for workers in (1, 5, 10):
        run = project_sequential if workers == 1 else project_batch(workers)
        label = "sequential" if workers == 1 else f"batch ({workers} workers)"
        project = _measure(label, make_prompts(10, f"t1 p{workers}"), workers, latency, run)
        baseline = _measure(label, make_prompts(10, f"t1 b{workers}"), workers, latency,
                            bare.runner(workers))
        rows.append({"workers": workers, "label": label, "project": project.as_dict(),
                     "bare": baseline.as_dict(), "document_seconds": DOCUMENT_ROWS[workers]})
    for side in ("project", "bare"):
        sequential = rows[0][side]["seconds"]
        for row in rows:
            row[side]["speedup"] = round(sequential / row[side]["seconds"], 3)
    return {"latency_mean_s": latency, "jitter_fraction": jitter, "prompts": 10, "rows": rows}


def fixed_latency_targets(services: Services, latency: float) -> dict[str, Any]:
    """The LLM layer's own targets (issue 3), fixed latency: 10/10 vs sequential, 50/50
    against one latency; the 50-worker pool is measured on its first (cold) call too."""
    bare = BarePool(services)
    configure_fake(services)
    project_batch(10)(make_prompts(10, "warm t3"))
    bare.runner(10)(make_prompts(10, "warm t3 bare"))
    configure_fake(services, latency=latency)
    sequential = _measure("sequential", make_prompts(10, "t3 seq"), 1, latency,
                          project_sequential)
    runs = [
        _measure("project 10/10", make_prompts(10, "t3 p10"), 10, latency, project_batch(10)),
        _measure("bare 10/10", make_prompts(10, "t3 b10"), 10, latency, bare.runner(10)),
        _measure("project 50/50 (cold pool)", make_prompts(50, "t3 p50c"), 50, latency,
                 project_batch(50)),
        _measure("project 50/50 (warm)", make_prompts(50, "t3 p50w"), 50, latency,
                 project_batch(50)),
        _measure("bare 50/50 (fresh pool)", make_prompts(50, "t3 b50"), 50, latency,
                 bare.runner(50)),
    ]
    out = {"latency_s": latency, "sequential": sequential.as_dict(), "runs": []}
    for run in runs:
        row = run.as_dict()
        row["x_ideal"] = round(run.seconds / latency, 4)
        if run.count == 10:
            row["speedup"] = round(sequential.seconds / run.seconds, 3)
        out["runs"].append(row)
    return out


# --- sections 2 and 3 ------------------------------------------------------------------------


def scaling(services: Services, latency: float, jitter: float, prompts: int,
            single_cap: int) -> dict[str, Any]:
    """Section 2: generate_many_detailed over ``prompts`` at 1, 10, 25 and 50 workers
    (1 worker capped at ``single_cap`` prompts: its rate does not depend on the count)."""
    configure_fake(services, **fixed_with_jitter(latency, jitter))
    points = []
    for workers in (1, 10, 25, 50):
        count = min(prompts, single_cap) if workers == 1 else prompts
        fake_llm(services, "/_reset", {})
        measure = _measure(f"{workers} workers", make_prompts(count, f"s2 {workers}"), workers,
                           latency, project_batch(workers, many=True))
        row = measure.as_dict()
        row["fake_in_flight_peak"] = fake_llm(services, "/_stats")["in_flight_peak"]
        points.append(row)
    return {"latency_s": latency, "jitter_fraction": jitter, "prompts": prompts,
            "single_worker_prompts": min(prompts, single_cap), "points": points}


def tails(services: Services, mean: float, prompts: int, workers: int = 50,
          p99_ratio: float = 4.0) -> dict[str, Any]:
    """Section 3: lognormal latency; lock-step chunks of 50 against the continuous pool."""
    sigma = lognormal_sigma_for_p99(p99_ratio)
    configure_fake(services, latency=mean, latency_mode="lognormal", latency_sigma=sigma)
    out: dict[str, Any] = {"mean_s": mean, "sigma": round(sigma, 4),
                           "p99_s": round(mean * p99_ratio, 3), "prompts": prompts,
                           "workers": workers}
    for key, run in (("lockstep", lockstep_chunks(workers)),
                     ("continuous", project_batch(workers, many=True))):
        fake_llm(services, "/_reset", {})
        out[key] = _measure(key, make_prompts(prompts, f"s3 {key}"), workers, mean,
                            run).as_dict()
        out[key]["fake_in_flight_peak"] = fake_llm(services, "/_stats")["in_flight_peak"]
    return out
