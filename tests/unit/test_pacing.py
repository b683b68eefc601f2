"""Telegram pacing shared through Redis: every worker books from one budget."""

from __future__ import annotations

from batchgen.state import shared
from batchgen.telegram.client import ChatPacer
from batchgen.telegram.pacing import SharedPacer


def pacer(**options) -> tuple[SharedPacer, list[float]]:
    slept: list[float] = []
    return SharedPacer.like(ChatPacer(), sleep=slept.append, **options), slept


def test_without_redis_each_process_paces_itself(settings) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    shared.reset()
    try:
        one, slept = pacer()
        assert one.book(-1, bot="b") is None
        assert one.wait(-1, bot="b") == 0.0  # the per-process ChatPacer: first send is free
    finally:
        shared.reset()
