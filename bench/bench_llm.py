"""Benchmark the LLM layer against the fake provider at a fixed latency (prints figures).

    python -m bench.bench_llm --latency 1.0

Measures in one run: 10 prompts sequentially (an LLMClient loop), 10 with 10
workers and 50 with 50 workers (first, cold batch and a second, warm one), the
bare baseline (a fresh ThreadPoolExecutor over one shared openai.OpenAI client,
as the source document does), and streaming 200 prompts through one pool
(generate_many_detailed) against lock-step chunks of 50 under lognormal latency.
The fake runs in its own process so it does not compete for our GIL.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

SERVER = ("from batchgen.fakes.llm_server import FakeLLMConfig, run; "
          "run(port={port}, config=FakeLLMConfig(latency={latency}))")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_fake(latency: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVER.format(port=port, latency=latency)])
    base_url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(f"{base_url}/_stats", timeout=1)
            return process, base_url
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the fake LLM server did not start")


def setup_django(base_url: str) -> None:
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "botplatform.settings", "LLM_PROVIDER": "openai",
        "OPENAI_BASE_URL": f"{base_url}/v1", "OPENAI_API_KEY": "bench-key",
        "LLM_CIRCUIT_BREAKER_THRESHOLD": "1000", "LOG_LEVEL": "ERROR",
    })
    import django

    django.setup()


def timed(run: Callable[[], list]) -> tuple[float, int]:
    started = time.perf_counter()
    results = run()
    return time.perf_counter() - started, sum(1 for r in results if r is not None)


def failure_kinds() -> str:
    """Why generations failed since the last call (read from the breaker, not the fake)."""
    from batchgen.resilience import get_circuit_breaker_stats

    state = get_circuit_breaker_stats("openai_api")
    return f"breaker {state['state']} ({state['failures']} failures)"


def prompts(count: int, tag: str) -> list[str]:
    return [f"{tag} prompt {i}" for i in range(count)]


def bare_pool(base_url: str, items: list[str], workers: int) -> list[str | None]:
    """The source document's shape: a fresh executor per batch over one SDK client."""
    import openai

    client = openai.OpenAI(api_key="bench-key", base_url=f"{base_url}/v1")

    def one(prompt: str) -> str | None:
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}], max_tokens=220)
        return reply.choices[0].message.content

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, items))


def report(label: str, seconds: float, ok: int, count: int, latency: float,
           sequential: float | None = None) -> None:
    line = f"{label:<44} {seconds:7.3f}s  ok {ok:>3}/{count:<3}  {seconds / latency:5.3f}x ideal"
    if sequential:
        line += f"  speedup {sequential / seconds:5.2f}x"
    if ok < count:
        line += f"  [{failure_kinds()}]"
    print(line, flush=True)


def run_parallel(base_url: str, latency: float, sequential: float) -> None:
    from batchgen.llm import LLMBatchClient

    for count in (10, 50):
        client = LLMBatchClient(max_workers=count)
        for phase in ("cold", "warm", "warm again"):
            seconds, ok = timed(lambda c=client, n=count, p=phase: c.generate_batch(
                prompts(n, f"{p} {n}")))
            report(f"LLMBatchClient {count} prompts / {count} workers ({phase})", seconds, ok,
                   count, latency, sequential * count / 10)
        seconds, ok = timed(lambda n=count: bare_pool(base_url, prompts(n, f"bare {n}"), n))
        report(f"bare ThreadPoolExecutor {count}/{count} (fresh)", seconds, ok, count, latency,
               sequential * count / 10)


def run_streaming(base_url: str, latency: float) -> None:
    from batchgen.llm import MAX_BATCH_SIZE, LLMBatchClient

    httpx.post(f"{base_url}/_control", json={"latency_mode": "lognormal", "latency_sigma": 0.6})
    client = LLMBatchClient(max_workers=50)
    items = prompts(200, "stream")
    seconds, ok = timed(lambda: [r.text for r in client.generate_many_detailed(items)])
    report("generate_many_detailed 200 / 50 workers", seconds, ok, 200, latency)

    def chunks() -> list[str | None]:
        out: list[str | None] = []
        for start in range(0, len(items), MAX_BATCH_SIZE):
            out += client.generate_batch(items[start:start + MAX_BATCH_SIZE])
        return out

    seconds, ok = timed(chunks)
    report("lock-step chunks of 50, 200 / 50 workers", seconds, ok, 200, latency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=float, default=1.0)
    latency = parser.parse_args().latency
    process, base_url = start_fake(latency)
    try:
        setup_django(base_url)
        from batchgen.llm import LLMClient

        print(f"fake at {base_url}, fixed latency {latency}s, {os.cpu_count()} CPUs")
        llm = LLMClient()
        details: list = []
        sequential, ok = timed(lambda: [details.append(llm.generate_detailed(p)) or
                                        details[-1].text for p in prompts(10, "seq")])
        if ok < 10:
            print("sequential failures:", {r.error_kind for r in details if not r.ok},
                  [r.error_message for r in details if not r.ok][:2])
        report("sequential 10 prompts (LLMClient loop)", sequential, ok, 10, latency)
        run_parallel(base_url, latency, sequential)
        print(f"lognormal latency, mean {latency}s, sigma 0.6:")
        run_streaming(base_url, latency)
    finally:
        process.terminate()
        process.wait(timeout=10)


if __name__ == "__main__":
    main()
