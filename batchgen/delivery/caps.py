"""Caps on what a chat or a bot may cost: bot messages an hour per chat (all bots together)
and LLM spend a day per chat and per bot, each from the chat's or bot's own field or the
platform default in Settings (0: no cap). The tick degrades in a stated order as a cap nears:
at 80 % cadence posts wait for the provider batch route (when on), at 90 % they are skipped
(dead, the cap as the reason), at the cap replies stop (pending, saying which cap) and the
chat or bot is marked (``cap_reason``) so neither the claim nor the batch route sends there.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Count, Q, Sum
from django.utils import timezone

from batchgen.core import pricing
from batchgen.delivery import routes
from batchgen.models import Bot, Chat, Generation, Message, Setting
from batchgen.work import queue

# As a cap nears, the platform degrades in this order; each stage keeps those before it.
ROUTE_AT = 0.8  # 1. cadence posts wait for the provider batch route (half price), if it is on
SKIP_AT = 0.9   # 2. cadence posts are skipped
# 3. at the cap: replies stop, and nothing more goes out there (batch results are held)


@dataclass(frozen=True)
class CapSummary:
    chats: int = 0  # chats a cap binds now
    bots: int = 0
    skipped: int = 0  # cadence posts skipped this time


@dataclass(frozen=True)
class Use:
    """How much of a cap is used (``share``: 1.0 at the cap) and which cap it is."""

    share: float
    cap: str  # "chat cap: 20 bot messages an hour"


def apply(now: datetime | None = None) -> CapSummary:
    """Mark the chats and bots a cap binds, and degrade where one nears: say why on the
    work held back. A few queries, none when no cap is set."""
    now = now or timezone.now()
    defaults = Setting.load()
    chats = _message_use(now, defaults.chat_messages_per_hour)
    chat_spend, bots = _spend_use(now, defaults.chat_daily_spend_cap_usd,
                                  defaults.bot_daily_spend_cap_usd)
    for chat_id, use in chat_spend.items():
        if use.share > chats.get(chat_id, Use(0.0, "")).share:
            chats[chat_id] = use
    binding = [{key: f"{use.cap} reached" for key, use in uses.items() if use.share >= 1}
               for uses in (chats, bots)]
    _mark(Chat, binding[0])
    _mark(Bot, binding[1])
    skipped = 0
    to_route = any(use.share < SKIP_AT for uses in (chats, bots) for use in uses.values()) \
        and routes.provider_on() is not None
    for field, uses in (("chat_id", chats), ("bot_id", bots)):
        for key, use in uses.items():
            which = Q(**{field: key})
            if use.share >= 1:
                skipped += queue.hold_for_cap(which, f"{use.cap} reached", now=now)
            elif use.share >= SKIP_AT:
                skipped += queue.skip_cadence(which, f"{use.cap}: {use.share:.0%} used", now)
            elif to_route:
                queue.cadence_to_batch_route(which, now)
    return CapSummary(len(binding[0]), len(binding[1]), skipped)


def _message_use(now: datetime, default: int) -> dict[int, Use]:
    own = Chat.objects.filter(max_messages_per_hour__gt=0)
    if not default and not own.exists():
        return {}
    recent = (Message.objects.filter(Q(sent_at__gte=now - timedelta(hours=1))
                                     | Q(status__in=[Message.Status.PENDING,
                                                     Message.Status.SENDING]))
              .values("chat_id").annotate(n=Count("id")).values_list("chat_id", "n"))
    counts = dict(recent)
    limits = dict(Chat.objects.filter(id__in=list(counts))
                  .values_list("id", "max_messages_per_hour"))
    found = {}
    for chat_id, count in counts.items():
        limit = default if limits.get(chat_id) is None else limits[chat_id]
        if limit and count >= ROUTE_AT * limit:
            found[chat_id] = Use(count / limit, f"chat cap: {limit} bot messages an hour")
    return found


def _spend_use(now: datetime, chat_default: float, bot_default: float
               ) -> tuple[dict[int, Use], dict[int, Use]]:
    chat_own = dict(Chat.objects.filter(daily_spend_cap_usd__isnull=False)
                    .values_list("id", "daily_spend_cap_usd"))
    bot_own = dict(Bot.objects.filter(daily_spend_cap_usd__isnull=False)
                   .values_list("id", "daily_spend_cap_usd"))
    if not (chat_default or bot_default or any(chat_own.values()) or any(bot_own.values())):
        return {}, {}
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    spent_chat: dict[int, Decimal] = defaultdict(Decimal)
    spent_bot: dict[int, Decimal] = defaultdict(Decimal)
    usage = (Generation.objects.filter(created_at__gte=midnight)
             .values("chat_id", "bot_id", "model", "route")
             .annotate(prompt=Sum("prompt_tokens"), cached=Sum("cached_tokens"),
                       completion=Sum("completion_tokens")))
    for row in usage:
        cost = pricing.summed_cost(row) or Decimal(0)
        spent_chat[row["chat_id"]] += cost
        spent_bot[row["bot_id"]] += cost
    return (_used(spent_chat, chat_own, chat_default, "chat"),
            _used(spent_bot, bot_own, bot_default, "bot"))


def _used(spent: dict[int, Decimal], own: dict[int, Decimal | None], default: float,
          what: str) -> dict[int, Use]:
    found = {}
    for key, amount in spent.items():
        limit = own.get(key)
        if limit is None:
            limit = Decimal(str(default))
        if key is not None and limit and amount >= Decimal(str(ROUTE_AT)) * limit:
            found[key] = Use(float(amount / limit), f"{what} cap: ${limit:g} LLM spend a day")
    return found


def _mark(model: type[Chat] | type[Bot], reasons: dict[int, str]) -> None:
    model.objects.exclude(cap_reason="").exclude(id__in=list(reasons)).update(cap_reason="")
    for key, reason in reasons.items():
        model.objects.filter(id=key).exclude(cap_reason=reason).update(cap_reason=reason)
