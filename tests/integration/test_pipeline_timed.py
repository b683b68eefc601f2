"""A race in the batch pipeline (`tick --sync`): an item pushed while a drain runs."""

from __future__ import annotations

import pytest

from batchgen.delivery import scheduler
from batchgen.models import QueueItem
from tests.factories import make_bot, make_chat, make_item, set_batch_mode

# Transactional: replies go out on commit (outbox), as in production. The race is timed by
# the fake's latency, so it runs alone, after the parallel part.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.serial]


def make_items(count: int, **fields) -> list[QueueItem]:
    return [make_item(make_bot(), make_chat(), **fields) for _ in range(count)]


def test_a_priority_item_pushed_mid_drain_goes_before_the_backlog(pipeline_env) -> None:
    import threading

    from batchgen.work import queue

    fake_llm, fake_telegram = pipeline_env
    fake_llm.control(latency=0.1)
    make_items(40)
    set_batch_mode(2)
    urgent_chat = make_chat()
    pushed = threading.Event()
    claimed_before = []

    def push_when_started() -> None:
        from django.db import connection

        while len(fake_telegram.messages()) < 4:
            pass
        queue.push(make_bot(), urgent_chat, priority=100)
        claimed_before.append(QueueItem.objects.exclude(status=QueueItem.Status.PENDING)
                              .exclude(chat=urgent_chat).count())
        pushed.set()
        connection.close()

    pusher = threading.Thread(target=push_when_started)
    pusher.start()
    scheduler.tick(sync=True)
    pusher.join()
    chats = [m["chat_id"] for m in fake_telegram.messages()]
    assert pushed.is_set() and len(chats) == 41
    # The next claim takes it: ahead of it go the items claimed before it was pushed (sent,
    # in flight, or claimed a few ahead) and at most the 2 claimed with it, whose sends run
    # beside its own; never the rest of the backlog.
    assert chats.index(urgent_chat.telegram_chat_id) <= claimed_before[0] + 2 < 40 // 3
