"""The provider batch route: work that can wait goes through a Batch API at half price. Each
tick, ``step`` polls the open provider batches, returns to the sync path every item whose
deadline is near, and submits the pending items whose deadline leaves room; results are stored
once through the outbox like a sync run's replies. How results are taken and when an item goes
back the sync way: docs/design.md, "The provider batch route".
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from batchgen.core import pricing
from batchgen.core.text import storable
from batchgen.delivery import drain, runs
from batchgen.delivery.routes import hold_after, provider_on
from batchgen.llm import batch_api
from batchgen.llm import config as llm_config
from batchgen.llm.errors import ProviderError
from batchgen.llm.types import GenerationResult
from batchgen.models import BatchRun, Generation, ProviderBatch, QueueItem
from batchgen.models.conversations import Trigger
from batchgen.work import outbox, queue

log = logging.getLogger(__name__)
MAX_ITEMS_PER_BATCH = 5000  # far below OpenAI's 50,000 lines; one tick's worth


@dataclass(frozen=True)
class StepSummary:
    submitted: int = 0
    stored: int = 0
    returned: int = 0  # items sent back to the sync path


def step(now: datetime | None = None) -> StepSummary:
    """The tick's part: poll, return the items near their deadline, submit."""
    now = now or timezone.now()
    stored = returned = 0
    for batch in ProviderBatch.objects.filter(status=ProviderBatch.Status.OPEN):
        done, back = poll(batch)
        stored, returned = stored + done, returned + back
    returned += queue.unbatch(None, "its deadline came near while it waited on a provider batch",
                              due_before=now + timedelta(
                                  seconds=settings.BATCH_ROUTE_FALLBACK_SECONDS), now=now)
    _cancel_emptied()
    summary = StepSummary(submit(now), stored, returned)
    if summary != StepSummary():
        log.info("batch route: %d submitted, %d stored, %d back to the sync path",
                 summary.submitted, summary.stored, summary.returned)
    return summary


def submit(now: datetime | None = None) -> int:
    """Submit the pending items whose deadline leaves room as one provider batch."""
    provider = provider_on()
    now = now or timezone.now()
    after = hold_after(now)  # None only when the route is off
    if provider is None or after is None or not queue.has_for_batch(after, now):
        return 0
    batch = ProviderBatch.objects.create(provider=provider,
                                         model=llm_config.model_for(provider))
    items = queue.hold_for_batch(batch, MAX_ITEMS_PER_BATCH, after, now)
    requests, prepared = {}, {}
    for item in items:
        try:
            work = _prepare(item)
            if work is not None:
                requests[str(item.id)] = batch_api.request(work.prompt, work.system_prompt)
                prepared[str(item.id)] = {"prompt": work.prompt, "system": work.system_prompt}
        except Exception as exc:  # one unusable item goes the sync way, which settles it
            queue.unbatch(batch, storable(f"not usable for a provider batch: {exc}"),
                          ids=[item.id])
    if not requests:
        queue.unbatch(batch, "nothing to submit")
        batch.delete()
        return 0
    try:
        external_id = batch_api.submit(provider, requests)
    except (ProviderError, ValueError) as exc:
        # The items were never sent anywhere: back to the queue, the sync path takes them.
        queue.unbatch(batch, storable(f"provider batch not submitted: {exc}"))
        _end(batch, ProviderBatch.Status.FAILED, storable(str(exc)))
        return 0
    ProviderBatch.objects.filter(id=batch.id).update(external_id=external_id,
                                                     size=len(requests), requests=prepared)
    return len(requests)


def _prepare(item: QueueItem) -> drain.Work | None:
    # drain.prepare_claimed settles claimed items only; an unusable one here goes back to
    # the sync path, which settles it with its reason.
    if item.bot is None or item.chat is None or not item.bot.is_active:
        queue.unbatch(item.provider_batch, "not usable for a provider batch", ids=[item.id])
        return None
    return drain.prepare(item)


