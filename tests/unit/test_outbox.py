"""The outbox: long Telegram waits defer the item, deleted bots and chats settle with the reason."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from batchgen.delivery import runs, scheduler
from batchgen.models import BatchRun, Message, QueueItem
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
