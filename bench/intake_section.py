"""Intake benchmark: Telegram webhook updates per second on PostgreSQL, concurrent posters,
and how soon tick has processed them.

    DATABASE_URL=postgres://user@host:5432/name REDIS_URL=redis://host:6379/N \
        python -m bench.intake_section [--updates 4000] [--posters 16] [--bots 8] \
        [--chats 40] [--web-workers 3] [--tick-loops 1] [--backlog]

Serves the project with gunicorn (gthread) on a free port and runs ``--tick-loops`` real
``manage.py tick --loop`` processes (default interval; the webhook's nudge through Redis
wakes them). Then it posts ``--updates`` distinct updates (text messages in group chats,
one bot's update ids each) from ``--posters`` threads, plus every tenth update a second time
as Telegram's redelivery. It reports:

- acknowledged updates/s: the webhook's figure, from the first post to the last answer;
- end to end: from the first post until tick has processed every update, the processing
  pace, and each update's wait between its answer and its processing (p50, p99, max);
  with ``--backlog`` the tick loops are paused (SIGSTOP) while the posters run, so the
  webhook has the cores to itself, and then timed processing the whole backlog;
- server CPU per update: web workers, tick processes and PostgreSQL, while the posters
  run, after the last answer, and in all;
- none lost, none doubled: every distinct message stored once in ChatMessage, every first
  delivery answered "accepted" and every redelivery "duplicate", every update processed
  once (the tick loops' own counts add up to the number of distinct updates).

The bench chats exist beforehand with member bots that do not reply to people, so tick's
producer queues nothing: the figure is intake, not replies. The database's intake rows of
earlier bench runs are removed first; another pending update in it stops the bench.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batchgen.fakes.ports import free_port, wait_for_port  # noqa: E402  (no Django inside)
from bench.harness import BENCH_FIELD_KEY, BENCH_METRICS_TOKEN, BENCH_SECRET_KEY  # noqa: E402

T = TypeVar("T")
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
    parser.add_argument("--tick-loops", type=int, default=1)
    parser.add_argument("--backlog", action="store_true",
                        help="pause the tick loops while the posters run, then time them "
                             "processing the backlog")
    return parser.parse_args(argv)


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update(DJANGO_SETTINGS_MODULE="botplatform.settings", DEBUG="false",
               SECRET_KEY=BENCH_SECRET_KEY, METRICS_TOKEN=BENCH_METRICS_TOKEN,
               FIELD_ENCRYPTION_KEYS=BENCH_FIELD_KEY, ALLOWED_HOSTS="127.0.0.1",
               SECURE_SSL_REDIRECT="false", LOG_LEVEL="ERROR", PYTHONUNBUFFERED="1")
    return env


def prepare(bots: int) -> list[int]:
    """Fresh bench bots with a webhook secret; earlier bench rows removed."""
    from batchgen.models import Bot, Chat
    from batchgen.models.conversations import ProcessedUpdate
    from batchgen.models.secrets import webhook_digest

    Bot.objects.filter(name__startswith=PREFIX).delete()
    Chat.objects.filter(title__startswith=PREFIX).delete()
    if ProcessedUpdate.objects.filter(pending=True).exists():
        # The tick loops would process them too, and their counts would not add up.
        raise SystemExit("bench.intake_section: this database has pending updates of "
                         "something else; use a fresh one")
    return [Bot.objects.create(name=f"{PREFIX}{n}", telegram_token=f"{900000 + n}:BENCH{n}",
                               webhook_secret=webhook_digest(SECRET)).id for n in range(bots)]


def quiet_chats(posts: list[tuple[int, dict]]) -> None:
    """The bench chats and their members, set not to reply to people or each other."""
    from batchgen.models import Chat
    from batchgen.models.conversations import Membership

    pairs = {(bot_id, update["message"]["chat"]["id"]) for bot_id, update in posts}
    chats = {chat_id: Chat.objects.create(telegram_chat_id=chat_id, title=f"{PREFIX}{chat_id}",
                                          chat_type="supergroup")
             for chat_id in sorted({chat_id for _, chat_id in pairs})}
    Membership.objects.bulk_create(
        Membership(bot_id=bot_id, chat=chats[chat_id], replies_to_humans=False,
                   answers_bots=False) for bot_id, chat_id in sorted(pairs))


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


def serving_pids(master: int, ticks: list[int]) -> dict[str, list[int]]:
    """The gunicorn workers, the tick loops and this database's server processes (their
    connections persist, CONN_MAX_AGE, so they are the ones the run will use)."""
    from django.db import connection

    from bench.harness import child_pids

    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                       "AND pid <> pg_backend_pid()")
        database = [row[0] for row in cursor.fetchall()]
    return {"web": [master, *child_pids(master)], "tick": ticks, "database": database}


def cpu_seconds(pids: dict[str, list[int]]) -> dict[str, float]:
    """User + system CPU of each group, from /proc (the machine is shared: wall-clock
    throughput moves with everybody else's load, CPU per update does not)."""
    from bench.harness import process_cpu

    return {group: sum(process_cpu(pid) for pid in members) for group, members in pids.items()}


def measured(pids_of: Callable[[], dict[str, list[int]]], run: Callable[[], T]
             ) -> tuple[T, dict[str, float]]:
    """``run()``'s result, and the CPU seconds each server-side group spent on it."""
    pids = pids_of()
    before = cpu_seconds(pids)
    result = run()
    # Connections opened during the run count whole (their CPU before it was zero).
    for group, members in pids_of().items():
        pids[group] = sorted(set(pids[group]) | set(members))
    after = cpu_seconds(pids)
    return result, {group: after[group] - before.get(group, 0.0) for group in after}


def print_cpu(what: str, used: dict[str, float], requests: int, project: bool = True) -> None:
    per = {group: seconds / requests * 1000 for group, seconds in used.items()
           if group == "web" or seconds}
    total = sum(per.values())
    cores = os.cpu_count() or 1
    parts = " + ".join(f"{group} {ms:.2f} ms" for group, ms in per.items())
    projection = (f", so {cores} idle cores would take about {cores * 1000 / total:.0f} "
                  f"updates/s" if project and total else "")
    print(f"CPU per {what}: {parts} = {total:.2f} ms{projection}")


def start_ticks(count: int, env: dict[str, str], log_dir: Path) -> list[subprocess.Popen]:
    """Real ``manage.py tick --loop`` processes, their lines in ``log_dir``. Nothing is
    claimed (the bench chats queue nothing), so the LLM key only passes the start check."""
    from bench.harness import API_KEY

    tick_env = {**env, "LLM_PROVIDER": "openai", "OPENAI_API_KEY": API_KEY,
                "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    return [subprocess.Popen([sys.executable, "manage.py", "tick", "--loop"], cwd=ROOT,
                             env=tick_env, stdout=(log_dir / f"tick{n}.log").open("w"),
                             stderr=subprocess.STDOUT, start_new_session=True)
            for n in range(count)]


