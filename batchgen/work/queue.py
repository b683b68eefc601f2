"""Every state change of a QueueItem: push, claim, recover, finish, retry, kill, and the batch
route's hold (pending -> batched), claim of results (batched -> claimed) and return (batched ->
pending). Claims are safe with several tick processes at once: the update is a compare-and-set
on ``status='pending'`` on every database (docs/design.md, "The queue and the outbox", says
how each database queues the claimers).
"""

from __future__ import annotations

import logging
import operator
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import reduce
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import (
    Case,
    Count,
    DurationField,
    Exists,
    F,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Value,
    When,
)
from django.utils import timezone

from batchgen.core.priorities import URGENT_PRIORITY
from batchgen.llm import config as llm_config
from batchgen.models import (
    BatchRun,
    Bot,
    Chat,
    Message,
    PostingSlot,
    ProviderBatch,
    QueueItem,
    Setting,
)
from batchgen.state import shared
from batchgen.telegram.client import book_slots
from batchgen.telegram.pacing import slot_interval
from batchgen.work.sql import typed_values

log = logging.getLogger(__name__)
Status = QueueItem.Status


NUDGE = shared.key("queue", "nudge")


def push(bot: Bot, chat: Chat, priority: int = 0, recent_messages: Iterable[str] = (),
         max_attempts: int | None = None, deliver_by: datetime | None = None) -> QueueItem:
    """Queue 'bot should say something in chat' (``deliver_by``: when it may wait, the
    latest time it should go out; None: urgent); sleeping tick loops wake once it commits."""
    item = QueueItem.objects.create(
        bot=bot, chat=chat, priority=priority, recent_messages=list(recent_messages),
        max_attempts=max_attempts or settings.BATCH_MAX_ATTEMPTS, deliver_by=deliver_by,
    )
    transaction.on_commit(nudge)
    return item


# One command, not a MULTI of three: on the webhook's path the pipeline cost more CPU than
# the rest of the request's Redis and SQL work together.
_NUDGE = shared.Script("redis.call('LPUSH', KEYS[1], 1) redis.call('LTRIM', KEYS[1], 0, 0) "
                       "redis.call('EXPIRE', KEYS[1], 3600)")


def nudge() -> None:
    """Tell the tick loops that work arrived (call it after pushing items in bulk), so a
    backlog on an idle platform does not wait out the tick interval. At most one nudge is
    kept: any number of pushes wake a loop once."""
    shared.attempt(lambda r: _NUDGE(r, [NUDGE], []), default=None, what="tick nudge")


def _pop_nudge(timeout: float):
    return lambda r: r.blpop([NUDGE], timeout=timeout)


def wait_for_nudge(seconds: float, stop: threading.Event) -> bool:
    """Sleep up to ``seconds``, waking early on a nudge or ``stop``; True when nudged.
    Blocks in slices shorter than the shared client's socket timeout; while Redis is away
    it simply sleeps."""
    deadline = time.monotonic() + seconds
    while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
        got = shared.attempt(_pop_nudge(min(left, 1.0)), default=False, what="tick nudge")
        if got:
            return True
        if got is False:  # Redis away: sleep the rest
            stop.wait(max(deadline - time.monotonic(), 0))
    return False


def _claimable(now: datetime, hold_after: datetime | None = None):
    """Pending items due now; with ``hold_after``, not those the batch route keeps (a
    deadline at or after it, never tried in a provider batch before)."""
    pending = QueueItem.objects.filter(
        Q(available_at__isnull=True) | Q(available_at__lte=now), status=Status.PENDING,
    ).order_by("-priority", "created_at", "id")
    pending = pending.filter(_not_paused())
    if hold_after is not None:
        pending = pending.exclude(_for_batch(hold_after))
    return pending


def _not_paused() -> Q:
    """Not the work of a paused bot or chat; nothing at all while LLM_PROVIDER, where every
    prompt goes first, is paused. Paused items stay pending: resumed, they are next."""
    if llm_config.default_provider() in Setting.load().paused_providers:
        return Q(pk__in=[])
    # Subqueries, not joins: FOR UPDATE refuses the nullable side of an outer join.
    return Q(~Exists(Bot.objects.filter(pk=OuterRef("bot_id"), paused_at__isnull=False)),
             ~Exists(Chat.objects.filter(pk=OuterRef("chat_id"), paused_at__isnull=False)))


