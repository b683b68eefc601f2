"""Caps on what a chat or a bot may cost: bot messages an hour per chat (all bots together)
and LLM spend a day per chat and per bot, each from the chat's or bot's own field or the
platform default in Settings (0: no cap). The tick marks what a cap binds (``cap_reason``)
and the claim leaves it alone. The platform degrades in a stated order: work that can wait
goes to the provider batch route when that is on (the claim leaves it to the route); cadence
posts are skipped (dead, with the cap as the reason); replies to people stop (they stay
pending, their reason says which cap, and go out once the window frees).
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


@dataclass(frozen=True)
class CapSummary:
    chats: int = 0  # chats a cap binds now
    bots: int = 0
    skipped: int = 0  # cadence posts skipped this time


def apply(now: datetime | None = None) -> CapSummary:
    """Mark the chats and bots a cap binds, skip their cadence posts, say why on their
    replies. A few queries, none when no cap is set."""
    now = now or timezone.now()
    defaults = Setting.load()
    chats = _message_caps(now, defaults.chat_messages_per_hour)
    chat_spend, bot_spend = _spend_caps(now, defaults.chat_daily_spend_cap_usd,
                                        defaults.bot_daily_spend_cap_usd)
    for chat_id, reason in chat_spend.items():
        chats.setdefault(chat_id, reason)
    _mark(Chat, chats)
    _mark(Bot, bot_spend)
    skipped = 0
    if chats or bot_spend:
        to_batch = routes.provider_on() is not None
        for field, reasons in (("chat_id", chats), ("bot_id", bot_spend)):
            for key, reason in reasons.items():
                skipped += queue.hold_for_cap(Q(**{field: key}), reason,
                                              skip_cadence=not to_batch, now=now)
    return CapSummary(len(chats), len(bot_spend), skipped)


def _message_caps(now: datetime, default: int) -> dict[int, str]:
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
        if limit and count >= limit:
            found[chat_id] = f"chat cap: {limit} bot messages an hour reached"
    return found


def _spend_caps(now: datetime, chat_default: float, bot_default: float
                ) -> tuple[dict[int, str], dict[int, str]]:
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
             .annotate(p=Sum("prompt_tokens"), c=Sum("cached_tokens"),
                       o=Sum("completion_tokens")))
    for row in usage:
        cost = pricing.cost(row["model"], row["p"] or 0, row["c"] or 0, row["o"] or 0,
                            route=row["route"] or pricing.SYNC) or Decimal(0)
        spent_chat[row["chat_id"]] += cost
        spent_bot[row["bot_id"]] += cost
    return (_over(spent_chat, chat_own, chat_default, "chat"),
            _over(spent_bot, bot_own, bot_default, "bot"))


def _over(spent: dict[int, Decimal], own: dict[int, Decimal | None], default: float,
          what: str) -> dict[int, str]:
    found = {}
    for key, amount in spent.items():
        limit = own.get(key)
        if limit is None:
            limit = Decimal(str(default))
        if key is not None and limit and amount >= limit:
            found[key] = f"{what} cap: ${limit:g} LLM spend a day reached"
    return found


def _mark(model: type[Chat] | type[Bot], reasons: dict[int, str]) -> None:
    model.objects.exclude(cap_reason="").exclude(id__in=list(reasons)).update(cap_reason="")
    for key, reason in reasons.items():
        model.objects.filter(id=key).exclude(cap_reason=reason).update(cap_reason=reason)
