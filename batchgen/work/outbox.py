"""Every state change of a Message (the outbox), and the one place that calls Telegram. A reply
is saved ``pending`` with its text, becomes ``sending`` (committed by the caller's thread)
just before the HTTP call, and one found still ``sending`` later becomes ``send_unknown`` for
an operator, never resent: "sent at most once", since sendMessage has no idempotency key.
Threads do HTTP only (docs/design.md, "The queue and the outbox").
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from django.db import connection, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Concat
from django.utils import timezone

from batchgen import metrics
from batchgen.models import BatchRun, Message, QueueItem
from batchgen.telegram.client import SendResult, TelegramSender
from batchgen.work import queue
from batchgen.work.sql import typed_values

log = logging.getLogger(__name__)
Status = Message.Status
SEND_THREADS = 16
# A send this long after its booked slot moves the bot's next slots in the chat back as far.
LATE_S = 0.05
# A flood wait up to this long is waited out in the run, the message ``pending`` meanwhile;
# a longer one defers the item to a later run.
WAIT_IN_RUN_S = 60.0


@lru_cache(maxsize=1)
def sender() -> TelegramSender:
    """One pooled sender per process (its pacing spans the batches this process runs).

    A 429 comes straight back (``max_429_retries=0``): the message returns to ``pending`` for
    the flood wait (``Delivery._wait_out``), instead of a send thread sleeping through it
    while the message says ``sending`` (``send_unknown``, were the worker killed)."""
    return TelegramSender(max_429_retries=0)


@dataclass(frozen=True)
class Draft:
    """A reply ready to go out for one claimed item."""

    item: QueueItem
    prompt: str
    text: str
    provider: str
    model: str
    cut_chars: int = 0


def keep_held(held: list[tuple[Draft, str]]) -> None:
    """Replies a cap holds back: saved ``pending`` (their text kept), their items back in
    the queue saying which cap; the first run after the cap lifts sends them as saved."""
    Message.objects.bulk_create(
        Message(queue_item=d.item, bot=d.item.bot, chat=d.item.chat, prompt=d.prompt,
                text=d.text, cut_chars=d.cut_chars, provider=d.provider, model=d.model,
                status=Status.PENDING) for d, _ in held)
    for draft, cap in held:
        queue.defer(draft.item, f"held: {cap}", 0)


class Delivery:
    """Sends one run's messages, each when its pacing slot comes, and settles them on the
    caller's thread."""

    def __init__(self, batch_run: BatchRun,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.batch_run = batch_run
        self._clock = clock
        self._pool = ThreadPoolExecutor(SEND_THREADS, thread_name_prefix="telegram-send")
        self._in_flight: dict[Future[SendResult], tuple[Message, QueueItem]] = {}
        # When each send finished (set on the send thread), so ``sent_at`` is that moment
        # however long after it the caller gets round to settling.
        self._finished_at: dict[Future[SendResult], datetime] = {}
        # Saved replies waiting for their booked slot:
        # (due, seq, message, item, booked, the slot's wall-clock time).
        self._waiting: list[tuple[float, int, Message, QueueItem, bool, float]] = []
        self._seq = itertools.count()
        self._started: set[int] = set()  # messages this run committed ``sending``
        # Called with each send's future as it finishes (after ``_stamp``): the run's loop
        # waits on one queue for generations and sends alike.
        self.wake: Callable[[Future[SendResult]], object] | None = None

    def __enter__(self) -> Delivery:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if exc_info[0] is None:
                self.settle(block=True)
        finally:
            self._pool.shutdown(wait=True)

    def send_new(self, drafts: Iterable[Draft]) -> None:
        """Save the drafts as ``pending`` messages; their slots are booked once the caller's
        transaction commits (``on_commit``), and each goes out when its slot comes."""
        drafts = list(drafts)
        messages = Message.objects.bulk_create(
            Message(queue_item=d.item, bot=d.item.bot, chat=d.item.chat,
                    batch_run=self.batch_run, prompt=d.prompt, text=d.text,
                    cut_chars=d.cut_chars,
                    provider=d.provider, model=d.model, status=Status.PENDING)
            for d in drafts)
        self._book_on_commit([(m, d.item) for m, d in zip(messages, drafts, strict=True)])

    def send_saved(self, message: Message, item: QueueItem) -> None:
        """Send a message saved earlier and still ``pending`` (a retry after a sure failure,
        or a reply whose worker died while it waited for its slot)."""
        if Message.objects.filter(id=message.id, status=Status.PENDING).update(
                batch_run=self.batch_run):
            self._book_on_commit([(message, item)])

    def _book_on_commit(self, pairs: list[tuple[Message, QueueItem]]) -> None:
        def book() -> None:
            for message, item in pairs:
                reason = undeliverable(item)
                if reason:  # deleted since the reply was saved: nothing to send with
                    _give_up(message, item, reason)
                    continue
                bot, chat = item.bot, item.chat
                assert bot is not None and chat is not None  # undeliverable() said so
                delay = _booked(item)
                if delay is None:
                    delay = sender().book(bot.telegram_token, chat.telegram_chat_id)
                if delay:  # a reply written ahead of its slot: pacing held it
                    metrics.observe_held("pacing", delay, chat=str(chat.telegram_chat_id))
                # The slot on the wall clock too, to tell at send time how late it went.
                slot_at = getattr(item, "slot_at", None) or time.time() + (delay or 0.0)
                heapq.heappush(self._waiting, (self._clock() + (delay or 0.0), next(self._seq),
                                               message, item, delay is not None, slot_at))
            self.pump()

        transaction.on_commit(book)

    def sending(self) -> bool:
        """Are sends started and not yet recorded?"""
        return bool(self._in_flight)

    def has_finished_sends(self) -> bool:
        """Did a send finish that is not recorded yet?"""
        return bool(self._finished_at)

    def next_due_in(self) -> float | None:
        """Seconds until the next waiting reply's slot; None when none waits."""
        return max(0.0, self._waiting[0][0] - self._clock()) if self._waiting else None

    def pump(self) -> int:
        """Start the sends whose slot has come: they are committed ``sending`` together
        (compare-and-set on ``pending``, one statement) right before their HTTP calls start.
        Returns how many started."""
        due: dict[int, tuple[Message, QueueItem, bool, float]] = {}
        while self._waiting and self._waiting[0][0] <= self._clock():
            _, _, message, item, booked, slot_at = heapq.heappop(self._waiting)
            if message.id not in self._started:  # booked twice (a save retried): sent once
                due[message.id] = (message, item, booked, slot_at)
        if not due:
            return 0
        ours = self._mark_sending(list(due))
        pushes: list[tuple[str, int, float]] = []
        drifted: list[tuple[QueueItem, float]] = []
        for message_id, (message, item, booked, slot_at) in due.items():
            if message_id not in ours:
                continue  # another run sent it (this one's lease had expired)
            self._started.add(message_id)
            # ``booked``: the slot is ours already; else (Redis away) the thread paces itself.
            bot, chat = item.bot, item.chat
            assert bot is not None and chat is not None  # checked when it was booked
            late = time.time() - slot_at
            if booked and late > LATE_S:  # the reply came after its slot: keep the spacing
                pushes.append((bot.telegram_token, chat.telegram_chat_id, late))
                drifted.append((item, late))
            future = self._pool.submit(sender().send, bot.telegram_token,
                                       chat.telegram_chat_id, message.text,
                                       start_part=message.parts_sent, paced=booked)
            self._in_flight[future] = (message, item)
            future.add_done_callback(self._stamp)
            if self.wake is not None:
                future.add_done_callback(self.wake)
        sender().push_back_many(pushes)
        queue.push_back_slots(drifted)
        return len(ours)

    def _mark_sending(self, ids: list[int]) -> set[int]:
        """Compare-and-set ``pending`` → ``sending`` for ``ids``; the ids this run won. None
        of them was started by this run before, so one found ``sending`` for this run now
        was set by this statement (another run writes its own ``batch_run``)."""
        won = Message.objects.filter(id__in=ids, status=Status.PENDING).update(
            status=Status.SENDING, batch_run=self.batch_run)
        if won == len(ids):
            return set(ids)
        return set(Message.objects.filter(id__in=ids, status=Status.SENDING,
                                          batch_run=self.batch_run).values_list("id", flat=True))

    def _stamp(self, future: Future[SendResult]) -> None:
        self._finished_at[future] = timezone.now()

    def settle(self, block: bool = False, timeout: float | None = None) -> bool:
        """Start the sends whose slot came and record those that finished (all of them,
        waiting ones included, with ``block``; with ``timeout``, those that finish within
        it). Returns whether sends are still in flight or waiting for their slot.

        Futures leave the in-flight map only once their outcome is committed, so a caller
        whose database connection died can call again on a fresh one."""
        deadline = None if block else self._clock() + (timeout or 0.0)
        while True:
            self.pump()
            self._record([f for f in self._in_flight if f.done()])
            if not self._in_flight and not self._waiting:
                return False
            left = None if deadline is None else deadline - self._clock()
            if left is not None and left <= 0:
                return True
            limits = [x for x in (left, self.next_due_in()) if x is not None]
            limit = min(limits) if limits else None
            if self._in_flight:
                wait(list(self._in_flight), timeout=limit, return_when=FIRST_COMPLETED)
            elif limit:
                time.sleep(limit)

    def _record(self, done: list[Future[SendResult]]) -> None:
        if not done:
            return
        finished = [(*self._in_flight[f], f.result()) for f in done]
        with transaction.atomic():
            _settle_sent([(*entry, self._finished_at.get(future))
                          for future, entry in zip(done, finished, strict=True)
                          if entry[2].status == "sent"])
            outcomes = []
            for message, item, result in finished:
                if result.status == "sent":
                    outcomes.append("sent")
                elif self._wait_out(message, item, result):
                    outcomes.append("flood_wait")  # not a failure: it goes out later
                else:
                    outcomes.append(result.status)
                    _settle_unsent(message, item, result)
        for future in done:
            del self._in_flight[future]
            self._finished_at.pop(future, None)
        for outcome in outcomes:
            metrics.observe_send(outcome)

    def _wait_out(self, message: Message, item: QueueItem, result: SendResult) -> bool:
        """A 429 asking for at most ``WAIT_IN_RUN_S``: the message goes back to ``pending``
        (resendable by recovery, were this worker killed) and waits here for its turn, from
        the first part not yet sent. False: not such a 429 (``_settle_unsent`` decides)."""
        wait_s = result.retry_after_s
        if not result.retryable or wait_s is None or wait_s > WAIT_IN_RUN_S:
            return False
        message = _progress(message, result)
        if not Message.objects.filter(id=message.id, status=Status.SENDING).update(
                status=Status.PENDING, parts_sent=message.parts_sent, error=result.error,
                telegram_message_ids=message.telegram_message_ids,
                telegram_message_id=message.telegram_message_id):
            _late(message, result)  # settled meanwhile (recovery): it stays as it is
            return True
        log.info("telegram 429 for message %s: waiting %ss", message.id, wait_s)
        self._started.discard(message.id)
        # Its turn is the one Telegram named: the send thread does not pace it again.
        heapq.heappush(self._waiting, (self._clock() + wait_s, next(self._seq), message, item,
                                       True, time.time() + wait_s))
        return True


def _booked(item: QueueItem) -> float | None:
    """Seconds until the slot booked for ``item`` as its generation started (``slot_at``; 0
    when the reply is ready after it: it goes at once), or None when none was booked."""
    slot_at = getattr(item, "slot_at", None)
    return None if slot_at is None else max(0.0, slot_at - time.time())


def _progress(message: Message, result: SendResult) -> Message:
    """The message with the parts this send delivered added to it."""
    message.telegram_message_ids = [*message.telegram_message_ids, *result.message_ids]
    message.telegram_message_id = (message.telegram_message_ids or [None])[0]
    message.parts_sent += len(result.message_ids)
    message.error = result.error
    return message


def _settle_sent(finished: list[tuple[Message, QueueItem, SendResult, datetime | None]]
                 ) -> None:
    now = timezone.now()
    rows = [(_progress(message, result), item, result, finished_at or now)
            for message, item, result, finished_at in finished]
    # Compare-and-set on "sending": a final state set meanwhile (send_unknown, when this
    # run's lease ran out and recovery settled it) is never overwritten.
    settled = _mark_sent(rows)
    done = []
    for message, item, result, _ in rows:
        if message.id in settled:
            done.append(item)
        else:
            _late(message, result)
    queue.finish_many(done, now)


def _mark_sent(rows: list[tuple[Message, QueueItem, SendResult, datetime]]) -> set[int]:
    """``sending`` → ``sent`` with each message's own delivery fields; the ids that were
    still ``sending``. One statement on PostgreSQL (a VALUES list), whatever the number of
    rows; elsewhere (SQLite: the demo and tests) one small UPDATE each, as Django's
    ``bulk_update`` would build a CASE per field and row."""
    if connection.vendor == "postgresql" and len(rows) > 1:
        values, fields = typed_values(
            [(message.id, at, message.parts_sent, message.error,
              json.dumps(message.telegram_message_ids), message.telegram_message_id)
             for message, _, _, at in rows],
            ("bigint", "timestamptz", "integer", "text", "jsonb", "bigint"))
        params = [Status.SENT, *fields, Status.SENDING]
        table = connection.ops.quote_name(Message._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} AS m SET status = %s, sent_at = v.sent_at, "  # noqa: S608 (names, not input)
                "parts_sent = v.parts_sent, error = v.error, telegram_message_ids = v.ids, "
                f"telegram_message_id = v.tid FROM (VALUES {values}) "
                "AS v(id, sent_at, parts_sent, error, ids, tid) "
                "WHERE m.id = v.id AND m.status = %s RETURNING m.id", params)
            return {row[0] for row in cursor.fetchall()}
    return {message.id for message, _, _, at in rows
            if Message.objects.filter(id=message.id, status=Status.SENDING).update(
                status=Status.SENT, sent_at=at, parts_sent=message.parts_sent,
                error=message.error, telegram_message_ids=message.telegram_message_ids,
                telegram_message_id=message.telegram_message_id)}


