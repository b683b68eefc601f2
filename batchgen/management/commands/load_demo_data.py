"""Load the demo bots, chats, queued items and staff login (safe to run twice)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from batchgen.demo.seed import STAFF_PASSWORD, STAFF_USERNAME, load_demo_data


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--items-per-chat", type=int, default=1)

    def handle(self, *args, items_per_chat: int, **options) -> None:
        summary = load_demo_data(items_per_chat)
        self.stdout.write(
            f"demo data: {summary.bots_created} bots, {summary.chats_created} chats, "
            f"{summary.items_created} queue items created; "
            f"staff login {STAFF_USERNAME} / {STAFF_PASSWORD}"
        )
