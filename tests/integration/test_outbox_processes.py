"""The outbox: long Telegram waits defer the item, deleted bots and chats settle with the reason."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from batchgen.delivery import scheduler
from batchgen.models import Message, QueueItem
from batchgen.work import outbox, queue

pytestmark = pytest.mark.django_db(transaction=True)


from tests.unit.test_outbox import claimed_with_message  # noqa: E402,I001  # the same setup


def test_sent_at_is_when_the_send_finished_not_when_it_was_recorded(pipeline_env) -> None:
    # A run records finished sends a group at a time (drain.GROUP_WITHIN_S); the history
    # and the dashboard's throughput read sent_at, so it must not move with that delay.
    import time

    from django.db import transaction

    item, _, run = claimed_with_message()
    Message.objects.filter(queue_item=item).delete()
    with outbox.Delivery(run) as delivery:
        with transaction.atomic():
            delivery.send_new([outbox.Draft(item, "prompt", "hello", "openai", "m")])
        while not delivery._in_flight or not all(f.done() for f in delivery._in_flight):
            time.sleep(0.01)
        finished = timezone.now()
        time.sleep(0.5)
        delivery.settle()
    message = Message.objects.get(queue_item=item)
    assert message.status == "sent" and message.sent_at <= finished


def test_a_reply_waiting_for_its_slot_when_its_worker_died_is_sent_by_the_next_run(
        pipeline_env) -> None:
    fake_llm, fake_telegram = pipeline_env
    item, message, _ = claimed_with_message("the saved reply")
    Message.objects.filter(id=message.id).update(status="pending")  # waiting for its slot
    # The worker was killed: its lease runs out and recovery returns the item.
    QueueItem.objects.filter(id=item.id).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert queue.recover_expired() == 1
    item.refresh_from_db()
    assert (item.status, item.crashes) == ("pending", 0)  # a debt, not a crash

    scheduler.tick(sync=True)

    item.refresh_from_db()
    assert item.status == "done"
    assert [m["text"] for m in fake_telegram.messages()] == ["the saved reply"]
    assert fake_llm.stats()["total"] == 0  # sent as it was, never generated again
