"""SQL statements and Redis round trips per delivered message, in an in-process drain (issue 24).

Two drains of different sizes through ``tick --sync``; the difference over the extra items is
the per-item cost, the rest the per-run cost. ``-s`` prints the figures; the assertions are
that every item was delivered exactly once and that the counts are a fixed cost plus one per
item (the same per-item figure at both sizes), so a regression shows as a changed figure.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from django.db import connection
from django.test.utils import CaptureQueriesContext

from batchgen.delivery import scheduler
from batchgen.models import Message, QueueItem
from tests.factories import make_bot, make_chat, make_item, set_batch_mode

pytestmark = pytest.mark.django_db(transaction=True)


@contextmanager
def redis_round_trips() -> Iterator[list[str]]:
    """The first command of every round trip this process sends."""
    log: list[str] = []
    send = redis.connection.Connection.send_packed_command

    def spy(self, command, check_health=True):  # noqa: ANN001, ANN202
        data = b"".join(command) if isinstance(command, list) else command
        log.append(data.split(b"\r\n")[2].decode())
        return send(self, command, check_health)

    redis.connection.Connection.send_packed_command = spy
    try:
        yield log
    finally:
        redis.connection.Connection.send_packed_command = send


def statement_kind(sql: str) -> str:
    """"SELECT queueitem", "UPDATE message"...: the verb and the first table named."""
    verb = sql.split(None, 1)[0].upper()
    table = re.search(r'(?:FROM|INTO|UPDATE)\s+"?batchgen_(\w+)"?', sql, re.IGNORECASE)
    return f"{verb} {table.group(1) if table else ''}".strip()


def drain(items: int, in_flight: int) -> tuple[Counter, Counter]:
    for _ in range(items):
        make_item(make_bot(), make_chat())
    set_batch_mode(in_flight)
    with CaptureQueriesContext(connection) as sql, redis_round_trips() as trips:
        run = scheduler.tick(sync=True).run
    assert run.successes == items
    return Counter(statement_kind(q["sql"]) for q in sql.captured_queries), Counter(trips)


def test_sql_and_redis_per_delivered_message(pipeline_env) -> None:
    _, fake_telegram = pipeline_env
    small, small_trips = drain(10, 5)
    large, large_trips = drain(30, 5)

    extra = 20
    per_item = {kind: (large[kind] - small[kind]) / extra for kind in large | small}
    fixed = {kind: small[kind] - per_item[kind] * 10 for kind in per_item}
    trips_per_item = {kind: (large_trips[kind] - small_trips[kind]) / extra
                      for kind in large_trips | small_trips}
    print(f"\nper delivered message: {sum(per_item.values()):.2f} SQL statements, "
          f"{sum(trips_per_item.values()):.2f} Redis round trips; per run: "
          f"{sum(fixed.values()):.1f} statements; 30 items: {large.total()} statements, "
          f"{large_trips.total()} round trips")
    for kind in sorted(per_item, key=lambda k: -per_item[k]):
        print(f"  SQL {kind:28} {per_item[kind]:5.2f} per item  {fixed[kind]:6.1f} per run")
    for kind in sorted(trips_per_item, key=lambda k: -trips_per_item[k]):
        print(f"  Redis {kind:26} {trips_per_item[kind]:5.2f} per item  "
              f"{large_trips[kind]:4d} in the 30-item run")

    sent = [m["chat_id"] for m in fake_telegram.messages()]
    assert len(sent) == len(set(sent)) == 40  # every item once, none twice
    assert Message.objects.filter(status="sent").count() == 40
    assert not QueueItem.objects.exclude(status="done").exists()
