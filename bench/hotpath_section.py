"""Section "hotpath" (issue 24): what one LLM request costs the machine, project against SDK.

    python -m bench.run --only hotpath

- CPU per request, sequential, the fake at 0 latency: this process (the client), the Redis
  server and the fake provider, read from /proc, for four ways of sending the same request:
  raw httpx (a POST and ``json.loads``: the floor), the bare SDK
  (``chat.completions.create``, as the document's pool calls it), ``LLMClient`` (the project:
  breaker, key, budget, learned limits, metrics) and its Redis round trips per request.
  The variants alternate in rounds and each figure is the median over rounds, so machine
  noise (2 cores shared with other work) hits them alike; the ratio is taken per round.
- Long tails: 1,000 prompts on 50 workers, lognormal latency mean 0.2 s, sigma 0.6, the
  project's continuous pool against a bare ThreadPoolExecutor over the SDK.
- 50 prompts on 50 workers at a fixed 1 s: wall time over one latency, both sides.
- SQL statements and Redis round trips per delivered message (``bench.per_item``), and the
  CPU-bound drain through real processes on PostgreSQL (``bench.cpu_drain``).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx

from bench import cpu_drain
from bench.cpu_drain import cpu_bound_drain
from bench.drain_section import _backlog, _queue
from bench.harness import API_KEY, Services, configure_fake, process_cpu
from bench.llm_sections import BarePool, make_prompts, project_batch
from bench.per_item import per_item_costs


def service_pids(services: Services) -> dict[str, int | None]:
    """The private redis-server's and the fake provider's process ids (None: in-process)."""
    found: dict[str, int | None] = {"redis": None, "fake": None}
    for proc in services.children:
        args = [str(a) for a in proc.args]
        if args[0].endswith("redis-server"):
            found["redis"] = proc.pid
        elif any("fakes.llm_app" in a for a in args):
            found["fake"] = proc.pid
    return found


class RawHttpx:
    """The floor: one POST per request and ``json.loads`` of the body, nothing else."""

    def __init__(self, services: Services) -> None:
        self.client = httpx.Client(base_url=f"{services.llm_url}/v1", timeout=30.0,
                                   headers={"Authorization": f"Bearer {API_KEY}"})

    def one(self, prompt: str) -> bool:
        response = self.client.post("/chat/completions", json={
            "model": "gpt-4o-mini", "max_tokens": 220, "temperature": 0.7,
            "messages": [{"role": "user", "content": prompt}]})
        return bool(json.loads(response.content)["choices"][0]["message"]["content"])


def _project_one(prompt: str) -> bool:
    from batchgen.llm import LLMClient

    return LLMClient().generate_detailed(prompt).ok


def _round_trips_per_request(prompts: list[str]) -> float:
    """Redis round trips per LLMClient request, counted at the socket (warm process)."""
    import redis

    count = 0
    send = redis.connection.Connection.send_packed_command

    def spy(self: Any, command: Any, check_health: bool = True) -> None:
        nonlocal count
        count += 1
        send(self, command, check_health)

    redis.connection.Connection.send_packed_command = spy  # type: ignore[method-assign]
    try:
        for prompt in prompts:
            _project_one(prompt)
    finally:
        redis.connection.Connection.send_packed_command = send  # type: ignore[method-assign]
    return count / len(prompts)


def cpu_per_request(services: Services, requests: int = 200, rounds: int = 5
                    ) -> dict[str, Any]:
    configure_fake(services)  # 0 latency: the cost is all CPU
    pids = service_pids(services)
    bare = BarePool(services)
    raw = RawHttpx(services)
    variants: dict[str, Callable[[str], Any]] = {
        "httpx": raw.one, "sdk": lambda p: bare.one(p)[0], "project": _project_one}
    for name, one in variants.items():  # warm: connections, scripts, limits read
        for prompt in make_prompts(30, f"hot warm {name}"):
            one(prompt)
    samples: dict[str, dict[str, list[float]]] = {
        name: {"client": [], "redis": [], "fake": [], "wall": []} for name in variants}
    for index in range(rounds):
        order = list(variants) if index % 2 == 0 else list(reversed(variants))
        for name in order:
            prompts = make_prompts(requests, f"hot {name} {index}")
            before = _cpu(pids)
            started = time.perf_counter()
            ok = sum(bool(variants[name](p)) for p in prompts)
            wall = time.perf_counter() - started
            after = _cpu(pids)
            if ok != requests:
                raise RuntimeError(f"hotpath: {name} answered {ok}/{requests}")
            for part in ("client", "redis", "fake"):
                if after[part] is not None and before[part] is not None:
                    samples[name][part].append((after[part] - before[part]) / requests)
            samples[name]["wall"].append(wall / requests)
    out: dict[str, Any] = {"requests": requests, "rounds": rounds}
    for name, parts in samples.items():
        out[name] = {f"{part}_ms": round(statistics.median(values) * 1000, 3)
                     for part, values in parts.items() if values}
    out["ratio_project_sdk"] = _median_ratio(samples["project"]["client"],
                                             samples["sdk"]["client"])
    out["ratio_sdk_httpx"] = _median_ratio(samples["sdk"]["client"],
                                           samples["httpx"]["client"])
    out["redis_round_trips"] = round(_round_trips_per_request(
        make_prompts(50, "hot count")), 2)
    return out


def _cpu(pids: dict[str, int | None]) -> dict[str, float | None]:
    return {"client": time.process_time(),
            **{name: None if pid is None else process_cpu(pid) for name, pid in pids.items()}}


def _median_ratio(a: list[float], b: list[float]) -> float:
    return round(statistics.median(x / y for x, y in zip(a, b, strict=True)), 3)


def long_tails(services: Services, prompts: int = 1000, workers: int = 50, mean: float = 0.2,
               sigma: float = 0.6, rounds: int = 4) -> dict[str, Any]:
    """Efficiency (throughput / (workers / mean)) of the project's pool and the bare one."""
    configure_fake(services, latency=mean, latency_mode="lognormal", latency_sigma=sigma)
    bare = BarePool(services)
    sides: dict[str, Callable[[list[str]], list]] = {
        "project": project_batch(workers, many=True), "bare": bare.runner(workers)}
    found: dict[str, list[float]] = {"project": [], "bare": []}
    for index in range(rounds):
        for name in (("project", "bare") if index % 2 == 0 else ("bare", "project")):
            batch = make_prompts(prompts, f"tail {name} {index}")
            started = time.perf_counter()
            ok = sum(ok for ok, _ in sides[name](batch))
            seconds = time.perf_counter() - started
            found[name].append(ok / seconds / (workers / mean))
    return {"prompts": prompts, "workers": workers, "mean_s": mean, "sigma": sigma,
            "rounds": rounds, **_spread(found)}


