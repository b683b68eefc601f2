"""Every state change of a Message (the outbox), and the one place that calls Telegram.

Telegram's sendMessage has no idempotency key, so "sent at most once" is kept
here: a message is committed as ``sending`` before the HTTP call, each part
that Telegram accepts is committed as soon as it is, and anything found still
``sending`` later (its worker died mid-call) becomes ``send_unknown`` for an
operator to look at — never an automatic resend.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from django.utils import timezone

from batchgen import metrics, queue
from batchgen.models import BatchRun, Message, QueueItem
from batchgen.telegram import SendResult, TelegramSender

log = logging.getLogger(__name__)
Status = Message.Status


@lru_cache(maxsize=1)
def sender() -> TelegramSender:
    """One pooled sender per process (its pacing spans the batches this process runs)."""
    return TelegramSender()


def create(item: QueueItem, batch_run: BatchRun, prompt: str, text: str, provider: str,
           model: str) -> Message:
    return Message.objects.create(
        queue_item=item, bot=item.bot, chat=item.chat, batch_run=batch_run, prompt=prompt,
        text=text, provider=provider, model=model, status=Status.PENDING,
    )


def deliver(message: Message, item: QueueItem) -> str:
    """Send a pending message once and settle its queue item. Returns the message status."""
    # Committed before the HTTP call (autocommit): a crash from here on leaves
    # 'sending', which recovery turns into send_unknown instead of a resend.
    if not Message.objects.filter(id=message.id, status=Status.PENDING).update(
            status=Status.SENDING):
        return Message.objects.get(id=message.id).status

    def part_sent(index: int, message_id: int) -> None:
        message.telegram_message_ids.append(message_id)
        Message.objects.filter(id=message.id).update(
            parts_sent=index + 1, telegram_message_ids=message.telegram_message_ids,
            telegram_message_id=message.telegram_message_ids[0])

    result = sender().send(item.bot.telegram_token, item.chat.telegram_chat_id, message.text,
                           on_part_sent=part_sent, start_part=message.parts_sent)
    _settle(message, item, result)
    metrics.observe_send(result.status)
    return result.status


def _settle(message: Message, item: QueueItem, result: SendResult) -> None:
    now = timezone.now()
    if result.status == "sent":
        Message.objects.filter(id=message.id).update(status=Status.SENT, sent_at=now, error="")
        queue.finish(item, now)
    elif result.status == "send_unknown":
        Message.objects.filter(id=message.id).update(status=Status.SEND_UNKNOWN,
                                                     error=result.error)
        queue.kill(item, f"telegram: outcome unknown, not resent automatically: {result.error}")
    elif result.retryable:
        # Certainly not delivered (429 flood wait, connection refused): the saved
        # text goes out on a later attempt, from the first part not yet sent.
        outcome = queue.retry_later(item, f"telegram: {result.error}")
        Message.objects.filter(id=message.id).update(
            status=Status.FAILED if outcome == QueueItem.Status.DEAD else Status.PENDING,
            error=result.error)
    else:
        Message.objects.filter(id=message.id).update(status=Status.FAILED, error=result.error)
        queue.kill(item, f"telegram: {result.error}")


def resume(item: QueueItem) -> bool:
    """Settle an item that already has an outbox row (an earlier run got that far).

    Returns True when the item was settled here and must not be generated again.
    """
    message = Message.objects.filter(queue_item=item).first()
    if message is None:
        return False
    if message.status == Status.PENDING:
        message.batch_run_id = item.batch_run_id
        Message.objects.filter(id=message.id).update(batch_run_id=item.batch_run_id)
        deliver(message, item)
    elif message.status == Status.SENT:
        queue.finish(item)
    elif message.status == Status.SENDING:
        Message.objects.filter(id=message.id, status=Status.SENDING).update(
            status=Status.SEND_UNKNOWN, error="worker stopped during the send")
        log.warning("message %s was mid-send when its worker stopped: send_unknown", message.id)
        queue.kill(item, "telegram: worker stopped during the send; outcome unknown, not resent")
    else:
        queue.kill(item, f"telegram: earlier send ended {message.status}: {message.error}")
    return True
