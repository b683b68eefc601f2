"""Heartbeats in Redis: ``tick`` beats once per tick and every RQ worker on RQ's own
heartbeat (``HeartbeatWorkerMixin``). A heartbeat is a wall-clock timestamp kept through
``batchgen.state.shared``, so a beat on any machine is seen by the web process, and a Redis
outage never stops the thing beating. ``batchgen.dashboard.health`` reads them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
from django.conf import settings

from batchgen.state import shared

Clock = Callable[[], float]
WORKERS = "workers"


def _threshold(name: str, default: float) -> float:
    return float(getattr(settings, name, default))


def beat(name: str, clock: Clock = time.time) -> None:
    """Record that ``name`` (e.g. "tick") is alive now. Never raises."""
    ttl = int(_threshold("HEALTH_TICK_STALE_SECONDS", 60) * 10)
    shared.attempt(lambda r: r.set(shared.key("heartbeat", name), clock(), ex=ttl),
                   None, "heartbeat")


def beat_worker(name: str, clock: Clock = time.time) -> None:
    """Record that the worker ``name`` is alive now (one sorted set for every worker)."""
    shared.attempt(lambda r: r.zadd(shared.key("heartbeat", WORKERS), {name: clock()}),
                   None, "heartbeat")


def last_beat(name: str) -> float | None:
    """The Unix time of ``name``'s last heartbeat, or None (never, or Redis unreachable)."""
    value = shared.attempt(lambda r: r.get(shared.key("heartbeat", name)), None, "heartbeat")
    return None if value is None else float(value)


def last_worker_beat(name: str) -> float | None:
    """The Unix time of worker ``name``'s last heartbeat, or None."""
    return shared.attempt(lambda r: r.zscore(shared.key("heartbeat", WORKERS), name), None,
                          "heartbeat")


def workers_alive(clock: Clock = time.time) -> int | None:
    """Workers heard from within ``HEALTH_WORKER_STALE_SECONDS``; None if Redis is away.

    Workers silent for ten times the threshold are dropped from the set, so a fleet that
    restarts often does not grow it for ever.
    """
    stale = _threshold("HEALTH_WORKER_STALE_SECONDS", 90)
    now = clock()

    def count(r: redis.Redis) -> int:
        workers = shared.key("heartbeat", WORKERS)
        r.zremrangebyscore(workers, "-inf", now - 10 * stale)
        return r.zcount(workers, now - stale, "+inf")

    return shared.attempt(count, None, "heartbeat")


class HeartbeatWorkerMixin:
    """Put first in an RQ worker class's bases: every RQ heartbeat (after each job, while a
    job runs, and once per idle wait for work) is also a ``beat_worker``."""

    name: str

    def heartbeat(self, *args: object, **kwargs: object) -> None:
        super().heartbeat(*args, **kwargs)  # type: ignore[misc]
        beat_worker(self.name)

    @property
    def dequeue_timeout(self) -> int:
        # An idle RQ worker beats once per wait for work, worker_ttl - 15 s (405 s by
        # default): far beyond the staleness threshold, so an idle worker would look dead.
        limit = int(_threshold("HEALTH_WORKER_STALE_SECONDS", 90) / 3)
        return max(1, min(super().dequeue_timeout, limit))  # type: ignore[misc]
