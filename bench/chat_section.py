"""Section "chats": chat-aware delivery through real ``tick --loop`` and ``rqworker``
processes, where Telegram's pacing binds (several bots in one group). Figures:

- multibot: 3 bots in one group, a backlog each: messages a minute per bot and for the
  group, against Telegram's 20 a minute per bot;
- freshness: 300 items for 10 groups of 3 bots: (sent - generated) per reply, p50 and p95,
  against 2 x the mean LLM latency + 1 s;
- burst: people write ``burst`` messages into one group with 3 member bots that reply to
  people: LLM calls against the replies the group can take in that time (+3), and whether
  every bot replied;
- kill: 5 bots with 10 items each in one group; the work-horse is killed (SIGKILL, with its
  worker) mid-drain and a worker started again: items delivered once, lost, sent twice,
  send_unknown, and the seconds from the restart to the last send.
"""

from __future__ import annotations

import itertools
import subprocess
import time
from collections import Counter
from typing import Any

import httpx

from bench.drain_section import stop_processes
from bench.harness import PYTHON, Services, configure_fake, fake_llm, kill_hard, percentile
from bench.pipeline_section import PRELOADED, set_mode

PER_BOT_PER_MINUTE = 20  # Telegram, per bot in a group
_ids = itertools.count(1)


def chats(services: Services, latency: float, quick: bool) -> dict[str, Any]:
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    configure_fake(services, latency=latency, jitter=latency * 0.2)
    set_mode(True, 20)
    env = services.env(BATCH_MAX_WORKERS="20", BATCH_LEASE_SECONDS="10")
    procs = _start(services, env, workers=2)
    try:
        results = {"latency_s": latency,
                   "multibot": _multibot(services, 8 if quick else 15),
                   "freshness": _freshness(services, latency, 10 if quick else 30),
                   "burst": _burst(services, 300 if quick else 1000, 20 if quick else 60)}
        results["kill"], procs = _kill(services, env, procs)
    finally:
        stop_processes(procs)
    return results


def _start(services: Services, env: dict[str, str], workers: int) -> list[subprocess.Popen]:
    import django_rq
    from rq import Worker

    connection = django_rq.get_connection("default")
    before = {w.name for w in Worker.all(connection=connection)}
    procs = [_worker(services, env, n) for n in range(workers)]
    deadline = time.monotonic() + 90
    while len({w.name for w in Worker.all(connection=connection)} - before) < workers:
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: chat workers did not start (see {services.workdir})")
        time.sleep(0.1)
    procs.append(services.start([PYTHON, "manage.py", "tick", "--loop", "--interval", "1"],
                                env=env, log_name="chats-tick"))
    return procs


def _worker(services: Services, env: dict[str, str], n: int) -> subprocess.Popen:
    return services.start([PYTHON, "manage.py", "rqworker", "--worker-class", PRELOADED,
                           "default"], env=env, log_name=f"chats-worker-{n}")


def _group(bots: int, **membership: Any) -> tuple[list, Any]:
    from batchgen.models import Bot, Chat
    from batchgen.models.conversations import Membership

    n = next(_ids)
    chat = Chat.objects.create(telegram_chat_id=-1_007_000_000 - n, title=f"bench group {n}",
                               chat_type="supergroup")
    rows = [Bot.objects.create(name=f"chat bench bot {n}-{b}", persona="A market watcher.",
                               telegram_token=f"{6_000_000 + n * 10 + b}:CHATS{'x' * 30}")
            for b in range(bots)]
    for bot in rows:
        Membership.objects.create(bot=bot, chat=chat, **membership)
    return rows, chat


def _push(pairs: list[tuple[Any, Any]], per_pair: int) -> list[int]:
    from batchgen.models import QueueItem
    from batchgen.work import queue

    rows = QueueItem.objects.bulk_create(
        QueueItem(bot=bot, chat=chat, recent_messages=["Dolar ne olur?"])
        for _ in range(per_pair) for bot, chat in pairs)
    queue.nudge()
    return [row.id for row in rows]


def _settle(ids: list[int], timeout: float) -> None:
    from batchgen.models import QueueItem

    deadline = time.monotonic() + timeout
    while QueueItem.objects.filter(id__in=ids).exclude(status__in=["done", "dead"]).exists():
        if time.monotonic() > deadline:
            raise SystemExit("bench: chats section stalled")
        time.sleep(0.25)


def _multibot(services: Services, per_bot: int) -> dict[str, Any]:
    from batchgen.models import Message

    bots, chat = _group(3)
    ids = _push([(bot, chat) for bot in bots], per_bot)
    _settle(ids, per_bot * 3 * 4 + 120)
    per_bot_rate = []
    for bot in bots:
        times = sorted(Message.objects.filter(bot=bot, status="sent")
                       .values_list("sent_at", flat=True))
        span = (times[-1] - times[0]).total_seconds()
        per_bot_rate.append(round((len(times) - 1) / span * 60, 2) if span else 0.0)
    group = sum(per_bot_rate)
    return {"bots": 3, "items_per_bot": per_bot, "per_bot_per_minute": per_bot_rate,
            "group_per_minute": round(group, 2),
            "telegram_allows": 3 * PER_BOT_PER_MINUTE,
            "ratio": round(group / (3 * PER_BOT_PER_MINUTE), 3)}