def paused_items() -> QuerySet[QueueItem]:
    """Pending items that wait only because their bot, chat or provider is paused."""
    return QueueItem.objects.filter(status=Status.PENDING).exclude(_not_paused())


def _for_batch(hold_after: datetime) -> Q:
    # One provider batch per item: one that came back without a reply goes the sync way.
    return Q(deliver_by__gte=hold_after, provider_batch__isnull=True)


def _paced_out(now: datetime, horizon_s: float | None = None) -> Q:
    """Items whose bot cannot post in their chat within the claim horizon (at most
    ``DELIVERY_CLAIM_HORIZON_SECONDS``): they stay pending, cost nothing, and are claimed as
    their slot nears."""
    limit = settings.DELIVERY_CLAIM_HORIZON_SECONDS
    horizon = now + timedelta(seconds=limit if horizon_s is None else min(horizon_s, limit))
    return Q(Exists(PostingSlot.objects.filter(bot_id=OuterRef("bot_id"),
                                               chat_id=OuterRef("chat_id"),
                                               next_at__gt=horizon)))


def claim(limit: int, batch_run: BatchRun, lease_seconds: float | None = None,
          ids: Iterable[int] | None = None, now: datetime | None = None,
          hold_after: datetime | None = None, lead_s: float = 0.0,
          max_non_urgent: int | None = None) -> list[QueueItem]:
    """Claim up to ``limit`` of the highest-priority pending items (oldest first)
    into ``batch_run``, each with a lease; ``ids`` restricts the candidates; ``hold_after``
    leaves the items the batch route keeps.

    Without ``ids``, only items whose bot can post in their chat within the claim horizon
    are taken, one per bot and chat per call, and each claim reserves that bot's next slot
    there: a reply is generated just before it can be posted, not minutes ahead. ``lead_s``
    (about one generation, as the run measures it) narrows the horizon; ``max_non_urgent``
    caps the items below ``URGENT_PRIORITY`` taken (the share kept for replies to people)."""
    now = now or timezone.now()
    lease = timedelta(seconds=lease_seconds or settings.BATCH_LEASE_SECONDS)
    with transaction.atomic():
        # A run never takes an item back that it already tried (one it retried or deferred).
        candidates = _claimable(now, hold_after).exclude(batch_run=batch_run)
        if ids is not None:
            candidates = candidates.filter(id__in=list(ids))
        else:
            candidates = candidates.exclude(_paced_out(now, lead_s or None)).exclude(_capped())
        # Whole rows with their bot and chat, so the claimed items need no second read; of=self:
        # the joins to the bot and the chat (nullable) must not be locked.
        locking = candidates.select_related("bot", "chat").select_for_update(
            skip_locked=True, of=("self",))
        if ids is not None:
            items = list(locking[:limit])
        else:
            items = _one_per_bot_and_chat(locking, limit, max_non_urgent)
        chosen = [item.id for item in items]
        # Compare-and-set: only rows still pending change hands (all of them: they are locked).
        changed = QueueItem.objects.filter(id__in=chosen, status=Status.PENDING).update(
            status=Status.CLAIMED, batch_run=batch_run, lease_expires_at=now + lease,
            updated_at=now,
        )
        if ids is None:
            _reserve_slots(items, now)
    # Attempts are counted when a generation or a send really ran (finish, retry_later),
    # so a claim that expires, or is released unused, costs nothing.
    if changed != len(items):
        return list(claimed_items(batch_run).filter(id__in=chosen))
    for item in items:
        item.status, item.batch_run = Status.CLAIMED, batch_run
        item.lease_expires_at, item.updated_at = now + lease, now
    return items


def push_back_slot(item: QueueItem, seconds: float) -> None:
    """Its reply went ``seconds`` after its slot: the bot's next posting slot in the chat
    moves back as far, as the Telegram budgets do (``SharedPacer.push_back``), so the claim
    and the sends stay one schedule."""
    push_back_slots([(item, seconds)])


