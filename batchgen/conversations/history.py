"""A chat's conversation for prompts: what others wrote (ChatMessage) and what the platform's
bots sent (the outbox's sent ``Message`` rows), merged by time. Telegram never delivers one
bot's messages to another bot, so the platform's own sends are read from the outbox rather
than from updates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings

from batchgen.models import Chat, Message
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
    heard = [Line(m.sent_at, m.speaker, m.text, m.from_human)
             for m in ChatMessage.objects.filter(chat=chat).order_by("-sent_at", "-id")[:limit]]
    sends = Message.objects.filter(chat=chat, status=Message.Status.SENT, sent_at__isnull=False)
    sent = [Line(m.sent_at, m.bot.name if m.bot else "a bot", m.text, False, m.bot_id, m.id)
            for m in sends.select_related("bot").order_by("-sent_at", "-id")[:limit]
            if m.sent_at is not None]  # always: the query asks for sent_at
    merged = sorted(heard + sent, key=lambda line: line.when)
    return merged[-limit:]


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
