"""SQL statements and Redis round trips per delivered message, counted in an in-process drain.

Two drains of different sizes through ``tick --sync`` (the same code a work-horse runs); the
difference over the extra items is the per-item cost, the rest the per-run cost. Used by the
hotpath bench section, which prints it, and by ``tests/unit/test_per_item_cost.py``, which
fails if it grows.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

HANDSHAKE = {"HELLO", "CLIENT", "SELECT", "AUTH"}


@contextmanager
def redis_round_trips() -> Iterator[list[str]]:
    """The first command of every round trip this process sends, counted at the socket."""
    import redis

    log: list[str] = []
    send = redis.connection.Connection.send_packed_command

    def spy(self: Any, command: Any, check_health: bool = True) -> None:
        data = b"".join(command) if isinstance(command, list) else command
        log.append(data.split(b"\r\n")[2].decode())
        send(self, command, check_health)

    redis.connection.Connection.send_packed_command = spy  # type: ignore[method-assign]
    try:
        yield log
    finally:
        redis.connection.Connection.send_packed_command = send  # type: ignore[method-assign]


def statement_kind(sql: str) -> str:
    """"SELECT queueitem", "UPDATE message"...: the verb and the first table named."""
    verb = sql.split(None, 1)[0].upper()
    table = re.search(r'(?:FROM|INTO|UPDATE)\s+"?batchgen_(\w+)"?', sql, re.IGNORECASE)
    return f"{verb} {table.group(1) if table else ''}".strip()


def _drain(make_items: Callable[[int], None], items: int, in_flight: int
           ) -> tuple[Counter[str], Counter[str]]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from batchgen.delivery import scheduler
    from batchgen.models import Setting

    make_items(items)
    for key, value in (("batch_mode_enabled", True), ("batch_size", in_flight)):
        Setting.objects.update_or_create(key=key, defaults={"value": value})
    with CaptureQueriesContext(connection) as sql, redis_round_trips() as trips:
        run = scheduler.tick(sync=True).run
    if run is None or run.successes != items:
        raise RuntimeError(f"per-item count: {run and run.successes} of {items} delivered")
    return Counter(statement_kind(q["sql"]) for q in sql.captured_queries), Counter(trips)


@dataclass
class Costs:
    sql_per_item: dict[str, float]
    sql_per_run: dict[str, float]
    redis_per_item: dict[str, float]

    @property
    def sql(self) -> float:
        return sum(self.sql_per_item.values())

    @property
    def redis(self) -> float:
        """Round trips per message in a warm process: not counting the handshakes of
        connections a pool opens as more threads use it at once (HELLO, CLIENT, SELECT)."""
        return sum(n for kind, n in self.redis_per_item.items() if kind not in HANDSHAKE)

    def lines(self) -> list[str]:
        out = [f"per delivered message: {self.sql:.2f} SQL statements, {self.redis:.2f} Redis "
               f"round trips; per run: {sum(self.sql_per_run.values()):.1f} statements"]
        for kind, n in sorted(self.sql_per_item.items(), key=lambda kv: -kv[1]):
            if n or self.sql_per_run[kind]:
                out.append(f"  SQL {kind:24} {n:5.2f} per item {self.sql_per_run[kind]:6.1f} "
                           "per run")
        for kind, n in sorted(self.redis_per_item.items(), key=lambda kv: -kv[1]):
            if n > 0:
                note = " (connection handshake, not counted)" if kind in HANDSHAKE else ""
                out.append(f"  Redis {kind:22} {n:5.2f} per item{note}")
        return out


def per_item_costs(make_items: Callable[[int], None], small: int = 20, large: int = 60,
                   in_flight: int = 10) -> Costs:
    """The per-item and per-run counts, from a drain of ``small`` and one of ``large`` items
    (connections and scripts warm: a first drain of two items pays for them, uncounted)."""
    _drain(make_items, 2, in_flight)  # connections opened, scripts loaded: not counted
    sql_small, trips_small = _drain(make_items, small, in_flight)
    sql_large, trips_large = _drain(make_items, large, in_flight)
    extra = large - small
    sql_per_item = {kind: (sql_large[kind] - sql_small[kind]) / extra
                    for kind in sql_large | sql_small}
    return Costs(sql_per_item,
                 {kind: sql_small[kind] - sql_per_item[kind] * small for kind in sql_per_item},
                 {kind: (trips_large[kind] - trips_small[kind]) / extra
                  for kind in trips_large | trips_small})
