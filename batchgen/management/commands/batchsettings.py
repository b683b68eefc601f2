"""Show or change the batch settings (the same rules as the admin form)."""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from batchgen.models import Setting


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-mode", choices=["on", "off"])
        parser.add_argument("--batch-size", help="an integer from 1 to 50")

    def handle(self, *args, batch_mode: str | None, batch_size: str | None, **options) -> None:
        changes: dict[str, Any] = {}
        if batch_mode is not None:
            changes["batch_mode_enabled"] = batch_mode == "on"
        if batch_size is not None:
            try:
                changes["batch_size"] = json.loads(batch_size)
            except json.JSONDecodeError:
                changes["batch_size"] = batch_size
        for key, value in changes.items():
            setting = Setting.objects.filter(key=key).first() or Setting(key=key)
            setting.value = value
            try:
                setting.full_clean()
            except ValidationError as exc:
                raise CommandError("; ".join(exc.messages)) from None
            setting.save()
        current = Setting.load()
        self.stdout.write(f"batch mode {'on' if current.batch_mode_enabled else 'off'}, "
                          f"batch size {current.batch_size}")
