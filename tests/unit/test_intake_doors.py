"""Whatever Telegram sends, intake keeps it and answers 200: NUL and lone surrogates are
replaced (and the row says so), a body past a limit is malformed, an update the database
still refuses is kept as failed, and the poller always moves past what it recorded."""

from __future__ import annotations

import json

import httpx
import pytest
from django.db import DataError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from batchgen.conversations import updates
from batchgen.conversations.poll import poll_once
from batchgen.conversations.updates import process_pending
from batchgen.core.json_input import JsonRefused, parse, storable_json, top_level
from batchgen.models import Bot
from batchgen.models.conversations import ChatMessage, ProcessedUpdate
from batchgen.models.secrets import webhook_digest
from tests.databases import ON_BOTH_DATABASES
from tests.intake_support import make_intake_bot, say, text_message, update

pytestmark = pytest.mark.django_db

SECRET = "s3cret-webhook-token"
# The repro, byte for byte: a NUL in the text, with the right secret.
NUL_UPDATE = (b'{"update_id":21,"message":{"message_id":21,"date":1,"chat":{"id":-1,'
              b'"type":"group"},"from":{"id":1,"is_bot":false,"first_name":"P"},'
              b'"text":"a\\u0000b"}}')


def hooked_bot() -> Bot:
    return make_intake_bot(webhook_secret=webhook_digest(SECRET))


def post(bot_id: int, raw: bytes) -> dict:
    response = Client().post(reverse("intake:webhook", args=[bot_id]), data=raw,
                             content_type="application/json",
                             HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN=SECRET)
    assert response.status_code == 200, response.content[:300]
    return response.json()


def test_it_keeps_an_update_with_a_nul_and_says_what_it_replaced() -> None:
    bot = hooked_bot()
    assert post(bot.id, NUL_UPDATE)["outcome"] == "accepted"
    row = ProcessedUpdate.objects.get(bot=bot, update_id=21)
    assert row.payload["message"]["text"] == "a\ufffdb"
    assert row.note.startswith("1 strings had NUL")
    assert process_pending() == {"stored": 1}
    assert ChatMessage.objects.get().text == "a\ufffdb"


def test_it_keeps_an_update_with_lone_surrogates_in_a_text_a_name_and_a_key() -> None:
    bot = hooked_bot()
    raw = (b'{"update_id":22,"message":{"message_id":22,"date":1,"chat":{"id":-2,'
           b'"type":"group","title":"T"},"from":{"id":1,"is_bot":false,'
           b'"first_name":"P\\udc80"},"text":"x\\ud800y","k\\udfff":1}}')
    assert post(bot.id, raw)["outcome"] == "accepted"
    row = ProcessedUpdate.objects.get(bot=bot, update_id=22)
    assert row.payload["message"]["k\ufffd"] == 1 and row.note.startswith("3 strings")
    assert process_pending() == {"stored": 1}
    heard = ChatMessage.objects.get()
    assert (heard.text, heard.speaker) == ("x\ufffdy", "P\ufffd")


@pytest.mark.postgres
def test_on_postgresql_a_nul_update_is_kept_not_a_500() -> None:
    # PostgreSQL's jsonb refuses \u0000 (a DataError, once a 500 that Telegram redelivered).
    bot = hooked_bot()
    assert post(bot.id, NUL_UPDATE)["outcome"] == "accepted"
    assert process_pending() == {"stored": 1}


def test_an_update_the_database_still_refuses_is_kept_as_failed_with_its_reason(
        monkeypatch) -> None:
    bot = hooked_bot()
    real = updates._insert

    def refusing(bot_id, update_id, payload, outcome, note):
        if payload is not None:
            raise DataError("invalid input syntax for type json\nDETAIL: whatever")
        return real(bot_id, update_id, payload, outcome, note)

    monkeypatch.setattr(updates, "_insert", refusing)
    body = json.dumps(update(30, message=text_message(1, -3, "hi"))).encode()
    assert post(bot.id, body)["outcome"] == "failed"
    assert post(bot.id, body)["outcome"] == "duplicate"  # a redelivery is not failed twice
    row = ProcessedUpdate.objects.get(bot=bot, update_id=30)
    assert (row.outcome, row.pending, row.payload) == ("failed", False, None)
    assert row.note == "not storable: DataError: invalid input syntax for type json"


