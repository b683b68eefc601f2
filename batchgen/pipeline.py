"""Run one batch: build prompts -> generate in parallel -> save -> send -> record.

The main thread does all ORM work; only the LLM layer's threads do HTTP
(STYLE.md habit 4). ``tick`` and the RQ job both come through here.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from batchgen import metrics, outbox, queue
from batchgen.llm import GenerationResult, LLMBatchClient, LLMClient
from batchgen.llm import config as llm_config
from batchgen.llm import errors as llm_errors
from batchgen.models import BatchRun, Generation, Message, QueueItem, Setting
from batchgen.prompts import generate_user_prompt

log = logging.getLogger(__name__)
Mode = BatchRun.Mode


@dataclass(frozen=True)
class Work:
    item: QueueItem
    prompt: str


def batch_client() -> LLMBatchClient:
    return LLMBatchClient()


def recover() -> int:
    """Return expired leases to the queue and close batch runs nobody finished."""
    returned = queue.recover_expired()
    cutoff = timezone.now() - timedelta(seconds=settings.BATCH_LEASE_SECONDS)
    stale = BatchRun.objects.filter(status__in=[BatchRun.Status.QUEUED, BatchRun.Status.RUNNING],
                                    created_at__lt=cutoff).exclude(items__status="claimed")
    stale.update(status=BatchRun.Status.FAILED, finished_at=timezone.now(),
                 error_summary={"abandoned": 1})
    return returned


def job_timeout(size: int, workers: int) -> int:
    """Seconds one batch may take: every generation round at its worst, plus sends."""
    rounds = math.ceil(size / max(workers, 1))
    per_send = settings.TELEGRAM_TIMEOUT + 3.0  # includes per-chat pacing
    return int(60 + rounds * llm_config.worst_case_seconds() + size * per_send)


def open_batch(mode: str, size: int, ids: Iterable[int] | None = None) -> BatchRun | None:
    """Claim up to ``size`` items into a new BatchRun; None when nothing is pending."""
    client = batch_client()
    workers = 1 if mode == Mode.SINGLE else min(size, client.max_workers)
    timeout = job_timeout(size, workers)
    with transaction.atomic():
        run = BatchRun.objects.create(mode=mode, workers=workers, provider=client.provider_name,
                                      model=client.model)
        items = queue.claim(size, run, lease_seconds=max(settings.BATCH_LEASE_SECONDS,
                                                         timeout + 60), ids=ids)
        if not items:
            run.delete()
            return None
        run.size = len(items)
        run.save(update_fields=["size"])
    return run


def plan_tick() -> BatchRun | None:
    """What one tick claims, from the Setting rows as they are right now."""
    current = Setting.load()
    if current.batch_mode_enabled and current.batch_size > 1:
        return open_batch(Mode.BATCH, current.batch_size)
    return open_batch(Mode.SINGLE, 1)


def run_batch(batch_run_id: int) -> BatchRun:
    """The RQ job's body (and ``tick --sync``): generate, save, send, record."""
    run = BatchRun.objects.get(id=batch_run_id)
    if run.status not in (BatchRun.Status.QUEUED, BatchRun.Status.RUNNING):
        return run  # already finished: a duplicate delivery of the job is harmless
    BatchRun.objects.filter(id=run.id).update(status=BatchRun.Status.RUNNING,
                                              started_at=timezone.now())
    run.refresh_from_db()
    with metrics.batched(), outbox.Delivery(run) as delivery:
        claimed = list(queue.claimed_items(run))
        fresh = outbox.resume(claimed, delivery)
        unusable = Counter({"resumed_from_outbox": len(claimed) - len(fresh)})
        work = []
        for item in fresh:
            prepared = _prepare(item)
            if isinstance(prepared, Work):
                work.append(prepared)
            else:
                unusable[prepared] += 1
        gen_started = timezone.now()
        for group in _generate(run, work):
            _save(run, group, delivery)
            delivery.settle()
        run.generation_s = (timezone.now() - gen_started).total_seconds()
    return _record(run, unusable)


