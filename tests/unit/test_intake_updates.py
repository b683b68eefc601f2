"""The webhook keeps raw updates (secrets, dedup) and the one processor handles them (bad
input, discovery), as tick runs it."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter

import pytest
from django.test import Client
from django.urls import reverse

from batchgen.conversations.updates import process_pending
from batchgen.models import Bot, Chat
from batchgen.models.conversations import ChatMessage, Membership, ProcessedUpdate
from batchgen.models.secrets import webhook_digest
from tests.concurrency import at_once
from tests.intake_support import make_intake_bot, text_message, update

pytestmark = pytest.mark.django_db

SECRET = "s3cret-webhook-token"


def hooked_bot(**fields) -> Bot:
    return make_intake_bot(webhook_secret=webhook_digest(SECRET), **fields)


def post(bot_id: int, body: object, secret: str | None = SECRET, raw: bytes | None = None):
    headers = {} if secret is None else {"HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN": secret}
    data = raw if raw is not None else json.dumps(body)
    return Client().post(reverse("intake:webhook", args=[bot_id]), data=data,
                         content_type="application/json", **headers)


def test_a_webhook_message_is_stored_with_its_chat_discovered() -> None:
    bot = hooked_bot()
    response = post(bot.id, update(1, message=text_message(10, -100123, "hello there")))
    assert response.status_code == 200 and response.json()["outcome"] == "accepted"
    assert process_pending() == {"stored": 1}
    chat = Chat.objects.get(telegram_chat_id=-100123)
    assert (chat.title, chat.chat_type) == ("Lounge", "group")
    [heard] = ChatMessage.objects.all()
    assert (heard.speaker, heard.text, heard.from_human) == ("Alice", "hello there", True)
    assert Membership.objects.filter(bot=bot, chat=chat, is_active=True).exists()


@pytest.mark.parametrize("secret", [None, "", "wrong", SECRET + "x"])
def test_a_wrong_or_missing_secret_gets_403_and_stores_nothing(secret, caplog) -> None:
    bot = hooked_bot()
    response = post(bot.id, update(1, message=text_message(10, -100123, "hi")), secret=secret)
    assert response.status_code == 403
    assert not ChatMessage.objects.exists() and not Chat.objects.exists()
    assert not ProcessedUpdate.objects.exists()
    assert "wrong or missing secret" in caplog.text


def test_a_bot_without_a_webhook_secret_refuses_every_webhook_post() -> None:
    bot = make_intake_bot()
    assert post(bot.id, update(1, message=text_message(10, -1, "hi")), secret="").status_code \
        == 403


def test_an_unknown_bot_gets_404_and_stores_nothing(caplog) -> None:
    response = post(999_999, update(1, message=text_message(10, -100123, "hi")))
    assert response.status_code == 404
    assert not ChatMessage.objects.exists() and "unknown or inactive bot" in caplog.text
    assert not ProcessedUpdate.objects.exists()


def test_the_same_update_delivered_twice_is_stored_once() -> None:
    bot = hooked_bot()
    body = update(7, message=text_message(10, -100123, "only once"))
    assert post(bot.id, body).json()["outcome"] == "accepted"
    assert post(bot.id, body).json()["outcome"] == "duplicate"
    assert process_pending() == {"stored": 1}
    assert post(bot.id, body).json()["outcome"] == "duplicate"  # after processing too
    assert process_pending() == {}
    assert ChatMessage.objects.count() == 1 and ProcessedUpdate.objects.count() == 1


def test_one_group_message_reaching_two_bots_is_stored_once() -> None:
    first, second = hooked_bot(), hooked_bot()
    message = text_message(10, -100123, "hello both")
    post(first.id, update(1, message=message))
    post(second.id, update(1, message=message))  # each bot numbers its own updates
    assert process_pending() == {"stored": 2}
    assert ChatMessage.objects.count() == 1
    assert Membership.objects.filter(chat__telegram_chat_id=-100123).count() == 2


# No integer update_id: nothing to deduplicate on, so the webhook keeps nothing.
UNKEPT_UPDATES = {
    "not an object": ["a", "list"],
    "no update_id": {"message": text_message(1, -5, "x")},
    "update_id a string": {"update_id": "3", "message": text_message(1, -5, "x")},
    "update_id beyond 64 bits": {"update_id": 2**63, "message": text_message(1, -5, "x")},
}


@pytest.mark.parametrize("case", UNKEPT_UPDATES)
def test_an_update_without_an_update_id_is_answered_malformed_and_kept_nowhere(case,
                                                                            caplog) -> None:
    bot = hooked_bot()
    response = post(bot.id, UNKEPT_UPDATES[case])
    assert response.status_code == 200  # any other answer makes Telegram redeliver it
    assert response.json()["outcome"] == "malformed"
    assert not ProcessedUpdate.objects.exists() and "malformed update" in caplog.text


BAD_UPDATES = {
    "message not an object": (update(3, message="hello"), "malformed"),
    "chat missing": (update(3, message={"message_id": 1, "text": "x", "from": {"id": 1}}),
                     "malformed"),
    "chat id a string": (update(3, message={**text_message(1, -5, "x"),
                                            "chat": {"id": "-5", "type": "group"}}),
                         "malformed"),
    "member change without a status": (update(3, my_chat_member={
        "chat": {"id": -5, "type": "group"}, "new_chat_member": {}}), "malformed"),
    "edited message": (update(3, edited_message=text_message(1, -5, "changed")),
                       "skipped:edited_message"),
    "photo": (update(3, message={**text_message(1, -5, ""), "photo": [{"file_id": "f"}]}),
              "skipped:not text"),
    "sticker": (update(3, message={k: v for k, v in {
        **text_message(1, -5, ""), "sticker": {"file_id": "s"}}.items() if k != "text"}),
                "skipped:not text"),
    "service message": (update(3, message={k: v for k, v in {
        **text_message(1, -5, ""), "new_chat_members": [{"id": 9}]}.items() if k != "text"}),
                        "skipped:not text"),
    "huge message": (update(3, message=text_message(1, -5, "x" * 4097)),
                     "skipped:text over 4096 characters"),
    "unknown kind": (update(3, poll={"id": "1"}), "skipped:unknown kind"),
}


@pytest.mark.parametrize("case", BAD_UPDATES)
def test_bad_input_is_skipped_with_a_logged_reason_and_stores_no_message(case, caplog) -> None:
    caplog.set_level(logging.INFO, logger="batchgen")
    bot = hooked_bot()
    body, outcome = BAD_UPDATES[case]
    response = post(bot.id, body)
    assert response.status_code == 200  # any other answer makes Telegram redeliver it
    assert response.json()["outcome"] == "accepted"
    assert process_pending() == {outcome: 1}
    assert ProcessedUpdate.objects.get().outcome == outcome
    assert not ChatMessage.objects.exists() and not Chat.objects.exists()
    assert outcome.split(":")[-1] in caplog.text or "malformed update" in caplog.text


def test_a_body_that_is_not_json_is_skipped_not_an_error() -> None:
    bot = hooked_bot()
    response = post(bot.id, None, raw=b"{not json")
    assert response.status_code == 200 and response.json()["outcome"] == "malformed"
    assert not ProcessedUpdate.objects.exists()


def test_a_redelivered_malformed_update_is_skipped_as_a_duplicate() -> None:
    bot = hooked_bot()
    body = update(4, message="not an object")
    assert post(bot.id, body).json()["outcome"] == "accepted"
    assert process_pending() == {"malformed": 1}
    assert post(bot.id, body).json()["outcome"] == "duplicate"
    assert process_pending() == {}


def test_unstorable_text_is_replaced_before_it_reaches_the_database() -> None:
    bot = hooked_bot()
    post(bot.id, update(1, message=text_message(10, -100123, "nul\x00here")))
    process_pending()
    assert ChatMessage.objects.get().text == "nul\ufffdhere"


def test_messages_from_the_platforms_own_bots_are_not_stored_twice() -> None:
    bot, other = hooked_bot(), make_intake_bot()
    message = text_message(10, -100123, "I said this", sender_id=other.telegram_id,
                           is_bot=True)
    post(bot.id, update(1, message=message))
    assert process_pending() == {"skipped:own bot": 1}


def test_a_mention_or_a_reply_marks_the_bot_it_addresses() -> None:
    bot, named = hooked_bot(), make_intake_bot()
    post(bot.id, update(1, message=text_message(10, -7, f"hey @{named.username}, you there?")))
    reply = text_message(11, -7, "yes you", reply_to_message={
        "message_id": 3, "from": {"id": bot.telegram_id, "is_bot": True}})
    post(bot.id, update(2, message=reply))
    post(bot.id, update(3, message=text_message(12, -7, "@nobody_bot hi")))
    assert process_pending() == {"stored": 3}
    addressed = dict(ChatMessage.objects.values_list("telegram_message_id", "addressed_bot"))
    assert addressed == {10: named.id, 11: bot.id, 12: None}


def test_being_added_creates_the_chat_and_being_removed_deactivates_it() -> None:
    bot = hooked_bot()
    change = {"chat": {"id": -100555, "type": "supergroup", "title": "Book club"},
              "new_chat_member": {"status": "member"}}
    post(bot.id, update(1, my_chat_member=change))
    process_pending()
    chat = Chat.objects.get(telegram_chat_id=-100555)
    assert (chat.title, chat.chat_type, chat.is_active) == ("Book club", "supergroup", True)
    post(bot.id, update(2, my_chat_member={**change, "new_chat_member": {"status": "kicked"}}))
    process_pending()
    membership = Membership.objects.get(bot=bot, chat=chat)
    assert not membership.is_active and membership.left_reason == "kicked or blocked"
    assert not Chat.objects.get(id=chat.id).is_active


def test_the_webhook_acknowledges_with_one_insert_and_processes_nothing_inline() -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    bot = hooked_bot()
    with CaptureQueriesContext(connection) as queries:
        response = post(bot.id, update(1, message=text_message(10, -100123, "quick")))
    assert response.status_code == 200 and response.json()["outcome"] == "accepted"
    # The bot and its secret, then the raw update: no transaction, no chat, no message yet.
    # (Inside the test's transaction the insert has a savepoint, so that a refused update
    # can still be kept as failed; the webhook runs in autocommit and makes none.)
    assert [q["sql"].split()[0] for q in queries.captured_queries
            if "SAVEPOINT" not in q["sql"]] == ["SELECT", "INSERT"]
    assert not ChatMessage.objects.exists() and not Chat.objects.exists()
    assert ProcessedUpdate.objects.get().pending
    assert process_pending() == {"stored": 1}
    assert ChatMessage.objects.get().text == "quick"
    assert not ProcessedUpdate.objects.get().pending
    assert process_pending() == {}  # processed once: nothing left for the next tick


def test_pending_updates_are_processed_in_update_id_order() -> None:
    bot = hooked_bot()
    change = {"chat": {"id": -100123, "type": "group", "title": "Lounge"},
              "new_chat_member": {"status": "member"}}
    # Delivered out of order (two webhook connections): removed (2) arrives before added (1).
    post(bot.id, update(2, my_chat_member={**change, "new_chat_member": {"status": "left"}}))
    post(bot.id, update(1, my_chat_member=change))
    assert process_pending() == {"stored": 2}
    assert not Membership.objects.get(chat__telegram_chat_id=-100123).is_active


def test_pending_messages_are_processed_in_bulk_not_a_few_queries_each() -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    bot = hooked_bot()
    for n in range(1, 5):  # the chats become known
        post(bot.id, update(n, message=text_message(n, -100200 - n % 4, f"message {n}")))
    process_pending()
    for n in range(5, 85):
        post(bot.id, update(n, message=text_message(n, -100200 - n % 4, f"message {n}")))
    with CaptureQueriesContext(connection) as queries:
        assert process_pending() == {"stored": 80}
    assert ChatMessage.objects.count() == 84
    # Per chunk: each chat looked up once, the messages in one insert, the marks in one
    # update (inline it was five statements per update).
    assert len(queries.captured_queries) < 80 / 4


def test_an_update_the_handler_fails_on_is_marked_failed_and_the_others_are_stored(
        monkeypatch, caplog) -> None:
    from batchgen.conversations import updates as handler

    real = handler._speaker

    def breaks_on_bob(sender: dict) -> str:
        if sender.get("first_name") == "Bob":
            raise RuntimeError("a bug the handler did not expect")
        return real(sender)

    monkeypatch.setattr(handler, "_speaker", breaks_on_bob)
    bot = hooked_bot()
    for n, name in enumerate(["Alice", "Bob", "Carol"], start=1):
        post(bot.id, update(n, message=text_message(n, -100123, "hi", first_name=name)))
    assert process_pending() == {"stored": 2, "failed": 1}
    assert sorted(ChatMessage.objects.values_list("speaker", flat=True)) == ["Alice", "Carol"]
    assert ProcessedUpdate.objects.get(update_id=2).outcome == "failed"
    assert "update 2 failed in the handler" in caplog.text
    assert process_pending() == {}  # not retried forever
    # What was stored keeps only its dedup row; the failed update keeps its raw payload for
    # an operator to look at.
    payloads = dict(ProcessedUpdate.objects.values_list("update_id", "payload"))
    assert payloads[1] is None and payloads[3] is None
    assert payloads[2]["message"]["from"]["first_name"] == "Bob"


def test_a_tick_processes_pending_updates_before_the_producer_looks(pipeline_env) -> None:
    from batchgen.delivery import scheduler

    bot = hooked_bot()
    now = int(time.time())  # the producer answers messages of the last hour only
    post(bot.id, update(1, message=text_message(10, -100123, "anyone around?", date=now)))
    summary = scheduler.tick()
    assert (summary.processed, summary.produced) == (1, 1)  # the reply is queued this tick
    assert "1 updates processed" in summary.line()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_processors_process_each_update_exactly_once() -> None:
    first, second = hooked_bot(), hooked_bot()
    for n in range(1, 201):
        message = text_message(n, -100300 - n % 7, f"message {n}")
        assert post(first.id, update(n, message=message)).json()["outcome"] == "accepted"
        post(second.id, update(n, message=message))  # one group message reaches both bots
    redelivered = update(5, message=text_message(5, -100305, "message 5"))
    assert post(first.id, redelivered).json()["outcome"] == "duplicate"

    results = at_once(lambda: process_pending(chunk=25), 4)  # as four tick processes would
    assert sum(results, Counter()) == {"stored": 400}  # no update counted by two processors
    assert ChatMessage.objects.count() == 200 and Chat.objects.count() == 7
    assert Membership.objects.count() == 14
    assert not ProcessedUpdate.objects.filter(pending=True).exists()


def test_processing_stops_at_its_time_budget_and_the_next_call_goes_on() -> None:
    bot = hooked_bot()
    for n in range(1, 4):
        post(bot.id, update(n, message=text_message(n, -100123, f"message {n}")))
    # Tick gives it a budget, so a steady stream cannot hold back the producer after it.
    assert process_pending(chunk=2, seconds=0) == {"stored": 2}
    assert process_pending(chunk=2, seconds=0) == {"stored": 1}
