from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from batchgen.models import QueueItem
from batchgen.work import queue
from tests.factories import make_bot, make_chat, make_item, make_run

pytestmark = pytest.mark.django_db


def test_it_claims_highest_priority_first_then_oldest() -> None:
    bot = make_bot()
    low = make_item(bot, make_chat(), priority=0)
    high_old = make_item(bot, make_chat(), priority=5)
    high_new = make_item(bot, make_chat(), priority=5)
    mid = make_item(bot, make_chat(), priority=3)
    claimed = queue.claim(3, make_run())
    assert [i.id for i in claimed] == [high_old.id, high_new.id, mid.id]
    low.refresh_from_db()
    assert low.status == "pending"


def test_a_claimed_item_is_not_claimed_again() -> None:
    make_item()
    first, second = make_run(), make_run()
    assert len(queue.claim(5, first)) == 1
    assert queue.claim(5, second) == []
    item = QueueItem.objects.get()
    assert (item.status, item.batch_run_id, item.attempts) == ("claimed", first.id, 0)
    assert item.lease_expires_at > timezone.now()


def test_backed_off_items_wait_for_their_time() -> None:
    item = make_item(available_at=timezone.now() + timedelta(minutes=5))
    assert queue.claim(1, make_run()) == []
    later = timezone.now() + timedelta(minutes=6)
    assert [i.id for i in queue.claim(1, make_run(), now=later)] == [item.id]


def test_expired_leases_return_to_the_queue() -> None:
    make_item()
    run = make_run()
    queue.claim(1, run, lease_seconds=30)
    assert queue.recover_expired(now=timezone.now() + timedelta(seconds=10)) == 0
    assert queue.recover_expired(now=timezone.now() + timedelta(seconds=31)) == 1
    item = QueueItem.objects.get()
    assert item.status == "pending" and "lease expired" in item.last_error


def test_a_batch_that_lost_its_lease_cannot_finish_the_item() -> None:
    make_item()
    old_run, new_run = make_run(), make_run()
    [stale] = queue.claim(1, old_run, lease_seconds=10)
    queue.recover_expired(now=timezone.now() + timedelta(seconds=11))
    queue.claim(1, new_run)
    assert queue.finish(stale) is False
    assert QueueItem.objects.get().batch_run_id == new_run.id


def test_failures_back_off_then_die_with_the_reason(settings) -> None:
    settings.BATCH_RETRY_BACKOFF_SECONDS = 10
    make_item(max_attempts=2)
    now = timezone.now()
    [item] = queue.claim(1, make_run(), now=now)
    assert queue.retry_later(item, "server_error: 503", now=now) == "pending"
    item.refresh_from_db()
    assert item.available_at == now + timedelta(seconds=10)
    [item] = queue.claim(1, make_run(), now=now + timedelta(seconds=11))
    assert queue.retry_later(item, "server_error: 503", now=now) == "dead"
    item.refresh_from_db()
    assert item.status == "dead"
    assert item.last_error == "gave up after 2 attempts: server_error: 503"


def test_deferring_does_not_spend_an_attempt() -> None:
    make_item(max_attempts=1)
    [item] = queue.claim(1, make_run())
    queue.defer(item, "circuit_open", 0)
    item.refresh_from_db()
    assert (item.status, item.attempts) == ("pending", 0)


def test_lease_expiries_count_crashes_not_attempts(settings) -> None:
    settings.BATCH_MAX_CRASHES = 5
    make_item(max_attempts=2)
    now = timezone.now()
    for _ in range(3):
        queue.claim(1, make_run(), lease_seconds=10, now=now)
        now += timedelta(seconds=11)
        assert queue.recover_expired(now=now) == 1
    item = QueueItem.objects.get()
    assert (item.status, item.attempts, item.crashes) == ("pending", 0, 3)
    # One real failure after three expiries is the first attempt, not the last.
    [item] = queue.claim(1, make_run(), now=now)
    assert queue.retry_later(item, "server_error: 500", now=now) == "pending"


