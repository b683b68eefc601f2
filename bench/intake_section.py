"""Intake benchmark: Telegram webhook updates per second on PostgreSQL, concurrent posters.

    DATABASE_URL=postgres://user@host:5432/name python -m bench.intake_section \
        [--updates 4000] [--posters 16] [--bots 8] [--chats 40] [--web-workers 3]

Serves the project with gunicorn (gthread) on a free port, then posts ``--updates`` distinct
updates (text messages in group chats, one bot's update ids each) from ``--posters`` threads,
plus every tenth update a second time as Telegram's redelivery. The clock runs from the
first post to the last answer. Afterwards it checks that every distinct message was stored
exactly once and every redelivery was answered "duplicate": none lost, none doubled.
The database's intake rows of earlier bench runs are removed first.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batchgen.fakes.ports import free_port, wait_for_port  # noqa: E402  (no Django inside)
from bench.harness import BENCH_METRICS_TOKEN, BENCH_SECRET_KEY  # noqa: E402

SECRET = "bench-webhook-secret"
PREFIX = "bench-intake-"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=4000)
    parser.add_argument("--posters", type=int, default=16)
    parser.add_argument("--bots", type=int, default=8)
    parser.add_argument("--chats", type=int, default=40)
    parser.add_argument("--web-workers", type=int, default=3)
    parser.add_argument("--web-threads", type=int, default=8)
    return parser.parse_args(argv)


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update(DJANGO_SETTINGS_MODULE="botplatform.settings", DEBUG="false",
               SECRET_KEY=BENCH_SECRET_KEY, METRICS_TOKEN=BENCH_METRICS_TOKEN,
               ALLOWED_HOSTS="127.0.0.1",
               SECURE_SSL_REDIRECT="false", LOG_LEVEL="ERROR", PYTHONUNBUFFERED="1")
    return env


def prepare(bots: int) -> list[int]:
    """Fresh bench bots with a webhook secret; earlier bench rows removed."""
    from batchgen.models import Bot, Chat

    Bot.objects.filter(name__startswith=PREFIX).delete()
    Chat.objects.filter(title__startswith=PREFIX).delete()
    return [Bot.objects.create(name=f"{PREFIX}{n}", telegram_token=f"{900000 + n}:BENCH{n}",
                               webhook_secret=SECRET).id for n in range(bots)]


def plan(args: argparse.Namespace, bot_ids: list[int]) -> list[tuple[int, dict]]:
    """(bot id, update) pairs: distinct messages, then every tenth again (redeliveries)."""
    update_ids: Counter[int] = Counter()
    message_ids = itertools.count(1)
    posts = []
    for n in range(args.updates):
        bot_id = bot_ids[n % len(bot_ids)]
        update_ids[bot_id] += 1
        chat_id = -1_009_000_000 - n % args.chats
        posts.append((bot_id, {"update_id": update_ids[bot_id], "message": {
            "message_id": next(message_ids), "date": int(time.time()),
            "chat": {"id": chat_id, "type": "supergroup", "title": f"{PREFIX}{chat_id}"},
            "from": {"id": 10_000 + n % 97, "is_bot": False, "first_name": f"Person {n % 97}"},
            "text": f"benchmark message {n}: what do you all think about this?"}}))
    return posts + posts[::10]


def post_all(base_url: str, posts: list[tuple[int, dict]], posters: int,
             secret: str = SECRET) -> tuple[float, Counter]:
    import json
    from http.client import HTTPConnection
    from urllib.parse import urlsplit

    # http.client, not httpx: the posters share the machine with the server, so the
    # lighter client leaves more CPU to what is measured.
    host, port = urlsplit(base_url).hostname, urlsplit(base_url).port
    outcomes: Counter = Counter()
    lock = threading.Lock()
    start = threading.Barrier(posters + 1)

    def poster(share: list[tuple[int, dict]]) -> None:
        seen: Counter = Counter()
        connection = HTTPConnection(host, port, timeout=30)
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret,
                   "Content-Type": "application/json"}
        start.wait()
        for bot_id, update in share:
            connection.request("POST", f"/telegram/webhook/{bot_id}/",
                               body=json.dumps(update), headers=headers)
            response = connection.getresponse()
            body = response.read()
            seen[json.loads(body).get("outcome") if response.status == 200
                 else f"HTTP {response.status}"] += 1
        connection.close()
        with lock:
            outcomes.update(seen)

    # Redeliveries go to the end of each share, after their first delivery.
    distinct = posts[: len(posts) - len(posts[::10][: len(posts) // 11])]
    shares = [distinct[i::posters] for i in range(posters)]
    for index, repeat in enumerate(posts[len(distinct):]):
        shares[index % posters].append(repeat)
    threads = [threading.Thread(target=poster, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began, outcomes


def serving_pids(master: int) -> dict[str, list[int]]:
    """The gunicorn workers and this database's server processes (their connections
    persist, CONN_MAX_AGE, so they are the ones the run will use)."""
    from django.db import connection

    from bench.harness import child_pids

    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                       "AND pid <> pg_backend_pid()")
        database = [row[0] for row in cursor.fetchall()]
    return {"web": [master, *child_pids(master)], "database": database}


def cpu_seconds(pids: dict[str, list[int]]) -> dict[str, float]:
    """User + system CPU of each group, from /proc (the machine is shared: wall-clock
    throughput moves with everybody else's load, CPU per update does not)."""
    tick = os.sysconf("SC_CLK_TCK")
    used = {}
    for group, members in pids.items():
        total = 0
        for pid in members:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        used[group] = total / tick
    return used


def measured(master: int, run: Callable[[], tuple[float, Counter]]
             ) -> tuple[float, Counter, dict[str, float]]:
    """``run()``'s seconds and outcomes, and the CPU seconds the server side spent on it."""
    pids = serving_pids(master)
    before = cpu_seconds(pids)
    seconds, outcomes = run()
    # Connections opened during the run count whole (their CPU before it was zero).
    for group, members in serving_pids(master).items():
        pids[group] = sorted(set(pids[group]) | set(members))
    after = cpu_seconds(pids)
    used = {group: after[group] - before.get(group, 0.0) for group in after}
    return seconds, outcomes, used


def print_cpu(what: str, used: dict[str, float], requests: int) -> None:
    web = used["web"] / requests * 1000
    database = used["database"] / requests * 1000
    cores = os.cpu_count() or 1
    print(f"CPU per {what}: web {web:.2f} ms + PostgreSQL {database:.2f} ms = "
          f"{web + database:.2f} ms, so {cores} idle cores would take about "
          f"{cores * 1000 / (web + database):.0f} updates/s")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = environment()
    if not env.get("DATABASE_URL", "").startswith("postgres"):
        raise SystemExit("bench.intake_section: DATABASE_URL must be a postgres:// URL "
                         "(the figure is for PostgreSQL)")
    os.environ.update(env)
    import django

    django.setup()
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env,
                   check=True)
    bot_ids = prepare(args.bots)
    posts = plan(args, bot_ids)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "botplatform.wsgi", "-b", f"127.0.0.1:{port}",
         "-k", "gthread", "-w", str(args.web_workers), "--threads", str(args.web_threads),
         "--log-level", "warning"], cwd=ROOT, env=env, start_new_session=True)
    try:
        if not wait_for_port(port, timeout=60):
            raise SystemExit("bench.intake_section: gunicorn did not start")
        base_url = f"http://127.0.0.1:{port}"
        # The same stack's cheapest answer (a wrong secret: one bot lookup, 403), measured
        # in the same run, so the figure can be read against what this machine gives now.
        warmup = posts[: args.updates // 2]
        floor_s, _, floor_cpu = measured(server.pid, lambda: post_all(
            base_url, warmup, args.posters, "wrong"))
        load_before = os.getloadavg()
        seconds, outcomes, cpu = measured(server.pid, lambda: post_all(
            base_url, posts, args.posters))
        load_after = os.getloadavg()
        print_cpu("a stored update", cpu, len(posts))
        print_cpu("a 403 (same stack, wrong secret)", floor_cpu, len(warmup))
        print(f"same stack, 403 for a wrong secret: {len(warmup) / floor_s:.0f} "
              f"requests/s (the ceiling on this machine right now)")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return report(args, posts, seconds, outcomes, load_before, load_after)


def report(args: argparse.Namespace, posts: list, seconds: float, outcomes: Counter,
           load_before: tuple, load_after: tuple) -> int:
    from batchgen.intake.models import ChatMessage, ProcessedUpdate

    stored = ChatMessage.objects.filter(chat__title__startswith=PREFIX).count()
    processed = ProcessedUpdate.objects.filter(bot__name__startswith=PREFIX).count()
    repeats = len(posts) - args.updates
    ok = (stored == args.updates == processed == outcomes["stored"]
          and outcomes["duplicate"] == repeats)
    print(f"intake webhook: {len(posts)} posts ({args.updates} distinct + {repeats} "
          f"redeliveries) from {args.posters} posters to gunicorn {args.web_workers}x"
          f"{args.web_threads} on PostgreSQL in {seconds:.2f} s = "
          f"{len(posts) / seconds:.0f} updates/s")
    print(f"answers: {dict(outcomes)}; stored messages {stored}, processed update ids "
          f"{processed}: {'none lost, none doubled' if ok else 'MISMATCH'}")
    print(f"machine: {os.cpu_count()} cores, load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after (shared with other work)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