def _freshness(services: Services, latency: float, per_pair: int) -> dict[str, Any]:
    from batchgen.models import Message

    pairs = []
    for _ in range(10):
        bots, chat = _group(3)
        pairs += [(bot, chat) for bot in bots]
    ids = _push(pairs, max(1, per_pair // 3))
    _settle(ids, 600)
    waits = [(sent - made).total_seconds() for sent, made in Message.objects.filter(
        queue_item_id__in=ids, status="sent").values_list("sent_at", "created_at")]
    p95 = percentile(waits, 0.95)
    return {"items": len(ids), "groups": 10, "bots_per_group": 3,
            "p50_s": round(percentile(waits, 0.5), 3), "p95_s": round(p95, 3),
            "target_s": round(2 * latency + 1, 3), "met": p95 <= 2 * latency + 1}


def _burst(services: Services, messages: int, seconds: float) -> dict[str, Any]:
    from django.utils import timezone

    from batchgen.models import Message, QueueItem
    from batchgen.models.conversations import ChatMessage

    bots, chat = _group(3, replies_to_humans=True, answers_bots=False)
    before = fake_llm(services, "/_stats")["total"]
    started = time.monotonic()
    first_id = next(_ids) * 100_000
    for n in range(messages):  # evenly over ``seconds``, as a busy group would
        ChatMessage.objects.create(chat=chat, telegram_message_id=first_id + n, speaker="Ayse",
                                   from_human=True, text=f"BIST yorum {n}?",
                                   sent_at=timezone.now())
        time.sleep(max(0.0, started + (n + 1) * seconds / messages - time.monotonic()))
    elapsed = time.monotonic() - started
    open_items = QueueItem.objects.filter(chat=chat, status__in=["pending", "claimed"])
    deadline = time.monotonic() + 30
    while open_items.exists() and time.monotonic() < deadline:
        time.sleep(0.25)
    elapsed = time.monotonic() - started
    calls = fake_llm(services, "/_stats")["total"] - before
    replies = Counter(Message.objects.filter(chat=chat, status="sent")
                      .values_list("bot_id", flat=True))
    capacity = int(3 * PER_BOT_PER_MINUTE * elapsed / 60) + 3
    return {"messages": messages, "seconds": round(elapsed, 1), "llm_calls": calls,
            "replies_sent": sum(replies.values()), "capacity_plus_3": capacity,
            "every_bot_replied": len(replies) == 3, "met": calls <= capacity}


def _kill(services: Services, env: dict[str, str], procs: list[subprocess.Popen]
          ) -> tuple[dict[str, Any], list[subprocess.Popen]]:
    """50 items for 5 bots in one group; every worker and its work-horse are killed while a
    reply waits for its slot. The killed run's items come back when its 10 s leases run out:
    how long after the new worker started the first of them went out, and the last."""
    from batchgen.models import Message, QueueItem

    bots, chat = _group(5)
    ids = _push([(bot, chat) for bot in bots], 10)
    mine = Message.objects.filter(queue_item_id__in=ids)
    while mine.filter(status="sent").count() < 10 or not mine.filter(status="pending").exists():
        time.sleep(0.05)
    for proc in procs[:-1]:  # every worker and its work-horse (a session of its own)
        kill_hard(proc)
    waiting = mine.filter(status="pending").count()
    owed = list(QueueItem.objects.filter(id__in=ids, status="claimed")
                .values_list("id", flat=True))
    restarted = time.monotonic()
    procs = [_worker(services, env, 9), procs[-1]]
    first_back = None
    deadline = restarted + 300
    while QueueItem.objects.filter(id__in=ids).exclude(status__in=["done", "dead"]).exists():
        if first_back is None and QueueItem.objects.filter(id__in=owed, status="done").exists():
            first_back = time.monotonic() - restarted
        if time.monotonic() > deadline:
            raise SystemExit("bench: chats section stalled")
        time.sleep(0.1)
    done = time.monotonic() - restarted
    statuses = Counter((status, Message.objects.filter(queue_item_id=item_id)
                        .values_list("status", flat=True).first())
                       for item_id, status in QueueItem.objects.filter(id__in=ids)
                       .values_list("id", "status"))
    delivered = Counter(m["token"] for m in httpx.get(f"{services.telegram_url}/_messages",
                                                      timeout=30).json()
                        if m["chat_id"] == chat.telegram_chat_id)
    sent = Counter(Message.objects.filter(queue_item_id__in=ids, status="sent")
                   .values_list("bot__telegram_token", flat=True))
    return {"items": len(ids), "delivered_once": statuses[("done", "sent")],
            "send_unknown": statuses[("dead", "send_unknown")],
            "lost": len(ids) - statuses[("done", "sent")] - statuses[("dead", "send_unknown")],
            "sent_twice": max(0, sum(delivered.values()) - sum(sent.values())
                              - statuses[("dead", "send_unknown")]),
            "waiting_at_kill": waiting, "claimed_at_kill": len(owed),
            "first_back_s": round(first_back or done, 1),
            "seconds_after_restart": round(done, 1)}, procs
