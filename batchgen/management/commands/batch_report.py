"""Print the latest batch runs as a table (optionally waiting for running ones)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from batchgen.dashboard.report import batch_table, mode_comparison, wait_until_settled
from batchgen.models import BatchRun


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--last", type=int, default=20, help="how many runs to show")
        parser.add_argument("--wait", type=float, default=0,
                            help="first wait up to this many seconds for running batches")

    def handle(self, *args, last: int, wait: float, **options) -> None:
        if wait and not wait_until_settled(wait):
            raise CommandError(f"batches still running after {wait:.0f}s")
        if last <= 0:
            return
        runs = list(BatchRun.objects.order_by("-id")[:last])[::-1]
        self.stdout.write(batch_table(runs))
        self.stdout.write(mode_comparison(runs))
