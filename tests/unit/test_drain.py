"""The drain's heartbeat, with a fake clock: a long run keeps its leases; a dead one loses them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.utils import timezone

from batchgen.delivery import drain
from batchgen.delivery.drain import Heartbeat
from batchgen.llm import GenerationResult
from batchgen.models import BatchRun, QueueItem
from batchgen.work import queue
from tests.factories import make_item, make_run

pytestmark = pytest.mark.django_db


class FakeClock:
    def __init__(self) -> None:
        self.start = timezone.now()
        self.elapsed = 0.0

    def monotonic(self) -> float:
        return self.elapsed

    def now(self):
        return self.start + timedelta(seconds=self.elapsed)


def test_a_beating_run_keeps_its_items_through_an_hour_of_recoveries(settings) -> None:
    settings.BATCH_LEASE_SECONDS = 60
    clock = FakeClock()
    run = make_run()
    make_item(), make_item()
    queue.claim(2, run, now=clock.now())
    heartbeat = Heartbeat(run, clock=clock.monotonic, now=clock.now)
    beats = 0
    while clock.elapsed < 3600:
        clock.elapsed += 5
        beats += heartbeat.beat()
        assert queue.recover_expired(now=clock.now()) == 0
    assert beats == 3600 // 20  # every third of a lease
    assert QueueItem.objects.filter(status="claimed", batch_run=run, crashes=0).count() == 2
    assert BatchRun.objects.get(id=run.id).heartbeat_at == clock.now()


def test_a_run_that_stops_beating_loses_its_items_within_one_lease(settings) -> None:
    settings.BATCH_LEASE_SECONDS = 60
    clock = FakeClock()
    run = make_run()
    make_item()
    queue.claim(1, run, now=clock.now())
    heartbeat = Heartbeat(run, clock=clock.monotonic, now=clock.now)
    clock.elapsed = 30
    heartbeat.beat(force=True)
    # The worker is killed here: nothing beats any more.
    assert queue.recover_expired(now=clock.now() + timedelta(seconds=59)) == 0
    assert queue.recover_expired(now=clock.now() + timedelta(seconds=61)) == 1
    item = QueueItem.objects.get()
    assert (item.status, item.crashes, item.attempts) == ("pending", 1, 0)


@dataclass(frozen=True)
class AwayResult(GenerationResult):
    """A provider result as the LLM layer reports it once it carries Retry-After."""

    retry_after_s: float | None = None


@pytest.mark.parametrize("kind", ["rate_limit_wait", "circuit_open"])
def test_a_provider_that_asks_for_a_long_wait_defers_the_item_until_then(
        settings, kind: str) -> None:
    settings.BATCH_RETRY_BACKOFF_SECONDS = 30
    make_item(max_attempts=1)
    [item] = queue.claim(1, make_run())
    before = timezone.now()
    drain._fail(item, AwayResult(text=None, error_kind=kind, retry_after_s=900.0))
    item.refresh_from_db()
    assert (item.status, item.attempts) == ("pending", 0)
    assert item.available_at >= before + timedelta(seconds=900)


def test_without_a_retry_after_the_configured_back_off_applies(settings) -> None:
    settings.BATCH_RETRY_BACKOFF_SECONDS = 30
    make_item()
    [item] = queue.claim(1, make_run())
    before = timezone.now()
    drain._fail(item, GenerationResult(text=None, error_kind="rate_limit_wait"))
    item.refresh_from_db()
    assert before + timedelta(seconds=30) <= item.available_at <= timezone.now() + timedelta(
        seconds=30)
