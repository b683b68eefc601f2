"""The producer: turns what happened in the chats into queue items by the behaviour rules (a
person writes, a platform bot posts, a bot's cadence comes round), run by ``tick`` before it
claims. Idempotent: every item hangs on a ``Trigger`` with a unique key, so several tick
processes producing at once queue one item per trigger. The rules, and why replies coalesce,
are in docs/design.md ("Behaviour rules").
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q, Subquery
from django.utils import timezone

from batchgen.conversations import history
from batchgen.core.priorities import (
    ANSWER_PRIORITY,
    CADENCE_PRIORITY,
    MENTION_PRIORITY,
    REPLY_PRIORITY,
)
from batchgen.models import Bot, Chat, Message, QueueItem
from batchgen.models.conversations import ChatMessage, Membership, Trigger
from batchgen.work import queue

log = logging.getLogger(__name__)

_BATCH = 500  # human messages handled per call; the rest wait for the next tick
# Older messages get no answer: after an outage of the poller, replying to yesterday's
# conversation would only confuse the chat.
_ANSWER_WINDOW = timedelta(hours=1)


def produce(now: datetime | None = None) -> int:
    """Queue what the chats call for right now; returns how many items were queued."""
    now = now or timezone.now()
    return _replies(now) + _answers(now) + _cadence(now)


def in_quiet_hours(chat: Chat, now: datetime) -> bool:
    if chat.quiet_start is None or chat.quiet_end is None:
        return False
    local = now.astimezone(ZoneInfo(chat.time_zone)).time()
    if chat.quiet_start <= chat.quiet_end:
        return chat.quiet_start <= local < chat.quiet_end
    return local >= chat.quiet_start or local < chat.quiet_end  # spans midnight


def _members(chat: Chat) -> list[Membership]:
    """The bots that may speak in ``chat`` now: active and not paused."""
    return list(Membership.objects.filter(chat=chat, is_active=True, bot__is_active=True,
                                          bot__paused_at__isnull=True)
                .select_related("bot").order_by("bot_id"))


def _queue(key: str, kind: str, bot: Bot, chat: Chat, priority: int,
           deliver_by: datetime | None = None) -> QueueItem | None:
    """One item for ``key``, unless it exists; the unique key settles concurrent producers."""
    if Trigger.objects.filter(key=key).exists():
        return None
    try:
        with transaction.atomic():
            trigger = Trigger.objects.create(key=key, kind=kind, bot=bot, chat=chat)
            item = queue.push(bot, chat, priority=priority, deliver_by=deliver_by,
                              recent_messages=history.recent_messages(chat))
            Trigger.objects.filter(id=trigger.id).update(queue_item=item)
    except IntegrityError:
        return None  # another producer queued it first
    return item


# A bot's unclaimed replies in one chat: bot id -> (item id, priority).
OpenReplies = dict[int, tuple[int, int]]


def _open_replies(chat_id: int) -> OpenReplies:
    """The replies to people waiting unclaimed in the chat, by bot (one query)."""
    rows = QueueItem.objects.filter(chat_id=chat_id, status=QueueItem.Status.PENDING,
                                    trigger__kind__in=["reply", "mention"]) \
        .values_list("bot_id", "id", "priority")
    return {bot_id: (item_id, priority) for bot_id, item_id, priority in rows}


def _replies(now: datetime) -> int:
    queued = 0
    pending = list(ChatMessage.objects.filter(produced=False)
                   .select_related("chat", "addressed_bot").order_by("sent_at", "id")[:_BATCH])
    members: dict[int, list[Membership]] = {}  # a burst of messages shares few chats
    open_replies: dict[int, OpenReplies] = {}
    for message in pending:
        fresh = message.sent_at >= now - _ANSWER_WINDOW
        # A paused chat is not answered: its replies would go out stale once it resumes.
        if message.from_human and message.chat.is_active and fresh \
                and message.chat.paused_at is None:
            if message.chat_id not in members:
                members[message.chat_id] = _members(message.chat)
                open_replies[message.chat_id] = _open_replies(message.chat_id)
            queued += _reply_to(message, members[message.chat_id],
                                open_replies[message.chat_id])
    # Marked after: if queueing fails half way, the next tick looks again, and the trigger
    # keys keep the replies already queued from being queued twice.
    ChatMessage.objects.filter(id__in=[m.id for m in pending]).update(produced=True)
    return queued


def _reply_to(message: ChatMessage, members: list[Membership], open_replies: OpenReplies
              ) -> int:
    addressed = [m for m in members if m.bot_id == message.addressed_bot_id]
    if addressed:
        return _reply_once(message, addressed[0].bot, "mention", MENTION_PRIORITY,
                           open_replies)
    return sum(_reply_once(message, m.bot, "reply", REPLY_PRIORITY, open_replies)
               for m in members if m.replies_to_humans)


def _reply_once(message: ChatMessage, bot: Bot, kind: str, priority: int,
                open_replies: OpenReplies) -> int:
    """Queue ``bot``'s reply, or fold the message into the reply it has waiting there."""
    waiting = open_replies.get(bot.id)
    if waiting is not None:
        item_id, had = waiting
        if priority > had:  # a mention jumps ahead by raising the waiting reply
            QueueItem.objects.filter(id=item_id, status=QueueItem.Status.PENDING,
                                     priority__lt=priority).update(priority=priority)
            open_replies[bot.id] = (item_id, priority)
        return 0
    item = _queue(f"{kind}:{message.id}:{bot.id}", kind, bot, message.chat, priority)
    if item is not None:
        open_replies[bot.id] = (item.id, priority)
    return int(item is not None)


