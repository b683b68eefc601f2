"""Every state change of a QueueItem: push, claim, recover, finish, retry, kill.

Claims are safe with several tick processes at once: on PostgreSQL the
candidate rows are locked with ``SELECT … FOR UPDATE SKIP LOCKED``; on SQLite
(which ignores ``select_for_update``) the project opens transactions with
``BEGIN IMMEDIATE`` so claimers queue up behind one write lock. On both the
update itself is a compare-and-set on ``status='pending'``, so an item can
never be claimed into two batches whatever the database does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from batchgen.models import BatchRun, Bot, Chat, QueueItem

log = logging.getLogger(__name__)
Status = QueueItem.Status


def push(bot: Bot, chat: Chat, priority: int = 0, recent_messages: Iterable[str] = (),
         max_attempts: int | None = None) -> QueueItem:
    """Queue 'bot should say something in chat'."""
    return QueueItem.objects.create(
        bot=bot, chat=chat, priority=priority, recent_messages=list(recent_messages),
        max_attempts=max_attempts or settings.BATCH_MAX_ATTEMPTS,
    )


def _claimable(now: datetime):
    return QueueItem.objects.filter(
        Q(available_at__isnull=True) | Q(available_at__lte=now), status=Status.PENDING,
    ).order_by("-priority", "created_at", "id")


def claim(limit: int, batch_run: BatchRun, lease_seconds: float | None = None,
          ids: Iterable[int] | None = None, now: datetime | None = None) -> list[QueueItem]:
    """Claim up to ``limit`` of the highest-priority pending items (oldest first)
    into ``batch_run``, each with a lease; ``ids`` restricts the candidates."""
    now = now or timezone.now()
    lease = timedelta(seconds=lease_seconds or settings.BATCH_LEASE_SECONDS)
    with transaction.atomic():
        candidates = _claimable(now)
        if ids is not None:
            candidates = candidates.filter(id__in=list(ids))
        chosen = list(candidates.select_for_update(skip_locked=True)
                      .values_list("id", flat=True)[:limit])
        # Compare-and-set: only rows still pending change hands.
        QueueItem.objects.filter(id__in=chosen, status=Status.PENDING).update(
            status=Status.CLAIMED, batch_run=batch_run, lease_expires_at=now + lease,
            attempts=F("attempts") + 1, updated_at=now,
        )
    return list(claimed_items(batch_run))


def claimed_items(batch_run: BatchRun):
    """The items this batch still holds (a lease that expired and was re-claimed is gone)."""
    return (QueueItem.objects.filter(batch_run=batch_run, status=Status.CLAIMED)
            .select_related("bot", "chat").order_by("-priority", "created_at", "id"))


def pop_highest_priority(batch_run: BatchRun) -> QueueItem | None:
    """The source document's convenience: claim the single best pending item."""
    items = claim(1, batch_run)
    return items[0] if items else None


def recover_expired(now: datetime | None = None) -> int:
    """Return items whose lease expired (their worker died) to the queue.

    Safe against double sends: the pipeline looks at an item's outbox row
    before generating, so an item whose message was sent or was being sent is
    finished, not sent again.
    """
    now = now or timezone.now()
    expired = QueueItem.objects.filter(status=Status.CLAIMED, lease_expires_at__lt=now)
    count = expired.update(status=Status.PENDING, lease_expires_at=None, available_at=None,
                           last_error="lease expired: the worker did not finish",
                           updated_at=now)
    if count:
        log.warning("returned %d items with expired leases to the queue", count)
    return count


def _held(item: QueueItem, batch_run_id: int | None):
    # Only the batch that holds the claim may change the item.
    return QueueItem.objects.filter(id=item.id, status=Status.CLAIMED, batch_run_id=batch_run_id)


def finish(item: QueueItem, now: datetime | None = None) -> bool:
    now = now or timezone.now()
    return bool(_held(item, item.batch_run_id).update(
        status=Status.DONE, finished_at=now, lease_expires_at=None, last_error="",
        updated_at=now))


def finish_many(items: Iterable[QueueItem], now: datetime | None = None) -> int:
    """``finish`` for a group of items of one batch, in one statement."""
    items = list(items)
    if not items:
        return 0
    now = now or timezone.now()
    return QueueItem.objects.filter(
        id__in=[item.id for item in items], status=Status.CLAIMED,
        batch_run_id=items[0].batch_run_id,
    ).update(status=Status.DONE, finished_at=now, lease_expires_at=None, last_error="",
             updated_at=now)


def kill(item: QueueItem, reason: str, now: datetime | None = None) -> bool:
    """Mark dead for good, with the reason (never silently dropped)."""
    now = now or timezone.now()
    return bool(_held(item, item.batch_run_id).update(
        status=Status.DEAD, finished_at=now, lease_expires_at=None, last_error=reason[:2000],
        updated_at=now))


def retry_later(item: QueueItem, reason: str, now: datetime | None = None) -> str:
    """A failed attempt: back to the queue with exponential back-off, or dead
    after ``max_attempts``. Returns the new status."""
    now = now or timezone.now()
    if item.attempts >= item.max_attempts:
        kill(item, f"gave up after {item.attempts} attempts: {reason}", now)
        return Status.DEAD
    delay = settings.BATCH_RETRY_BACKOFF_SECONDS * 2 ** max(item.attempts - 1, 0)
    _held(item, item.batch_run_id).update(
        status=Status.PENDING, available_at=now + timedelta(seconds=delay),
        lease_expires_at=None, last_error=reason[:2000], updated_at=now)
    return Status.PENDING


def defer(item: QueueItem, reason: str, delay_s: float, now: datetime | None = None) -> bool:
    """Back to the queue without spending an attempt (the provider was
    unavailable: circuit open, or the rate limit left no room in time)."""
    now = now or timezone.now()
    return bool(_held(item, item.batch_run_id).update(
        status=Status.PENDING, available_at=now + timedelta(seconds=delay_s),
        attempts=F("attempts") - 1, lease_expires_at=None, last_error=reason[:2000],
        updated_at=now))


def depth_by_status() -> dict[str, int]:
    """How many items are in each status (every status listed, zeros included)."""
    counts = dict(QueueItem.objects.values_list("status").annotate(n=Count("id")))
    return {status: counts.get(status, 0) for status in Status.values}