def test_an_item_that_keeps_crashing_its_worker_ends_dead(settings) -> None:
    settings.BATCH_MAX_CRASHES = 2
    make_item()
    now = timezone.now()
    for _ in range(2):
        queue.claim(1, make_run(), lease_seconds=10, now=now)
        now += timedelta(seconds=11)
        queue.recover_expired(now=now)
    item = QueueItem.objects.get()
    assert (item.status, item.crashes, item.attempts) == ("dead", 2, 0)
    assert item.last_error == "crashed the worker 2 times"
    assert queue.claim(1, make_run(), now=now + timedelta(hours=1)) == []


def test_a_heartbeat_keeps_a_long_run_s_items_from_recovery() -> None:
    make_item()
    run = make_run()
    now = timezone.now()
    queue.claim(1, run, lease_seconds=30, now=now)
    for _ in range(10):  # five minutes of a run renewing every 25 s
        now += timedelta(seconds=25)
        assert queue.renew(run, lease_seconds=30, now=now) == 1
        assert queue.recover_expired(now=now + timedelta(seconds=1)) == 0
    assert QueueItem.objects.get().status == "claimed"


def test_a_released_run_gives_its_items_back_without_an_attempt() -> None:
    make_item()
    run = make_run()
    queue.claim(1, run)
    assert queue.release(run, "could not enqueue: ConnectionError") == 1
    item = QueueItem.objects.get()
    assert (item.status, item.attempts, item.lease_expires_at) == ("pending", 0, None)
    assert queue.claim(1, make_run())


def test_a_wait_beyond_the_ceiling_ends_the_item_dead_with_the_reason(settings) -> None:
    settings.BATCH_MAX_DEFER_SECONDS = 3600
    make_item()
    [item] = queue.claim(1, make_run())
    now = timezone.now()
    assert queue.defer(item, "telegram: Too Many Requests", 3000, now=now) == "pending"
    item.refresh_from_db()
    assert item.available_at == now + timedelta(seconds=3000)
    [item] = queue.claim(1, make_run(), now=now + timedelta(seconds=3001))
    assert queue.defer(item, "telegram: Too Many Requests", 7200) == "dead"
    item.refresh_from_db()
    assert item.status == "dead" and "more than BATCH_MAX_DEFER_SECONDS (3600s)" in item.last_error


def test_pop_highest_priority_returns_one_item_or_none() -> None:
    best = make_item(priority=9)
    make_item(priority=1)
    assert queue.pop_highest_priority(make_run()).id == best.id
    make_run()
    assert queue.depth_by_status() == {"pending": 1, "claimed": 1, "done": 0, "dead": 0,
                                       "batched": 0}


def test_a_claim_takes_one_item_per_bot_and_chat_and_reserves_its_next_slot(settings) -> None:
    settings.DELIVERY_CLAIM_HORIZON_SECONDS = 2.0
    bot, other = make_bot(), make_bot()
    group = make_chat(telegram_chat_id=-100500)
    first, second = make_item(bot, group), make_item(bot, group)
    theirs = make_item(other, group)  # another bot: a budget of its own
    now = timezone.now()

    claimed = queue.claim(10, make_run(), now=now)

    assert sorted(i.id for i in claimed) == sorted([first.id, theirs.id])
    # The bot's next post in the group is 3 s away (20 a minute): beyond the horizon.
    assert queue.claim(10, make_run(), now=now + timedelta(seconds=0.5)) == []
    assert not queue.has_claimable(now=now + timedelta(seconds=0.5))
    assert queue.next_slot(now=now) == now + timedelta(seconds=1.0)
    # Once the slot is within the horizon, the second item is claimed.
    later = queue.claim(10, make_run(), now=now + timedelta(seconds=1.0))
    assert [i.id for i in later] == [second.id]


def test_a_private_chat_takes_a_reply_a_second(settings) -> None:
    settings.DELIVERY_CLAIM_HORIZON_SECONDS = 3.0
    bot, chat = make_bot(), make_chat(telegram_chat_id=4242)
    items = [make_item(bot, chat) for _ in range(3)]
    now = timezone.now()
    taken = [queue.claim(10, make_run(), now=now + timedelta(seconds=s)) for s in (0, 0, 0)]
    # 1 s apart: with a 3 s horizon the first claims take what the next 3 s can post, one
    # per call; the 4th second's slot waits.
    assert [len(t) for t in taken] == [1, 1, 1]
    assert sorted(i.id for t in taken for i in t) == sorted(i.id for i in items)


