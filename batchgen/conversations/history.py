"""A chat's conversation for prompts: what others wrote (ChatMessage) and what the platform's
bots sent (the outbox's sent ``Message`` rows), merged by time. Telegram never delivers one
bot's messages to another bot, so the platform's own sends are read from the outbox rather
than from updates.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from django.conf import settings
from django.db.models import F, Model, QuerySet, Window
from django.db.models.functions import RowNumber

from batchgen.models import Chat, Message
from batchgen.models.conversations import ChatMessage

_Row = TypeVar("_Row", bound=Model)
# Enough rows to fill any sensible budget; the budget decides how many are used.
_FETCH = 60


@dataclass(frozen=True)
class Line:
    when: datetime
    speaker: str
    text: str
    from_human: bool
    bot_id: int | None = None  # the platform bot that sent it
    message_id: int | None = None  # its outbox Message id

    def __str__(self) -> str:
        return f"{self.speaker}: {self.text}"


def estimate_tokens(text: str) -> int:
    # About four characters a token for the languages seen so far; a budget, not a bill.
    return math.ceil(len(text) / 4) + 1


def lines(chat: Chat, limit: int = _FETCH) -> list[Line]:
    """The last ``limit`` lines of ``chat``, oldest first."""
    return lines_of([chat], limit)[chat.id]


def lines_of(chats: Iterable[Chat], limit: int = _FETCH) -> dict[int, list[Line]]:
    """``lines`` of several chats (by chat id) in two queries, whatever their number: a
    drain reads the history of every item it starts at once, not one chat at a time."""
    ids = {chat.id for chat in chats}
    found: dict[int, list[Line]] = {chat_id: [] for chat_id in ids}
    if not ids:
        return found
    for heard in _last_per_chat(ChatMessage.objects.filter(chat_id__in=ids), limit):
        found[heard.chat_id].append(Line(heard.sent_at, heard.speaker, heard.text,
                                         heard.from_human))
    sends = Message.objects.filter(chat_id__in=ids, status=Message.Status.SENT,
                                   sent_at__isnull=False).select_related("bot")
    for sent in _last_per_chat(sends, limit):
        assert sent.chat_id is not None and sent.sent_at is not None  # the query asks
        found[sent.chat_id].append(Line(sent.sent_at, sent.bot.name if sent.bot else "a bot",
                                        sent.text, False, sent.bot_id, sent.id))
    return {chat_id: sorted(merged, key=lambda line: line.when)[-limit:]
            for chat_id, merged in found.items()}


def _last_per_chat(rows: QuerySet[_Row], limit: int) -> QuerySet[_Row]:
    """The newest ``limit`` rows of each chat in ``rows``."""
    newest = [F("sent_at").desc(), F("id").desc()]
    ranked = rows.annotate(rank=Window(RowNumber(), partition_by=[F("chat_id")],
                                       order_by=newest))
    return ranked.filter(rank__lte=limit)  # type: ignore[return-value]  # same rows, ranked


def recent_messages(chat: Chat, budget_tokens: int | None = None) -> list[str]:
    """The chat's last lines as "Speaker: text", oldest first, within ``budget_tokens``
    (default ``INTAKE_HISTORY_TOKENS``). A line too long for what is left is cut, so the
    newest message always makes it in."""
    budget = settings.INTAKE_HISTORY_TOKENS if budget_tokens is None else budget_tokens
    chosen: list[str] = []
    for line in reversed(lines(chat)):
        text = str(line)
        cost = estimate_tokens(text)
        if cost > budget:
            if not chosen and budget > 0:
                chosen.append(text[: budget * 4].rstrip() + "…")
            break
        chosen.append(text)
        budget -= cost
    return chosen[::-1]


def bot_turns_since_human(chat: Chat) -> tuple[int, Line | None]:
    """How many platform-bot messages in a row end the chat, and the last of them."""
    turns, last = 0, None
    for line in reversed(lines(chat)):
        if line.from_human:
            break
        turns += 1
        last = last or line
    return turns, last
