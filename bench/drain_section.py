"""Section 7, "drain": a backlog through real ``tick --loop`` and real ``rqworker`` processes.

Items are queued, the processes started, and the clock runs from the start of the processes
to the last message's ``sent_at``. Figures:

- the refilling design with 2 and then 4 workers, against the concurrency ceiling
  ``workers × batch_size / mean latency``;
- the lock-step design it replaces, in the same run: one tick claims one batch per interval
  and each batch lasts as long as its slowest reply (emulated faithfully: the bench enqueues
  one run per interval, and each run claims ``batch_size`` items once and never refills);
- a run where a shared rate limit (``LLM_RPM_LIMIT``) binds, against that limit;
- the priority item: one item pushed with a high priority a third of the way into the 2-worker
  drain, and how long it took to reach Telegram (target: interval + 2 × mean latency);
- lost items (not sent) and duplicate sends (a chat that got two messages), counted at the
  fake Telegram;
- the ideal beside each: a finite backlog never reaches the ceiling (the pool fills and
  empties, and the last replies are the slow tail of the latency), so each refilling row also
  gives what a perfect pool of the same slots would do with the same backlog and latency
  (simulated, no overhead at all), and the rate-limited row what the limiter's own schedule
  allows (its burst, then its steady rate kept under the limit for any 60 s window).
"""

from __future__ import annotations

import heapq
import math
import os
import random
import signal
import subprocess
import time
from collections import Counter
from typing import Any

import httpx

from bench.harness import PYTHON, Services, configure_fake
from bench.pipeline_section import PRELOADED, set_mode


def drain(services: Services, items: int, latency: float, sigma: float, batch_size: int,
          interval: float, lockstep_items: int, rpm: int) -> dict[str, Any]:
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    configure_fake(services, latency=latency, latency_mode="lognormal", latency_sigma=sigma)
    common = {"latency_mean_s": latency, "sigma": sigma, "batch_size": batch_size,
              "interval_s": interval}
    new = [_refilling(services, items, batch_size, interval, latency, workers,
                      priority=workers == 2, sigma=sigma) for workers in (2, 4)]
    lockstep = _lockstep(services, lockstep_items, batch_size, interval, latency, workers=2)
    limited_items = max(200, int(rpm / 60 * 120))  # about two minutes at the limit
    limited = _refilling(services, limited_items, batch_size, interval, latency, 4,
                         rate_limit_rpm=rpm, sigma=sigma)
    return {**common, "items": items, "refilling": new, "lockstep": lockstep,
            "rate_limited": limited}


def _start_processes(services: Services, workers: int, batch_size: int, tick: bool,
                     interval: float, **env: str) -> list[subprocess.Popen]:
    import django_rq
    from rq import Worker

    environment = services.env(BATCH_MAX_WORKERS=str(batch_size), **env)
    connection = django_rq.get_connection("default")
    before = {w.name for w in Worker.all(connection=connection)}
    procs = [services.start([PYTHON, "manage.py", "rqworker", "--worker-class", PRELOADED,
                             "default"], env=environment, log_name=f"drain-worker-{n}")
             for n in range(workers)]
    deadline = time.monotonic() + 90
    while len({w.name for w in Worker.all(connection=connection)} - before) < workers:
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: drain workers did not start (see {services.workdir})")
        time.sleep(0.1)
    if tick:
        log = services.workdir / "drain-tick.log"
        seen = log.read_text().count(" tick: ") if log.exists() else 0
        procs.append(services.start([PYTHON, "manage.py", "tick", "--loop", "--interval",
                                     str(interval)], env=environment, log_name="drain-tick"))
        while not log.exists() or log.read_text().count(" tick: ") <= seen:
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: the tick loop did not start (see {log})")
            time.sleep(0.1)
    return procs


_made = {"chats": 0}
_phase = random.Random(7)  # seeded: the same landing points in every run


def _backlog(count: int) -> tuple[list, list]:
    """Bots and chats for ``count`` items: each item in its own private chat, spread over
    40 bots, so Telegram's pacing does not bind."""
    from batchgen.models import Bot, Chat

    first = _made["chats"]
    _made["chats"] += count
    bots = [Bot.objects.create(name=f"drain bot {first}-{n}", persona="A market watcher.",
                               telegram_token=f"{7000000000 + first + n}:DRAIN{'x' * 30}")
            for n in range(40)]
    chats = Chat.objects.bulk_create([Chat(telegram_chat_id=5_000_000 + first + n)
                                      for n in range(count)])
    return bots, chats