def push_back_slots(pushes: list[tuple[QueueItem, float]]) -> None:
    """``push_back_slot`` for many replies in one statement, each slot by its own delay."""
    delays: dict[tuple[int | None, int | None], float] = {}
    for item, seconds in pushes:
        key = (item.bot_id, item.chat_id)
        delays[key] = max(delays.get(key, 0.0), seconds)
    if not delays:
        return
    if connection.vendor == "postgresql":
        # A VALUES list: Django's CASE of one WHEN per pair cost more worker CPU to build
        # than the rest of a late reply's send.
        values, params = typed_values(
            [(bot_id, chat_id, timedelta(seconds=seconds))
             for (bot_id, chat_id), seconds in delays.items()], ("bigint", "bigint", "interval"))
        table = connection.ops.quote_name(PostingSlot._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} AS s SET next_at = s.next_at + v.delay "  # noqa: S608 (names, not input)
                f"FROM (VALUES {values}) AS v(bot_id, chat_id, delay) "
                "WHERE s.bot_id = v.bot_id AND s.chat_id = v.chat_id", params)
        return
    pairs = [Q(bot_id=bot_id, chat_id=chat_id) for bot_id, chat_id in delays]
    moves = [When(pair, then=Value(timedelta(seconds=seconds)))
             for pair, seconds in zip(pairs, delays.values(), strict=True)]
    PostingSlot.objects.filter(reduce(operator.or_, pairs)).update(
        next_at=F("next_at") + Case(*moves, output_field=DurationField()))


def book_posting_slots(items: list[QueueItem]) -> None:
    """Book each item's next Telegram slot in one round trip (``item.slot_at``, wall clock),
    as its generation starts: the reply goes out at that slot, or at once if it is ready
    after it, so the claim's reservation and the real send are one schedule, not two that
    drift apart. Without Redis nothing is booked and the send books its slot itself."""
    sendable: list[tuple[QueueItem, Bot, Chat]] = [
        (item, item.bot, item.chat) for item in items if item.bot and item.chat]
    slots = book_slots([(bot.telegram_token, chat.telegram_chat_id)
                        for _, bot, chat in sendable])
    for (item, _, _), slot_at in zip(sendable, slots or [], strict=False):
        item.slot_at = slot_at  # type: ignore[attr-defined]  # this process's own note


def _one_per_bot_and_chat(locking: Any, limit: int, max_non_urgent: int | None
                          ) -> list[QueueItem]:
    """Up to ``limit`` items, one per bot and chat, at most ``max_non_urgent`` below
    ``URGENT_PRIORITY``. Rows are locked (SKIP LOCKED) a page of ``limit`` at a time, so a
    claim holds locks on few rows it does not take and concurrent claimers still find
    theirs; a bot's further items in a chat, skipped, wait for its next slot."""
    seen: set[tuple[int | None, int | None]] = set()
    chosen: list[QueueItem] = []
    non_urgent = 0
    looked: list[int] = []
    for _ in range(3):  # a page, and two more when items shared a bot and chat
        page = list(locking.exclude(id__in=looked)[:limit])
        looked += [item.id for item in page]
        for item in page:
            if len(chosen) == limit or (item.bot_id, item.chat_id) in seen:
                continue
            if item.priority < URGENT_PRIORITY:
                if max_non_urgent is not None and non_urgent >= max_non_urgent:
                    continue
                non_urgent += 1
            seen.add((item.bot_id, item.chat_id))
            chosen.append(item)
        if len(chosen) == limit or len(page) < limit:
            break
    return chosen


def _reserve_slots(items: list[QueueItem], now: datetime) -> None:
    """Move each claimed item's bot-and-chat slot on by one posting interval (two queries,
    one on PostgreSQL)."""
    rows: list[tuple[int, int, int]] = []
    for item in items:
        chat = item.chat
        if item.bot_id is not None and chat is not None:
            rows.append((item.bot_id, chat.id, chat.telegram_chat_id))
    if not rows:
        return
    if connection.vendor == "postgresql":
        _reserve_slots_in_one(rows, now)
        return
    current = {(bot, chat): at for bot, chat, at in PostingSlot.objects.filter(
        bot_id__in={row[0] for row in rows}, chat_id__in={row[1] for row in rows},
    ).values_list("bot_id", "chat_id", "next_at")}
    slots = [PostingSlot(bot_id=bot, chat_id=chat, next_at=max(
        current.get((bot, chat), now), now) + timedelta(seconds=slot_interval(tg_chat)))
        for bot, chat, tg_chat in sorted(rows)]
    # In one order everywhere, so two claimers upserting the same slots cannot deadlock.
    PostingSlot.objects.bulk_create(slots, update_conflicts=True,
                                    unique_fields=["bot", "chat"], update_fields=["next_at"])


