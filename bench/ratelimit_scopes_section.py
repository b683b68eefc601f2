"""Rate limits as the providers count them (issue 12): four cases against the fake provider.

    python -m bench.ratelimit_scopes_section            # private Redis + fake, ~7 minutes
    python -m bench.ratelimit_scopes_section --quick    # smaller volumes, ~4 minutes
    python -m bench.ratelimit_scopes_section --only no_headers

| Case | 429 share | Prompts lost | Throughput |
|---|---|---|---|
| three_keys: three keys, one account limit (LLM_RPM_LIMIT = the limit) | < 1% | 0 | >= 0.90 |
| advertised: no configuration, limits in x-ratelimit-* headers | < 2% | 0 | >= 0.90 |
| no_headers: no configuration, Gemini-style bare 429s | < 5% | 0 | >= 0.80 |
| halving: the advertised limit halves mid-run | - | 0 | >= 0.85 of the new limit within 60 s |

``--only halving_bare`` also runs the halving without headers (the provider says nothing).

Each case runs in a child process (settings are read once at start-up) with its own
environment and prints one JSON object. The fake counts its own sliding 60 s window, for the
whole account, as OpenAI, Groq and Gemini do. A prompt whose limiter wait would exceed the wait
budget comes back ``rate_limit_wait`` and is submitted again, as the queue does (no attempt is
spent) after the wait it asks for; "lost" counts the prompts that still failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench import harness

LATENCY = 0.2
WORKERS = 50
MAX_REQUEUES = 50
REQUEUE_DELAY = 2.0  # seconds, when the error does not say how long to wait


@dataclass(frozen=True)
class Case:
    rpm: int
    prompts: int
    env: dict[str, str] = field(default_factory=dict)
    fake: dict[str, Any] = field(default_factory=dict)
    halve_after: float | None = None  # seconds into the run


CASES = {
    "three_keys": Case(120, 150, env={"OPENAI_API_KEYS": "bench-k1,bench-k2,bench-k3",
                                      "OPENAI_API_KEY": "bench-k1",
                                      "LLM_RPM_LIMIT": "120"}),
    "advertised": Case(300, 360),
    "no_headers": Case(300, 360, fake={"rate_headers": False}),
    "halving": Case(300, 560, halve_after=60.0),
    # Not in the table: the provider halves its limit without a word (AIMD alone).
    "halving_bare": Case(300, 560, fake={"rate_headers": False}, halve_after=60.0),
}
QUICK_PROMPTS = {"three_keys": 150, "advertised": 360, "no_headers": 360, "halving": 420,
                 "halving_bare": 420}
TARGETS = {"three_keys": (0.01, 0.90), "advertised": (0.02, 0.90),
           "no_headers": (0.05, 0.80), "halving": (None, 0.85), "halving_bare": (None, 0.85)}
DEFAULT_CASES = ("three_keys", "advertised", "no_headers", "halving")


def run_case(name: str, prompts: int) -> dict[str, Any]:
    """In the child: drive the LLM layer through ``prompts`` prompts, the queue's way."""
    import os

    from batchgen.llm import LLMBatchClient

    case = CASES[name]
    base_url = os.environ["OPENAI_BASE_URL"].removesuffix("/v1")
    control = {"latency": LATENCY, "jitter": 0.0, "latency_mode": "fixed", "rpm": case.rpm,
               "rpm_window": 60.0, "tpm": 0, "rate_scope": "account", "rate_headers": True,
               "fault": None, "retry_after_ms": None, **case.fake}
    httpx.post(f"{base_url}/_control", json=control, timeout=10).raise_for_status()
    httpx.post(f"{base_url}/_reset", json={}, timeout=10).raise_for_status()
    client = LLMBatchClient(max_workers=WORKERS)
    done_at, lost, kinds, started = _drive(client, base_url, case, name, prompts)
    stats = httpx.get(f"{base_url}/_stats", timeout=10).raise_for_status().json()
    statuses = stats["requests"].get("openai", {})
    requests = sum(statuses.values())
    seconds = max(done_at) - started if done_at else 0.0
    result = {"case": name, "rpm_limit": case.rpm, "prompts": prompts, "ok": len(done_at),
              "lost": lost, "lost_kinds": sorted(kinds), "seconds": round(seconds, 2),
              "requests": requests, "answered_429": statuses.get("429", 0),
              "fraction_429": round(statuses.get("429", 0) / requests, 4) if requests else None,
              "fraction_of_limit": round(len(done_at) / seconds / (case.rpm / 60), 4)
              if seconds else None}
    if case.halve_after is not None:
        result.update(recovery([t - started for t in done_at], case.halve_after, case.rpm // 2))
    return result


def _drive(client: Any, base_url: str, case: Case, tag: str,
           count: int) -> tuple[list[float], int, set[str], float]:
    from batchgen.llm.errors import UNAVAILABLE_KINDS

    started = time.perf_counter()
    pending: dict[Future, tuple[str, int]] = {}
    deferred: list[tuple[float, str, int]] = []  # (due, prompt, requeues): the queue's back-off
    for i in range(count):
        prompt = f"[{tag} {i}] Say something short to the chat."
        pending[client.submit(prompt, max_tokens=60)] = (prompt, 0)
    done_at: list[float] = []
    lost, kinds, halved = 0, set(), case.halve_after is None
    while pending or deferred:
        finished, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
        now = time.perf_counter()
        if not halved and now - started >= case.halve_after:
            httpx.post(f"{base_url}/_control", json={"rpm": case.rpm // 2},
                       timeout=10).raise_for_status()
            halved = True
        for future in finished:
            prompt, requeues = pending.pop(future)
            result = future.result()
            if result.ok:
                done_at.append(now)
            elif result.error_kind in UNAVAILABLE_KINDS and requeues < MAX_REQUEUES:
                delay = getattr(result, "retry_after", None) or REQUEUE_DELAY
                deferred.append((now + delay, prompt, requeues + 1))
            else:
                lost += 1
                kinds.add(str(result.error_kind))
        for item in [item for item in deferred if item[0] <= now]:
            deferred.remove(item)
            pending[client.submit(item[1], max_tokens=60)] = (item[1], item[2])
        if not pending and deferred:
            time.sleep(max(0.0, min(due for due, _, _ in deferred) - now))
    return done_at, lost, kinds, started


def recovery(done_at: list[float], change: float, new_rpm: int,
             window: float = 30.0) -> dict[str, Any]:
    """How soon after the limit changed the replies came at >= 0.85 of the new limit, over
    a trailing ``window``; and the fraction of the new limit from 60 s after the change on."""
    needed = 0.85 * new_rpm / 60 * window
    end = max(done_at, default=change)
    recovered_after = None
    t = change + window
    while t <= end:
        if sum(1 for d in done_at if t - window < d <= t) >= needed:
            recovered_after = round(t - change, 1)
            break
        t += 1.0
    later = [d for d in done_at if d > change + 60]
    tail = (len(later) / (end - change - 60) / (new_rpm / 60)) if end > change + 75 else None
    return {"new_rpm_limit": new_rpm, "recovered_after_s": recovered_after,
            "fraction_of_new_limit_after_60s": round(tail, 4) if tail is not None else None}


def measure(services: harness.Services, name: str, prompts: int) -> dict[str, Any]:
    """One case in a child process, its settings in the child's environment."""
    case = CASES[name]
    # A Redis database of its own: a budget learned in one case must not start the next.
    database = list(CASES).index(name) + 1
    redis_url = f"{services.redis_url.rsplit('/', 1)[0]}/{database}"
    env = services.env(LLM_MAX_RETRIES="2", BATCH_MAX_WORKERS=str(WORKERS), REDIS_URL=redis_url,
                       **case.env)
    done = subprocess.run([harness.PYTHON, "-m", "bench.ratelimit_scopes_section", "--case", name,
                           "--prompts", str(prompts)], cwd=harness.ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"case {name} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def scopes(services: harness.Services, quick: bool = False,
           only: tuple[str, ...] = DEFAULT_CASES) -> dict[str, Any]:
    """Every chosen case, against the run's own Redis and fake provider."""
    sizes = QUICK_PROMPTS if quick else {name: case.prompts for name, case in CASES.items()}
    return {name: measure(services, name, sizes[name]) for name in only}


def table(results: dict[str, Any]) -> list[str]:
    lines = ["| Case | 429 share (target) | Prompts lost | Throughput / limit (target) |",
             "|---|---|---|---|"]
    for name, row in results.items():
        max_429, min_fraction = TARGETS[name]
        share = f"{row['fraction_429']:.2%}" + (f" (< {max_429:.0%})" if max_429 else "")
        if CASES[name].halve_after is not None:
            after = row.get("recovered_after_s")
            fraction = (f"{row.get('fraction_of_new_limit_after_60s')} of the new limit after "
                        f"60 s; >= 0.85 after {after} s (target <= 60 s)")
        else:
            fraction = f"{row['fraction_of_limit']} (>= {min_fraction})"
        lines.append(f"| {name} | {share} | {row['lost']} of {row['prompts']} | {fraction} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=sorted(CASES), help="run one case in this process")
    parser.add_argument("--prompts", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=",".join(DEFAULT_CASES),
                        help=f"comma-separated cases of {', '.join(CASES)}")
    args = parser.parse_args()
    if args.case:
        import django

        django.setup()
        print(json.dumps(run_case(args.case, args.prompts or CASES[args.case].prompts)))
        return
    services = harness.start_services()
    try:
        results = scopes(services, args.quick, tuple(args.only.split(",")))
    finally:
        services.stop()
    print("\n".join(table(results)))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
