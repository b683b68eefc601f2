"""Exit 0 when the database and Redis answer (and, if asked, tick or a worker beats); else 1.
For container healthchecks: ``health --tick`` in the scheduler, ``health --worker NAME`` in a
worker started with ``rqworker --name NAME``.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from batchgen.dashboard import health


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tick", action="store_true", help="require a fresh tick heartbeat")
        parser.add_argument("--worker", metavar="NAME", help="require this worker's heartbeat")

    def handle(self, *args, tick: bool, worker: str | None, **options) -> None:
        down = [f"{name} {state}" for name, state in health.check_services().items()
                if state != "ok"]
        if tick:
            down += _stale("tick", health.last_beat("tick"), settings.HEALTH_TICK_STALE_SECONDS)
        if worker:
            down += _stale(f"worker {worker}", health.last_worker_beat(worker),
                           settings.HEALTH_WORKER_STALE_SECONDS)
        if down:
            raise CommandError("unhealthy: " + "; ".join(down))
        self.stdout.write("healthy")


def _stale(what: str, last: float | None, limit: float) -> list[str]:
    if last is None:
        return [f"{what}: no heartbeat"]
    age = time.time() - last
    return [f"{what}: last heartbeat {age:.0f}s ago (limit {limit:.0f}s)"] if age > limit else []