def _reserve_slots_in_one(rows: list[tuple[int, int, int]], now: datetime) -> None:
    """``_reserve_slots`` as one upsert that reads each slot where it writes it."""
    values, params = typed_values(
        [(bot, chat, now + timedelta(seconds=slot_interval(tg_chat)))
         for bot, chat, tg_chat in sorted(rows)],  # one lock order everywhere
        ("bigint", "bigint", "timestamptz"))
    table = connection.ops.quote_name(PostingSlot._meta.db_table)
    with connection.cursor() as cursor:
        # EXCLUDED.next_at is now + the interval: the slot moves to max(its time, now) + it.
        cursor.execute(
            f"INSERT INTO {table} AS s (bot_id, chat_id, next_at) "  # noqa: S608 (names, not input)
            f"SELECT * FROM (VALUES {values}) AS v(bot_id, chat_id, next_at) "
            "ON CONFLICT (bot_id, chat_id) DO UPDATE SET next_at = GREATEST("
            "s.next_at + (EXCLUDED.next_at - %s::timestamptz), EXCLUDED.next_at)",
            [*params, now])


# ANALYZE the queue once this many rows changed since the last (and at least a fifth of it).
STATISTICS_AFTER_ROWS = 1000


def refresh_statistics() -> bool:
    """PostgreSQL: ANALYZE the queue when it changed much since its last statistics; True
    when it did. A backlog pushed at once into a queue the planner thinks small makes each
    claim sort every pending row instead of reading the first few in index order, for up to
    the minute autovacuum takes to notice: claims then cost more the deeper the backlog."""
    if connection.vendor != "postgresql":
        return False
    table = QueueItem._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("SELECT s.n_mod_since_analyze, c.reltuples FROM pg_stat_user_tables s "
                       "JOIN pg_class c ON c.oid = s.relid WHERE s.relid = %s::regclass",
                       [table])
        row = cursor.fetchone()
        if row is None or row[0] < max(STATISTICS_AFTER_ROWS, 0.2 * max(row[1], 0)):
            return False
        cursor.execute(f"ANALYZE {connection.ops.quote_name(table)}")
    return True


def has_claimable(now: datetime | None = None, hold_after: datetime | None = None) -> bool:
    """Is there an item a run could claim now (due, not capped, and its bot's slot in its
    chat near)?"""
    now = now or timezone.now()
    return _claimable(now, hold_after).exclude(_paced_out(now)).exclude(_capped()).exists()


def _capped() -> Q:
    """Items of a chat or bot a cap binds (batchgen.delivery.caps marks them)."""
    return Q(chat__cap_reason__gt="") | Q(bot__cap_reason__gt="")


def has_capped(now: datetime | None = None) -> bool:
    """Is pending work held back by a cap?"""
    return _claimable(now or timezone.now()).filter(_capped()).exists()


def hold_for_cap(which: Q, reason: str, now: datetime | None = None) -> int:
    """A cap binds the pending items ``which`` selects: cadence posts end dead with the
    reason; the others (replies) stay pending and say why. Returns how many were skipped."""
    now = now or timezone.now()
    skipped = skip_cadence(which, reason, now)
    QueueItem.objects.filter(which, status=Status.PENDING).exclude(
        last_error=f"held: {reason}").update(last_error=f"held: {reason}"[:2000],
                                             updated_at=now)
    return skipped


def skip_cadence(which: Q, reason: str, now: datetime) -> int:
    """The pending cadence posts ``which`` selects end dead, skipped for ``reason``."""
    return QueueItem.objects.filter(which, status=Status.PENDING,
                                    trigger__kind="cadence").update(
        status=Status.DEAD, finished_at=now, last_error=f"skipped: {reason}"[:2000],
        updated_at=now)


