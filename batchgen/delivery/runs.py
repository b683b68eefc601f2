"""Run one batch: claim -> build prompts -> generate in parallel -> save -> send -> record. A run
refills (``batchgen.delivery.drain``) until the queue is empty or it reaches
``BATCH_DRAIN_MAX_ITEMS`` or ``BATCH_DRAIN_MAX_SECONDS``; its main thread does all ORM work.
The RQ job and ``tick --sync`` both come through ``run_batch`` (docs/design.md, "Runs, the
drain and the tick").
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from batchgen import metrics
from batchgen.core import pricing
from batchgen.delivery import drain
from batchgen.delivery.live_settings import in_flight_for  # noqa: F401 - also used here
from batchgen.llm import config as llm_config
from batchgen.models import BatchRun, Message, QueueItem, Setting
from batchgen.state.breakers import get_circuit_breaker_stats
from batchgen.work import outbox, queue

log = logging.getLogger(__name__)
Mode = BatchRun.Mode


def breaker_open_until(now: datetime | None = None) -> datetime | None:
    """When the provider's breaker half-opens, if it is open now (no run starts till then)."""
    stats = get_circuit_breaker_stats(f"{llm_config.default_provider()}_api")
    if stats.get("state") != "open" or not stats.get("retry_after"):
        return None
    return (now or timezone.now()) + timedelta(seconds=float(stats["retry_after"]))


def recover() -> int:
    """Return expired leases to the queue and close runs whose worker stopped beating."""
    returned = queue.recover_expired()
    cutoff = timezone.now() - timedelta(seconds=settings.BATCH_LEASE_SECONDS)
    stale = (BatchRun.objects.filter(status__in=[BatchRun.Status.QUEUED,
                                                 BatchRun.Status.RUNNING])
             .filter(Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True,
                                                    created_at__lt=cutoff))
             .exclude(items__status="claimed"))
    stale.update(status=BatchRun.Status.FAILED, finished_at=timezone.now(),
                 error_summary={"abandoned": 1})
    return returned


def job_timeout(run: BatchRun) -> int:
    """Seconds one run's job may take: its drain bound, then the slowest prompt at its
    worst, then the sends still in flight (pacing included)."""
    per_send = settings.TELEGRAM_TIMEOUT + 3.0
    return int(60 + settings.BATCH_DRAIN_MAX_SECONDS + llm_config.worst_case_seconds()
               + max(run.workers, 1) * per_send)


def open_run(mode: str | None = None, batch_size: int | None = None) -> BatchRun:
    """A run that claims its items itself when a worker starts it (nothing is claimed
    here, so a job that never starts holds nothing). Mode and size default to the Setting
    rows as they are right now."""
    if mode is None:
        current = Setting.load()
        batched = current.batch_mode_enabled and current.batch_size > 1
        mode, batch_size = (Mode.BATCH, current.batch_size) if batched else (Mode.SINGLE, 1)
    provider = llm_config.default_provider()
    return BatchRun.objects.create(mode=mode, workers=in_flight_for(mode, batch_size or 1),
                                   provider=provider, model=llm_config.model_for(provider))


def open_batch(mode: str, size: int, ids: Iterable[int]) -> BatchRun | None:
    """Claim the given items into a new run up front (multi-bot: these and no others)."""
    with transaction.atomic():
        run = open_run(mode, size)
        items = queue.claim(size, run, ids=ids)
        if not items:
            run.delete()
            return None
        run.size = len(items)
        run.save(update_fields=["size"])
    return run


def run_batch(batch_run_id: int) -> BatchRun:
    """The RQ job's body (and ``tick --sync``): drain, then record."""
    run = BatchRun.objects.filter(id=batch_run_id).first()
    if run is None:  # a run that found the queue dry is deleted; its job came again
        return BatchRun(id=batch_run_id, status=BatchRun.Status.SUCCEEDED)
    if run.status not in (BatchRun.Status.QUEUED, BatchRun.Status.RUNNING):
        return run  # already finished: a duplicate delivery of the job is harmless
    started = timezone.now()
    BatchRun.objects.filter(id=run.id).update(status=BatchRun.Status.RUNNING,
                                              started_at=started, heartbeat_at=started)
    run.refresh_from_db()
    # A paused fallback provider is left out of this process's failover chain; a refilling
    # run follows later changes (live_settings).
    llm_config.set_paused(Setting.load().paused_providers)
    run.size = 0  # counted again as the drain claims (multi-bot's were claimed up front)
    with metrics.batched(), outbox.Delivery(run) as delivery:
        work = drain.Drain(run, delivery)
        work.run_to_end()
    run.generation_s = (timezone.now() - started).total_seconds()
    if work.stopped:
        log.info("run %s stopped refilling: %s", run.id, work.stopped)
    return record(run, work.unusable)


def _p95(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def record(run: BatchRun, unusable: Counter) -> BatchRun:
    """Write the run's figures from what was saved (the single source of truth)."""
    generations = list(run.generations.all())
    sent = QueueItem.objects.filter(batch_run=run, status=QueueItem.Status.DONE).count()
    errors = Counter(g.error_kind for g in generations if not g.ok)
    errors.update(f"telegram_{m}" for m in Message.objects.filter(batch_run=run).exclude(
        status=Message.Status.SENT).values_list("status", flat=True))
    errors.update({k: n for k, n in unusable.items() if k == "invalid_item"})
    latencies = [g.latency_s for g in generations if g.latency_s is not None]
    if run.size == 0:
        # The queue was dry when it started (the tick saw an idle worker): not history.
        BatchRun.objects.filter(id=run.id).delete()
        return run
    run.finished_at = timezone.now()
    assert run.started_at is not None  # run_batch set it before draining
    run.duration_s = (run.finished_at - run.started_at).total_seconds()
    run.successes, run.failures = sent, max(run.size - sent, 0)
    run.throughput = sent / run.duration_s if run.duration_s > 0 else None
    run.latency_mean_s = sum(latencies) / len(latencies) if latencies else None
    run.latency_p95_s = _p95(latencies)
    run.prompt_tokens = sum(g.prompt_tokens for g in generations)
    run.completion_tokens = sum(g.completion_tokens for g in generations)
    run.cached_tokens = sum(g.cached_tokens for g in generations)
    run.cost_usd = pricing.billed(generations)
    run.error_summary = {kind: n for kind, n in errors.items() if n > 0}
    run.status = (BatchRun.Status.SUCCEEDED if sent == run.size and run.size else
                  BatchRun.Status.FAILED if sent == 0 else BatchRun.Status.PARTIAL)
    run.save()
    metrics.observe_batch(run.duration_s, run.successes, run.failures, run.mode, run.provider)
    log.info("batch %s %s: %d/%d sent in %.2fs", run.id, run.mode, sent, run.size,
             run.duration_s)
    return run
