"""Sections 5 and 6: the whole pipeline through a real ``rqworker``, and its memory.

``tick`` runs in this process (the same function ``manage.py tick`` calls),
a real ``manage.py rqworker default`` process runs the jobs (forking a
work-horse per job, as in production), the fake Telegram receives the sends.
The clock runs from just before the first tick to the last BatchRun's
``finished_at`` (written after its last send).
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import time
from datetime import datetime
from typing import Any

from bench.harness import (
    PYTHON,
    ROOT,
    RssSampler,
    Services,
    configure_fake,
    fixed_with_jitter,
    timed,
)

_COLD_GENERATE = """
import json, sys, time
import django
django.setup()
from batchgen.llm import LLMBatchClient
prompts = json.load(sys.stdin)
client = LLMBatchClient(max_workers=50)
started = time.perf_counter()
results = client.generate_batch(prompts)
print(json.dumps({"seconds": time.perf_counter() - started,
                  "ok": sum(r is not None for r in results)}))
"""


PRELOADED = "batchgen.jobs.PreloadedWorker"


def start_worker(services: Services, worker_class: str | None,
                 workers: int = 50) -> subprocess.Popen:
    """A real rqworker on queue ``default``; returns once it has registered in Redis."""
    import django_rq
    from rq import Worker

    connection = django_rq.get_connection("default")
    before = {w.name for w in Worker.all(connection=connection)}
    extra = ["--worker-class", worker_class] if worker_class else []
    proc = services.start([PYTHON, "manage.py", "rqworker", *extra, "default"],
                          env=services.env(BATCH_MAX_WORKERS=str(workers)), log_name="rqworker")
    deadline = time.monotonic() + 60
    while not {w.name for w in Worker.all(connection=connection)} - before:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"bench: rqworker did not start (see {services.workdir}/rqworker.log)")
        time.sleep(0.1)
    return proc


_created = {"bots": 0, "chats": 0}


def make_items(count: int, bots: int = 10) -> list[int]:
    """``count`` pending items, each in its own private chat (no per-chat pacing between
    batches), spread over ``bots`` bots."""
    from batchgen.models import Bot, Chat
    from batchgen.work import queue

    start = _created["bots"]
    bot_rows = [Bot.objects.create(name=f"bench bot {start + i}", persona="A market watcher.",
                                   telegram_token=f"{8000000000 + start + i}:BENCH{'x' * 30}")
                for i in range(bots)]
    _created["bots"] += bots
    first = _created["chats"]
    chats = Chat.objects.bulk_create([Chat(telegram_chat_id=900000 + first + i,
                                           title=f"bench chat {first + i}")
                                      for i in range(count)])
    _created["chats"] += count
    return [queue.push(bot_rows[i % bots], chat, recent_messages=["Dolar ne olur?"]).id
            for i, chat in enumerate(chats)]


def set_mode(batch: bool, size: int) -> None:
    from batchgen.models import Setting

    for key, value in (("batch_mode_enabled", batch), ("batch_size", size)):
        Setting.objects.update_or_create(key=key, defaults={"value": value})


def wait_for_jobs(job_ids: list[str], timeout: float) -> None:
    """Poll RQ (in Redis, not the database: no lock contention with the worker)."""
    import django_rq
    from rq.job import Job

    connection = django_rq.get_connection("default")
    deadline = time.monotonic() + timeout
    pending = list(job_ids)
    while pending:
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {len(pending)} jobs still unfinished after {timeout:.0f}s")
        statuses = [Job.fetch(j, connection=connection).get_status() for j in pending]
        pending = [j for j, s in zip(pending, statuses, strict=True)
                   if s not in ("finished", "failed", "canceled", "stopped")]
        time.sleep(0.02)


def run_ticks(count: int, batch: bool, size: int, latency: float) -> dict[str, Any]:
    """Queue ``count`` items, tick until all are claimed, wait for the worker; the figures."""
    from django.utils import timezone

    from batchgen.delivery import scheduler
    from batchgen.models import BatchRun, QueueItem

    ids = make_items(count)
    set_mode(batch, size)
    started = timezone.now()
    runs = []
    for _ in range(math.ceil(count / (size if batch else 1))):
        # One worker: the first tick's run drains every item; later ticks see it busy.
        runs.extend(run.id for run in scheduler.tick().runs)
    wait_for_jobs([f"batchrun-{r}" for r in runs], timeout=120 + count * (latency + 2))
    rows = list(BatchRun.objects.filter(id__in=runs).order_by("id"))
    done = QueueItem.objects.filter(id__in=ids, status=QueueItem.Status.DONE).count()
    return _summarise(rows, started, count, done)


def _summarise(rows: list, started: datetime, count: int, done: int) -> dict[str, Any]:
    finished = max(r.finished_at for r in rows if r.finished_at)
    seconds = (finished - started).total_seconds()
    pickup = [(r.started_at - r.created_at).total_seconds() for r in rows if r.started_at]
    after_gen = [r.duration_s - r.generation_s for r in rows
                 if r.duration_s is not None and r.generation_s is not None]
    return {
        "items": count, "batches": len(rows), "sent": done, "seconds": round(seconds, 4),
        "throughput_msg_s": round(done / seconds, 4),
        "statuses": sorted({r.status for r in rows}),
        "mean_generation_s": _mean([r.generation_s for r in rows]),
        "mean_batch_duration_s": _mean([r.duration_s for r in rows]),
        "mean_after_generation_s": _mean(after_gen),
        "first_pickup_s": round(pickup[0], 4) if pickup else None,
        "mean_pickup_s": _mean(pickup),
        "errors": _merge([r.error_summary for r in rows]),
    }


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.fmean(values), 4) if values else None


def _merge(summaries: list[dict]) -> dict[str, int]:
    total: dict[str, int] = {}
    for summary in summaries:
        for kind, n in (summary or {}).items():
            total[kind] = total.get(kind, 0) + n
    return total


def prompts_of_last_runs(limit: int) -> list[str]:
    from batchgen.models import Generation

    return list(Generation.objects.order_by("-id").values_list("prompt", flat=True)[:limit])


def generate_alone(services: Services, prompts: list[str]) -> dict[str, Any]:
    """generate_batch on the pipeline's prompts: here (a warm pool) and in a fresh
    process (a cold pool and fresh connections, like a newly forked work-horse)."""
    from batchgen.llm import LLMBatchClient

    client = LLMBatchClient(max_workers=50)
    client.generate_batch(prompts[:1])  # the pool exists; its connections may be few
    warm_s, results = timed(lambda: client.generate_batch(prompts))
    cold = subprocess.run([PYTHON, "-c", _COLD_GENERATE], cwd=ROOT, env=services.env(),
                          input=json.dumps(prompts), capture_output=True, text=True, check=True)
    cold_result = json.loads(cold.stdout.strip().splitlines()[-1])
    return {"warm_s": round(warm_s, 4), "warm_ok": sum(r is not None for r in results),
            "cold_s": round(cold_result["seconds"], 4), "cold_ok": cold_result["ok"]}


def stock_worker_batch(services: Services, items: int, latency: float) -> dict[str, Any]:
    """One batch through RQ's plain ``rq.Worker`` (not the project's setting): each
    forked horse imports the pipeline and the SDKs itself. Measured, then stopped."""
    worker = start_worker(services, "rq.worker.Worker")
    run_ticks(5, batch=True, size=5, latency=latency)
    result = run_ticks(items, batch=True, size=min(items, 50), latency=latency)
    stop_worker(worker)
    return result


def stop_worker(worker: subprocess.Popen) -> None:
    """A section's worker must not outlive it: it would take the next section's jobs."""
    os.killpg(worker.pid, signal.SIGTERM)
    worker.wait(timeout=30)


def end_to_end(services: Services, latency: float, jitter: float, items: int,
               memory_items: int) -> dict[str, Any]:
    """Section 5 (batch vs generate_batch alone, batch vs single) and 6 (worker RSS)."""
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    configure_fake(services, **fixed_with_jitter(latency, jitter))
    stock = stock_worker_batch(services, items, latency)
    worker = start_worker(services, PRELOADED)
    # One throwaway batch: the first job also pays for SQLite's first writes and the
    # worker's first Redis round trips, which no later batch does.
    run_ticks(5, batch=True, size=5, latency=latency)
    with RssSampler(worker.pid) as rss_small:
        batch = run_ticks(items, batch=True, size=min(items, 50), latency=latency)
    alone = generate_alone(services, prompts_of_last_runs(items))
    single = run_ticks(items, batch=False, size=1, latency=latency)
    with RssSampler(worker.pid) as rss_large:
        large = run_ticks(memory_items, batch=True, size=50, latency=latency)
    stop_worker(worker)
    return {
        "latency_s": latency, "jitter_fraction": jitter, "items": items,
        "worker_class": PRELOADED, "stock_worker_batch": stock,
        "batch": batch, "single": single, "generate_alone": alone,
        "ratio_vs_warm_generate": round(batch["seconds"] / alone["warm_s"], 4),
        "ratio_vs_cold_generate": round(batch["seconds"] / alone["cold_s"], 4),
        "batch_vs_single_speedup": round(single["seconds"] / batch["seconds"], 3),
        "memory": {
            "small_items": items, "large_items": memory_items, "large_run": large,
            "horse_peak_kib_small": max(rss_small.horse_peaks.values(), default=None),
            "horse_peak_kib_large": max(rss_large.horse_peaks.values(), default=None),
            "horses_seen_large": len(rss_large.horse_peaks),
            "worker_parent_peak_kib_small": rss_small.parent_peak,
            "worker_parent_peak_kib_large": rss_large.parent_peak,
        },
    }
