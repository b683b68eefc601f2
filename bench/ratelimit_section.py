"""Section 4: at a provider rate limit. Runs in a child process with the limit in its
environment (settings are read once at start-up), prints one JSON object.

    python -m bench.ratelimit_section --rpm 600 --prompts 300   (env from bench.run)

The fake enforces ``rpm`` requests per sliding 60 s and answers 429 above it;
the client's limiter (issue 5: ``LLM_RPM_LIMIT``) is set to the same figure.
Until that limiter is wired into the LLM layer the section reports "pending".
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import httpx


def measure(base_url: str, rpm: int, prompts: int, workers: int) -> dict[str, Any]:
    from batchgen.llm import LLMBatchClient
    from bench.llm_sections import make_prompts

    httpx.post(f"{base_url}/_control", json={
        "latency": 0.2, "jitter": 0.0, "latency_mode": "fixed", "rpm": rpm, "rpm_window": 60.0,
        "fault": None, "retry_after_ms": None}, timeout=10).raise_for_status()
    httpx.post(f"{base_url}/_reset", json={}, timeout=10).raise_for_status()
    client = LLMBatchClient(max_workers=workers)
    started = time.perf_counter()
    results = client.generate_many_detailed(make_prompts(prompts, "s4"))
    seconds = time.perf_counter() - started
    stats = httpx.get(f"{base_url}/_stats", timeout=10).raise_for_status().json()
    statuses = stats["requests"].get("openai", {})
    ok = sum(r.ok for r in results)
    requests = sum(statuses.values())
    answered_429 = statuses.get("429", 0)
    return {
        "status": "measured", "rpm_limit": rpm, "prompts": prompts, "workers": workers,
        "seconds": round(seconds, 3), "ok": ok, "failed": prompts - ok,
        "failed_kinds": sorted({r.error_kind for r in results if not r.ok}),
        "fraction_of_limit": round((ok / seconds) / (rpm / 60.0), 4),
        "requests": requests, "answered_429": answered_429,
        "fraction_429": round(answered_429 / requests, 4) if requests else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rpm", type=int, default=600)
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--workers", type=int, default=50)
    args = parser.parse_args()
    import django

    django.setup()
    base_url = os.environ["OPENAI_BASE_URL"].removesuffix("/v1")
    print(json.dumps(measure(base_url, args.rpm, args.prompts, args.workers)))


if __name__ == "__main__":
    main()
