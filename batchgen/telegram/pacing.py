"""Telegram pacing shared by every worker through Redis, counted per bot token as Telegram
counts it (core.telegram.org/bots/faq): about one message a second in a chat, 20 a minute in a
group, about 30 a second in all. One Lua script books a send's slot in all its budgets at once;
with Redis away each process paces itself with its ``ChatPacer`` (docs/design.md, "Telegram
pacing")."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from batchgen.state import shared

__all__ = ["GROUP_PER_MINUTE", "PER_CHAT_INTERVAL_S", "SharedPacer", "slot_interval"]

# Telegram's limits per bot (core.telegram.org/bots/faq): about one message a second in a
# chat, 20 a minute in a group (negative chat ids), about 30 a second in all.
PER_CHAT_INTERVAL_S = 1.0
GROUP_PER_MINUTE = 20
BOT_PER_SECOND = 30


def slot_interval(chat_id: int) -> float:
    """Seconds between two posts of one bot in the chat ``chat_id`` (a Telegram chat id)."""
    if chat_id < 0:
        return max(PER_CHAT_INTERVAL_S, 60.0 / GROUP_PER_MINUTE)
    return PER_CHAT_INTERVAL_S

# KEYS: the budgets of this send; ARGV: each budget's interval in ms, then each one's
# tolerance in ms (how far ahead of its schedule it may send: a burst), in KEYS order.
# Each key holds the budget's theoretical arrival time (GCRA); with no tolerance that is
# simply its next free slot.
_BOOK = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local n = #KEYS
local slot = now_ms
local tat = {}
for i, key in ipairs(KEYS) do
  tat[i] = tonumber(redis.call('GET', key) or '0')
  local earliest = tat[i] - tonumber(ARGV[n + i])
  if earliest > slot then slot = earliest end
end
for i, key in ipairs(KEYS) do
  local next_tat = math.max(tat[i], slot) + tonumber(ARGV[i])
  redis.call('SET', key, next_tat, 'PX', next_tat - now_ms + 1000)
end
return slot - now_ms
"""

# KEYS: a send's chat and group budgets; ARGV: how many ms later its send went than booked.
_PUSH_BACK = """
for _, key in ipairs(KEYS) do
  local tat = redis.call('GET', key)
  if tat then
    redis.call('SET', key, tonumber(tat) + tonumber(ARGV[1]), 'KEEPTTL')
    redis.call('PEXPIRE', key, redis.call('PTTL', key) + tonumber(ARGV[1]))
  end
end
return 0
"""

# A bot may send this many at once before its 30 a second spacing applies: a batch's replies
# to many chats then go out together instead of one every 33 ms. python-telegram-bot's
# reference limiter (AIORateLimiter, aiolimiter) allows a burst of the whole 30.
BOT_BURST = 10


class Pacer(Protocol):
    """A per-process pacer (``client.ChatPacer``): what SharedPacer copies its limits from
    and falls back on."""

    per_chat_interval: float
    group_per_minute: int | None
    global_per_second: int | None

    def wait(self, chat_id: int, bot: str = "") -> float: ...


class SharedPacer:
    """``wait(chat_id, bot)`` blocks until ``bot`` may message ``chat_id`` under the shared
    budgets and returns the seconds waited. ``fallback`` (with the same limits) paces this
    process alone while Redis is unreachable."""

    def __init__(self, fallback: Pacer, *, per_chat_interval: float = 1.0,
                 group_per_minute: int | None = 20, bot_per_second: int | None = 30,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.fallback = fallback
        self.per_chat_interval = per_chat_interval
        self.group_per_minute = group_per_minute
        self.bot_per_second = bot_per_second
        self._sleep = sleep

    @classmethod
    def like(cls, pacer: Pacer, **options: Any) -> SharedPacer:
        """A shared pacer with the limits of a per-process ``ChatPacer``, which it falls
        back on."""
        return cls(pacer, per_chat_interval=pacer.per_chat_interval,
                   group_per_minute=pacer.group_per_minute,
                   bot_per_second=pacer.global_per_second, **options)

    def budgets(self, chat_id: int, bot: str) -> list[tuple[str, int, int]]:
        """(Redis key, interval in ms, burst tolerance in ms) of every budget a send from
        ``bot`` to ``chat_id`` uses, each the bot's own. Chats and groups get no burst: one a
        second, one every 3 s."""
        found = [(shared.key("pace", "chat", bot, chat_id),
                  round(self.per_chat_interval * 1000), 0)]
        if self.group_per_minute and chat_id < 0:  # Telegram's groups have negative ids
            found.append((shared.key("pace", "group", bot, chat_id),
                          round(60_000 / self.group_per_minute), 0))
        if self.bot_per_second and bot:
            interval = round(1000 / self.bot_per_second)
            found.append((shared.key("pace", "bot", bot), interval,
                          interval * (BOT_BURST - 1)))
        return found

    def book(self, chat_id: int, bot: str = "") -> float | None:
        """Book the next slot; seconds until it, or None while Redis is unreachable."""
        budgets = self.budgets(chat_id, bot)
        keys = [key for key, _, _ in budgets]
        numbers = [ms for _, ms, _ in budgets] + [burst for _, _, burst in budgets]
        wait_ms = shared.attempt(lambda r: r.eval(_BOOK, len(keys), *keys, *numbers),
                                 default=None, what="telegram pacing")
        return None if wait_ms is None else max(int(wait_ms), 0) / 1000

    def push_back(self, chat_id: int, bot: str, seconds: float) -> None:
        """A send went ``seconds`` after its booked slot: the bot's next slots in that chat
        move back as far, so two posts never come closer than Telegram allows. Its overall
        budget (30 a second) is left alone."""
        self.push_back_many([(chat_id, bot, seconds)])

    def push_back_many(self, pushes: list[tuple[int, str, float]]) -> None:
        """``push_back`` for each (chat id, bot, seconds), in one round trip."""
        def push_all(r: object) -> None:
            pipe = r.pipeline(transaction=False)  # type: ignore[attr-defined]
            for chat_id, bot, seconds in pushes:
                keys = [key for key, _, _ in self.budgets(chat_id, bot) if key.startswith(
                    (shared.key("pace", "chat"), shared.key("pace", "group")))]
                pipe.eval(_PUSH_BACK, len(keys), *keys, round(seconds * 1000))
            pipe.execute()

        if pushes:
            shared.attempt(push_all, default=None, what="telegram pacing")

    def book_many(self, sends: list[tuple[int, str]]) -> list[float] | None:
        """Book the next slot of each (chat id, bot) in one round trip, in order; seconds
        until each, or None while Redis is unreachable."""
        def book_all(r: object) -> list[int]:
            pipe = r.pipeline(transaction=False)  # type: ignore[attr-defined]
            for chat_id, bot in sends:
                budgets = self.budgets(chat_id, bot)
                pipe.eval(_BOOK, len(budgets), *[key for key, _, _ in budgets],
                          *[ms for _, ms, _ in budgets], *[burst for _, _, burst in budgets])
            return pipe.execute()

        if not sends:
            return []
        waits = shared.attempt(book_all, default=None, what="telegram pacing")
        return None if waits is None else [max(int(ms), 0) / 1000 for ms in waits]

    def wait(self, chat_id: int, bot: str = "") -> float:
        delay = self.book(chat_id, bot)
        if delay is None:
            return self.fallback.wait(chat_id, bot)
        if delay > 0:
            self._sleep(delay)
        return delay
