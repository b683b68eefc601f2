"""What a person trying the demo does, as commands (``manage.py demo …``) instead of the fake
Telegram's control endpoints: write in a chat, add a bot to a chat, provoke a failure."""

from __future__ import annotations

import httpx
from django.conf import settings

from batchgen.models import Bot, Chat, QueueItem
from batchgen.models.conversations import Membership
from batchgen.work import queue

PERSON = {"id": 4242, "is_bot": False, "first_name": "Dana"}
DEFAULT_GROUP = -1001234567890
# The fake LLM fails a prompt that carries one of these markers (batchgen.fakes.llm_server).
FAULTS = {"bad_request": "400", "server_error": "500", "rate_limited": "429",
          "content_filter": "content_filter"}


class DemoError(ValueError):
    """The demo could not do it; the message says what to type instead."""


def _fake(path: str, body: dict) -> dict:
    url = f"{settings.TELEGRAM_API_BASE_URL.rstrip('/')}{path}"
    try:
        return httpx.post(url, json=body, timeout=10).raise_for_status().json()
    except httpx.HTTPError as exc:
        raise DemoError(f"the fake Telegram at {url} did not answer ({exc}): is make demo "
                        f"running, and TELEGRAM_API_BASE_URL exported from its banner?") from None


def _bot(name: str) -> Bot:
    bot = Bot.objects.filter(name=name).first()
    if bot is None:
        known = ", ".join(Bot.objects.values_list("name", flat=True)[:10])
        raise DemoError(f"bot: no bot is named {name!r}; known: {known}")
    return bot


def _chat(title_or_id: str) -> Chat:
    if title_or_id.lstrip("-").isdigit():
        chat = Chat.objects.filter(telegram_chat_id=int(title_or_id)).first()
    else:
        chat = Chat.objects.filter(title=title_or_id).first()
    if chat is None:
        raise DemoError(f"chat: no chat is titled or numbered {title_or_id!r}; add a bot to "
                        f"it first: manage.py demo add-bot BOT --chat {title_or_id!r}")
    return chat


def add_bot(bot_name: str, chat_title: str, chat_id: int | None = None) -> str:
    """Telegram tells ``bot`` it was added to a group; the poll loop makes the chat appear."""
    bot = _bot(bot_name)
    known = Chat.objects.filter(title=chat_title).first()
    chat_id = chat_id or (known.telegram_chat_id if known else
                          DEFAULT_GROUP - Chat.objects.count() - 1)
    _fake("/_member", {"token": bot.telegram_token, "chat_id": chat_id,
                       "chat_title": chat_title, "chat_type": "supergroup",
                       "status": "member"})
    return (f"{bot.name} was added to {chat_title!r} ({chat_id}); telegram_poll picks it up "
            f"within seconds and the chat appears in the admin.")


def say(chat_title_or_id: str, text: str) -> str:
    """A person writes ``text`` in the chat; each member bot receives the update."""
    chat = _chat(chat_title_or_id)
    tokens = list(Bot.objects.filter(
        id__in=Membership.objects.filter(chat=chat, is_active=True).values("bot_id"),
        is_active=True).values_list("telegram_token", flat=True))
    if not tokens:
        raise DemoError(f"chat: no active bot is a member of {chat}; add one first: "
                        f"manage.py demo add-bot BOT --chat {chat.title!r}")
    _fake("/_inject", {"chat_id": chat.telegram_chat_id, "chat_title": chat.title,
                       "chat_type": chat.chat_type or "supergroup", "from": PERSON,
                       "text": text, "tokens": tokens})
    return (f"Dana wrote in {chat}: {text!r}; {len(tokens)} member bot(s) will see it at the "
            f"next poll and reply in the next batches.")


def fail(kind: str = "bad_request", count: int = 1, chat_title_or_id: str = "") -> str:
    """Queue ``count`` items whose prompt makes the fake provider fail with ``kind``:
    bad_request dies at once, the others after their retries."""
    if kind not in FAULTS:
        raise DemoError(f"kind must be one of {', '.join(FAULTS)}, got {kind!r}")
    if not 1 <= count <= 50:
        raise DemoError(f"count must be from 1 to 50, got {count}")
    chat = _chat(chat_title_or_id) if chat_title_or_id else Chat.objects.first()
    bot = Bot.objects.filter(is_active=True).first()
    if chat is None or bot is None:
        raise DemoError("the demo has no bot or chat yet: run manage.py load_demo_data")
    marker = f"[[fault:{FAULTS[kind]}]]"
    for _ in range(count):
        queue.push(bot, chat, priority=5, recent_messages=[f"Dana: please fail {marker}"])
    where = f"{QueueItem.objects.filter(status='pending').count()} pending"
    return (f"Queued {count} item(s) for {bot} in {chat} that the fake provider answers with "
            f"{kind} ({where}); they show under 'Dead items by cause' on the dashboard, "
            f"where Requeue sends them again (and they fail again: the marker stays).")
