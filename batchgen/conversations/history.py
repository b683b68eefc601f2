"""A chat's conversation for prompts: what others wrote (ChatMessage) and what the platform's
bots sent (the outbox's sent ``Message`` rows), merged by time. Telegram never delivers one
bot's messages to another bot, so the platform's own sends are read from the outbox rather
than from updates.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

from django.conf import settings
from django.db import connection
from django.utils.dateparse import parse_datetime

from batchgen.models import Bot, Chat, Message
from batchgen.models.conversations import ChatMessage

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
    return _lines(chat.pk, limit)


def _lines(chat_id: int, limit: int) -> list[Line]:
    with connection.cursor() as cursor:
        cursor.execute(_newest_sql("%s"), [chat_id, limit, chat_id, Message.Status.SENT, limit])
        return _merged(cursor.fetchall(), limit)


def lines_of(chats: Iterable[Chat], limit: int = _FETCH) -> dict[int, list[Line]]:
    """``lines`` of several chats, by chat id: on PostgreSQL in one statement (each chat still
    read newest first by its own index, a LATERAL join per chat), elsewhere one each."""
    ids = sorted({chat.pk for chat in chats})
    if connection.vendor != "postgresql" or len(ids) < 2:
        return {chat_id: _lines(chat_id, limit) for chat_id in ids}
    rows: dict[int, list[tuple]] = {chat_id: [] for chat_id in ids}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT c.id, n.* FROM unnest(%s::bigint[]) AS c(id) "  # noqa: S608 (names, not input)
            f"CROSS JOIN LATERAL ({_newest_sql('c.id')}) AS n",
            [ids, limit, Message.Status.SENT, limit])
        for chat_id, *row in cursor.fetchall():
            rows[chat_id].append(tuple(row))
    return {chat_id: _merged(found, limit) for chat_id, found in rows.items()}


def _merged(rows: Iterable[tuple], limit: int) -> list[Line]:
    """Both sources' rows (each newest first) as one chat's last ``limit`` lines, oldest
    first."""
    heard: list[Line] = []
    sent: list[Line] = []
    for kind, when, speaker, text, from_human, bot_id, row_id in rows:
        when = _as_datetime(when)
        if kind == 0:
            heard.append(Line(when, speaker, text, bool(from_human)))
        else:
            sent.append(Line(when, speaker, text, False, bot_id, row_id))
    merged = sorted(heard + sent, key=lambda line: line.when)
    return merged[-limit:]


@cache
def _newest_sql(chat: str) -> str:
    """One statement for both sources, each newest first by its own index, as plain rows:
    it runs as every generation starts, where two ORM queries and their model instances
    were the largest part of a worker's CPU per message. ``chat``: "%s" (a parameter, given
    before each source's limit) or a column of an outer query (a LATERAL join)."""
    heard, sent, bot = ChatMessage._meta.db_table, Message._meta.db_table, Bot._meta.db_table
    return (
        f"SELECT * FROM (SELECT 0, h.sent_at, h.speaker, h.text, h.from_human, "
        f"CAST(NULL AS INTEGER), h.id FROM {heard} h WHERE h.chat_id = {chat} "
        f"ORDER BY h.sent_at DESC, h.id DESC LIMIT %s) AS heard "
        f"UNION ALL "
        f"SELECT * FROM (SELECT 1, m.sent_at, COALESCE(b.name, 'a bot'), m.text, "
        f"false, "
        f"m.bot_id, m.id FROM {sent} m LEFT JOIN {bot} b ON b.id = m.bot_id "
        f"WHERE m.chat_id = {chat} AND m.status = %s AND m.sent_at IS NOT NULL "
        f"ORDER BY m.sent_at DESC, m.id DESC LIMIT %s) AS sent")


def _as_datetime(value: datetime | str) -> datetime:
    """SQLite hands raw rows back as text (UTC, as Django stores it)."""
    if isinstance(value, datetime):
        return value
    parsed = parse_datetime(value)
    assert parsed is not None, value
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def recent_messages(chat: Chat, budget_tokens: int | None = None,
                    known: list[Line] | None = None) -> list[str]:
    """The chat's last lines as "Speaker: text", oldest first, within ``budget_tokens``
    (default ``INTAKE_HISTORY_TOKENS``). A line too long for what is left is cut, so the
    newest message always makes it in. ``known``: the chat's ``lines``, read already."""
    budget = settings.INTAKE_HISTORY_TOKENS if budget_tokens is None else budget_tokens
    chosen: list[str] = []
    for line in reversed(lines(chat) if known is None else known):
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
