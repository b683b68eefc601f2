"""The CPU-bound drain of section "hotpath": what a delivered message costs the whole machine.

A backlog in private chats (Telegram's pacing does not bind), the fake LLM at a short fixed
latency, real ``tick --loop`` and ``rqworker`` processes on PostgreSQL: the machine's two cores
are the limit. The CPU of every process is read from /proc before and after, and split per
delivered message into the workers (with their work-horses), the tick loop, PostgreSQL (every
``postgres`` process, and what its postmaster reaped), Redis and the two fakes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.drain_section import (
    _backlog,
    _figures,
    _queue,
    _reset_telegram,
    _start_processes,
    _wait_for,
    stop_processes,
)
from bench.harness import Services, child_pids, configure_fake, process_cpu
from bench.pipeline_section import set_mode


def tree_cpu(pid: int) -> float:
    """CPU of a process, of the children it reaped and of its live descendants (a
    work-horse still running when the figures are read)."""
    return process_cpu(pid, reaped_children=True) + sum(tree_cpu(c) for c in child_pids(pid))


def postgres_cpu() -> float:
    """Every ``postgres`` process on the machine: backends, and what the postmaster reaped."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == "postgres":
                total += process_cpu(int(entry.name), reaped_children=True)
        except OSError:
            continue
    return total


def _services_cpu(services: Services) -> dict[str, float]:
    found = {"redis": 0.0, "fakes": 0.0}
    for proc in services.children:
        args = [str(a) for a in proc.args]
        if args[0].endswith("redis-server"):
            found["redis"] += process_cpu(proc.pid, reaped_children=True)
        elif len(args) > 2 and args[1] == "-c" and "fakes" in args[2]:
            found["fakes"] += process_cpu(proc.pid, reaped_children=True)
    return found


def cpu_bound_drain(services: Services, items: int = 3000, workers: int = 4,
                    in_flight: int = 50, latency: float = 0.05) -> dict[str, Any]:
    """``items`` through ``workers`` rqworkers and a tick loop; items/s and CPU per item."""
    from django.core.management import call_command
    from django.utils import timezone

    if not services.database_url.startswith("postgres"):
        return {"skipped": "needs --postgres (the drain's database is part of the cost)"}
    call_command("migrate", verbosity=0)
    configure_fake(services, latency=latency)
    backlog = _backlog(items)
    set_mode(True, in_flight)
    _reset_telegram(services)
    procs = _start_processes(services, workers, in_flight, True, 1.0)
    try:
        before = _all_cpu(services, procs)
        started = timezone.now()
        wall = time.monotonic()
        ids = _queue(backlog)
        _wait_for(ids, items)
        wall = time.monotonic() - wall
    finally:
        # The horses are reaped by now (each run ended when the queue ran dry); stopping
        # the workers after reading keeps their shutdown out of the figures.
        after = _all_cpu(services, procs)
        stop_processes(procs)
    result = _figures(services, ids, started)
    per_item = {part: round((after[part] - before[part]) / items * 1000, 3) for part in before}
    per_item["machine"] = round(sum(per_item.values()), 3)
    result.update(workers=workers, in_flight=in_flight, latency_s=latency,
                  cpu_ms_per_item=per_item, wall_s=round(wall, 2),
                  machine_cores_busy=round(per_item["machine"] * result["throughput_msg_s"]
                                           / 1000, 2))
    return result


def _all_cpu(services: Services, procs: list) -> dict[str, float]:
    tick = [p for p in procs if "tick" in " ".join(map(str, p.args))]
    worker = [p for p in procs if p not in tick]
    return {"workers": sum(tree_cpu(p.pid) for p in worker),
            "tick": sum(tree_cpu(p.pid) for p in tick),
            "postgres": postgres_cpu(), **_services_cpu(services)}


def _why(data: dict[str, Any]) -> str:
    why = data.get("lost_why") or {}
    return f" ({'; '.join(f'{n} × {reason}' for reason, n in why.items())})" if why else ""


def table(data: dict[str, Any]) -> list[str]:
    if "skipped" in data:
        return [f"CPU-bound drain skipped: {data['skipped']}."]
    cpu = data["cpu_ms_per_item"]
    return [
        f"### CPU-bound drain: {data['items']} items, {data['workers']} workers × "
        f"{data['in_flight']} in flight, LLM latency {data['latency_s']} s, PostgreSQL", "",
        f"**{data['throughput_msg_s']:.0f} messages/s** (steady {data['steady_msg_s']:.0f}, "
        f"first send after {data['first_send_s']:.2f} s; target ≥ 400); "
        f"lost {data['lost']}{_why(data)}, sent twice {data['duplicates']}; "
        f"{data['machine_cores_busy']} of 2 cores busy.", "",
        "| CPU per delivered message | ms |", "|---|---|",
        *(f"| {part} | {cpu[part]:.2f} |" for part in
          ("workers", "tick", "postgres", "redis", "fakes", "machine"))]


if __name__ == "__main__":
    import argparse

    from bench import harness

    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--in-flight", type=int, default=50)
    args = parser.parse_args()
    services = harness.start_services(args.postgres)
    try:
        harness.setup_django(services)
        harness.flush_redis(services)
        print("\n".join(table(cpu_bound_drain(services, args.items, args.workers,
                                              args.in_flight))))
    finally:
        services.stop()
        services.drop_database()
