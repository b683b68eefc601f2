"""Recover expired leases and give each idle RQ worker a run (or drain in-process with --sync)."""

from __future__ import annotations

import logging
import random

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from batchgen.delivery.scheduler import tick
from batchgen.management.stopping import stop_on_signals
from batchgen.work import queue

log = logging.getLogger("batchgen.tick")
MAX_BACKOFF_S = 60.0


def backoff(failures: int, interval: float) -> float:
    """Seconds to wait after ``failures`` failed ticks in a row: doubling from the interval
    up to a minute, with jitter so several tick loops do not retry in step."""
    base = min(interval * 2 ** (failures - 1), MAX_BACKOFF_S)
    return base * random.uniform(0.5, 1.5)


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--sync", action="store_true", help="run the drain in this process")
        parser.add_argument("--loop", action="store_true", help="tick until SIGTERM or SIGINT")
        parser.add_argument("--interval", type=float, default=5.0, help="seconds between ticks")

    def handle(self, *args, sync: bool, loop: bool, interval: float, **options) -> None:
        if not interval > 0:
            raise CommandError(f"--interval must be above 0, got {interval}")
        stop = stop_on_signals(loop)
        failures = 0
        while True:
            try:
                self.stdout.write(tick(sync=sync).line())
                failures, wait_s = 0, interval
            except ImproperlyConfigured as exc:
                raise CommandError(f"configuration error: {exc}") from exc
            except Exception as exc:
                if not loop:
                    raise
                # A database or Redis outage: one line, then try again; only configuration
                # errors and signals end the loop.
                failures += 1
                wait_s = backoff(failures, interval)
                self.stderr.write(f"tick failed ({type(exc).__name__}: {exc}); "
                                  f"retrying in {wait_s:.1f}s")
                _reset_connections()
            if not loop:
                break
            if failures:
                stop.wait(wait_s)
            else:
                queue.wait_for_nudge(wait_s, stop)  # pushed work wakes the loop early
            if stop.is_set():
                break


def _reset_connections() -> None:
    # A killed backend or a restarted Redis leaves a dead socket behind: start afresh.
    from django.db import connections

    from batchgen.state import shared

    for connection in connections.all():
        connection.close_if_unusable_or_obsolete()
    shared.reset()