def cadence_to_batch_route(which: Q, now: datetime) -> int:
    """The pending cadence posts ``which`` selects can wait for the provider batch route:
    their deadline moves to ``BATCH_ROUTE_CADENCE_DEADLINE_SECONDS`` from now, when that
    leaves the route its slack."""
    by = now + timedelta(seconds=settings.BATCH_ROUTE_CADENCE_DEADLINE_SECONDS)
    slack = now + timedelta(seconds=settings.BATCH_ROUTE_MIN_SLACK_SECONDS)
    if by < slack:
        return 0
    return QueueItem.objects.filter(which, status=Status.PENDING, trigger__kind="cadence",
                                    provider_batch__isnull=True).filter(
        Q(deliver_by__isnull=True) | Q(deliver_by__lt=slack)).update(deliver_by=by,
                                                                      updated_at=now)


def next_slot(now: datetime | None = None, hold_after: datetime | None = None,
              batch_run: BatchRun | None = None, horizon_s: float | None = None
              ) -> datetime | None:
    """When the earliest pending item that waits for its posting slot becomes claimable
    with the horizon ``horizon_s`` (None when nothing waits for a slot); ``batch_run``: not
    counting the items it tried."""
    now = now or timezone.now()
    waiting = _claimable(now, hold_after).filter(bot_id=OuterRef("bot_id"),
                                                 chat_id=OuterRef("chat_id"))
    if batch_run is not None:
        waiting = waiting.exclude(batch_run=batch_run)
    soonest = PostingSlot.objects.filter(Exists(waiting)).aggregate(
        soonest=Min("next_at"))["soonest"]
    if soonest is None:
        return None
    limit = settings.DELIVERY_CLAIM_HORIZON_SECONDS
    return soonest - timedelta(seconds=limit if horizon_s is None else min(horizon_s, limit))


def has_for_batch(hold_after: datetime, now: datetime | None = None) -> bool:
    return _claimable(now or timezone.now()).filter(_for_batch(hold_after)).exists()


def hold_for_batch(provider_batch: ProviderBatch, limit: int, hold_after: datetime,
                   now: datetime | None = None) -> list[QueueItem]:
    """Move up to ``limit`` pending items whose deadline is at or after ``hold_after`` into
    ``provider_batch`` (status ``batched``): no sync run claims them while it is open."""
    now = now or timezone.now()
    with transaction.atomic():
        chosen = list(_claimable(now).filter(_for_batch(hold_after))
                      .select_for_update(skip_locked=True).values_list("id", flat=True)[:limit])
        QueueItem.objects.filter(id__in=chosen, status=Status.PENDING).update(
            status=Status.BATCHED, provider_batch=provider_batch, updated_at=now)
    return list(QueueItem.objects.filter(id__in=chosen, status=Status.BATCHED,
                                         provider_batch=provider_batch)
                .select_related("bot", "chat").order_by("id"))


def claim_from_batch(provider_batch: ProviderBatch, batch_run: BatchRun, ids: Iterable[int],
                     now: datetime | None = None) -> list[QueueItem]:
    """Claim items still waiting on ``provider_batch`` into ``batch_run`` to store their
    results. Compare-and-set on ``batched``: a result fetched twice (a re-poll, two ticks)
    finds its item already taken and is stored once."""
    now = now or timezone.now()
    ids = list(ids)
    lease = timedelta(seconds=settings.BATCH_LEASE_SECONDS)
    QueueItem.objects.filter(id__in=ids, status=Status.BATCHED,
                             provider_batch=provider_batch).update(
        status=Status.CLAIMED, batch_run=batch_run, lease_expires_at=now + lease, updated_at=now)
    return list(claimed_items(batch_run).filter(id__in=ids))


def unbatch(provider_batch: ProviderBatch | None, reason: str, ids: Iterable[int] | None = None,
            due_before: datetime | None = None, now: datetime | None = None) -> int:
    """Items waiting on a provider batch back to the sync path, no attempt spent: those of
    ``provider_batch`` (all, or ``ids``), or of any batch whose deadline is before
    ``due_before``. A result that arrives for them later is ignored."""
    now = now or timezone.now()
    waiting = QueueItem.objects.filter(status=Status.BATCHED)
    if provider_batch is not None:
        waiting = waiting.filter(provider_batch=provider_batch)
    if ids is not None:
        waiting = waiting.filter(id__in=list(ids))
    if due_before is not None:
        waiting = waiting.filter(deliver_by__lt=due_before)
    return waiting.update(status=Status.PENDING, available_at=None, last_error=reason[:2000],
                          updated_at=now)