@pytest.mark.parametrize("depth", [100, 5000])
def test_an_update_nested_too_deep_is_malformed_not_a_500(depth: int) -> None:
    bot = hooked_bot()
    raw = b'{"update_id": 40, "message": ' + b"[" * depth + b"]" * depth + b"}"
    assert post(bot.id, raw)["outcome"] == "malformed"
    assert process_pending() == {}
    assert not ProcessedUpdate.objects.filter(pending=True).exists()


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-1e999", b"1" * 5000])
def test_an_update_with_a_number_no_database_keeps_is_malformed(number: bytes) -> None:
    bot = hooked_bot()
    raw = b'{"update_id": 41, "message": {"message_id": 1, "date": ' + number + b"}}"
    assert post(bot.id, raw)["outcome"] == "malformed"
    assert not ProcessedUpdate.objects.filter(pending=True).exists()


def test_a_body_over_the_size_limit_is_malformed() -> None:
    bot = hooked_bot()
    text = "x" * (1 << 20)
    raw = json.dumps(update(42, message=text_message(1, -4, text))).encode()
    assert post(bot.id, raw)["outcome"] == "malformed"
    assert not ProcessedUpdate.objects.exists()


def test_a_depth_refused_update_keeps_its_row_so_a_redelivery_is_a_duplicate() -> None:
    bot = hooked_bot()
    raw = b'{"update_id": 43, "x": ' + b"[" * 80 + b"]" * 80 + b"}"
    assert post(bot.id, raw)["outcome"] == "malformed"
    assert post(bot.id, raw)["outcome"] == "duplicate"
    row = ProcessedUpdate.objects.get(update_id=43)
    assert (row.outcome, row.payload, row.note) == ("malformed", None,
                                                   "nested deeper than 64 levels")


@pytest.mark.parametrize("date", [10**15, 2**62, 253402300800])
def test_a_message_date_past_any_calendar_is_stored_at_the_time_it_was_heard(date: int,
                                                                             caplog) -> None:
    # Found by make fuzz-doors: datetime.fromtimestamp raised OSError or OverflowError, the
    # chunk failed, was redone one update at a time, and the message was lost as failed.
    bot = hooked_bot()
    body = json.dumps(update(44, message=text_message(1, -5, "when?", date=date))).encode()
    assert post(bot.id, body)["outcome"] == "accepted"
    assert process_pending() == {"stored": 1}
    assert ChatMessage.objects.get().sent_at.year == timezone.now().year
    assert "ERROR" not in caplog.text


# The poll's deafness was a PostgreSQL DataError: its tests run in both passes of make test.
@ON_BOTH_DATABASES
def test_a_poisoned_update_never_stops_the_poll_and_the_next_message_arrives_at_once(
        telegram_env, database: str) -> None:
    alpha = make_intake_bot()
    poisoned = {"message_id": 1, "date": 1, "chat": {"id": -100950, "type": "group"},
                "from": {"id": 1, "is_bot": False, "first_name": "P\ud800"}, "text": "a\u0000b"}
    # Sent as escapes (a lone surrogate cannot be encoded as UTF-8), as Telegram sends them.
    httpx.post(f"{telegram_env.base_url}/_inject", headers={"content-type": "application/json"},
               content=json.dumps({"chat_id": -100950, "text": "", "raw": {"message": poisoned},
                                   "tokens": [alpha.telegram_token]}),
               timeout=10).raise_for_status()
    say(telegram_env, -100950, "a normal message", [alpha])
    assert poll_once() == {"stored": 2}
    assert Bot.objects.get(id=alpha.id).update_offset == 3
    assert sorted(ChatMessage.objects.values_list("text", flat=True)) == [
        "a normal message", "a\ufffdb"]
    assert ProcessedUpdate.objects.get(bot=alpha, update_id=1).note.startswith("2 strings")