def _answers(now: datetime) -> int:
    """Chats where a bot spoke last within the window and another member bot may answer.

    Found in one query, so a tick's cost does not grow with every chat a bot posted in (a
    drain of thousands of one-bot chats made each tick read each chat's history)."""
    sent = Message.objects.filter(status=Message.Status.SENT, sent_at__isnull=False)
    last_sent = sent.filter(chat=OuterRef("pk")).order_by("-sent_at", "-id")
    another_may_answer = Membership.objects.filter(
        chat=OuterRef("pk"), is_active=True, answers_bots=True, bot__is_active=True,
        bot__paused_at__isnull=True,
    ).exclude(bot_id=OuterRef("last_bot"))
    # Wait while replies are in flight: answering now would answer a stale line.
    busy = QueueItem.objects.filter(status__in=[QueueItem.Status.PENDING,
                                                QueueItem.Status.CLAIMED])
    chats = list(Chat.objects.filter(
        is_active=True, paused_at__isnull=True,
        id__in=sent.filter(sent_at__gte=now - _ANSWER_WINDOW).values("chat_id"))
        .exclude(id__in=busy.values("chat_id"))
        .annotate(last_sent=Subquery(last_sent.values("id")[:1]),
                  last_bot=Subquery(last_sent.values("bot_id")[:1]))
        .filter(Exists(another_may_answer)))
    # A chat whose last bot line has its answer queued already has nothing more to produce.
    answered = set(Trigger.objects.filter(key__in=[f"answer:{c.last_sent}" for c in chats])
                   .values_list("key", flat=True))
    return sum(_answer_in(chat) for chat in chats
               if f"answer:{chat.last_sent}" not in answered and not in_quiet_hours(chat, now))


def _answer_in(chat: Chat) -> int:
    turns, last = history.bot_turns_since_human(chat)
    if last is None or last.message_id is None or turns >= chat.max_bot_turns:
        return 0
    others = [m for m in _members(chat) if m.answers_bots and m.bot_id != last.bot_id]
    if not others:
        return 0
    responder = others[last.message_id % len(others)].bot
    return int(_queue(f"answer:{last.message_id}", "answer", responder, chat,
                      ANSWER_PRIORITY) is not None)


def _cadence(now: datetime) -> int:
    # Not for a paused bot or chat: its posts would wait unclaimed, one per slot, and go out
    # in a burst of stale posts on resume. Its slot stays due, so it posts once on resume.
    due = (Membership.objects.filter(is_active=True, bot__is_active=True, chat__is_active=True,
                                     bot__paused_at__isnull=True, chat__paused_at__isnull=True,
                                     cadence_minutes__gt=0)
           .filter(Q(next_post_at__isnull=True) | Q(next_post_at__lte=now))
           .select_related("bot", "chat"))
    queued = 0
    for membership in due:
        if not in_quiet_hours(membership.chat, now):
            queued += _post_on_cadence(membership, now)
    return queued


def _post_on_cadence(membership: Membership, now: datetime) -> int:
    # Fix the slot first (compare-and-set), so every producer names the same trigger key.
    Membership.objects.filter(id=membership.id, next_post_at__isnull=True).update(
        next_post_at=now)
    slot = Membership.objects.values_list("next_post_at", flat=True).get(id=membership.id)
    if slot is None or slot > now:
        return 0
    key = f"cadence:{membership.id}:{slot.isoformat()}"
    # A cadence post can wait (the provider batch route, half price), until the next one
    # is due at the latest.
    wait_s = min(settings.BATCH_ROUTE_CADENCE_DEADLINE_SECONDS,
                 (membership.cadence_minutes or 0) * 60.0)
    queued = _queue(key, "cadence", membership.bot, membership.chat, CADENCE_PRIORITY,
                    deliver_by=max(now, slot) + timedelta(seconds=wait_s)) is not None
    jitter = membership.jitter_minutes * random.Random(key).uniform(-1.0, 1.0)
    minutes = max(1.0, (membership.cadence_minutes or 0) + jitter)
    Membership.objects.filter(id=membership.id, next_post_at=slot).update(
        next_post_at=max(now, slot) + timedelta(minutes=minutes))
    return int(queued)