def renew(batch_run: BatchRun, lease_seconds: float | None = None,
          now: datetime | None = None) -> int:
    """Extend the leases of every item ``batch_run`` still holds (the run's heartbeat), so
    recovery never takes items from a healthy run however long it drains."""
    now = now or timezone.now()
    lease = timedelta(seconds=lease_seconds or settings.BATCH_LEASE_SECONDS)
    return QueueItem.objects.filter(batch_run=batch_run, status=Status.CLAIMED).update(
        lease_expires_at=now + lease)


def release(batch_run: BatchRun, reason: str, now: datetime | None = None,
            ids: Iterable[int] | None = None) -> int:
    """Return the items ``batch_run`` holds (all, or those in ``ids``) to the queue at once,
    no attempt spent (its job could not be enqueued, or the run stopped before generating
    them)."""
    now = now or timezone.now()
    held = QueueItem.objects.filter(batch_run=batch_run, status=Status.CLAIMED)
    if ids is not None:
        held = held.filter(id__in=list(ids))
    return held.update(
        status=Status.PENDING, lease_expires_at=None, last_error=reason[:2000], updated_at=now)


def claimed_items(batch_run: BatchRun):
    """The items this batch still holds (a lease that expired and was re-claimed is gone)."""
    return (QueueItem.objects.filter(batch_run=batch_run, status=Status.CLAIMED)
            .select_related("bot", "chat").order_by("-priority", "created_at", "id"))


def pop_highest_priority(batch_run: BatchRun) -> QueueItem | None:
    """Claim the single best pending item (the `pop_highest_priority` of docs/compat.md)."""
    items = claim(1, batch_run)
    return items[0] if items else None


def recover_expired(now: datetime | None = None) -> int:
    """Return items whose lease expired (their worker died) to the queue.

    Safe against double sends: the pipeline looks at an item's outbox row
    before generating, so an item whose message was sent or was being sent is
    finished, not sent again.

    An expiry is a crash, not an attempt: a healthy run renews its leases. An item whose
    worker stopped ``BATCH_MAX_CRASHES`` times (a reply that kills the process, say) ends
    dead instead of taking down one worker after another.
    """
    now = now or timezone.now()
    expired = QueueItem.objects.filter(status=Status.CLAIMED, lease_expires_at__lt=now)
    # A reply saved and waiting for its posting slot is a debt, not a crash's cause: it goes
    # back as it is (no crash counted) and the next run sends the saved text.
    waiting = Exists(Message.objects.filter(queue_item=OuterRef("pk"),
                                            status=Message.Status.PENDING))
    owed = expired.filter(waiting).update(
        status=Status.PENDING, lease_expires_at=None, available_at=None,
        last_error="lease expired while its reply waited for its slot: it will be sent",
        updated_at=now)
    limit = settings.BATCH_MAX_CRASHES
    for crashes in expired.filter(crashes__gte=limit - 1).values_list("crashes", flat=True) \
            .distinct():
        expired.filter(crashes=crashes).update(
            status=Status.DEAD, crashes=crashes + 1, finished_at=now, lease_expires_at=None,
            last_error=f"crashed the worker {crashes + 1} times", updated_at=now)
    count = expired.update(status=Status.PENDING, lease_expires_at=None, available_at=None,
                           crashes=F("crashes") + 1,
                           last_error="lease expired: the worker did not finish",
                           updated_at=now)
    if count + owed:
        log.warning("returned %d items with expired leases to the queue (%d with a saved "
                    "reply)", count + owed, owed)
    return count + owed


def _held(item: QueueItem, batch_run_id: int | None):
    # Only the batch that holds the claim may change the item.
    return QueueItem.objects.filter(id=item.id, status=Status.CLAIMED, batch_run_id=batch_run_id)


def finish(item: QueueItem, now: datetime | None = None) -> bool:
    now = now or timezone.now()
    return bool(_held(item, item.batch_run_id).update(
        status=Status.DONE, finished_at=now, lease_expires_at=None, last_error="",
        attempts=F("attempts") + 1, updated_at=now))


