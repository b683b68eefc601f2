"""Small make_* helpers shared by the tests."""

from __future__ import annotations

import itertools

from batchgen.models import BatchRun, Bot, Chat, QueueItem

_seq = itertools.count(1)


def make_bot(name: str | None = None, **fields) -> Bot:
    n = next(_seq)
    fields.setdefault("telegram_token", f"{100000 + n}:TESTTOKEN{'z' * 30}{n}")
    return Bot.objects.create(name=name or f"bot-{n}", **fields)


def make_chat(telegram_chat_id: int | None = None, **fields) -> Chat:
    n = next(_seq)
    fields.setdefault("title", f"chat-{n}")
    return Chat.objects.create(telegram_chat_id=telegram_chat_id or -1000000000 - n, **fields)


def make_item(bot: Bot | None = None, chat: Chat | None = None, priority: int = 0,
              **fields) -> QueueItem:
    return QueueItem.objects.create(bot=bot or make_bot(), chat=chat or make_chat(),
                                    priority=priority, **fields)


def make_run(mode: str = BatchRun.Mode.BATCH, **fields) -> BatchRun:
    return BatchRun.objects.create(mode=mode, **fields)


def set_batch_mode(size: int, enabled: bool = True) -> None:
    """Batch mode as staff would set it (rows may be missing after a transactional flush)."""
    from batchgen.models import Setting

    Setting.objects.update_or_create(key="batch_mode_enabled", defaults={"value": enabled})
    Setting.objects.update_or_create(key="batch_size", defaults={"value": size})
