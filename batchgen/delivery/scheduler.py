"""The tick: beat, recover leases, process the Telegram updates the webhook kept, produce what the
chats call for, then give every idle worker a run (none for a provider whose circuit breaker
is open; the summary line says until when). Runs claim their own items, so the tick claims
nothing (docs/design.md, "Runs, the drain and the tick").
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from batchgen.conversations import behaviour, updates
from batchgen.delivery import batch_route, caps, routes, runs, workers
from batchgen.llm import config as llm_config
from batchgen.models import MAX_BATCH_SIZE, BatchRun, Bot, Chat
from batchgen.state import heartbeats
from batchgen.work import queue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TickSummary:
    recovered: int
    produced: int = 0
    processed: int = 0  # Telegram updates
    runs: list[BatchRun] = field(default_factory=list)
    blocked: str = ""  # why nothing was started although work is pending
    at: datetime = field(default_factory=timezone.now)

    @property
    def run(self) -> BatchRun | None:
        return self.runs[0] if self.runs else None

    def line(self) -> str:
        stamp = self.at.isoformat(timespec="seconds")
        tail = (f"{self.processed} updates processed, {self.produced} items produced, "
                f"{self.recovered} expired leases returned")
        if self.blocked:
            return f"{stamp} tick: {self.blocked}; {tail}"
        if not self.runs:
            return f"{stamp} tick: nothing pending; {tail}"
        run = self.runs[0]
        if len(self.runs) == 1 and run.status != BatchRun.Status.QUEUED:  # ran in-process
            return (f"{stamp} tick: batch {run.id} ({run.mode}, {run.size} items, "
                    f"status {run.status}); {tail}")
        ids = ", ".join(str(run.id) for run in self.runs)
        return (f"{stamp} tick: {len(self.runs)} run(s) queued for idle workers ({ids}; "
                f"{run.mode}, {run.workers} in flight each); {tail}")


def tick(sync: bool = False) -> TickSummary:
    """One tick: recover leases, process pending Telegram updates, produce, then run one
    drain in-process (``sync``) or enqueue a run for each idle worker."""
    llm_config.check_configured()
    heartbeats.beat("tick")  # every tick, with work or without: an alert watches its age
    recovered = runs.recover()
    processed = updates.process_pending().total()  # what people said, before producing
    produced = behaviour.produce()  # before claiming, so a reply to a person goes first
    counts: dict[str, Any] = {"produced": produced, "processed": processed}
    caps.apply()  # before the batch route and the claims: what a cap binds waits or is skipped
    queue.refresh_statistics()  # a backlog pushed at once: claims read it in index order
    _batch_route_step()
    if not queue.has_claimable(hold_after=routes.hold_after()):
        return TickSummary(recovered, **counts)
    until = runs.breaker_open_until()
    if until is not None:
        provider = llm_config.default_provider()
        blocked = (f"{provider} circuit open until {until.isoformat(timespec='seconds')}, "
                   f"nothing claimed")
        return TickSummary(recovered, **counts, blocked=blocked)
    if sync:
        return TickSummary(recovered, runs=[runs.run_batch(runs.open_run().id)],
                           **counts)
    started = []
    for _ in range(workers.idle_capacity()):
        run = runs.open_run()
        enqueue(run)
        started.append(run)
    return TickSummary(recovered, runs=started, **counts)


def _batch_route_step() -> None:
    """Work that can wait goes to a provider batch before runs start, so none claims it.
    A failure here (a provider's batch endpoint down, a bug) must not stop the sync path:
    items it leaves behind fall back by their deadline."""
    try:
        batch_route.step()
    except Exception:
        log.exception("the provider batch route's step failed; the sync path goes on")


def enqueue(run: BatchRun) -> None:
    """Hand a committed run to the workers. If its job cannot be enqueued (Redis away),
    whatever it claimed returns to the queue at once, no attempt spent, and the error
    goes to the caller."""
    try:
        workers.enqueue(run)
    except Exception as exc:
        reason = f"its job could not be enqueued: {type(exc).__name__}"
        if queue.release(run, reason):
            BatchRun.objects.filter(id=run.id).update(
                status=BatchRun.Status.FAILED, finished_at=timezone.now(),
                error_summary={"enqueue_failed": 1})
        else:
            BatchRun.objects.filter(id=run.id).delete()
        raise


def generate_for_multiple_bots(bot_ids: Iterable[int], chat_id: int,
                               sync: bool = False) -> BatchRun:
    """The document's Scenario 2: every given bot replies in one chat, in one
    BatchRun, generated in parallel. ``chat_id`` is the Chat's primary key.
    The run goes to a worker after commit, or runs in-process with ``sync``."""

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
        run = runs.open_batch(runs.Mode.MULTI_BOT, len(items), ids=[item.id for item in items])
    assert run is not None  # its items were pushed in this transaction, so it claimed them
    if sync:
        return runs.run_batch(run.id)
    enqueue(run)
    return run
