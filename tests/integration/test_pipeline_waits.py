"""The batch pipeline in-process (`tick --sync`) where it waits real seconds: Telegram's pacing
and 429s, a slot of the next run, replies that finish over half a second."""

from __future__ import annotations

import pytest

from batchgen.delivery import scheduler
from batchgen.models import QueueItem
from tests.factories import make_bot, make_chat, make_item, set_batch_mode

# Transactional: replies go out on commit (outbox), as in production.
pytestmark = pytest.mark.django_db(transaction=True)


def make_items(count: int, **fields) -> list[QueueItem]:
    return [make_item(make_bot(), make_chat(), **fields) for _ in range(count)]


def test_transient_provider_faults_are_retried_with_back_off_then_dead(pipeline_env,
                                                                       settings) -> None:
    settings.BATCH_RETRY_BACKOFF_SECONDS = 0
    bot, chat = make_bot(persona="[[fault:503]]"), make_chat()
    item = make_item(bot, chat, max_attempts=2)
    ok = make_item(make_bot(), make_chat())
    set_batch_mode(5)
    first = scheduler.tick(sync=True).run
    item.refresh_from_db()
    assert (first.status, first.successes, first.failures) == ("partial", 1, 1)
    assert first.error_summary == {"server_error": 1}
    assert (item.status, item.attempts) == ("pending", 1)
    assert first.size == 2  # a run never claims an item twice, even with no back-off
    scheduler.tick(sync=True)
    item.refresh_from_db()
    ok.refresh_from_db()
    assert item.status == "dead" and item.last_error.startswith("gave up after 2 attempts")
    assert "server_error" in item.last_error
    assert ok.status == "done"


def test_telegram_429_is_obeyed_and_the_message_still_goes_once(pipeline_env) -> None:
    _, fake_telegram = pipeline_env
    item = make_item()
    fake_telegram.control(fault="429", count=1, retry_after=1)
    run = scheduler.tick(sync=True).run
    assert run.successes == 1
    stats = fake_telegram.stats()
    assert stats["responses"] == {"429": 1, "200": 1}
    assert [m["chat_id"] for m in fake_telegram.messages()] == [item.chat.telegram_chat_id]


def test_several_bots_reply_in_one_chat_in_one_batch(pipeline_env) -> None:
    _, fake_telegram = pipeline_env
    chat = make_chat(-100200300)
    bots = [make_bot() for _ in range(3)]
    fake_telegram.control(chat_limit_per_second=1)
    run = scheduler.generate_for_multiple_bots([b.id for b in bots], chat.id, sync=True)
    assert (run.mode, run.size, run.successes) == ("multi_bot", 3, 3)
    delivered = fake_telegram.messages()
    assert sorted(m["token"] for m in delivered) == sorted(b.telegram_token for b in bots)
    assert {m["chat_id"] for m in delivered} == {-100200300}
    assert fake_telegram.stats()["max_per_chat_per_second"] == 1


def test_a_group_that_became_a_supergroup_gets_the_message_at_its_new_id_once(
        pipeline_env) -> None:
    _, fake_telegram = pipeline_env
    item = make_item()
    fake_telegram.control(fault="migrate", count=1, migrate_to_chat_id=-100777)

    scheduler.tick(sync=True)  # 400 migrate_to_chat_id: the chat moves, the text waits
    scheduler.tick(sync=True)  # the saved text goes to the supergroup

    item.refresh_from_db()
    item.chat.refresh_from_db()
    assert item.status == "done" and item.attempts == 1  # one generation; the move spent none
    assert item.chat.telegram_chat_id == -100777
    assert [m["chat_id"] for m in fake_telegram.messages()] == [-100777]


def test_a_run_that_found_the_queue_dry_does_not_ask_again_on_every_reply(
        pipeline_env, monkeypatch) -> None:
    # Each empty claim is a query on the loop's thread; one per finished reply delayed
    # saving a run's last replies (drain.DRY_RECHECK_S).
    from batchgen.work import queue

    fake_llm, _ = pipeline_env
    fake_llm.control(latency=0.05, jitter=0.6)  # the replies finish one by one over 0.6 s
    make_items(20)
    set_batch_mode(20)
    claims = []
    real_claim = queue.claim
    monkeypatch.setattr(queue, "claim", lambda *a, **kw: claims.append(1) or real_claim(*a, **kw))
    run = scheduler.tick(sync=True).run
    assert run.size == 20 and run.successes == 20
    # The first claim, then at most one dry one per 0.25 s: 6 or 7 here, 13 when every
    # wake-up asked.
    assert len(claims) <= 20 // 2
