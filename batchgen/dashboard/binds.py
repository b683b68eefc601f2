"""What limits throughput now: each limit's share of the work held back in the last 10 minutes,
read from the per-minute buckets ``batchgen.metrics.observe_held`` keeps in Redis. Holds
overlap (several runs, many pacing waits), so a share is a reason's part of all the held
seconds recorded in the window, the shares sum to 100 %, and the card shows the seconds too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import redis
from django.db.models import CharField, Value
from django.db.models.functions import Cast, Coalesce, Concat, NullIf
from prometheus_client.core import GaugeMetricFamily, Metric

from batchgen.metrics import HELD_BUCKET_SECONDS, HOLD_REASONS, held_chats_key, held_key
from batchgen.models import Bot, Chat
from batchgen.state import shared

WINDOW_MINUTES = 10
TOP_CHATS = 5  # on the card
METRICS_TOP_CHATS = 10  # label values on /metrics: bounded
LABELS = {
    "pacing": "Telegram pacing",
    "rate_budget": "LLM rate budget",
    "cap": "caps",
    "slots": "in-flight slots",
    "idle": "idle (nothing to do)",
}


@dataclass(frozen=True)
class Hold:
    reason: str
    label: str
    seconds: float
    share: float  # 0..1 of every held second in the window

    @property
    def percent(self) -> float:
        return 100 * self.share


@dataclass(frozen=True)
class PacedChat:
    chat_id: str
    title: str  # the chat's title when the chat is in the database, else its id
    seconds: float


@dataclass
class Binds:
    """The card: one row per reason (fixed order), the most-paced chats, and whether the
    metrics store answered at all (an unknown is not shown as "nothing held")."""

    available: bool
    holds: list[Hold] = field(default_factory=list)
    chats: list[PacedChat] = field(default_factory=list)
    minutes: int = WINDOW_MINUTES
    capped: list[tuple[str, str]] = field(default_factory=list)  # (chat or bot, which cap)

    @property
    def total_seconds(self) -> float:
        return sum(hold.seconds for hold in self.holds)

    @property
    def binding(self) -> Hold | None:
        """The reason that held work back longest, if any did."""
        held = [hold for hold in self.holds if hold.seconds > 0]
        return max(held, key=lambda hold: hold.seconds) if held else None


def read_held(now: float | None = None, minutes: int = WINDOW_MINUTES
              ) -> tuple[dict[str, float], dict[str, float]] | None:
    """Held seconds per reason and pacing seconds per chat id, summed over the last
    ``minutes`` buckets (the current one included); None while Redis is unreachable.
    One round trip."""
    current = int((time.time() if now is None else now) // HELD_BUCKET_SECONDS)
    buckets = range(current - minutes + 1, current + 1)

    def read(client: redis.Redis) -> tuple[dict[str, float], dict[str, float]]:
        pipe = client.pipeline(transaction=False)
        for minute in buckets:
            pipe.hgetall(held_key(minute))
            pipe.zrange(held_chats_key(minute), 0, -1, withscores=True)
        answers = pipe.execute()
        reasons = dict.fromkeys(HOLD_REASONS, 0.0)
        chats: dict[str, float] = {}
        for by_reason, by_chat in zip(answers[::2], answers[1::2], strict=True):
            for reason, seconds in by_reason.items():
                if reason in reasons:
                    reasons[reason] += float(seconds)
            for chat, seconds in by_chat:
                chats[chat] = chats.get(chat, 0.0) + float(seconds)
        return reasons, chats

    return shared.attempt(read, None, what="metrics")


def what_binds(now: float | None = None) -> Binds:
    """The "what limits throughput now" card (one Redis round trip, three queries)."""
    held = read_held(now)
    capped = _capped()
    if held is None:
        return Binds(available=False, capped=capped)
    reasons, chats = held
    total = sum(reasons.values())
    holds = [Hold(reason, LABELS[reason], seconds, seconds / total if total else 0.0)
             for reason, seconds in reasons.items()]
    return Binds(available=True, holds=holds, chats=_titled(_top(chats, TOP_CHATS)),
                 capped=capped)


def _capped() -> list[tuple[str, str]]:
    """The chats and bots a cap binds now, and which cap (batchgen.delivery.caps); one
    query."""
    chats = Chat.objects.exclude(cap_reason="").order_by().annotate(
        who=Coalesce(NullIf("title", Value("")), Cast("telegram_chat_id", CharField()))
    ).values_list("who", "cap_reason")
    bots = Bot.objects.exclude(cap_reason="").order_by().annotate(
        who=Concat(Value("bot "), "name", output_field=CharField())).values_list("who",
                                                                               "cap_reason")
    return list(chats.union(bots, all=True)[:2 * TOP_CHATS])


def _top(chats: dict[str, float], n: int) -> list[tuple[str, float]]:
    return sorted(chats.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def _titled(top: list[tuple[str, float]]) -> list[PacedChat]:
    ids = [int(chat) for chat, _ in top if chat.lstrip("-").isdigit()]
    titles = {str(chat_id): title for chat_id, title in
              Chat.objects.filter(telegram_chat_id__in=ids).values_list("telegram_chat_id",
                                                                          "title")} if ids else {}
    return [PacedChat(chat, titles.get(chat) or chat, seconds) for chat, seconds in top]


def held_families(now: float | None = None) -> Iterator[Metric]:
    """The card for /metrics: each reason's share of the last 10 minutes' held seconds and
    the most-paced chats' seconds (by chat id, at most ``METRICS_TOP_CHATS`` of them).
    Nothing while Redis is away (``batchgen_metrics_redis_up`` says so)."""
    held = read_held(now)
    if held is None:
        return
    reasons, chats = held
    total = sum(reasons.values())
    shares = GaugeMetricFamily(
        "batchgen_held_share", f"Share of the seconds of work held back in the last "
        f"{WINDOW_MINUTES} minutes, by reason (0 when nothing was held).", labels=["reason"])
    for reason, seconds in reasons.items():
        shares.add_metric([reason], seconds / total if total else 0.0)
    yield shares
    paced = GaugeMetricFamily(
        "batchgen_pacing_held_seconds", f"Seconds sends waited for Telegram pacing in the "
        f"last {WINDOW_MINUTES} minutes, for the {METRICS_TOP_CHATS} most-paced chats.",
        labels=["chat"])
    for chat, seconds in _top(chats, METRICS_TOP_CHATS):
        paced.add_metric([chat], seconds)
    yield paced