def _prepare(item: QueueItem) -> Work | str:
    """Turn a claimed item into work, or settle it here and say why."""
    if item.bot is None or item.chat is None:
        queue.kill(item, "its bot was deleted" if item.bot is None else "its chat was deleted")
        return "invalid_item"
    if not item.bot.is_active:
        queue.kill(item, f"bot {item.bot.name!r} is inactive")
        return "invalid_item"
    prompt = generate_user_prompt(
        bot_name=item.bot.name, persona=item.bot.persona, chat_title=item.chat.title,
        recent_messages=[str(m) for m in item.recent_messages or []],
    )
    return Work(item=item, prompt=prompt)


Results = list[tuple[Work, GenerationResult]]


def _generate(run: BatchRun, work: list[Work]) -> Iterator[Results]:
    """Single mode goes through LLMClient (the document's single path); the
    others through the threaded batch client. Results come in groups as they
    finish, so saving and sending overlap with the generations still in flight."""
    if not work:
        return
    if run.mode == Mode.SINGLE:
        for entry in work:
            yield [(entry, LLMClient().generate_detailed(user_prompt=entry.prompt))]
        return
    prompts = [entry.prompt for entry in work]
    for finished in batch_client().iter_batch_groups(prompts):
        yield [(work[index], result) for index, result in finished]


def _save(run: BatchRun, group: Results, delivery: outbox.Delivery) -> None:
    """Record a group of finished generations in one transaction; the replies
    are committed as ``sending`` and go out after the commit."""
    drafts = []
    with transaction.atomic():
        Generation.objects.bulk_create(_generation(run, entry, result)
                                       for entry, result in group)
        for entry, result in group:
            if result.ok:
                drafts.append(outbox.Draft(entry.item, entry.prompt, result.text,
                                           result.provider, result.model))
            else:
                _fail(entry.item, result)
        delivery.send_new(drafts)
    for _, result in group:
        metrics.observe_request(result.provider, result.model,
                                "ok" if result.ok else result.error_kind or "error",
                                result.latency_s, result.prompt_tokens,
                                result.completion_tokens,
                                _cost(result.model, result.prompt_tokens,
                                      result.cached_tokens, result.completion_tokens))


def _generation(run: BatchRun, entry: Work, result: GenerationResult) -> Generation:
    item = entry.item
    return Generation(
        batch_run=run, queue_item=item, bot=item.bot, chat=item.chat, prompt=entry.prompt,
        text=result.text or "", ok=result.ok, error_kind=result.error_kind or "",
        error=result.error_message, latency_s=result.latency_s,
        prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
        cached_tokens=result.cached_tokens, attempts=result.attempts,
        provider=result.provider, model=result.model,
    )


def _fail(item: QueueItem, result: GenerationResult) -> None:
    reason = f"{result.error_kind}: {result.error_message}"
    if result.error_kind in llm_errors.UNAVAILABLE_KINDS:
        queue.defer(item, reason, settings.BATCH_RETRY_BACKOFF_SECONDS)
    elif result.retryable:
        queue.retry_later(item, reason)
    else:
        queue.kill(item, reason)


def _cost(model: str, prompt: int, cached: int, completion: int) -> Decimal | None:
    """USD from the per-model price table; None (not 0) for a model it lacks."""
    price = settings.LLM_PRICES.get(model)
    if price is None:
        return None
    per_input, per_cached, per_output = (Decimal(str(p)) for p in price)
    return ((prompt - cached) * per_input + cached * per_cached
            + completion * per_output) / Decimal(1_000_000)


