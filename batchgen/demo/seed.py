"""Demo data for ``make demo``: bots with personas, chats, queued items, a staff login.
Idempotent: a second run finds everything by name and creates nothing new.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction

from batchgen.models import Bot, Chat
from batchgen.work import queue

STAFF_USERNAME = "demo"
STAFF_PASSWORD = "demo-botplatform"  # printed on screen; a local demo only

BOTS = [
    ("Borsa Baba", "A calm veteran of Borsa Istanbul who talks about BIST100 with dry humour."),
    ("Kripto Kedi", "An excitable crypto fan who explains bitcoin moves with cat metaphors."),
    ("Doviz Dede", "A retired banker who has opinions on the dollar and the lira."),
    ("Makro Melis", "A macro-economist who links every price move to central bank policy."),
    ("Altin Ayse", "A careful gold investor who always mentions risk."),
    ("Teknik Tarik", "A chart reader who speaks in supports, resistances and moving averages."),
]
CHATS = [
    (-1001000000001, "Borsa Sohbet"),
    (-1001000000002, "Kripto Kulubu"),
    (-1001000000003, "Doviz ve Altin"),
    (-1001000000004, "Piyasa Gundemi"),
    (-1001000000005, "Yatirim Okulu"),
    (-1001000000006, "Temettu Avcilari"),
    (-1001000000007, "Halka Arz Takip"),
    (-1001000000008, "Emtia Masasi"),
    (-1001000000009, "Faiz ve Enflasyon"),
    (-1001000000010, "Gece Borsasi"),
    # Private chats: one person and one bot (Telegram lets a bot post about once a second).
    *[(5_100_000_000 + n, f"Ozel sohbet {n + 1}") for n in range(20)],
]
RECENT = [
    "BIST100 hakkinda ne dusunuyorsun?",
    "Dolar kuru yukseliyor mu?",
    "Kripto piyasasi nasil?",
    "Altin mi, borsa mi?",
]


@dataclass(frozen=True)
class DemoSummary:
    bots_created: int
    chats_created: int
    items_created: int
    staff_created: bool


@transaction.atomic
def load_demo_data(items_per_chat: int = 1) -> DemoSummary:
    bots, bots_created = _get_or_create_all(
        Bot, [{"name": n, "defaults": {"persona": p, "telegram_token": _demo_token(i)}}
              for i, (n, p) in enumerate(BOTS)])
    chats, chats_created = _get_or_create_all(
        Chat, [{"telegram_chat_id": c, "defaults": {"title": t}} for c, t in CHATS])
    items_created = 0
    # Queue items have no natural key: queue them only once, when the demo
    # bots have never had any.
    if not queue.QueueItem.objects.filter(bot__in=bots).exists():
        for n in range(items_per_chat):
            for c, chat in enumerate(chats):
                bot = bots[(n + c) % len(bots)]
                queue.push(bot, chat, priority=(n * 7 + c) % 5,
                           recent_messages=[RECENT[(n + c) % len(RECENT)]])
                items_created += 1
    return DemoSummary(bots_created, chats_created, items_created, _ensure_staff())


def _get_or_create_all(model, lookups: list[dict]) -> tuple[list, int]:
    created = 0
    objects = []
    for lookup in lookups:
        obj, was_created = model.objects.get_or_create(**lookup)
        objects.append(obj)
        created += was_created
    return objects, created


def _demo_token(index: int) -> str:
    # The shape of a real token, pointing at nothing: the demo talks to the fake Telegram.
    return f"{7000000000 + index}:DEMO{'x' * 30}{index:02d}"


def _ensure_staff() -> bool:
    users = get_user_model()
    if users.objects.filter(username=STAFF_USERNAME).exists():
        return False
    users.objects.create_superuser(STAFF_USERNAME, "demo@example.invalid", STAFF_PASSWORD)
    return True


def top_up(pending: int) -> int:
    """Queue new items for the demo bots until ``pending`` are waiting or claimed; returns
    how many.

    The demo's steady work: with a tick loop draining the queue, a change of batch mode or
    batch size in the admin shows in the very next batches. Claimed items count too, so a
    tick loop faster than the worker never piles up an ever longer backlog of batches.
    """
    bots = list(Bot.objects.filter(name__in=[name for name, _ in BOTS]).order_by("id"))
    chats = list(Chat.objects.filter(telegram_chat_id__in=[c for c, _ in CHATS]).order_by("id"))
    if not bots or not chats:
        return 0
    status = queue.QueueItem.Status
    waiting = queue.QueueItem.objects.filter(
        bot__in=bots, status__in=[status.PENDING, status.CLAIMED]).count()
    start = queue.QueueItem.objects.filter(bot__in=bots).count()
    missing = max(0, pending - waiting)
    for n in range(start, start + missing):
        queue.push(bots[n % len(bots)], chats[n % len(chats)], priority=n % 5,
                   recent_messages=[RECENT[n % len(RECENT)]])
    return missing
