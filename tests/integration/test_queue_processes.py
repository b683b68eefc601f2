from __future__ import annotations

import multiprocessing

import pytest
from django.db import connections

from batchgen.models import BatchRun, Chat, QueueItem
from batchgen.work import queue
from tests.factories import make_bot

pytestmark = pytest.mark.django_db


def _claim_in_child(rounds: int, out: multiprocessing.Queue) -> None:
    connections.close_all()
    got = []
    for _ in range(rounds):
        run = BatchRun.objects.create(mode="batch")
        got.extend(item.id for item in queue.claim(7, run))
    out.put(got)
    connections.close_all()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_claimers_on_postgres_never_share_an_item() -> None:
    bot = make_bot()
    chats = Chat.objects.bulk_create(Chat(telegram_chat_id=-100_000 - i) for i in range(300))
    QueueItem.objects.bulk_create(QueueItem(bot=bot, chat=chat, priority=i % 4)
                                  for i, chat in enumerate(chats))
    connections.close_all()
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    children = [ctx.Process(target=_claim_in_child, args=(12, out)) for _ in range(4)]
    for child in children:
        child.start()
    claimed = [i for _ in children for i in out.get(timeout=120)]
    for child in children:
        child.join(timeout=30)
    assert len(claimed) == len(set(claimed)) == 300
    assert QueueItem.objects.filter(status="claimed").count() == 300
