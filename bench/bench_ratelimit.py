"""Benchmark the shared rate limiter against a fake provider that enforces the same limit.

    python -m bench.bench_ratelimit                   # 600 RPM, 50 workers, ~2.5 minutes
    python -m bench.bench_ratelimit --minutes 0.5     # a quick look

The fake (its own process) answers 429 to any request beyond ``--rpm`` in a sliding 60 s
window, as the providers do. The LLM layer runs with OPENAI_RPM_LIMIT at the same figure
and ``--workers`` threads streaming ``rpm * minutes`` prompts through one pool. A prompt
that ends retryable (a limiter wait beyond LLM_RATE_LIMIT_MAX_WAIT, a 429 that outlived
the retries) is sent again, as the pipeline would return it to the queue; "lost" counts
prompts still without a reply after ``--rounds`` rounds.

Prints: throughput as a fraction of the limit (target >= 0.85), the share of HTTP requests
the fake answered 429 (target < 1%), prompts lost (target 0), and the limiter's waits.
Redis: REDIS_URL (default db 14); only this benchmark's limiter keys are reset.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import httpx

from batchgen.fakes.ports import free_port

SERVER = ("from batchgen.fakes.llm_server import FakeLLMConfig, run; "
          "run(port={port}, config=FakeLLMConfig(latency={latency}, jitter={jitter}, "
          "rpm={rpm}, rpm_window=60.0))")
BENCH_KEY = "bench-ratelimit-key"




def start_fake(rpm: int, latency: float, jitter: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    code = SERVER.format(port=port, latency=latency, jitter=jitter, rpm=rpm)
    process = subprocess.Popen([sys.executable, "-c", code])
    base_url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(f"{base_url}/_stats", timeout=1)
            return process, base_url
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the fake LLM server did not start")


def setup_django(base_url: str, rpm: int, max_wait: float) -> None:
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "botplatform.settings", "LLM_PROVIDER": "openai",
        "OPENAI_BASE_URL": f"{base_url}/v1", "OPENAI_API_KEY": BENCH_KEY,
        "OPENAI_RPM_LIMIT": str(rpm), "LLM_RATE_LIMIT_MAX_WAIT": str(max_wait),
        "LLM_CIRCUIT_BREAKER_THRESHOLD": "1000", "LOG_LEVEL": "ERROR",
    })
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/14")
    import django

    django.setup()


def reset_limiter() -> None:
    import redis
    from django.conf import settings

    from batchgen.ratelimit import KEY_PREFIX, key_fingerprint

    client = redis.Redis.from_url(settings.REDIS_URL)
    pattern = f"{KEY_PREFIX}:{{openai:{key_fingerprint(BENCH_KEY)}}}:*"
    keys = list(client.scan_iter(match=pattern))
    if keys:
        client.delete(*keys)
    client.close()


def run(prompts: list[str], workers: int, rounds: int) -> tuple[list, int]:
    """Stream the prompts; resend the retryable failures like the pipeline would."""
    from batchgen.llm import LLMBatchClient

    client = LLMBatchClient(max_workers=workers)
    answered: list = []
    pending = prompts
    for _ in range(rounds):
        results = client.generate_many_detailed(pending)
        answered += [r for r in results if r.ok]
        pending = [p for p, r in zip(pending, results, strict=True) if not r.ok and r.retryable]
        if not pending:
            break
    return answered, len(prompts) - len(answered)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rpm", type=int, default=600)
    parser.add_argument("--minutes", type=float, default=2.5)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.5, help="fake reply time, s")
    parser.add_argument("--jitter", type=float, default=0.5, help="plus uniform 0..jitter s")
    parser.add_argument("--max-wait", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    fake, base_url = start_fake(args.rpm, args.latency, args.jitter)
    try:
        setup_django(base_url, args.rpm, args.max_wait)
        reset_limiter()
        count = round(args.rpm * args.minutes)
        prompts = [f"rate limited prompt {i}" for i in range(count)]
        print(f"{count} prompts, limit {args.rpm} RPM on both sides, {args.workers} workers, "
              f"fake latency {args.latency}+U(0,{args.jitter}) s")
        started = time.perf_counter()
        answered, lost = run(prompts, args.workers, args.rounds)
        elapsed = time.perf_counter() - started
        report(httpx.get(f"{base_url}/_stats", timeout=5).json(), answered, lost, elapsed,
               args.rpm)
    finally:
        fake.terminate()
        fake.wait(timeout=10)


def report(stats: dict, answered: list, lost: int, elapsed: float, rpm: int) -> None:
    from batchgen.llm import config
    from batchgen.ratelimit import get_rate_limiter

    statuses = stats["requests"].get("openai", {})
    total = sum(statuses.values())
    refused = statuses.get("429", 0)
    per_minute = len(answered) / (elapsed / 60)
    limiter = get_rate_limiter("openai", config.api_keys("openai")[0])
    waits = limiter.stats() if limiter else {}
    latencies = sorted(r.latency_s for r in answered)
    print(f"elapsed                {elapsed:8.1f} s")
    print(f"answered               {len(answered):8d}")
    print(f"throughput             {per_minute:8.1f} /min = {per_minute / rpm:.3f} of the limit"
          "   (target >= 0.85)")
    print(f"HTTP requests          {total:8d}   answered 429: {refused} "
          f"= {100 * refused / max(total, 1):.2f}%   (target < 1%)")
    print(f"prompts lost           {lost:8d}   (target 0)")
    print(f"limiter waits          {waits.get('waits', 0):8d}   "
          f"mean {waits.get('wait_seconds', 0) / max(waits.get('waits', 0), 1):.2f} s, "
          f"timeouts {waits.get('timeouts', 0)}, 429 penalties {waits.get('penalties', 0)}")
    if latencies:
        print(f"latency incl. wait     median {statistics.median(latencies):.2f} s, "
              f"p95 {latencies[int(0.95 * (len(latencies) - 1))]:.2f} s")


if __name__ == "__main__":
    main()
