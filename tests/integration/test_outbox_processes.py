"""The outbox: long Telegram waits defer the item, deleted bots and chats settle with the reason."""

from __future__ import annotations

import pytest
from django.utils import timezone

from batchgen.delivery import runs
from batchgen.models import BatchRun, Message, QueueItem
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
