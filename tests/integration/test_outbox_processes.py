"""The outbox: long Telegram waits defer the item, deleted bots and chats settle with the reason."""

from __future__ import annotations

import pytest
from django.utils import timezone

from batchgen.models import Message
from batchgen.work import outbox

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
