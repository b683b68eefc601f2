"""Is the platform alive? The ``/healthz`` checks, the dashboard's health summary and the
Prometheus gauges, read from the heartbeats (``batchgen.state.heartbeats``) and the queue and
judged by ``HEALTH_TICK_STALE_SECONDS``, ``HEALTH_WORKER_STALE_SECONDS`` and
``HEALTH_PENDING_STALE_SECONDS`` (what each means: docs/design.md, "The dashboard and the
admin").
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from django.db import DatabaseError, connection
from django.db.models import F, Min, Q
from django.db.models.functions import Coalesce
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

from batchgen.models import QueueItem
from batchgen.state import shared
from batchgen.state.heartbeats import (
    Clock,
    HeartbeatWorkerMixin,
    _threshold,
    beat,
    beat_worker,
    last_beat,
    last_worker_beat,
    workers_alive,
)

__all__ = ["HealthCollector", "HeartbeatWorkerMixin", "Status", "beat", "beat_worker",
           "check_services", "dashboard_context", "healthz", "last_beat", "last_worker_beat",
           "status", "workers_alive"]

def oldest_pending_age(now: datetime) -> float | None:
    """Seconds the longest-waiting claimable item has waited (since it became claimable)."""
    since = Coalesce(F("available_at"), F("created_at"))
    oldest = (QueueItem.objects.filter(status=QueueItem.Status.PENDING)
              .filter(Q(available_at__isnull=True) | Q(available_at__lte=now))
              .aggregate(oldest=Min(since))["oldest"])
    return None if oldest is None else max(0.0, (now - oldest).total_seconds())


@dataclass(frozen=True)
class Status:
    """What the dashboard's health card shows; ``*_stale`` pick the warning colour."""

    tick_age: float | None
    tick_stale: bool
    workers_alive: int | None
    workers_stale: bool
    oldest_pending_age: float | None
    pending_stale: bool
    tick_threshold: float
    worker_threshold: float
    pending_threshold: float


def status(clock: Clock = time.time) -> Status:
    now = clock()
    tick_limit = _threshold("HEALTH_TICK_STALE_SECONDS", 60)
    worker_limit = _threshold("HEALTH_WORKER_STALE_SECONDS", 90)
    pending_limit = _threshold("HEALTH_PENDING_STALE_SECONDS", 300)
    last_tick = last_beat("tick")
    tick_age = None if last_tick is None else max(0.0, now - last_tick)
    alive = workers_alive(clock)
    pending = oldest_pending_age(datetime.fromtimestamp(now, tz=UTC))
    return Status(
        tick_age=tick_age, tick_stale=tick_age is None or tick_age > tick_limit,
        workers_alive=alive, workers_stale=not alive,
        oldest_pending_age=pending, pending_stale=pending is not None and pending > pending_limit,
        tick_threshold=tick_limit, worker_threshold=worker_limit, pending_threshold=pending_limit,
    )


def check_services() -> dict[str, str]:
    """``{"database": "ok" | "down: <error type>", "redis": …}`` for ``/healthz``.

    Redis is pinged directly rather than through ``shared.attempt``: a load balancer wants
    the state now, not an outage remembered for a few seconds. Only the error's type is
    reported, as its text may carry a URL with a password.
    """
    found = {}
    try:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        found["database"] = "ok"
    except DatabaseError as exc:
        found["database"] = f"down: {type(exc).__name__}"
    try:
        shared.connection().ping()
        found["redis"] = "ok"
    except redis.RedisError as exc:
        found["redis"] = f"down: {type(exc).__name__}"
    return found


class HealthCollector:
    """Gauges an alert rule can use: the last tick, workers alive, the oldest pending age."""

    def describe(self) -> list[Metric]:
        return []  # registering must not query Redis and the database

    def collect(self) -> Iterator[Metric]:
        last_tick = last_beat("tick")
        if last_tick is not None:
            yield GaugeMetricFamily("batchgen_last_tick_timestamp_seconds",
                                    "Unix time of the last tick's heartbeat.", value=last_tick)
        alive = workers_alive()
        if alive is not None:
            yield GaugeMetricFamily("batchgen_workers_alive",
                                    "RQ workers heard from within HEALTH_WORKER_STALE_SECONDS.",
                                    value=alive)
        try:
            age = oldest_pending_age(timezone.now())
        except DatabaseError:
            return
        yield GaugeMetricFamily("batchgen_oldest_pending_age_seconds",
                                "Seconds the oldest claimable queue item has waited (0: none).",
                                value=age or 0.0)


def dashboard_context() -> dict[str, Status]:
    """Context for ``templates/dashboard/_health.html`` (``{"health": status()}``)."""
    return {"health": status()}


def healthz(request: HttpRequest) -> JsonResponse:
    """For load balancers and compose: 200 when the database and Redis answer, else 503
    naming which is down. No login, no secrets, no heartbeat (a stale tick is an alert,
    not a reason to take the web server out of rotation)."""
    found = check_services()
    healthy = all(state == "ok" for state in found.values())
    return JsonResponse({"status": "ok" if healthy else "down", **found},
                        status=200 if healthy else 503)
