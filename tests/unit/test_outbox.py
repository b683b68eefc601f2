"""The outbox: long Telegram waits defer the item, deleted bots and chats settle with the reason."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from batchgen.delivery import runs, scheduler
from batchgen.models import BatchRun, Message, PostingSlot, QueueItem
from batchgen.telegram.client import SendResult
from batchgen.work import outbox, queue
from tests.factories import make_item

pytestmark = pytest.mark.django_db(transaction=True)


def claimed_with_message(text: str = "saved text") -> tuple[QueueItem, Message, BatchRun]:
    item = make_item(max_attempts=1)
    run = runs.open_run(BatchRun.Mode.SINGLE, 1)
    [item] = queue.claim(1, run)
    message = Message.objects.create(queue_item=item, bot=item.bot, chat=item.chat,
                                     batch_run=run, text=text, status="sending")
    return item, message, run


def test_a_long_retry_after_defers_the_message_without_spending_an_attempt(
        settings) -> None:
    settings.BATCH_MAX_DEFER_SECONDS = 86400
    item, message, _ = claimed_with_message()
    result = SendResult("failed", error="Too Many Requests: retry after 3600", retryable=True,
                        retry_after_s=3600)
    before = timezone.now()
    outbox._settle_unsent(message, item, result)
    item.refresh_from_db()
    message.refresh_from_db()
    assert (item.status, item.attempts, message.status) == ("pending", 0, "pending")
    assert item.available_at >= before + timedelta(seconds=3600)
    assert message.text == "saved text"


def test_a_retry_after_beyond_the_ceiling_ends_dead_with_the_reason(settings) -> None:
    settings.BATCH_MAX_DEFER_SECONDS = 600
    item, message, _ = claimed_with_message()
    result = SendResult("failed", error="Too Many Requests: retry after 3600", retryable=True,
                        retry_after_s=3600)
    outbox._settle_unsent(message, item, result)
    item.refresh_from_db()
    message.refresh_from_db()
    assert (item.status, message.status) == ("dead", "failed")
    assert item.last_error.startswith("asked to wait 3600s, more than BATCH_MAX_DEFER_SECONDS")


@pytest.mark.parametrize("deleted", ["bot", "chat"])
def test_a_pending_message_whose_bot_or_chat_was_deleted_settles_dead(
        pipeline_env, deleted: str) -> None:
    _, fake_telegram = pipeline_env
    item = make_item()
    Message.objects.create(queue_item=item, bot=item.bot, chat=item.chat, text="saved text")
    getattr(item, deleted).delete()
    run = scheduler.tick(sync=True).run
    item.refresh_from_db()
    message = Message.objects.get(queue_item=item)
    assert item.status == "dead" and message.status == "failed"
    assert item.last_error == f"telegram: not sent, its {deleted} was deleted"
    assert run.failures == 1 and fake_telegram.messages() == []


class SlotBookingSender:
    """A sender whose slots are ``delay`` seconds away; it notes the message's status in the
    database at the moment each HTTP call would start."""

    def __init__(self, delay: float) -> None:
        self.delay, self.seen, self.booked, self.pushed = delay, [], 0, []

    def book(self, token: str, chat_id: int) -> float:
        self.booked += 1
        return self.delay

    def push_back_many(self, pushes: list[tuple[str, int, float]]) -> None:
        self.pushed += [seconds for _, _, seconds in pushes]

    def send(self, token: str, chat_id: int, text: str, **options) -> SendResult:
        self.seen.append((text, Message.objects.get(text=text).status, options["paced"]))
        return SendResult("sent", [len(self.seen)], 1, parts_total=1)


def test_a_reply_stays_pending_until_its_slot_and_is_sending_only_once_the_call_starts(
        monkeypatch) -> None:
    from django.db import transaction

    fake = SlotBookingSender(delay=5.0)
    monkeypatch.setattr(outbox, "sender", lambda: fake)
    item, _, run = claimed_with_message()
    # No slot booked as its generation started (Redis was away then): booked on saving.
    Message.objects.filter(queue_item=item).delete()
    now = [100.0]
    with outbox.Delivery(run, clock=lambda: now[0]) as delivery:
        with transaction.atomic():
            delivery.send_new([outbox.Draft(item, "prompt", "hello", "openai", "m")])
        assert delivery.settle() is True  # waiting for its slot
        assert Message.objects.get(queue_item=item).status == "pending"  # resendable as is
        assert fake.seen == [] and delivery.next_due_in() == 5.0
        now[0] += 5.0
        delivery.settle(block=True)
    assert fake.seen == [("hello", "sending", True)]  # booked: the thread does not wait again
    assert Message.objects.get(queue_item=item).status == "sent"


def test_the_slot_booked_as_generation_starts_is_the_one_the_reply_goes_out_at(
        monkeypatch, redis_url) -> None:
    import time

    from django.db import transaction

    fake = SlotBookingSender(delay=99.0)
    monkeypatch.setattr(outbox, "sender", lambda: fake)
    item, _, run = claimed_with_message()
    queue.book_posting_slots([item])
    assert abs(item.slot_at - time.time()) < 1.0  # the bot's next slot in the chat: now
    Message.objects.filter(queue_item=item).delete()
    with outbox.Delivery(run) as delivery:
        with transaction.atomic():
            delivery.send_new([outbox.Draft(item, "prompt", "hello", "openai", "m")])
    assert fake.booked == 0 and fake.seen == [("hello", "sending", True)]


@pytest.mark.parametrize("late", [
    SendResult("sent", [777], 1, parts_total=1),
    SendResult("failed", error="Bad Request: chat not found"),
    SendResult("failed", error="Too Many Requests", retryable=True, retry_after_s=5),
])
def test_a_paused_runs_late_result_never_changes_a_settled_message(late: SendResult) -> None:
    # The run was paused (SIGSTOP) past its lease mid-send: recovery and the next run found
    # the message "sending" and settled it send_unknown, the item dead. Then it woke up.
    item, message, _ = claimed_with_message()
    QueueItem.objects.filter(id=item.id).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1))
    queue.recover_expired()
    [again] = queue.claim(1, runs.open_run(BatchRun.Mode.SINGLE, 1))
    with outbox.Delivery(again.batch_run) as delivery:
        assert outbox.resume([again], delivery) == []  # settled, not generated again

    if late.status == "sent":
        outbox._settle_sent([(message, item, late, None)])
    else:
        outbox._settle_unsent(message, item, late)

    message.refresh_from_db()
    item.refresh_from_db()
    assert (item.status, message.status) == ("dead", "send_unknown")  # they agree
    assert f"late result of its send: {late.status}" in message.error


def test_a_reply_ready_after_its_slot_goes_at_once_and_moves_the_next_slot_back(
        monkeypatch) -> None:
    import time

    from django.db import transaction

    fake = SlotBookingSender(delay=99.0)
    monkeypatch.setattr(outbox, "sender", lambda: fake)
    item, _, run = claimed_with_message()
    item.slot_at = time.time() - 2.0  # its generation took 2 s past the slot it booked
    Message.objects.filter(queue_item=item).delete()
    slot = PostingSlot.objects.get(bot=item.bot, chat=item.chat)
    with outbox.Delivery(run) as delivery:
        with transaction.atomic():
            delivery.send_new([outbox.Draft(item, "prompt", "hello", "openai", "m")])
    assert fake.seen == [("hello", "sending", True)] and fake.booked == 0
    assert fake.pushed == [pytest.approx(2.0, abs=0.2)]
    moved = PostingSlot.objects.get(id=slot.id).next_at - slot.next_at
    assert moved.total_seconds() == pytest.approx(2.0, abs=0.2)  # the claim's schedule too


def test_replies_due_together_go_sending_in_one_statement_and_one_another_run_took_is_skipped(
        monkeypatch) -> None:
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    fake = SlotBookingSender(delay=5.0)
    monkeypatch.setattr(outbox, "sender", lambda: fake)
    run = runs.open_run(BatchRun.Mode.BATCH, 5)
    for _ in range(3):
        make_item()
    items = queue.claim(3, run)
    other = runs.open_run(BatchRun.Mode.BATCH, 5)
    now = [100.0]
    with outbox.Delivery(run, clock=lambda: now[0]) as delivery:
        with transaction.atomic():
            delivery.send_new([outbox.Draft(item, "p", f"reply {n}", "openai", "m")
                               for n, item in enumerate(items)])
        taken = Message.objects.get(text="reply 1")  # its run's lease ran out: another took it
        Message.objects.filter(id=taken.id).update(status="sending", batch_run=other)
        now[0] += 5.0  # their slots come
        with CaptureQueriesContext(connection) as queries:
            assert delivery.pump() == 2
        delivery.settle(block=True)
    marks = [q["sql"] for q in queries.captured_queries
             if q["sql"].startswith("UPDATE") and "batchgen_message" in q["sql"]]
    assert len(marks) == 1  # one compare-and-set for the replies due together
    assert sorted(text for text, _, _ in fake.seen) == ["reply 0", "reply 2"]
    assert all(status == "sending" for _, status, _ in fake.seen)
    assert Message.objects.get(id=taken.id).status == "sending"  # left to the run that took it


def test_late_replies_move_their_claim_slots_back_in_one_statement_each_by_its_own_delay(
        django_assert_num_queries) -> None:
    _late_replies_move_their_slots(django_assert_num_queries)


@pytest.mark.postgres
def test_late_replies_move_their_claim_slots_back_on_postgresql_too(
        django_assert_num_queries) -> None:
    _late_replies_move_their_slots(django_assert_num_queries)  # its own VALUES statement


def _late_replies_move_their_slots(django_assert_num_queries) -> None:
    run = runs.open_run(BatchRun.Mode.BATCH, 5)
    for _ in range(3):
        make_item()
    items = queue.claim(3, run)
    before = {s.chat_id: s.next_at for s in PostingSlot.objects.all()}
    with django_assert_num_queries(1):
        queue.push_back_slots([(items[0], 0.07), (items[1], 0.9), (items[2], 2.5)])
    moved = {s.chat_id: (s.next_at - before[s.chat_id]).total_seconds()
             for s in PostingSlot.objects.all()}
    # Each by exactly its own delay: a small one left out would add up, send after send, into
    # claims that come ever earlier than the chat's real schedule.
    assert moved == {items[0].chat_id: pytest.approx(0.07), items[1].chat_id: pytest.approx(0.9),
                     items[2].chat_id: pytest.approx(2.5)}


@pytest.mark.postgres
def test_sends_that_finished_together_are_settled_in_one_statement_each_with_its_own_ids(
        ) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    run = runs.open_run(BatchRun.Mode.BATCH, 5)
    for _ in range(3):
        make_item()
    items = queue.claim(3, run)
    messages = [Message.objects.create(queue_item=item, bot=item.bot, chat=item.chat,
                                       batch_run=run, text=f"reply {n}", status="sending")
                for n, item in enumerate(items)]
    # Its run's lease ran out meanwhile and recovery settled it: a late result never wins.
    Message.objects.filter(id=messages[1].id).update(status="send_unknown")
    at = timezone.now() - timedelta(seconds=3)
    finished = [(message, item, SendResult("sent", [900 + n], 1, parts_total=1), at)
                for n, (message, item) in enumerate(zip(messages, items, strict=True))]
    with CaptureQueriesContext(connection) as queries:
        outbox._settle_sent(finished)
    marks = [q for q in queries.captured_queries if q["sql"].startswith("UPDATE")
             and "batchgen_message" in q["sql"].split("SET")[0]]
    assert len(marks) == 2  # the compare-and-set for all three, and the late note on one
    rows = {m.text: m for m in Message.objects.all()}
    assert [(rows[f"reply {n}"].status, rows[f"reply {n}"].telegram_message_ids,
             rows[f"reply {n}"].telegram_message_id, rows[f"reply {n}"].parts_sent)
            for n in (0, 2)] == [("sent", [900], 900, 1), ("sent", [902], 902, 1)]
    assert rows["reply 0"].sent_at == at
    assert rows["reply 1"].status == "send_unknown" and "late result" in rows["reply 1"].error
    statuses = {item.id: item.status for item in QueueItem.objects.all()}
    assert [statuses[item.id] for item in items] == ["done", "claimed", "done"]


def test_a_flood_wait_leaves_the_message_resendable_not_sending(pipeline_env) -> None:
    # Telegram answers 429 "retry after 3". Waiting that out on the send thread kept the
    # message "sending" for 3 s, and a worker killed meanwhile left a reply that never left
    # as "send_unknown". It is "pending" while it waits, then goes once.
    from django.db import transaction

    _, fake_telegram = pipeline_env
    fake_telegram.control(fault="429", count=1, retry_after=3)
    item = make_item()
    run = runs.open_run(BatchRun.Mode.SINGLE, 1)
    [item] = queue.claim(1, run)
    with outbox.Delivery(run) as delivery:
        with transaction.atomic():
            delivery.send_new([outbox.Draft(item, "prompt", "hello", "openai", "m")])
        assert delivery.settle(timeout=1.0) is True  # the 429 is back: the wait is ahead
        message = Message.objects.get(queue_item=item)
        assert (message.status, message.text) == ("pending", "hello")
        assert fake_telegram.messages() == []
        assert 1.0 < (delivery.next_due_in() or 0) <= 3.0
        delivery.settle(block=True)
    message.refresh_from_db()
    item.refresh_from_db()
    assert (message.status, item.status, item.attempts) == ("sent", "done", 1)  # the claim's
    assert [m["text"] for m in fake_telegram.messages()] == ["hello"]


LATE_RESULTS = {
    "sent": SendResult("sent", [777], 1, parts_total=1),
    "send_unknown": SendResult("send_unknown", error="read timeout"),
    "failed": SendResult("failed", error="Bad Request: chat not found", chat_gone=True),
    "flood wait in the run": SendResult("failed", error="Too Many Requests", retryable=True,
                                        retry_after_s=5),
    "flood wait deferred": SendResult("failed", error="Too Many Requests", retryable=True,
                                      retry_after_s=3600),
    "unreachable": SendResult("failed", error="connection refused", retryable=True),
    "migrated": SendResult("failed", error="migrated", migrate_to_chat_id=-100999),
}


@pytest.mark.parametrize("settled_as", [("sent", "done"), ("send_unknown", "dead"),
                                        ("failed", "dead")])
@pytest.mark.parametrize("late", list(LATE_RESULTS))
def test_a_result_that_comes_after_its_message_was_settled_changes_neither_state(
        monkeypatch, caplog, settings, settled_as: tuple[str, str], late: str) -> None:
    # Recovery settles the message while its send's result is on its way back (the run was
    # paused past its lease): the result is recorded beside the final state, never over it,
    # and item and message still agree.
    settings.BATCH_MAX_DEFER_SECONDS = 86400
    item, message, run = claimed_with_message()
    chat_id = item.chat.telegram_chat_id
    progress = outbox._progress

    def settled_meanwhile(message: Message, result: SendResult) -> Message:
        Message.objects.filter(id=message.id).update(status=settled_as[0])
        QueueItem.objects.filter(id=item.id).update(status=settled_as[1])
        return progress(message, result)

    monkeypatch.setattr(outbox, "_progress", settled_meanwhile)
    result = LATE_RESULTS[late]
    with caplog.at_level("WARNING", logger="batchgen.work.outbox"):
        if result.status == "sent":
            outbox._settle_sent([(message, item, result, None)])
        elif late == "flood wait in the run":
            with outbox.Delivery(run) as delivery:
                assert delivery._wait_out(message, item, result) is True
                assert delivery.next_due_in() is None  # not sent again
        else:
            outbox._settle_unsent(message, item, result)

    message.refresh_from_db()
    item.refresh_from_db()
    assert (message.status, item.status) == settled_as
    assert f"late result of its send: {result.status}" in message.error
    assert f"message {message.id}: a late send result" in caplog.text
    item.chat.refresh_from_db()
    assert item.chat.telegram_chat_id == chat_id  # a late "migrated" moves nothing
