"""Keep the demo's queue fed: top it up to --pending items every --interval seconds."""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand, CommandError, CommandParser

from batchgen.demo.seed import top_up


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--pending", type=int, default=30)
        parser.add_argument("--interval", type=float, default=2.0)
        parser.add_argument("--once", action="store_true", help="top up once and exit")

    def handle(self, *args, pending: int, interval: float, once: bool, **options) -> None:
        if pending < 0 or interval <= 0:
            raise CommandError("--pending must be 0 or more and --interval above 0")
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        while True:
            added = top_up(pending)
            if added:
                self.stdout.write(f"demo feed: {added} new queue items")
            if once or stop.wait(interval):
                break
