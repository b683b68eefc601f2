"""Caps per chat and per bot: what binds is marked, and the platform degrades in order."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from batchgen.delivery import caps
from batchgen.models import Bot, Chat, Generation, Message, QueueItem, Setting
from batchgen.models.conversations import Trigger
from batchgen.work import queue
from tests.factories import make_bot, make_chat, make_item, make_run

pytestmark = pytest.mark.django_db


def sent(bot: Bot, chat: Chat, n: int) -> None:
    for _ in range(n):
        item = make_item(bot, chat, status="done")
        Message.objects.create(queue_item=item, bot=bot, chat=chat, text="x",
                               status="sent", sent_at=timezone.now() - timedelta(minutes=5))


def cadence(bot: Bot, chat: Chat) -> QueueItem:
    item = make_item(bot, chat, deliver_by=timezone.now() + timedelta(hours=1))
    Trigger.objects.create(key=f"cadence:{item.id}", kind="cadence", bot=bot, chat=chat,
                           queue_item=item)
    return item


def test_a_chat_at_its_hourly_message_cap_skips_cadence_and_holds_replies() -> None:
    alpha, beta = make_bot(), make_bot()
    chat = make_chat(max_messages_per_hour=3)
    sent(alpha, chat, 2)
    sent(beta, chat, 1)  # all bots together: 3 in the hour
    reply, post = make_item(alpha, chat), cadence(beta, chat)
    other = make_item(alpha, make_chat())

    summary = caps.apply()

    assert (summary.chats, summary.skipped) == (1, 1)
    chat.refresh_from_db()
    assert chat.cap_reason == "chat cap: 3 bot messages an hour reached"
    post.refresh_from_db()
    reply.refresh_from_db()
    assert (post.status, post.last_error) == ("dead", f"skipped: {chat.cap_reason}")
    assert (reply.status, reply.last_error) == ("pending", f"held: {chat.cap_reason}")
    assert [i.id for i in queue.claim(10, make_run())] == [other.id]  # the reply waits


def test_a_cap_lifts_when_the_window_frees() -> None:
    bot, chat = make_bot(), make_chat(max_messages_per_hour=1)
    sent(bot, chat, 1)
    reply = make_item(bot, chat)
    caps.apply()
    assert queue.claim(5, make_run()) == []

    Message.objects.update(sent_at=timezone.now() - timedelta(hours=2))
    caps.apply()

    chat.refresh_from_db()
    assert chat.cap_reason == ""
    assert [i.id for i in queue.claim(5, make_run())] == [reply.id]


@pytest.mark.parametrize("route", [True, False])
def test_at_80_percent_cadence_waits_for_the_batch_route_if_it_is_on(settings,
                                                                     route: bool) -> None:
    # The first stage of the degrade order: what can wait goes to the provider batch route
    # (half price); replies go on as before, and nothing is marked.
    settings.LLM_PROVIDER = "openai"
    settings.BATCH_ROUTE_MIN_SLACK_SECONDS = 3600
    if route:
        Setting.objects.update_or_create(key="batch_route_providers",
                                         defaults={"value": ["openai"]})
    bot, chat = make_bot(), make_chat(max_messages_per_hour=10)
    sent(bot, chat, 8)
    post = make_item(bot, chat, deliver_by=timezone.now() + timedelta(minutes=5))
    Trigger.objects.create(key=f"cadence:{post.id}", kind="cadence", bot=bot, chat=chat,
                           queue_item=post)
    reply = make_item(bot, chat)

    assert caps.apply() == caps.CapSummary()  # nothing binds yet
    post.refresh_from_db(), chat.refresh_from_db()
    assert post.status == "pending" and chat.cap_reason == ""
    waits_for_route = post.deliver_by >= timezone.now() + timedelta(hours=1)
    assert waits_for_route is route
    hold_after = timezone.now() + timedelta(seconds=3600)
    assert queue.has_for_batch(hold_after) is route
    # One item per bot and chat at a time: the post, unless the route takes it.
    claimed = [i.id for i in queue.claim(5, make_run(), hold_after=hold_after)]
    assert claimed == ([reply.id] if route else [post.id])


def test_at_90_percent_cadence_is_skipped_and_replies_go_on() -> None:
    # The second stage: cadence posts are skipped, with the cap and its use as the reason.
    bot, chat = make_bot(), make_chat(max_messages_per_hour=10)
    sent(bot, chat, 9)
    post, reply = cadence(bot, chat), make_item(bot, chat)

    assert caps.apply() == caps.CapSummary(skipped=1)
    post.refresh_from_db(), chat.refresh_from_db()
    assert (post.status, post.last_error) == (
        "dead", "skipped: chat cap: 10 bot messages an hour: 90% used")
    assert chat.cap_reason == ""
    assert [i.id for i in queue.claim(5, make_run())] == [reply.id]


def test_a_bots_daily_spend_cap_holds_its_work_in_every_chat(settings) -> None:
    settings.LLM_PRICES = {"m": {"input": 1000, "output": 1000}}  # $ per million tokens
    Setting.objects.update_or_create(key="bot_daily_spend_cap_usd", defaults={"value": 0.5})
    spender, thrifty = make_bot(), make_bot()
    chat = make_chat()
    run = make_run()
    Generation.objects.create(batch_run=run, bot=spender, chat=chat, model="m",
                              prompt_tokens=400, completion_tokens=200, ok=True)
    held, free = make_item(spender, make_chat()), make_item(thrifty, chat)

    assert caps.apply().bots == 1
    spender.refresh_from_db()
    assert spender.cap_reason == "bot cap: $0.5 LLM spend a day reached"
    assert [i.id for i in queue.claim(5, make_run())] == [free.id]
    held.refresh_from_db()
    assert held.last_error == f"held: {spender.cap_reason}"
    assert Decimal(str(Setting.load().bot_daily_spend_cap_usd)) == Decimal("0.5")


def test_no_cap_set_costs_no_spend_query(django_assert_max_num_queries) -> None:
    make_item()
    with django_assert_max_num_queries(6):
        assert caps.apply() == caps.CapSummary()


def test_the_dashboard_names_the_cap_that_binds_per_chat() -> None:
    from batchgen.dashboard.binds import what_binds

    bot, chat = make_bot(), make_chat(title="Traders", max_messages_per_hour=1)
    sent(bot, chat, 1)
    caps.apply()

    assert ("Traders", "chat cap: 1 bot messages an hour reached") in what_binds().capped
