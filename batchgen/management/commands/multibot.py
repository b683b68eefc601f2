"""Make several bots reply in one chat at once, in one batch (Scenario 2)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from batchgen.delivery.scheduler import generate_for_multiple_bots
from batchgen.models import Chat


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--chat", type=int, required=True, help="Telegram chat id")
        parser.add_argument("--bots", required=True, help="bot ids, comma-separated")
        parser.add_argument("--sync", action="store_true", help="run the batch in this process")

    def handle(self, *args, chat: int, bots: str, sync: bool, **options) -> None:
        try:
            bot_ids = [int(part) for part in bots.split(",") if part.strip()]
            chat_pk = Chat.objects.get(telegram_chat_id=chat).pk
            run = generate_for_multiple_bots(bot_ids, chat_pk, sync=sync)
        except (ValueError, Chat.DoesNotExist) as exc:
            raise CommandError(f"multibot: {exc}") from exc
        self.stdout.write(f"multibot: batch {run.id} with {run.size} bots ({run.status})")
