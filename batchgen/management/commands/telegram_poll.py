"""Fetch Telegram updates with getUpdates for every active bot that has no webhook."""

from __future__ import annotations

from collections import Counter

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from batchgen.conversations.poll import poll_once
from batchgen.management.stopping import stop_on_signals


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--loop", action="store_true", help="poll until SIGTERM or SIGINT")
        parser.add_argument("--timeout", type=float, default=25.0,
                            help="long-poll seconds per round with --loop")

    def handle(self, *args, loop: bool, timeout: float, **options) -> None:
        if timeout < 0:
            raise CommandError(f"--timeout must be 0 or more, got {timeout}")
        stop = stop_on_signals(loop)
        while True:
            try:
                outcomes = poll_once(timeout if loop else 0)
            except DatabaseError as exc:
                if not loop:
                    raise CommandError(f"database error: {exc}") from exc
                self.stderr.write(f"telegram_poll: database error, retrying: {exc}")
                outcomes = Counter()
            summary = ", ".join(f"{k} {n}" for k, n in sorted(outcomes.items())) or "nothing"
            self.stdout.write(f"telegram_poll: {summary}")
            if not loop or stop.is_set():
                break
            if not outcomes:
                stop.wait(1.0)  # no bots yet, or all failed: do not spin