def ticks_ready(log_dir: Path, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while any("tick:" not in (log_dir / f"tick{n}.log").read_text() for n in range(count)):
        if time.monotonic() > deadline:
            raise SystemExit("bench.intake_section: the tick loops did not start: "
                             + (log_dir / "tick0.log").read_text()[-500:])
        time.sleep(0.1)


def ticks_processed(ticks: list[subprocess.Popen], log_dir: Path) -> tuple[int, int]:
    """Stop the tick loops; the updates their summary lines say they processed, and in
    how many ticks."""
    for tick in ticks:
        tick.terminate()
    for tick in ticks:
        tick.wait(timeout=60)
    lines = "".join((log_dir / f"tick{n}.log").read_text() for n in range(len(ticks)))
    counts = [int(n) for n in re.findall(r"(\d+) updates processed", lines)]
    return sum(counts), len(counts)


def until_processed(bot_ids: list[int], timeout: float = 300.0) -> None:
    from batchgen.models.conversations import ProcessedUpdate

    deadline = time.monotonic() + timeout
    pending = ProcessedUpdate.objects.filter(bot_id__in=bot_ids, pending=True)
    while pending.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench.intake_section: {pending.count()} updates still "
                             f"pending after {timeout:.0f} s")
        time.sleep(0.05)


def pause(ticks: list[subprocess.Popen], paused: bool) -> None:
    for tick in ticks:
        os.kill(tick.pid, signal.SIGSTOP if paused else signal.SIGCONT)


