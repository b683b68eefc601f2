"""Helpers for the intake tests: platform bots the fake Telegram knows, and things
happening in the fake's chats (a person writes, a bot is added or removed)."""

from __future__ import annotations

import itertools
from typing import Any

import httpx

from batchgen.models import Bot

_ids = itertools.count(500_001)


def make_intake_bot(name: str | None = None, **fields: Any) -> Bot:
    """A bot as the admin leaves it after getMe: telegram id and username filled in."""
    bot_id = next(_ids)
    fields.setdefault("telegram_token", f"{bot_id}:INTAKE-TOKEN-{'x' * 24}")
    return Bot.objects.create(name=name or f"bot{bot_id}", telegram_id=bot_id,
                              username=f"bot{bot_id}_bot", **fields)


def _post(server: Any, path: str, body: dict) -> dict:
    response = httpx.post(f"{server.base_url}{path}", json=body, timeout=10)
    return response.raise_for_status().json()


def say(server: Any, chat_id: int, text: str, bots: list[Bot], **extra: Any) -> dict:
    """A person writes ``text`` in ``chat_id``; each of ``bots`` gets the update."""
    return _post(server, "/_inject", {"chat_id": chat_id, "text": text,
                                      "tokens": [b.telegram_token for b in bots], **extra})


def membership_change(server: Any, bot: Bot, chat_id: int, status: str = "member",
                      **extra: Any) -> dict:
    return _post(server, "/_member", {"token": bot.telegram_token, "chat_id": chat_id,
                                      "status": status, **extra})


def update(update_id: int, **payload: Any) -> dict:
    return {"update_id": update_id, **payload}


def text_message(message_id: int, chat_id: int, text: str, *, sender_id: int = 777,
                 first_name: str = "Alice", is_bot: bool = False, **extra: Any) -> dict:
    return {"message_id": message_id, "date": 1_790_000_000, "text": text,
            "chat": {"id": chat_id, "type": "group", "title": "Lounge"},
            "from": {"id": sender_id, "is_bot": is_bot, "first_name": first_name}, **extra}