def poll(batch: ProviderBatch) -> tuple[int, int]:
    """Poll one open batch; store its results once it ended. Returns (stored, returned)."""
    if not batch.external_id:
        return 0, 0  # being submitted right now (or its submitter died: deadlines return it)
    try:
        state = batch_api.poll(batch.provider, batch.external_id)
        found = {} if state.state == batch_api.RUNNING else \
            batch_api.results(batch.provider, batch.external_id)
    except ProviderError as exc:
        log.warning("provider batch %s not polled: %s", batch.id, exc)
        return 0, 0
    ProviderBatch.objects.filter(id=batch.id).update(polled_at=timezone.now(),
                                                     provider_status=state.provider_status)
    if state.state == batch_api.RUNNING:
        return 0, 0
    stored = store(batch, found)
    returned = queue.unbatch(batch, f"provider batch {state.provider_status} without a reply "
                                    f"for it {state.error}".strip())
    ended = ProviderBatch.Status.DONE if state.state == batch_api.COMPLETED else \
        ProviderBatch.Status.CANCELLED if "cancel" in state.provider_status.lower() else \
        ProviderBatch.Status.FAILED
    _end(batch, ended, storable(state.error))
    return stored, returned


def store(batch: ProviderBatch, found: dict[str, GenerationResult]) -> int:
    """Store the results of the items still waiting on ``batch`` (each once), as a run."""
    ids = [int(custom_id) for custom_id in found if custom_id.isdigit()]
    run = BatchRun.objects.create(mode=BatchRun.Mode.BATCH, workers=1, provider=batch.provider,
                                  model=batch.model, status=BatchRun.Status.RUNNING,
                                  started_at=timezone.now())
    items = queue.claim_from_batch(batch, run, ids)
    run.size = len(items)
    unusable: Counter[str] = Counter()
    with outbox.Delivery(run) as delivery:
        group = []
        for item in outbox.resume(items, delivery):
            work = drain.prepare_claimed(item)
            if work is None:
                unusable["invalid_item"] += 1
                continue
            sent = batch.requests.get(str(item.id), {})
            group.append((replace(work, prompt=sent.get("prompt", work.prompt)),
                          found[str(item.id)]))
        if group:
            # A cap that binds now holds these replies too: they are paid for, not sent.
            capped, skip = _capped([work.item for work, _ in group])
            drain.save(run, group, delivery, route="batch", capped=capped, skip=skip)
    runs.record(run, unusable)
    _bill_at_batch_price(run)
    return len(items)


def _capped(items: list[QueueItem]) -> tuple[dict[int, str], frozenset[int]]:
    """The items whose chat or bot a cap binds, with the cap; and which of them are cadence
    posts (skipped, where a reply to someone is kept for when the cap lifts)."""
    capped = {item.id: reason for item in items
              if (reason := (item.chat.cap_reason if item.chat else "")
                  or (item.bot.cap_reason if item.bot else ""))}
    if not capped:
        return {}, frozenset()
    return capped, frozenset(Trigger.objects.filter(queue_item_id__in=list(capped),
                                                    kind="cadence")
                             .values_list("queue_item_id", flat=True))


def _bill_at_batch_price(run: BatchRun) -> None:
    total = pricing.billed(Generation.objects.filter(batch_run=run), route=pricing.BATCH)
    BatchRun.objects.filter(id=run.id).update(cost_usd=total)


def cancel(batch: ProviderBatch) -> tuple[int, int]:
    """Cancel a batch at the provider; what it finished is stored, the rest goes sync."""
    try:
        batch_api.cancel(batch.provider, batch.external_id)
    except ProviderError as exc:
        log.warning("provider batch %s not cancelled: %s", batch.id, exc)
    return poll(batch)


def _cancel_emptied() -> None:
    """An open batch none of whose items still waits on it (all sent the sync way) is
    cancelled: its results would be ignored anyway. One whose submitter died before it
    learnt the provider's id is closed once its items went back."""
    emptied = ProviderBatch.objects.filter(status=ProviderBatch.Status.OPEN).exclude(
        items__status=QueueItem.Status.BATCHED)
    stale = timezone.now() - timedelta(seconds=settings.BATCH_LEASE_SECONDS)
    for batch in emptied.filter(external_id="", submitted_at__lt=stale):
        _end(batch, ProviderBatch.Status.FAILED, "its submitter stopped before the provider "
                                                 "answered")
    for batch in emptied.exclude(external_id=""):
        try:
            batch_api.cancel(batch.provider, batch.external_id)
        except ProviderError as exc:
            log.warning("provider batch %s not cancelled: %s", batch.id, exc)
        _end(batch, ProviderBatch.Status.CANCELLED, "no item waits on it any more")


def _end(batch: ProviderBatch, status: str, error: str = "") -> None:
    ProviderBatch.objects.filter(id=batch.id, status=ProviderBatch.Status.OPEN).update(
        status=status, error=error[:2000], finished_at=timezone.now())
