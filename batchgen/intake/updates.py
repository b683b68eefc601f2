"""One handler for every Telegram update, whether it came by webhook or by getUpdates.

``handle(bot, update)`` stores what the update says and returns an outcome word for logs
and counters. Anything it cannot use (malformed, edited, non-text, too long, a duplicate)
is skipped with a logged reason and stores nothing but the update id, so a redelivery is
skipped too and one bad update never stops a poll loop.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from batchgen.intake import chats
from batchgen.intake.models import ChatMessage, ProcessedUpdate
from batchgen.models import Bot, Chat
from batchgen.text import storable

log = logging.getLogger(__name__)

STORED, DUPLICATE, MALFORMED = "stored", "duplicate", "malformed"
# Update kinds that are not new text in a chat: seen, then skipped on purpose.
_SKIPPED_KINDS = ("edited_message", "edited_channel_post", "channel_post", "message_reaction",
                  "callback_query", "inline_query", "chat_member", "chat_join_request")


class Malformed(ValueError):
    """The update lacks a field the handler needs, or has one of the wrong type."""


def handle(bot: Bot, update: Any) -> str:
    """Store one update for ``bot``; returns stored, duplicate, malformed or skipped:<why>."""
    if not isinstance(update, dict) or type(update.get("update_id")) is not int:
        log.warning("bot %s: malformed update skipped: update_id must be an integer", bot.id)
        return MALFORMED
    try:
        with transaction.atomic():
            outcome = _dispatch(bot, update)
            # Inserted last, in the same transaction: a concurrent redelivery waits on this
            # row's unique key, then fails and rolls its own work back.
            ProcessedUpdate.objects.create(bot=bot, update_id=update["update_id"],
                                           outcome=outcome[:32])
    except IntegrityError:
        # Telegram redelivers when it missed our answer; webhook and poller may overlap.
        return DUPLICATE
    except Malformed as exc:
        if not _remember(bot, update["update_id"], MALFORMED):
            return DUPLICATE
        log.warning("bot %s: malformed update %s skipped: %s", bot.id, update["update_id"], exc)
        return MALFORMED
    if outcome != STORED:
        log.info("bot %s: update %s %s", bot.id, update["update_id"], outcome)
    return outcome


def _remember(bot: Bot, update_id: int, outcome: str) -> bool:
    try:
        with transaction.atomic():
            ProcessedUpdate.objects.create(bot=bot, update_id=update_id, outcome=outcome)
    except IntegrityError:
        return False
    return True


def _dispatch(bot: Bot, update: dict) -> str:
    if "message" in update:
        return _message(bot, _field(update, "message", dict))
    if "my_chat_member" in update:
        return _membership(bot, _field(update, "my_chat_member", dict))
    kind = next((k for k in _SKIPPED_KINDS if k in update), None)
    return f"skipped:{kind or 'unknown kind'}"


def _field(data: dict, name: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise Malformed(f"{name} must be {getattr(kind, '__name__', kind)}")
    return value


def _chat_of(data: dict, heard_by: Bot | None = None) -> Chat:
    chat = _field(data, "chat", dict)
    title = chat.get("title") or " ".join(
        str(chat.get(k) or "") for k in ("first_name", "last_name")).strip()
    return chats.discovered(_field(chat, "id", int), storable(str(title))[:200],
                            str(chat.get("type") or ""), heard_by)


def _membership(bot: Bot, change: dict) -> str:
    chat = _chat_of(change)
    status = _field(_field(change, "new_chat_member", dict), "status", str)
    if status in ("member", "administrator", "creator"):
        chats.joined(bot, chat)
        return STORED
    if status in ("left", "kicked"):
        chats.gone(bot, chat, "removed from the chat" if status == "left" else "kicked or blocked")
        return STORED
    return f"skipped:status {status}"


def _message(bot: Bot, message: dict) -> str:
    message_id = _field(message, "message_id", int)
    sender = message.get("from") if isinstance(message.get("from"), dict) else {}
    text = message.get("text")
    if not isinstance(text, str) or not text.strip():
        return "skipped:not text"
    if len(text) > settings.INTAKE_MAX_MESSAGE_CHARS:
        return f"skipped:text over {settings.INTAKE_MAX_MESSAGE_CHARS} characters"
    if sender.get("is_bot") and Bot.objects.filter(telegram_id=sender.get("id")).exists():
        return "skipped:own bot"  # the platform's sends are already in the history
    chat = _chat_of(message, heard_by=bot)
    ChatMessage.objects.bulk_create([ChatMessage(
        chat=chat, telegram_message_id=message_id, speaker=_speaker(sender),
        from_human=not sender.get("is_bot", False), addressed_bot=_addressed(message, text),
        text=storable(text), sent_at=_when(message.get("date")),
    )], ignore_conflicts=True)  # the same group message arrives once per member bot
    return STORED


def _speaker(sender: dict) -> str:
    name = " ".join(str(sender.get(k) or "") for k in ("first_name", "last_name")).strip()
    return storable(name or str(sender.get("username") or "someone"))[:200]


def _when(date: Any) -> datetime:
    if isinstance(date, int) and not isinstance(date, bool) and date > 0:
        return datetime.fromtimestamp(date, tz=UTC)
    return timezone.now()


def _addressed(message: dict, text: str) -> Bot | None:
    """The platform bot this message mentions by @username, or replies to."""
    replied = message.get("reply_to_message")
    if isinstance(replied, dict) and isinstance(replied.get("from"), dict):
        bot = Bot.objects.filter(telegram_id=replied["from"].get("id")).first()
        if bot is not None:
            return bot
    names = [word[1:].rstrip(".,!?:;").lower() for word in text.split() if word.startswith("@")]
    if not names:
        return None
    return Bot.objects.filter(username__iregex=r"^(" + "|".join(
        _escape(n) for n in names[:5]) + r")$").first()


def _escape(name: str) -> str:
    # Telegram usernames are [A-Za-z0-9_]; anything else cannot match a bot anyway.
    return "".join(c for c in name if c.isalnum() or c == "_") or "_"
