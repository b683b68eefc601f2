"""The tick: beat, recover leases, process the Telegram updates the webhook kept, produce
what the chats call for, then give every idle worker a run.

A run claims its own items when it starts and refills until the queue is dry, so one tick
no longer caps throughput at ``batch_size / interval``: the tick only makes sure each idle
worker has a run to take (django-rq counts workers and waiting jobs), and nothing is claimed
for a job that may never start. No run is started for a provider whose circuit breaker is
open; the summary line says until when.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone

from batchgen import batch_route, health, jobs, pipeline, queue
from batchgen.intake import behaviour, updates
from batchgen.llm import config as llm_config
from batchgen.models import BatchRun

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
    health.beat("tick")  # every tick, with work or without: an alert watches its age
    recovered = pipeline.recover()
    processed = updates.process_pending().total()  # what people said, before producing
    produced = behaviour.produce()  # before claiming, so a reply to a person goes first
    counts = {"produced": produced, "processed": processed}
    _batch_route_step()
    if not queue.has_claimable(hold_after=batch_route.hold_after()):
        return TickSummary(recovered, **counts)
    until = pipeline.breaker_open_until()
    if until is not None:
        provider = llm_config.default_provider()
        blocked = (f"{provider} circuit open until {until.isoformat(timespec='seconds')}, "
                   f"nothing claimed")
        return TickSummary(recovered, **counts, blocked=blocked)
    if sync:
        return TickSummary(recovered, runs=[pipeline.run_batch(pipeline.open_run().id)],
                           **counts)
    runs = []
    for _ in range(jobs.idle_capacity()):
        run = pipeline.open_run()
        enqueue(run)
        runs.append(run)
    return TickSummary(recovered, runs=runs, **counts)


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
        jobs.enqueue(run)
    except Exception as exc:
        reason = f"its job could not be enqueued: {type(exc).__name__}"
        if queue.release(run, reason):
            BatchRun.objects.filter(id=run.id).update(
                status=BatchRun.Status.FAILED, finished_at=timezone.now(),
                error_summary={"enqueue_failed": 1})
        else:
            BatchRun.objects.filter(id=run.id).delete()
        raise