def fifty_on_fifty(services: Services, latency: float = 1.0, rounds: int = 4
                   ) -> dict[str, Any]:
    """Wall time of 50 prompts on 50 workers over one latency (the ideal), both sides."""
    configure_fake(services)
    project = project_batch(50)
    bare = BarePool(services)
    project(make_prompts(50, "fifty warm"))
    configure_fake(services, latency=latency)
    found: dict[str, list[float]] = {"project": [], "bare": []}
    for index in range(rounds):
        for name in (("project", "bare") if index % 2 == 0 else ("bare", "project")):
            run = project if name == "project" else bare.runner(50)
            started = time.perf_counter()
            run(make_prompts(50, f"fifty {name} {index}"))
            found[name].append((time.perf_counter() - started) / latency)
    return {"latency_s": latency, "rounds": rounds, **_spread(found)}


def _spread(found: dict[str, list[float]]) -> dict[str, Any]:
    """Per side the median, and every round's figure (the machine's noise is in them)."""
    out: dict[str, Any] = {}
    for name, values in found.items():
        out[name] = round(statistics.median(values), 3)
        out[f"{name}_rounds"] = [round(v, 3) for v in values]
    return out


def hotpath(services: Services, quick: bool = False) -> dict[str, Any]:
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return {"cpu": cpu_per_request(services, 100 if quick else 200, 3 if quick else 5),
            "tails": long_tails(services, 500 if quick else 1000),
            "fifty": fifty_on_fifty(services),
            "per_item": per_item_costs(_bench_items).lines(),
            "drain": cpu_bound_drain(services, 1000 if quick else 3000)}


def _bench_items(count: int) -> None:
    """``count`` items, each in a private chat of its own (pacing does not bind)."""
    _queue(_backlog(count))


def table(data: dict[str, Any]) -> list[str]:
    cpu = data["cpu"]
    lines = ["### Hot path: CPU per LLM request (sequential, fake at 0 latency)", "",
             f"{cpu['requests']} requests per variant and round, {cpu['rounds']} rounds "
             "alternated; medians. Client = this process; Redis and fake = their processes.",
             "", "| Way | Client CPU | Redis CPU | Fake CPU | Wall |", "|---|---|---|---|---|"]
    names = {"httpx": "raw httpx POST + json.loads (floor)",
             "sdk": "bare SDK (chat.completions.create)", "project": "project (LLMClient)"}
    for key, label in names.items():
        row = cpu[key]
        lines.append(f"| {label} | {row['client_ms']:.2f} ms | "
                     f"{_ms(row.get('redis_ms'))} | {_ms(row.get('fake_ms'))} | "
                     f"{row['wall_ms']:.2f} ms |")
    tails, fifty = data["tails"], data["fifty"]
    return lines + [
        "", f"Project / bare SDK client CPU: **{cpu['ratio_project_sdk']:.2f}×** (target ≤ "
        f"1.15×); bare SDK / raw httpx: {cpu['ratio_sdk_httpx']:.2f}×. Redis round trips per "
        f"project request: **{cpu['redis_round_trips']:g}**.", "",
        f"Long tails ({tails['prompts']} prompts, {tails['workers']} workers, lognormal mean "
        f"{tails['mean_s']} s, σ {tails['sigma']}), efficiency, median of {tails['rounds']} "
        f"alternated rounds: project **{tails['project']:.3f}** {_each(tails, 'project')}, "
        f"bare pool {tails['bare']:.3f} {_each(tails, 'bare')}.", "",
        f"50 prompts on 50 workers at {fifty['latency_s']:g} s, wall / ideal, median of "
        f"{fifty['rounds']}: project **{fifty['project']:.3f}** {_each(fifty, 'project')}, "
        f"bare pool {fifty['bare']:.3f} {_each(fifty, 'bare')}.", "",
        "SQL statements and Redis round trips per delivered message (in-process drain, "
        "20 and 60 items, 10 in flight):", "", "```", *data.get("per_item", []), "```", "",
        *(cpu_drain.table(data["drain"]) if "drain" in data else [])]


def _each(data: dict[str, Any], side: str) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in data.get(f"{side}_rounds", [])) + ")"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} ms"


if __name__ == "__main__":
    from bench import harness

    services = harness.start_services()
    try:
        harness.setup_django(services)
        harness.flush_redis(services)
        print("\n".join(table(hotpath(services))))
    finally:
        services.stop()