def test_a_claim_moves_a_slot_from_now_or_from_where_it_was(settings) -> None:
    _a_claim_moves_a_slot(settings)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_claim_moves_a_slot_the_same_way_on_postgresql(settings) -> None:
    _a_claim_moves_a_slot(settings)  # its own upsert, one statement
    test_a_claim_takes_one_item_per_bot_and_chat_and_reserves_its_next_slot(settings)
    test_a_private_chat_takes_a_reply_a_second(settings)


def _a_claim_moves_a_slot(settings) -> None:
    from batchgen.models import PostingSlot

    settings.DELIVERY_CLAIM_HORIZON_SECONDS = 2.0
    bot, group, private = make_bot(), make_chat(telegram_chat_id=-100777), make_chat(4343)
    now = timezone.now()
    make_item(bot, group), make_item(bot, private)
    assert len(queue.claim(10, make_run(), now=now)) == 2
    slots = {s.chat_id: s.next_at for s in PostingSlot.objects.filter(bot=bot)}
    assert slots == {group.id: now + timedelta(seconds=3), private.id: now + timedelta(seconds=1)}
    # Left in the past, a slot moves on from now; still ahead, from where it was.
    PostingSlot.objects.filter(chat=group).update(next_at=now - timedelta(minutes=5))
    PostingSlot.objects.filter(chat=private).update(next_at=now + timedelta(seconds=1.5))
    make_item(bot, group), make_item(bot, private)
    assert len(queue.claim(10, make_run(), now=now)) == 2
    slots = {s.chat_id: s.next_at for s in PostingSlot.objects.filter(bot=bot)}
    assert slots == {group.id: now + timedelta(seconds=3),
                     private.id: now + timedelta(seconds=2.5)}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_backlog_pushed_at_once_gets_fresh_statistics_so_claims_read_it_in_order() -> None:
    from django.db import connection

    bot = make_bot()
    chats = [make_chat() for _ in range(3)]
    QueueItem.objects.bulk_create(QueueItem(bot=bot, chat=chats[n % 3]) for n in range(1500))
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")  # counted as this one ends

    assert queue.refresh_statistics()  # 1,500 rows new since the last ANALYZE
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE relname = %s",
                       [QueueItem._meta.db_table])
        assert cursor.fetchone()[0] >= 1500  # what the planner now believes
    assert not queue.refresh_statistics()  # nothing changed since: no second ANALYZE


def test_sqlite_has_no_statistics_to_refresh() -> None:
    make_item()
    assert queue.refresh_statistics() is False


def test_nudges_wake_a_tick_loop_once_and_each_costs_one_redis_command() -> None:
    # The webhook nudges on every accepted update: it was a MULTI of three commands, more
    # CPU than the rest of the request's Redis and SQL work together.
    import threading

    import redis

    from batchgen.state import shared

    shared.connection().delete(queue.NUDGE)
    queue.nudge()  # the script is loaded on the server by the first one
    commands = 0
    send = redis.connection.Connection.send_packed_command

    def count(self, packed, check_health=True):
        nonlocal commands
        commands += _resp_commands(b"".join(packed) if isinstance(packed, list) else packed)
        send(self, packed, check_health)

    redis.connection.Connection.send_packed_command = count
    try:
        for _ in range(3):
            queue.nudge()
    finally:
        redis.connection.Connection.send_packed_command = send
    assert commands == 3  # one each (it was MULTI, three commands and EXEC: five)
    assert shared.connection().llen(queue.NUDGE) == 1  # any number of pushes wake once
    assert 0 < shared.connection().ttl(queue.NUDGE) <= 3600
    stop = threading.Event()
    assert queue.wait_for_nudge(0.5, stop) is True
    assert queue.wait_for_nudge(0.2, stop) is False


def _resp_commands(data: bytes) -> int:
    """How many commands a packed RESP request holds (arrays of bulk strings)."""
    found, at = 0, 0
    while at < len(data):
        end = data.index(b"\r\n", at)
        items, at = int(data[at + 1:end]), end + 2
        for _ in range(items):
            end = data.index(b"\r\n", at)
            at = end + 2 + int(data[at + 1:end]) + 2
        found += 1
    return found
