"""What an operator does to work: requeue dead items, pause and resume a bot, a chat or a
provider. The status changes themselves are queue's and outbox's; this module says which."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from batchgen.models import BATCH_ROUTE_PROVIDERS, Bot, Chat, QueueItem, Setting
from batchgen.work import outbox, queue

PROVIDERS = BATCH_ROUTE_PROVIDERS


@dataclass(frozen=True)
class Requeued:
    requeued: list[int]
    skipped: list[int]  # their send may have arrived: not sent again without a person

    def summary(self) -> str:
        text = f"Requeued {len(self.requeued)} item{'s' * (len(self.requeued) != 1)}"
        if self.skipped:
            text += (f"; left {len(self.skipped)} dead whose send may have arrived "
                     f"(send_unknown): {', '.join(f'#{i}' for i in self.skipped[:10])}")
        return text + "."


def requeue(items: QuerySet[QueueItem], by: str) -> Requeued:
    """Every dead item of ``items`` back to the queue, with attempts reset and the reason
    it died with kept in its history; a failed send goes out again as it was written."""
    dead = items.filter(status=QueueItem.Status.DEAD)
    skipped = outbox.not_resendable(dead)
    with transaction.atomic():
        done = queue.requeue(dead.exclude(id__in=skipped), by)
        outbox.reopen_failed(done)
    return Requeued(requeued=done, skipped=skipped)


def pause(targets: QuerySet[Bot] | QuerySet[Chat], now: datetime | None = None) -> int:
    """Their pending work stays queued and unclaimed (claimed work finishes)."""
    return targets.filter(paused_at__isnull=True).update(paused_at=now or timezone.now())


def resume(targets: QuerySet[Bot] | QuerySet[Chat]) -> int:
    count = targets.filter(paused_at__isnull=False).update(paused_at=None)
    if count:
        transaction.on_commit(queue.nudge)  # their work is claimable again: wake the loops
    return count


def set_provider_paused(provider: str, paused: bool) -> list[str]:
    """Pause or resume ``provider``; returns the paused providers."""
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    with transaction.atomic():
        row, _ = Setting.objects.select_for_update().get_or_create(
            key="paused_providers", defaults={"value": []})
        current = set(Setting.load().paused_providers)  # an invalid saved value reads as []
        row.value = sorted(current | {provider} if paused else current - {provider})
        row.save(update_fields=["value", "updated_at"])
    if not paused:
        transaction.on_commit(queue.nudge)
    return row.value
