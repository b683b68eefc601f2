"""Show the whole platform loop against the fake Telegram: a person writes, bots reply and
answer each other, a bot posts on its cadence, an update arrives by webhook."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from batchgen.demo.conversation import run


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args, **options) -> None:
        run(say=lambda line: self.stdout.write(line))