def timed_until_processed(bot_ids: list[int]) -> tuple[float, None]:
    began = time.perf_counter()
    until_processed(bot_ids)
    return time.perf_counter() - began, None


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
    quiet_chats(posts)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "botplatform.wsgi", "-b", f"127.0.0.1:{port}",
         "-k", "gthread", "-w", str(args.web_workers), "--threads", str(args.web_threads),
         "--log-level", "warning"], cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL)  # gunicorn.conf.py's access log: written, not shown
    with tempfile.TemporaryDirectory() as log_dir:
        ticks = start_ticks(args.tick_loops, env, Path(log_dir))
        try:
            if not wait_for_port(port, timeout=60):
                raise SystemExit("bench.intake_section: gunicorn did not start")
            ticks_ready(Path(log_dir), len(ticks))  # their start-up is not the run's CPU
            base_url = f"http://127.0.0.1:{port}"
            pids = lambda: serving_pids(server.pid, [t.pid for t in ticks])  # noqa: E731
            # The same stack's cheapest answer (a wrong secret: one bot lookup, 403), in the
            # same run, so the figure can be read against what this machine gives now.
            warmup = posts[: args.updates // 2]
            (floor_s, _), floor_cpu = measured(pids, lambda: post_all(
                base_url, warmup, args.posters, "wrong"))
            load_before = os.getloadavg()
            pause(ticks, args.backlog)
            began = time.time()
            (seconds, outcomes), answering_cpu = measured(pids, lambda: post_all(
                base_url, posts, args.posters))
            pause(ticks, False)
            (drain_s, _), processing_cpu = measured(pids, lambda: timed_until_processed(
                bot_ids))
            load_after = os.getloadavg()
        finally:
            server.terminate()
            server.wait(timeout=30)
            processed_by_ticks, tick_count = ticks_processed(ticks, Path(log_dir))
    print_cpu("update while the posters run", answering_cpu, args.updates, project=False)
    print_cpu("update after the last answer", processing_cpu, args.updates, project=False)
    print_cpu("update in all", {group: answering_cpu[group] + processing_cpu[group]
                                for group in answering_cpu}, args.updates)
    if args.backlog:
        print(f"the tick loops, paused while the posters ran, processed the backlog in "
              f"{drain_s:.2f} s = {args.updates / drain_s:.0f} updates/s")
    print_cpu("403 (same stack, wrong secret)", floor_cpu, len(warmup))
    print(f"same stack, 403 for a wrong secret: {len(warmup) / floor_s:.0f} "
          f"requests/s (the ceiling on this machine right now)")
    print(f"the tick loops processed them in {tick_count} ticks")
    return report(args, posts, seconds, outcomes, began, processed_by_ticks,
                  (load_before, load_after))


def report(args: argparse.Namespace, posts: list, seconds: float, outcomes: Counter,
           began: float, processed_by_ticks: int, load: tuple[tuple, tuple]) -> int:
    from batchgen.models.conversations import ChatMessage, ProcessedUpdate

    stored = ChatMessage.objects.filter(chat__title__startswith=PREFIX).count()
    rows = ProcessedUpdate.objects.filter(bot__name__startswith=PREFIX)
    done = rows.filter(pending=False, outcome="stored")
    times = list(done.values_list("received_at", "processed_at"))
    repeats = len(posts) - args.updates
    ok = (stored == args.updates == rows.count() == len(times) == processed_by_ticks
          == outcomes["accepted"] and outcomes["duplicate"] == repeats
          and sum(outcomes.values()) == len(posts))
    print(f"intake webhook: {len(posts)} posts ({args.updates} distinct + {repeats} "
          f"redeliveries) from {args.posters} posters to gunicorn {args.web_workers}x"
          f"{args.web_threads} on PostgreSQL, answered in {seconds:.2f} s = "
          f"{len(posts) / seconds:.0f} updates/s acknowledged")
    if times:
        first = min(t for _, t in times).timestamp()
        last = max(t for _, t in times).timestamp()
        waits = sorted((p - r).total_seconds() * 1000 for r, p in times)
        p99 = waits[min(len(waits) - 1, int(len(waits) * 0.99))]
        pace = len(times) / max(last - first, 1e-9)
        print(f"processed by {args.tick_loops} tick loop(s): all {len(times)} within "
              f"{last - began:.2f} s of the first post ({pace:.0f} updates/s from first to "
              f"last processed); wait from answer to "
              f"processing p50 {statistics.median(waits):.0f} ms, p99 {p99:.0f} ms, "
              f"max {waits[-1]:.0f} ms")
    print(f"answers: {dict(outcomes)}; stored messages {stored}, update rows {rows.count()} "
          f"({len(times)} processed as stored), tick loops counted {processed_by_ticks} "
          f"processed: {'none lost, none doubled' if ok else 'MISMATCH'}")
    print(f"machine: {os.cpu_count()} cores, load average {load[0][0]:.2f} before, "
          f"{load[1][0]:.2f} after (shared with other work)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
