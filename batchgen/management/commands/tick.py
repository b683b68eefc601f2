"""Claim the next batch from the queue and hand it to an RQ worker (or run it with --sync)."""

from __future__ import annotations

import signal
import threading

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from batchgen.pipeline import tick


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--sync", action="store_true", help="run the batch in this process")
        parser.add_argument("--loop", action="store_true", help="tick until SIGTERM or SIGINT")
        parser.add_argument("--interval", type=float, default=5.0, help="seconds between ticks")

    def handle(self, *args, sync: bool, loop: bool, interval: float, **options) -> None:
        if interval <= 0:
            raise CommandError(f"--interval must be above 0, got {interval}")
        stop = threading.Event()
        if loop:
            # Finish the tick in progress, then stop between ticks.
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: stop.set())
        while True:
            try:
                self.stdout.write(tick(sync=sync).line())
            except ImproperlyConfigured as exc:
                raise CommandError(f"configuration error: {exc}") from exc
            if not loop or stop.wait(interval):
                break