def _queue(backlog: tuple[list, list]) -> list[int]:
    """The whole backlog lands at once."""
    from batchgen.models import QueueItem
    from batchgen.work import queue

    bots, chats = backlog
    rows = QueueItem.objects.bulk_create(
        QueueItem(bot=bots[n % len(bots)], chat=chat, recent_messages=["Dolar ne olur?"])
        for n, chat in enumerate(chats))
    queue.nudge()  # as a producer pushing in bulk does: the tick loop wakes now
    return [row.id for row in rows]


def stop_processes(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each process group, SIGKILL what has not ended within 30 s."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def ideal_pool(items: int, slots: int, mean: float, sigma: float, seeds: int = 20) -> float:
    """Throughput / ceiling of a perfect pool: ``slots`` threads, no overhead, each taking the
    next item the instant it is free, over lognormal latencies (mean of ``seeds`` draws)."""
    mu = math.log(mean) - sigma ** 2 / 2
    ratios = []
    for seed in range(seeds):
        draw = random.Random(seed)
        free = [0.0] * slots  # when each slot is next free (a heap)
        for _ in range(items):
            heapq.heappush(free, heapq.heappop(free) + draw.lognormvariate(mu, sigma))
        ratios.append(items / max(free) / (slots / mean))
    return round(sum(ratios) / len(ratios), 4)


def ideal_limited(items: int, rpm: int, latency: float) -> float:
    """Throughput / limit of the limiter's own schedule: its burst at once, then its steady
    rate (kept below the limit for any 60 s window), plus one latency for the last reply."""
    from batchgen.llm.limits.budgets import Budget

    budget = Budget.per_minute(rpm)
    burst = round(budget.burst_seconds / budget.interval)
    seconds = max(items - burst, 0) * budget.interval + latency
    return round(items / seconds / (rpm / 60), 4)


def _refilling(services: Services, items: int, batch_size: int, interval: float,
               latency: float, workers: int, priority: bool = False,
               rate_limit_rpm: int | None = None, sigma: float = 0.6) -> dict[str, Any]:
    from django.utils import timezone

    backlog = _backlog(items)
    set_mode(True, batch_size)
    env = {}
    if rate_limit_rpm:
        env = {"LLM_RPM_LIMIT": str(rate_limit_rpm), "OPENAI_RPM_LIMIT": str(rate_limit_rpm)}
    _reset_telegram(services)
    procs = _start_processes(services, workers, batch_size, True, interval, **env)
    try:
        # The processes are up and the tick loop is ticking. The backlog lands at a random
        # point of the tick cycle (as an operator's would) and the clock runs from then, so
        # the wait for the next tick is part of the figure.
        time.sleep(_phase.uniform(0, interval))
        started = timezone.now()
        ids = _queue(backlog)
        urgent = _wait_for(ids, items, push_priority_at=items // 3 if priority else None)
    finally:
        stop_processes(procs)
    result = _figures(services, ids + ([urgent["id"]] if urgent else []), started)
    result.update(workers=workers, in_flight=batch_size,
                  ceiling_msg_s=round(workers * batch_size / latency, 3))
    result["vs_ceiling"] = round(result["throughput_msg_s"] / result["ceiling_msg_s"], 4)
    result["steady_vs_ceiling"] = round(result["steady_msg_s"] / result["ceiling_msg_s"], 4)
    result["ideal_vs_ceiling"] = ideal_pool(items, workers * batch_size, latency, sigma)
    if rate_limit_rpm:
        limit = rate_limit_rpm / 60
        result.update(rate_limit_rpm=rate_limit_rpm, limit_msg_s=round(limit, 3),
                      vs_limit=round(result["throughput_msg_s"] / limit, 4),
                      steady_vs_limit=round(result["steady_msg_s"] / limit, 4),
                      ideal_vs_limit=ideal_limited(items, rate_limit_rpm, latency))
    if urgent:
        result["priority_item_s"] = urgent["seconds"]
        result["priority_target_s"] = round(interval + 2 * latency, 3)
    return result


def _lockstep(services: Services, items: int, batch_size: int, interval: float,
              latency: float, workers: int) -> dict[str, Any]:
    """The design before: each tick claims one batch of ``batch_size``; a batch is done when
    its slowest reply is."""
    import django_rq
    from django.utils import timezone

    from batchgen import jobs
    from batchgen.delivery import runs
    from batchgen.models import QueueItem

    backlog = _backlog(items)
    set_mode(True, batch_size)
    _reset_telegram(services)
    procs = _start_processes(services, workers, batch_size, False, interval,
                             BATCH_DRAIN_MAX_ITEMS=str(batch_size))
    rq_queue = django_rq.get_queue(jobs.QUEUE_NAME)
    try:
        started = timezone.now()
        ids = _queue(backlog)
        while QueueItem.objects.filter(id__in=ids, status="pending").exists():
            run = runs.open_run()
            rq_queue.enqueue(lockstep_job, run.id, job_id=f"batchrun-{run.id}",
                             job_timeout=runs.job_timeout(run))
            time.sleep(interval)
        _wait_for(ids, items)
    finally:
        stop_processes(procs)
    result = _figures(services, ids, started)
    result.update(workers=workers, in_flight=batch_size,
                  ceiling_msg_s=round(workers * batch_size / latency, 3),
                  tick_cap_msg_s=round(batch_size / interval, 3))
    result["vs_ceiling"] = round(result["throughput_msg_s"] / result["ceiling_msg_s"], 4)
    result["steady_vs_ceiling"] = round(result["steady_msg_s"] / result["ceiling_msg_s"], 4)
    return result


def lockstep_job(batch_run_id: int) -> None:
    """The old job: one batch, no successor (its workers run with BATCH_DRAIN_MAX_ITEMS =
    batch_size, so the run claims one batch and never refills)."""
    from batchgen.delivery import runs

    runs.run_batch(batch_run_id)


def _wait_for(ids: list[int], items: int, push_priority_at: int | None = None,
              timeout: float = 3600) -> dict[str, Any] | None:
    """Until every item is settled; optionally push one urgent item on the way."""
    from django.utils import timezone

    from batchgen.models import Bot, Chat, Message, QueueItem
    from batchgen.work import queue

    urgent = None
    deadline = time.monotonic() + timeout
    while True:
        settled = QueueItem.objects.filter(id__in=ids, status__in=["done", "dead"]).count()
        if urgent is None and push_priority_at is not None and settled >= push_priority_at:
            stamp = time.time_ns()
            bot = Bot.objects.create(name=f"urgent {stamp}", telegram_token="1:URGENT" + "x" * 30)
            chat = Chat.objects.create(telegram_chat_id=-(stamp % 10**12))
            item = queue.push(bot, chat, priority=100)
            urgent = {"id": item.id, "pushed": timezone.now()}
        done_urgent = urgent is None or "seconds" in urgent
        if urgent is not None and not done_urgent:
            sent = Message.objects.filter(queue_item_id=urgent["id"], status="sent").first()
            if sent is not None:
                urgent["seconds"] = round((sent.sent_at - urgent["pushed"]).total_seconds(), 3)
                done_urgent = True
        if settled >= items and done_urgent:
            return urgent
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: drain stalled at {settled}/{items}")
        time.sleep(0.25)


def _reset_telegram(services: Services) -> None:
    httpx.post(f"{services.telegram_url}/_reset", timeout=10).raise_for_status()


def _figures(services: Services, ids: list[int], started) -> dict[str, Any]:
    from batchgen.models import BatchRun, Message, QueueItem

    statuses = Counter(QueueItem.objects.filter(id__in=ids).values_list("status", flat=True))
    sent_at = sorted(Message.objects.filter(queue_item_id__in=ids, status="sent")
                     .values_list("sent_at", flat=True))
    seconds = (sent_at[-1] - started).total_seconds()
    # From the first send to the last: the loop's sustained rate, without the wait for the
    # first tick after the backlog landed.
    steady = (len(sent_at) - 1) / max((sent_at[-1] - sent_at[0]).total_seconds(), 1e-9)
    delivered = httpx.get(f"{services.telegram_url}/_messages", timeout=30).json()
    per_chat = Counter(m["chat_id"] for m in delivered)
    runs = list(BatchRun.objects.filter(items__id__in=ids).distinct())
    sizes = sorted(run.size for run in runs)
    return {
        "items": len(ids), "sent": statuses.get("done", 0), "seconds": round(seconds, 3),
        "throughput_msg_s": round(statuses.get("done", 0) / seconds, 3),
        "first_send_s": round((sent_at[0] - started).total_seconds(), 3),
        "steady_msg_s": round(steady, 3),
        "lost": len(ids) - statuses.get("done", 0),
        # Why each item that did not end done ended as it did (its last error, shortened).
        "lost_why": dict(Counter(
            f"{status}: {(error or '')[:120]}" for status, error in QueueItem.objects.filter(
                id__in=ids).exclude(status="done").values_list("status", "last_error"))),
        "duplicates": sum(n - 1 for n in per_chat.values() if n > 1),
        "runs": len(runs), "run_sizes": [sizes[0], sizes[len(sizes) // 2], sizes[-1]]
        if sizes else [],
    }