def _late(message: Message, result: SendResult) -> None:
    """A send's result that came after its message was settled without it: recorded as what
    it was, beside the state it keeps, with a log line."""
    ids = f", Telegram message ids {result.message_ids}" if result.message_ids else ""
    log.warning("message %s: a late send result (%s%s) after it was settled; kept as it is",
                message.id, result.status, ids)
    Message.objects.filter(id=message.id).update(
        error=Concat(F("error"), Value(f"; late result of its send: {result.status}{ids}")))


def _settle_unsent(message: Message, item: QueueItem, result: SendResult) -> None:
    message = _progress(message, result)
    fields = {"parts_sent": message.parts_sent, "error": result.error,
              "telegram_message_ids": message.telegram_message_ids,
              "telegram_message_id": message.telegram_message_id}

    def settled(status: str) -> bool:
        """Compare-and-set ``sending`` → ``status``: a final state set meanwhile (recovery,
        when this run's lease ran out) never moves, and then neither does the item."""
        if Message.objects.filter(id=message.id, status=Status.SENDING).update(
                status=status, **fields):
            return True
        _late(message, result)
        return False

    def failed_if_dead(outcome: str) -> None:
        if outcome == QueueItem.Status.DEAD:
            Message.objects.filter(id=message.id).update(status=Status.FAILED)

    if result.status == "send_unknown":
        if settled(Status.SEND_UNKNOWN):
            queue.kill(item, f"telegram: outcome unknown, not resent automatically: "
                             f"{result.error}")
    elif result.migrate_to_chat_id is not None:
        # The group became a supergroup and nothing was delivered: the chat moves to its new
        # id and the saved text goes there on the next run, from the first part not yet sent.
        if settled(Status.PENDING):
            assert item.chat is not None  # loaded before the send
            item.chat.migrate_to(result.migrate_to_chat_id)
            queue.defer(item, f"telegram: {result.error}; chat moved to "
                              f"{result.migrate_to_chat_id}", 0)
    elif result.retryable and result.retry_after_s is not None:
        # A 429 too long to wait out in the run: Telegram said when to come back. Not a
        # failed attempt; the saved text waits (up to BATCH_MAX_DEFER_SECONDS) and goes out
        # from the first part not yet sent.
        if settled(Status.PENDING):
            failed_if_dead(queue.defer(item, f"telegram: {result.error}", result.retry_after_s))
    elif result.retryable:
        # Certainly not delivered (connection refused): the saved text goes out on a later
        # attempt, from the first part not yet sent.
        if settled(Status.PENDING):
            failed_if_dead(queue.retry_later(item, f"telegram: {result.error}"))
    elif settled(Status.FAILED):
        if result.chat_gone:  # blocked, kicked or gone: nothing more is queued there
            assert item.chat is not None and item.bot is not None  # loaded before the send
            item.chat.bot_left(item.bot, f"telegram: {result.error}")
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


def reopen_failed(item_ids: Iterable[int]) -> int:
    """Failed sends of requeued items go out again as they are (the reply is a debt, not
    regenerated). Only those that sent nothing: a part already out would be repeated."""
    return Message.objects.filter(queue_item_id__in=list(item_ids), status=Status.FAILED,
                                  parts_sent=0).update(status=Status.PENDING)


def not_resendable(items) -> list[int]:
    """Ids of ``items`` whose earlier send may have reached the chat (``send_unknown``, or a
    failure after some parts): a requeue would send them twice, so an operator decides."""
    return list(Message.objects.filter(queue_item__in=items).filter(
        Q(status=Status.SEND_UNKNOWN) | Q(status=Status.FAILED, parts_sent__gt=0))
        .values_list("queue_item_id", flat=True))
