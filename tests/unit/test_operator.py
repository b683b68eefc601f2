"""Requeue and pause: what an operator does to work (batchgen.work.operator, queue)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from batchgen.models import Message, QueueItem
from batchgen.work import operator, queue
from tests.factories import make_bot, make_chat, make_item, make_run

pytestmark = pytest.mark.django_db
Status = QueueItem.Status


def make_dead(reason: str = "gave up after 3 attempts: server_error", **fields) -> QueueItem:
    fields.setdefault("attempts", 3)
    return make_item(status=Status.DEAD, last_error=reason, finished_at=timezone.now(),
                     **fields)


def test_requeue_returns_a_dead_item_to_the_queue_with_attempts_reset() -> None:
    item = make_dead(crashes=2)

    result = operator.requeue(QueueItem.objects.all(), by="ops")

    item.refresh_from_db()
    assert result.requeued == [item.id]
    assert (item.status, item.attempts, item.crashes, item.last_error, item.finished_at) == (
        Status.PENDING, 0, 0, "", None)


def test_requeue_keeps_the_reason_it_died_with_in_its_history() -> None:
    item = make_dead("gave up after 3 attempts: server_error")

    operator.requeue(QueueItem.objects.filter(id=item.id), by="ops")
    item.refresh_from_db()

    [entry] = item.history
    assert entry["event"] == "requeued" and entry["by"] == "ops"
    assert entry["reason"] == "gave up after 3 attempts: server_error"
    assert entry["attempts"] == 3


def test_a_requeued_item_is_claimed_again() -> None:
    item = make_dead()
    operator.requeue(QueueItem.objects.all(), by="ops")

    assert [i.id for i in queue.claim(5, make_run())] == [item.id]


def test_requeue_leaves_items_that_are_not_dead() -> None:
    pending, done = make_item(), make_item(status=Status.DONE)

    result = operator.requeue(QueueItem.objects.all(), by="ops")

    assert result.requeued == []
    assert {i.status for i in QueueItem.objects.filter(id__in=[pending.id, done.id])} == {
        Status.PENDING, Status.DONE}


def test_requeue_twice_requeues_once() -> None:
    item = make_dead()
    operator.requeue(QueueItem.objects.all(), by="a")
    second = operator.requeue(QueueItem.objects.all(), by="b")
    item.refresh_from_db()

    assert second.requeued == [] and len(item.history) == 1


def test_requeue_sends_a_failed_reply_again_without_regenerating_it() -> None:
    item = make_dead("telegram: chat not found")
    message = Message.objects.create(queue_item=item, bot=item.bot, chat=item.chat, text="hi",
                                     status=Message.Status.FAILED, error="chat not found")

    operator.requeue(QueueItem.objects.all(), by="ops")
    message.refresh_from_db()

    assert message.status == Message.Status.PENDING and message.text == "hi"


def test_requeue_skips_an_item_whose_send_may_have_arrived() -> None:
    item = make_dead("telegram: worker stopped during the send")
    Message.objects.create(queue_item=item, bot=item.bot, chat=item.chat, text="hi",
                           status=Message.Status.SEND_UNKNOWN)

    result = operator.requeue(QueueItem.objects.all(), by="ops")
    item.refresh_from_db()

    assert result.skipped == [item.id] and item.status == Status.DEAD
    assert "send_unknown" in result.summary()


@pytest.mark.parametrize("paused", ["bot", "chat"])
def test_work_of_a_paused_bot_or_chat_is_not_claimed(paused: str) -> None:
    bot, chat = make_bot(), make_chat()
    held, free = make_item(bot=bot, chat=chat), make_item()
    target = bot if paused == "bot" else chat
    operator.pause(type(target).objects.filter(id=target.id))

    assert [i.id for i in queue.claim(5, make_run())] == [free.id]
    assert list(queue.paused_items()) == [held]


def test_resumed_work_is_claimed_where_it_stopped() -> None:
    bot = make_bot()
    item = make_item(bot=bot, priority=5)
    operator.pause(type(bot).objects.filter(id=bot.id))
    assert queue.claim(5, make_run()) == []

    operator.resume(type(bot).objects.filter(id=bot.id))

    assert [i.id for i in queue.claim(5, make_run())] == [item.id]


def test_nothing_is_claimed_while_the_configured_provider_is_paused(settings) -> None:
    settings.LLM_PROVIDER = "openai"
    item = make_item()
    operator.set_provider_paused("openai", True)

    assert queue.claim(5, make_run()) == []
    assert list(queue.paused_items()) == [item]

    operator.set_provider_paused("openai", False)
    assert [i.id for i in queue.claim(5, make_run())] == [item.id]


def test_pausing_another_provider_holds_nothing(settings) -> None:
    settings.LLM_PROVIDER = "openai"
    item = make_item()
    operator.set_provider_paused("groq", True)

    assert [i.id for i in queue.claim(5, make_run())] == [item.id]


def test_pausing_an_unknown_provider_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="provider must be one of openai, groq, gemini"):
        operator.set_provider_paused("anthropic", True)


def test_items_without_a_bot_are_still_claimed_to_end_with_their_reason() -> None:
    item = make_item()
    item.bot.delete()

    assert [i.id for i in queue.claim(5, make_run())] == [item.id]