@ON_BOTH_DATABASES
def test_the_poller_moves_past_an_update_it_kept_as_failed(telegram_env, monkeypatch,
                                                           database: str) -> None:
    alpha = make_intake_bot()
    real = updates._insert
    monkeypatch.setattr(updates, "_insert", lambda b, u, payload, o, n: (
        (_ for _ in ()).throw(DataError("refused")) if payload and u == 1
        else real(b, u, payload, o, n)))
    say(telegram_env, -100951, "refused one", [alpha])
    say(telegram_env, -100951, "next one", [alpha])
    assert poll_once() == {"failed": 1, "stored": 1}
    assert Bot.objects.get(id=alpha.id).update_offset == 3
    assert ChatMessage.objects.get().text == "next one"


@ON_BOTH_DATABASES
@pytest.mark.parametrize(("poison", "reason"), [
    ('{"message": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deep to parse"),
    ('{"message": {"message_id": 1, "date": ' + "9" * 5000 + "}}", "not valid JSON"),
], ids=["nested-5000", "digits-5000"])
def test_an_update_no_parser_reads_is_skipped_and_the_next_is_stored_in_one_round(
        telegram_env, poison: str, reason: str, database: str) -> None:
    # json.loads on the whole getUpdates body failed for one such update: the batch was
    # fetch_failed, the offset stayed, and the bot heard nothing after it.
    alpha = make_intake_bot()
    say(telegram_env, -100952, "", [alpha], raw_text=poison)
    say(telegram_env, -100952, "heard after it", [alpha])
    assert poll_once() == {"malformed": 1, "stored": 1}
    assert Bot.objects.get(id=alpha.id).update_offset == 3
    assert ChatMessage.objects.get().text == "heard after it"
    row = ProcessedUpdate.objects.get(bot=alpha, update_id=1)
    assert (row.outcome, row.payload) == ("malformed", None) and reason in row.note
    assert poll_once() == {}  # confirmed: it does not come again


def test_parse_names_the_limit_it_refuses() -> None:
    with pytest.raises(JsonRefused, match="longer than 10 bytes"):
        parse(b"[" * 11, max_bytes=10, max_depth=5)
    with pytest.raises(JsonRefused, match="nested deeper than 5 levels"):
        parse("[[[[[[1]]]]]]", max_bytes=100, max_depth=5)
    assert parse("[[[[[1]]]]]", max_bytes=100, max_depth=5) == [[[[[1]]]]]
    with pytest.raises(JsonRefused, match="not valid JSON"):
        parse(b"\xff", max_bytes=100, max_depth=5)


def test_storable_json_leaves_clean_values_alone_and_counts_what_it_replaced() -> None:
    clean = {"text": "line\nnext\ttab 👨‍👩‍👧", "n": [1, 2.5, None, True]}
    assert storable_json(clean) == (clean, 0) and storable_json(clean)[0] is clean
    assert storable_json({"a\x00": ["\ud83d", "ok", "\x07"]}) == (
        {"a\ufffd": ["\ufffd", "ok", "\ufffd"]}, 3)
    # json.dumps writes these two short (\b, \f), not as \u00XX: cleaned all the same.
    assert storable_json(["x\x08y", "\x0c"]) == (["x\ufffdy", "\ufffd"], 2)
    assert storable_json(["C:\\bin"]) == (["C:\\bin"], 0)


@pytest.mark.parametrize("bot_id", [2**63 - 1, 2**63, 10**30])
def test_a_webhook_for_a_bot_id_past_the_id_range_is_404_not_a_500(bot_id: int) -> None:
    # SQLite raised OverflowError (a 500) binding an id of 2**63 or more; PostgreSQL said 404.
    response = Client().post(reverse("intake:webhook", args=[bot_id]), data=NUL_UPDATE,
                             content_type="application/json",
                             HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN=SECRET)
    assert response.status_code == 404 and response.json()["error"] == "unknown bot"


def test_top_level_slices_a_document_without_parsing_it() -> None:
    deep = "[" * 5000 + "]" * 5000
    assert top_level('{"ok": true, "result": [1, {"a": "]\\"[{"}, ' + deep + "]}") == [
        '"ok"', "true", '"result"', '[1, {"a": "]\\"[{"}, ' + deep + "]"]
    assert top_level(" [ ] ") == [] and top_level("{}") == [] and top_level("[ 7 ]") == ["7"]
    for broken in ("", "7", '"x"', "[1, 2", "[1]]", "[1] x"):
        with pytest.raises(JsonRefused):
            top_level(broken)