def _p95(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def _record(run: BatchRun, unusable: Counter) -> BatchRun:
    """Write the run's figures from what was saved (the single source of truth)."""
    generations = list(run.generations.all())
    sent = QueueItem.objects.filter(batch_run=run, status=QueueItem.Status.DONE).count()
    errors = Counter(g.error_kind for g in generations if not g.ok)
    errors.update(f"telegram_{m}" for m in Message.objects.filter(batch_run=run).exclude(
        status=Message.Status.SENT).values_list("status", flat=True))
    errors.update({k: n for k, n in unusable.items() if k == "invalid_item"})
    latencies = [g.latency_s for g in generations if g.latency_s is not None]
    run.finished_at = timezone.now()
    run.duration_s = (run.finished_at - run.started_at).total_seconds()
    run.successes, run.failures = sent, max(run.size - sent, 0)
    run.throughput = sent / run.duration_s if run.duration_s > 0 else None
    run.latency_mean_s = sum(latencies) / len(latencies) if latencies else None
    run.latency_p95_s = _p95(latencies)
    run.prompt_tokens = sum(g.prompt_tokens for g in generations)
    run.completion_tokens = sum(g.completion_tokens for g in generations)
    run.cached_tokens = sum(g.cached_tokens for g in generations)
    costs = [_cost(g.model, g.prompt_tokens, g.cached_tokens, g.completion_tokens)
             for g in generations if g.ok or g.prompt_tokens]
    run.cost_usd = None if any(c is None for c in costs) else sum(costs, Decimal(0))
    run.error_summary = {kind: n for kind, n in errors.items() if n > 0}
    run.status = (BatchRun.Status.SUCCEEDED if sent == run.size and run.size else
                  BatchRun.Status.FAILED if sent == 0 else BatchRun.Status.PARTIAL)
    run.save()
    metrics.observe_batch(run.duration_s, run.successes, run.failures, run.mode, run.provider)
    log.info("batch %s %s: %d/%d sent in %.2fs", run.id, run.mode, sent, run.size,
             run.duration_s)
    return run



@dataclass(frozen=True)
class TickSummary:
    recovered: int
    run: BatchRun | None

    def line(self) -> str:
        if self.run is None:
            return f"tick: nothing pending; {self.recovered} expired leases returned"
        return (f"tick: batch {self.run.id} ({self.run.mode}, {self.run.size} items, "
                f"status {self.run.status}); {self.recovered} expired leases returned")


def tick(sync: bool = False) -> TickSummary:
    """One tick: recover leases, claim per the Setting rows, then run the batch
    in-process (``sync``) or enqueue its RQ job after the claim commits."""
    from batchgen import jobs  # jobs imports this module

    llm_config.check_configured()
    recovered = recover()
    run = plan_tick()
    if run is not None:
        if sync:
            run = run_batch(run.id)
        else:
            jobs.enqueue_after_commit(run)
    return TickSummary(recovered=recovered, run=run)


def generate_for_multiple_bots(bot_ids: Iterable[int], chat_id: int,
                               sync: bool = False) -> BatchRun:
    """The document's Scenario 2: every given bot replies in one chat, in one
    BatchRun, generated in parallel. ``chat_id`` is the Chat's primary key."""
    from batchgen import jobs
    from batchgen.models import MAX_BATCH_SIZE, Bot, Chat

    ids = list(dict.fromkeys(bot_ids))
    if not ids or len(ids) > MAX_BATCH_SIZE:
        raise ValueError(f"bot_ids must name 1 to {MAX_BATCH_SIZE} bots, got {len(ids)}")
    chat = Chat.objects.get(id=chat_id)
    bots = list(Bot.objects.filter(id__in=ids, is_active=True))
    missing = sorted(set(ids) - {bot.id for bot in bots})
    if missing:
        raise ValueError(f"bot_ids: no active bot with id {missing}")
    with transaction.atomic():
        items = [queue.push(bot, chat, priority=1000) for bot in bots]
        run = open_batch(Mode.MULTI_BOT, len(items), ids=[item.id for item in items])
        if not sync:
            jobs.enqueue_after_commit(run)
    return run_batch(run.id) if sync else run
