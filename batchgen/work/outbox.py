"""Every state change of a Message (the outbox), and the one place that calls Telegram.

Telegram's sendMessage has no idempotency key, so "sent at most once" is kept
here: a message is committed as ``sending`` before its HTTP call starts, and
anything found still ``sending`` later (its worker died mid-call) becomes
``send_unknown`` for an operator to look at — never an automatic resend.

Sends run on a small thread pool (threads do HTTP only); the caller's thread
does every database write, a group of messages per transaction, so a batch
whose replies arrive together costs a few commits rather than several each.
A long text goes out as several parts in one send: a worker that dies between
two parts leaves the message ``sending``, so it too ends ``send_unknown``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from django.db import transaction
from django.utils import timezone

from batchgen import metrics
from batchgen.models import BatchRun, Message, QueueItem
from batchgen.telegram.client import SendResult, TelegramSender
from batchgen.work import queue

log = logging.getLogger(__name__)
Status = Message.Status
SEND_THREADS = 16


@lru_cache(maxsize=1)
def sender() -> TelegramSender:
    """One pooled sender per process (its pacing spans the batches this process runs)."""
    return TelegramSender()


@dataclass(frozen=True)
class Draft:
    """A reply ready to go out for one claimed item."""

    item: QueueItem
    prompt: str
    text: str
    provider: str
    model: str
    cut_chars: int = 0


class Delivery:
    """Sends one batch's messages in parallel and settles them on the caller's thread."""

    def __init__(self, batch_run: BatchRun) -> None:
        self.batch_run = batch_run
        self._pool = ThreadPoolExecutor(SEND_THREADS, thread_name_prefix="telegram-send")
        self._in_flight: dict[Future[SendResult], tuple[Message, QueueItem]] = {}
        # When each send finished (set on the send thread), so ``sent_at`` is that moment
        # however long after it the caller gets round to settling.
        self._finished_at: dict[Future[SendResult], datetime] = {}

    def __enter__(self) -> Delivery:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if exc_info[0] is None:
                self.settle(block=True)
        finally:
            self._pool.shutdown(wait=True)

    def send_new(self, drafts: Iterable[Draft]) -> None:
        """Save the drafts as ``sending`` messages; they go out once the caller's
        transaction commits (``on_commit``), never before."""
        drafts = list(drafts)
        messages = Message.objects.bulk_create(
            Message(queue_item=d.item, bot=d.item.bot, chat=d.item.chat,
                    batch_run=self.batch_run, prompt=d.prompt, text=d.text,
                    cut_chars=d.cut_chars,
                    provider=d.provider, model=d.model, status=Status.SENDING)
            for d in drafts)
        self._start_on_commit([(m, d.item) for m, d in zip(messages, drafts, strict=True)])

    def send_saved(self, message: Message, item: QueueItem) -> None:
        """Send a message saved earlier as ``pending`` (a retry after a sure failure)."""
        if Message.objects.filter(id=message.id, status=Status.PENDING).update(
                status=Status.SENDING, batch_run=self.batch_run):
            self._start_on_commit([(message, item)])

    def _start_on_commit(self, pairs: list[tuple[Message, QueueItem]]) -> None:
        def start() -> None:
            for message, item in pairs:
                reason = undeliverable(item)
                if reason:  # deleted since the reply was saved: nothing to send with
                    _give_up(message, item, reason)
                    continue
                bot, chat = item.bot, item.chat
                assert bot is not None and chat is not None  # undeliverable() said so
                future = self._pool.submit(sender().send, bot.telegram_token,
                                           chat.telegram_chat_id, message.text,
                                           start_part=message.parts_sent)
                self._in_flight[future] = (message, item)
                future.add_done_callback(self._stamp)

        transaction.on_commit(start)

    def _stamp(self, future: Future[SendResult]) -> None:
        self._finished_at[future] = timezone.now()

    def settle(self, block: bool = False, timeout: float | None = None) -> bool:
        """Record the sends that have finished (all of them with ``block``; with ``timeout``,
        those that finish within it). Returns whether sends are still in flight.

        Futures leave the in-flight map only once their outcome is committed, so a caller
        whose database connection died can call again on a fresh one."""
        while self._in_flight:
            done = [f for f in self._in_flight if f.done()]
            if not done and (block or timeout):
                done = list(wait(list(self._in_flight), timeout=None if block else timeout,
                                 return_when=FIRST_COMPLETED).done)
            if not done:
                return True
            finished = [(*self._in_flight[f], f.result()) for f in done]
            with transaction.atomic():
                _settle_sent([(*entry, self._finished_at.get(future))
                              for future, entry in zip(done, finished, strict=True)
                              if entry[2].status == "sent"])
                for message, item, result in finished:
                    if result.status != "sent":
                        _settle_unsent(message, item, result)
            for future in done:
                del self._in_flight[future]
                self._finished_at.pop(future, None)
            for _, _, result in finished:
                metrics.observe_send(result.status)
            if not block:
                return bool(self._in_flight)
        return False


def _progress(message: Message, result: SendResult) -> Message:
    """The message with the parts this send delivered added to it."""
    message.telegram_message_ids = [*message.telegram_message_ids, *result.message_ids]
    message.telegram_message_id = (message.telegram_message_ids or [None])[0]
    message.parts_sent += len(result.message_ids)
    message.error = result.error
    return message


def _settle_sent(finished: list[tuple[Message, QueueItem, SendResult, datetime | None]]
                 ) -> None:
    # One small UPDATE per message: Django's bulk_update builds a CASE per field and row,
    # which measured 2.3 times the CPU of plain updates (0.83 against 0.36 ms a message on
    # PostgreSQL), and the workers' CPU is what bounds a drain on a small machine.
    now = timezone.now()
    for message, _, result, finished_at in finished:
        message = _progress(message, result)
        Message.objects.filter(id=message.id).update(
            status=Status.SENT, sent_at=finished_at or now, parts_sent=message.parts_sent,
            error=message.error, telegram_message_ids=message.telegram_message_ids,
            telegram_message_id=message.telegram_message_id)
    queue.finish_many([item for _, item, _, _ in finished], now)


def _settle_unsent(message: Message, item: QueueItem, result: SendResult) -> None:
    message = _progress(message, result)
    fields = {"parts_sent": message.parts_sent, "error": result.error,
              "telegram_message_ids": message.telegram_message_ids,
              "telegram_message_id": message.telegram_message_id}
    if result.status == "send_unknown":
        Message.objects.filter(id=message.id).update(status=Status.SEND_UNKNOWN, **fields)
        queue.kill(item, f"telegram: outcome unknown, not resent automatically: {result.error}")
    elif result.migrate_to_chat_id is not None:
        # The group became a supergroup and nothing was delivered: the chat moves to its new
        # id and the saved text goes there on the next run, from the first part not yet sent.
        assert item.chat is not None  # loaded before the send
        item.chat.migrate_to(result.migrate_to_chat_id)
        queue.defer(item, f"telegram: {result.error}; chat moved to "
                          f"{result.migrate_to_chat_id}", 0)
        Message.objects.filter(id=message.id).update(status=Status.PENDING, **fields)
    elif result.retryable and result.retry_after_s is not None:
        # A 429: Telegram said when to come back. Not a failed attempt; the saved text waits
        # (however long, up to BATCH_MAX_DEFER_SECONDS) and goes out from the first part
        # not yet sent.
        outcome = queue.defer(item, f"telegram: {result.error}", result.retry_after_s)
        status = Status.FAILED if outcome == QueueItem.Status.DEAD else Status.PENDING
        Message.objects.filter(id=message.id).update(status=status, **fields)
    elif result.retryable:
        # Certainly not delivered (connection refused): the saved text goes out on a later
        # attempt, from the first part not yet sent.
        outcome = queue.retry_later(item, f"telegram: {result.error}")
        status = Status.FAILED if outcome == QueueItem.Status.DEAD else Status.PENDING
        Message.objects.filter(id=message.id).update(status=status, **fields)
    else:
        if result.chat_gone:  # blocked, kicked or gone: nothing more is queued there
            assert item.chat is not None and item.bot is not None  # loaded before the send
            item.chat.bot_left(item.bot, f"telegram: {result.error}")
        Message.objects.filter(id=message.id).update(status=Status.FAILED, **fields)
        queue.kill(item, f"telegram: {result.error}")


def resume(items: list[QueueItem], delivery: Delivery) -> list[QueueItem]:
    """Settle the items that already have an outbox row (an earlier run got that
    far) and return the others, which still need generating."""
    saved = {m.queue_item_id: m for m in Message.objects.filter(queue_item__in=items)}
    for item in items:
        message = saved.get(item.id)
        if message is not None:
            _resume_one(message, item, delivery)
    return [item for item in items if item.id not in saved]


def undeliverable(item: QueueItem) -> str:
    """Why ``item`` can no longer be sent ("" when it can)."""
    if item.bot is None:
        return "telegram: not sent, its bot was deleted"
    if item.chat is None:
        return "telegram: not sent, its chat was deleted"
    return ""


def _give_up(message: Message, item: QueueItem, reason: str) -> None:
    with transaction.atomic():
        Message.objects.filter(id=message.id, status__in=[Status.PENDING, Status.SENDING]) \
            .update(status=Status.FAILED, error=reason)
        queue.kill(item, reason)


def _resume_one(message: Message, item: QueueItem, delivery: Delivery) -> None:
    if message.status == Status.PENDING and undeliverable(item):
        _give_up(message, item, undeliverable(item))
    elif message.status == Status.PENDING:
        delivery.send_saved(message, item)
    elif message.status == Status.SENT:
        queue.finish(item)
    elif message.status == Status.SENDING:
        Message.objects.filter(id=message.id, status=Status.SENDING).update(
            status=Status.SEND_UNKNOWN, error="worker stopped during the send")
        log.warning("message %s was mid-send when its worker stopped: send_unknown", message.id)
        queue.kill(item, "telegram: worker stopped during the send; outcome unknown, not resent")
    else:
        queue.kill(item, f"telegram: earlier send ended {message.status}: {message.error}")
