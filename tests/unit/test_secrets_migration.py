"""Migration 0011_doors encrypts the tokens and hashes the webhook secrets already stored."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from batchgen.models import Bot
from batchgen.models.secrets import webhook_secret_matches

BEFORE, AFTER = ("batchgen", "0009_raw_updates"), ("batchgen", "0011_doors")


@pytest.mark.django_db(transaction=True)
def test_it_encrypts_existing_tokens_and_hashes_existing_webhook_secrets() -> None:
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate([BEFORE])
    try:
        old_apps = executor.loader.project_state([BEFORE]).apps
        OldBot = old_apps.get_model("batchgen", "Bot")
        hooked = OldBot.objects.create(name="hooked", telegram_token="42:PLAIN-token",
                                       webhook_secret="plain-webhook-secret")
        polled = OldBot.objects.create(name="polled", telegram_token="43:OTHER-token")
        executor = MigrationExecutor(connection)
        executor.migrate([AFTER])
        with connection.cursor() as cursor:
            cursor.execute("SELECT telegram_token, webhook_secret FROM batchgen_bot ORDER BY id")
            rows = cursor.fetchall()
        assert all("token" not in token for token, _ in rows)
        assert rows[1][1] == ""  # no webhook: still polled
        # only(): the later migrations' columns are not there yet at this state.
        tokens = Bot.objects.only("telegram_token")
        assert tokens.get(id=hooked.id).telegram_token == "42:PLAIN-token"
        assert tokens.get(id=polled.id).telegram_token == "43:OTHER-token"
        assert webhook_secret_matches("plain-webhook-secret", rows[0][1])
    finally:
        MigrationExecutor(connection).migrate(latest)
