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


class QuickSender:
    """Telegram answering in 0.2 s, without pacing; notes when each send returned."""

    def __init__(self) -> None:
        self.returned: list[float] = []

    def book(self, token: str, chat_id: int) -> float:
        return 0.0

    def push_back_many(self, pushes) -> None:
        pass

    def send(self, token: str, chat_id: int, text: str, **options):
        import time

        from batchgen.telegram.client import SendResult

        time.sleep(0.2)
        self.returned.append(time.monotonic())
        return SendResult("sent", [len(self.returned)], 1, parts_total=1)


@pytest.mark.django_db(transaction=True)
def test_a_sent_reply_is_recorded_at_once_while_another_generation_is_slow(
        settings, monkeypatch) -> None:
    # A reply that Telegram took stays "sending" until it is recorded, and a worker killed
    # meanwhile leaves it "send_unknown": delivered, yet never counted. The run must record
    # it as the send finishes, not when the next generation does.
    import threading
    import time
    from concurrent.futures import Future

    from batchgen.delivery.runs import open_run
    from batchgen.models import Message
    from batchgen.work import outbox
    from tests.factories import make_chat, set_batch_mode

    settings.BATCH_MAX_WORKERS = None
    set_batch_mode(2)
    make_item(chat=make_chat(chat_type="private")), make_item(chat=make_chat(chat_type="private"))
    fake = QuickSender()
    monkeypatch.setattr(outbox, "sender", lambda: fake)
    slow: Future = Future()
    futures = iter([None, slow])

    def submit(work):
        future = next(futures) or Future()
        if not future.done() and future is not slow:
            future.set_result(GenerationResult(text="quick reply", provider="openai",
                                               model="m", latency_s=0.01))
        return future

    monkeypatch.setattr(drain, "_submitter", lambda run: submit)
    recorded: list[float] = []
    mark_sent = outbox._mark_sent
    monkeypatch.setattr(outbox, "_mark_sent",
                        lambda rows: (recorded.append(time.monotonic()), mark_sent(rows))[1])
    threading.Timer(2.0, lambda: slow.set_result(GenerationResult(
        text="slow reply", provider="openai", model="m", latency_s=2.0))).start()
    run = open_run()
    with outbox.Delivery(run) as delivery:
        drain.Drain(run, delivery).run_to_end()

    assert Message.objects.filter(status="sent").count() == 2
    assert recorded[0] - fake.returned[0] < 0.5  # not ~2 s later, with the slow reply
