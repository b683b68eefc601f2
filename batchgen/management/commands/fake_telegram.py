"""Serve the fake Telegram Bot API (sendMessage, faults, /_messages) for tests and the demo."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from django.core.management.base import BaseCommand, CommandParser

from batchgen.fakes.telegram_server import make_app


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8902)
        parser.add_argument("--latency", type=float, default=0.0,
                            help="seconds before each answer")
        parser.add_argument("--chat-limit-per-second", type=int, default=None,
                            help="answer 429 above this many messages per chat per second")

    def handle(self, *args: Any, **options: Any) -> None:
        app = make_app(latency=options["latency"],
                       chat_limit_per_second=options["chat_limit_per_second"])
        self.stdout.write(f"fake Telegram on http://{options['host']}:{options['port']} "
                          "(set TELEGRAM_API_BASE_URL to it)")
        web.run_app(app, host=options["host"], port=options["port"], print=None,
                    access_log=None, handle_signals=True)
