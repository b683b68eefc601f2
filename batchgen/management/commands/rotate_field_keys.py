"""Re-encrypt every bot token with the first key of FIELD_ENCRYPTION_KEYS. Rotating: put the
new key first, keep the old one after it, run this, then remove the old key. Webhook secrets
are HMACs that verify under any listed key: a bot whose webhook was set under a removed key
needs it set again (the admin's "Receive updates by webhook").
"""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.db import transaction

from batchgen.models import Bot


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args, **options) -> None:
        count = 0
        with transaction.atomic():
            for bot in Bot.objects.select_for_update().only("id", "telegram_token"):
                # Read with any key, written with the first: the field encrypts on save.
                Bot.objects.filter(id=bot.id).update(telegram_token=bot.telegram_token)
                count += 1
        self.stdout.write(f"{count} bot tokens re-encrypted with the first key")
