"""Drive the running demo (make demo) without the fake's raw endpoints: ``add-bot`` puts a bot
in a group, ``say`` makes a person write, ``fail`` makes the fake provider fail items (the
README shows each). Run it in a second shell after the `export …` line the demo's banner
prints.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from batchgen.demo import actions


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add-bot", help="add a bot to a group (the chat appears)")
        add.add_argument("bot", help="the bot's name, e.g. 'Chef Remy'")
        add.add_argument("--chat", required=True, help="the group's title")
        say = sub.add_parser("say", help="a person writes in a chat")
        say.add_argument("text")
        say.add_argument("--chat", required=True, help="the chat's title or Telegram id")
        fail = sub.add_parser("fail", help="queue items the fake provider fails")
        fail.add_argument("--kind", default="bad_request", choices=list(actions.FAULTS))
        fail.add_argument("--count", type=int, default=1)
        fail.add_argument("--chat", default="", help="the chat's title or id (default: any)")

    def handle(self, *args, action: str, **options) -> None:
        try:
            if action == "add-bot":
                result = actions.add_bot(options["bot"], options["chat"])
            elif action == "say":
                result = actions.say(options["chat"], options["text"])
            else:
                result = actions.fail(options["kind"], options["count"], options["chat"])
        except actions.DemoError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(result)
