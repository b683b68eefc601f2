"""getUpdates against the fake Telegram: offsets in the database, bad updates skipped."""

from __future__ import annotations

import logging

import httpx
import pytest

from batchgen.conversations.poll import poll_once
from batchgen.models import Bot
from batchgen.models.conversations import ChatMessage, ProcessedUpdate
from tests.intake_support import make_intake_bot, say

pytestmark = pytest.mark.django_db


def test_polling_stores_each_bots_updates_and_keeps_the_offset(telegram_env) -> None:
    alpha, beta = make_intake_bot(), make_intake_bot()
    say(telegram_env, -100900, "first", [alpha, beta])
    say(telegram_env, -100900, "second", [alpha])
    assert poll_once() == {"stored": 3}
    assert list(ChatMessage.objects.values_list("text", flat=True)) == ["first", "second"]
    assert Bot.objects.get(id=alpha.id).update_offset == 3
    assert Bot.objects.get(id=beta.id).update_offset == 2
    assert poll_once() == {}  # confirmed: nothing comes twice


def test_a_lost_offset_redelivers_but_nothing_is_stored_twice(telegram_env) -> None:
    alpha = make_intake_bot()
    say(telegram_env, -100901, "once", [alpha])
    # Ask without confirming, as a poller that crashed before saving its offset would.
    httpx.post(f"{telegram_env.base_url}/bot{alpha.telegram_token}/getUpdates", json={})
    poll_once()
    Bot.objects.filter(id=alpha.id).update(update_offset=0)
    assert poll_once() == {"duplicate": 1}
    assert ChatMessage.objects.count() == 1


def test_a_malformed_update_is_skipped_and_the_ones_after_it_still_arrive(telegram_env,
                                                                         caplog) -> None:
    caplog.set_level(logging.WARNING, logger="batchgen")
    alpha = make_intake_bot()
    say(telegram_env, -100902, "", [alpha], raw={"message": {"text": "no chat, no id"}})
    say(telegram_env, -100902, "after the bad one", [alpha])
    assert poll_once() == {"malformed": 1, "stored": 1}
    assert ChatMessage.objects.get().text == "after the bad one"
    assert "malformed update 1 skipped" in caplog.text
    assert ProcessedUpdate.objects.get(update_id=1).outcome == "malformed"


def test_a_bot_with_a_revoked_token_does_not_stop_the_others(telegram_env, caplog) -> None:
    alpha, revoked = make_intake_bot(), make_intake_bot()
    httpx.post(f"{telegram_env.base_url}/_bots", json={"revoke": revoked.telegram_token})
    say(telegram_env, -100903, "still here", [alpha])
    assert poll_once() == {"fetch_failed": 1, "stored": 1}
    assert "Unauthorized" in caplog.text and revoked.telegram_token not in caplog.text


def test_bots_with_a_webhook_are_not_polled(telegram_env) -> None:
    make_intake_bot(webhook_secret="set")
    assert poll_once() == {}


def test_a_failure_to_store_keeps_the_offset_so_the_update_comes_again(telegram_env,
                                                                        monkeypatch) -> None:
    from django.db import OperationalError

    from batchgen.conversations import updates

    alpha = make_intake_bot()
    say(telegram_env, -100904, "kept", [alpha])
    real = updates.accept

    def database_gone(bot_id, update):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(updates, "accept", database_gone)
    assert poll_once() == {"store_failed": 1}
    assert Bot.objects.get(id=alpha.id).update_offset == 0
    monkeypatch.setattr(updates, "accept", real)
    assert poll_once() == {"stored": 1}
    assert ChatMessage.objects.get().text == "kept"