def finish_many(items: Iterable[QueueItem], now: datetime | None = None) -> int:
    """``finish`` for a group of items of one batch, in one statement."""
    items = list(items)
    if not items:
        return 0
    now = now or timezone.now()
    return QueueItem.objects.filter(
        id__in=[item.id for item in items], status=Status.CLAIMED,
        batch_run_id=items[0].batch_run_id,
    ).update(status=Status.DONE, finished_at=now, lease_expires_at=None, last_error="",
             attempts=F("attempts") + 1, updated_at=now)


def kill(item: QueueItem, reason: str, now: datetime | None = None,
         attempted: bool = False) -> bool:
    """Mark dead for good, with the reason (never silently dropped); ``attempted``: a
    generation or send really ran and failed for good."""
    now = now or timezone.now()
    return bool(_held(item, item.batch_run_id).update(
        status=Status.DEAD, finished_at=now, lease_expires_at=None, last_error=reason[:2000],
        attempts=F("attempts") + int(attempted), updated_at=now))


def retry_later(item: QueueItem, reason: str, now: datetime | None = None) -> str:
    """A failed attempt: back to the queue with exponential back-off, or dead
    after ``max_attempts``. Returns the new status."""
    now = now or timezone.now()
    attempts = item.attempts + 1
    if attempts >= item.max_attempts:
        kill(item, f"gave up after {attempts} attempts: {reason}", now, attempted=True)
        return Status.DEAD
    delay = settings.BATCH_RETRY_BACKOFF_SECONDS * 2 ** (attempts - 1)
    _held(item, item.batch_run_id).update(
        status=Status.PENDING, available_at=now + timedelta(seconds=delay), attempts=attempts,
        lease_expires_at=None, last_error=reason[:2000], updated_at=now)
    return Status.PENDING


def defer(item: QueueItem, reason: str, delay_s: float, now: datetime | None = None) -> str:
    """Back to the queue until the server said to come back, without spending an attempt
    (a 429's retry_after, an open circuit, a rate limit with no room in time). A wait longer
    than ``BATCH_MAX_DEFER_SECONDS`` ends the item dead with the reason instead. Returns the
    new status."""
    now = now or timezone.now()
    ceiling = settings.BATCH_MAX_DEFER_SECONDS
    if not delay_s <= ceiling:  # also refuses nan
        kill(item, f"asked to wait {delay_s:.0f}s, more than BATCH_MAX_DEFER_SECONDS "
                   f"({ceiling:.0f}s): {reason}", now)
        return Status.DEAD
    _held(item, item.batch_run_id).update(
        status=Status.PENDING, available_at=now + timedelta(seconds=max(delay_s, 0.0)),
        lease_expires_at=None, last_error=reason[:2000], updated_at=now)
    return Status.PENDING


def requeue(items: QuerySet[QueueItem], by: str, now: datetime | None = None) -> list[int]:
    """Dead items back to the queue at an operator's word: attempts and crashes start
    again, and the reason each died with moves to its history. Returns the ids requeued
    (compare-and-set on ``dead``: two operators clicking at once requeue an item once)."""
    now = now or timezone.now()
    requeued = []
    with transaction.atomic():
        for item in items.filter(status=Status.DEAD).select_related(None).select_for_update().only(
                "id", "attempts", "crashes", "last_error", "history", "finished_at"):
            entry = {"at": now.isoformat(), "event": "requeued", "by": by, "status": "dead",
                     "attempts": item.attempts, "crashes": item.crashes,
                     "died_at": item.finished_at.isoformat() if item.finished_at else None,
                     "reason": item.last_error}
            if QueueItem.objects.filter(id=item.id, status=Status.DEAD).update(
                    status=Status.PENDING, attempts=0, crashes=0, available_at=None,
                    lease_expires_at=None, finished_at=None, last_error="",
                    history=[*item.history, entry], updated_at=now):
                requeued.append(item.id)
    if requeued:
        transaction.on_commit(nudge)
    return requeued


def depth_by_status() -> dict[str, int]:
    """How many items are in each status (every status listed, zeros included)."""
    counts = dict(QueueItem.objects.values_list("status").annotate(n=Count("id")))
    return {status: counts.get(status, 0) for status in Status.values}
