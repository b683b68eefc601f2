"""The producer: replies, mentions, cadence, quiet hours, bot-to-bot turns, idempotency."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from batchgen.conversations.behaviour import MENTION_PRIORITY, in_quiet_hours, produce
from batchgen.models import Bot, Chat, Message, QueueItem
from batchgen.models.conversations import ChatMessage, Membership, Trigger
from batchgen.work import queue
from tests.concurrency import at_once
from tests.factories import make_bot, make_chat, make_item, make_run
from tests.intake_support import make_intake_bot

pytestmark = pytest.mark.django_db

_serial = iter(range(1, 10_000_000))


def group(*bots, **fields) -> Chat:
    chat = make_chat(**fields)
    for bot in bots:
        Membership.objects.create(bot=bot, chat=chat)
    return chat


def heard(chat: Chat, text: str = "hi all", *, human: bool = True, addressed=None,
          at: datetime | None = None) -> ChatMessage:
    return ChatMessage.objects.create(
        chat=chat, telegram_message_id=next(_serial), speaker="Alice" if human else "Other",
        from_human=human, addressed_bot=addressed, text=text, sent_at=at or timezone.now())


def sent(bot, chat: Chat, text: str = "bot line", at: datetime | None = None) -> Message:
    item = make_item(bot, chat)
    QueueItem.objects.filter(id=item.id).update(status=QueueItem.Status.DONE)
    return Message.objects.create(queue_item=item, bot=bot, chat=chat, text=text,
                                  status=Message.Status.SENT, sent_at=at or timezone.now())


def pending(chat: Chat | None = None):
    items = QueueItem.objects.filter(status=QueueItem.Status.PENDING)
    return items.filter(chat=chat) if chat else items


def test_a_human_message_queues_a_reply_from_every_member_bot_with_it_in_context() -> None:
    alpha, beta, outsider = make_intake_bot(), make_intake_bot(), make_intake_bot()
    chat = group(alpha, beta)
    heard(chat, "anyone seen the game?")
    assert produce() == 2
    items = list(pending(chat))
    assert {i.bot_id for i in items} == {alpha.id, beta.id} and outsider.id not in items
    assert all(i.recent_messages == ["Alice: anyone seen the game?"] for i in items)


def test_producing_twice_queues_nothing_more() -> None:
    alpha = make_intake_bot()
    chat = group(alpha)
    heard(chat)
    ChatMessage.objects.update(produced=False)
    assert produce() == 1
    ChatMessage.objects.update(produced=False)  # as if a second producer saw it too
    assert produce() == 0 and pending().count() == 1


def test_bots_that_do_not_reply_to_humans_stay_quiet() -> None:
    alpha, beta = make_intake_bot(), make_intake_bot()
    chat = group(alpha, beta)
    Membership.objects.filter(bot=beta).update(replies_to_humans=False)
    heard(chat)
    produce()
    assert [i.bot_id for i in pending(chat)] == [alpha.id]


def test_a_mention_queues_only_that_bot_and_jumps_ahead_of_a_500_item_backlog() -> None:
    alpha, beta = make_intake_bot(), make_intake_bot()
    chat = group(alpha, beta)
    filler_bot, filler_chat = make_bot(), make_chat()
    QueueItem.objects.bulk_create(QueueItem(bot=filler_bot, chat=filler_chat, priority=500)
                                  for _ in range(500))
    heard(chat, f"@{beta.username} what do you think?", addressed=beta)
    assert produce() == 1
    [claimed] = queue.claim(1, make_run())
    assert (claimed.bot_id, claimed.chat_id, claimed.priority) == (beta.id, chat.id,
                                                                   MENTION_PRIORITY)


def test_a_bot_removed_from_a_chat_gets_nothing_more_queued_there() -> None:
    alpha, beta = make_intake_bot(), make_intake_bot()
    chat = group(alpha, beta)
    chat.bot_left(beta, "kicked or blocked")
    heard(chat, f"@{beta.username} hello?", addressed=beta)
    heard(chat, "hello anyone")
    Membership.objects.filter(bot=beta).update(cadence_minutes=1)
    produce()
    assert {i.bot_id for i in pending(chat)} == {alpha.id}


def test_messages_in_a_deactivated_chat_queue_nothing() -> None:
    alpha = make_intake_bot()
    chat = group(alpha)
    chat.bot_left(alpha, "removed from the chat")
    heard(chat)
    assert produce() == 0 and not Chat.objects.get(id=chat.id).is_active


def test_a_cadence_post_comes_once_per_slot_then_after_the_interval_with_jitter() -> None:
    alpha = make_intake_bot()
    chat = group(alpha)
    Membership.objects.filter(bot=alpha).update(cadence_minutes=30, jitter_minutes=5)
    start = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    assert produce(start) == 1
    assert produce(start + timedelta(minutes=1)) == 0
    following = Membership.objects.get(bot=alpha).next_post_at
    assert timedelta(minutes=25) <= following - start <= timedelta(minutes=35)
    assert produce(following) == 1
    assert pending(chat).count() == 2


def test_a_cadence_post_can_wait_until_its_next_slot_and_a_reply_to_a_person_cannot(
        settings) -> None:
    settings.BATCH_ROUTE_CADENCE_DEADLINE_SECONDS = 4 * 3600
    alpha, beta = make_intake_bot(), make_intake_bot()
    group(alpha)
    Membership.objects.filter(bot=alpha).update(cadence_minutes=30)
    start = timezone.now()
    assert produce(start) == 1
    cadence = QueueItem.objects.get(bot=alpha)
    assert cadence.deliver_by == start + timedelta(minutes=30)  # before the next post is due
    chat = group(beta)
    heard(chat, "anyone there?")
    produce()
    assert QueueItem.objects.get(bot=beta).deliver_by is None  # urgent: the sync path


# Quiet 22:00–07:00 in Berlin (UTC+1 in winter): 21:30 UTC is 22:30 there.
@pytest.mark.parametrize(("utc_time", "quiet"), [
    ("20:30", False), ("21:30", True), ("03:00", True), ("05:59", True), ("06:00", False)])
def test_quiet_hours_are_kept_in_the_chats_time_zone(utc_time: str, quiet: bool) -> None:
    alpha = make_intake_bot()
    chat = group(alpha, time_zone="Europe/Berlin", quiet_start=time(22), quiet_end=time(7))
    Membership.objects.filter(bot=alpha).update(cadence_minutes=60)
    hour, minute = map(int, utc_time.split(":"))
    now = datetime(2026, 1, 15, hour, minute, tzinfo=UTC)
    assert in_quiet_hours(chat, now) is quiet
    assert produce(now) == (0 if quiet else 1)


def test_a_cadence_held_by_quiet_hours_posts_when_they_end() -> None:
    alpha = make_intake_bot()
    group(alpha, time_zone="UTC", quiet_start=time(0), quiet_end=time(6))
    Membership.objects.filter(bot=alpha).update(cadence_minutes=60)
    assert produce(datetime(2026, 1, 15, 3, tzinfo=UTC)) == 0
    assert produce(datetime(2026, 1, 15, 6, 1, tzinfo=UTC)) == 1


@pytest.mark.parametrize("paused", ["bot", "chat"])
def test_a_paused_bot_or_chat_piles_up_no_cadence_posts_and_posts_once_when_resumed(
        paused: str) -> None:
    alpha = make_intake_bot()
    chat = group(alpha)
    Membership.objects.filter(bot=alpha).update(cadence_minutes=30)
    held = Bot.objects.filter(id=alpha.id) if paused == "bot" else Chat.objects.filter(id=chat.id)
    start = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    held.update(paused_at=start)

    queued = [produce(start + timedelta(hours=hour)) for hour in range(6)]
    heard(chat, "anyone there?", at=start + timedelta(hours=5))
    replies = produce(start + timedelta(hours=5))
    held.update(paused_at=None)
    resumed = start + timedelta(hours=6)

    assert queued == [0] * 6 and replies == 0 and pending().count() == 0
    assert produce(resumed) == 1  # one post, not one per missed slot
    assert produce(resumed + timedelta(minutes=1)) == 0


def test_bots_answer_each_other_up_to_k_turns_without_a_human() -> None:
    alpha, beta = make_intake_bot(), make_intake_bot()
    chat = group(alpha, beta, max_bot_turns=3)
    heard(chat, "talk amongst yourselves")
    produce()
    QueueItem.objects.update(status=QueueItem.Status.DONE)
    speaker, turns = alpha, 0
    while True:
        sent(speaker, chat)
        turns += 1
        if produce() == 0:
            break
        [item] = pending(chat)
        assert item.bot_id != speaker.id  # a bot never answers itself
        QueueItem.objects.filter(id=item.id).update(status=QueueItem.Status.DONE)
        speaker = item.bot
    assert turns == 3


def test_a_human_message_resets_the_bot_turn_count() -> None:
    alpha, beta = make_intake_bot(), make_intake_bot()
    chat = group(alpha, beta, max_bot_turns=1)
    sent(alpha, chat, at=timezone.now() - timedelta(seconds=5))
    assert produce() == 0  # one bot turn: the limit
    heard(chat, at=timezone.now() - timedelta(seconds=4))
    Membership.objects.update(replies_to_humans=False)
    produce()
    sent(alpha, chat)
    assert produce() == 0  # still one turn after the human
    Chat.objects.filter(id=chat.id).update(max_bot_turns=2)
    assert produce() == 1 and pending(chat).get().bot_id == beta.id


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_producers_queue_one_item_per_trigger() -> None:
    bots = [make_intake_bot() for _ in range(4)]
    chat = group(*bots)
    Membership.objects.update(cadence_minutes=10)
    for n in range(20):
        heard(chat, f"message {n}")
    now = timezone.now()

    def producer() -> None:
        for _ in range(3):
            ChatMessage.objects.update(produced=False)  # everyone sees every message
            produce(now)

    at_once(producer, 4)  # raises a thread's error: a failed producer fails the test
    # One item per trigger, none queued twice.
    assert QueueItem.objects.count() == Trigger.objects.count()
    assert Trigger.objects.filter(queue_item__isnull=True).count() == 0
    # Replies coalesce: a waiting reply per bot answers all 20 messages (before coalescing,
    # 20 x 4 = 80); producers racing may each add one before they see the other's.
    replies = Trigger.objects.filter(kind="reply")
    assert set(replies.values_list("bot_id", flat=True)) == {bot.id for bot in bots}
    assert replies.count() <= 4 * 4
    assert Trigger.objects.filter(kind="cadence").count() == 4  # one post for each bot


def test_a_message_older_than_an_hour_gets_no_reply() -> None:
    alpha = make_intake_bot()
    chat = group(alpha)
    heard(chat, "yesterday's news", at=timezone.now() - timedelta(hours=2))
    assert produce() == 0
    assert ChatMessage.objects.get().produced  # handled: not looked at again


def _chats_with_recent_sends(count: int) -> None:
    """``count`` chats a bot posted in: half with no other bot to answer, half whose last
    bot line was answered already (the answer sent, its trigger kept)."""
    for n in range(count):
        alpha, beta = make_intake_bot(), make_intake_bot()
        if n % 2:
            chat = group(alpha)
            sent(alpha, chat)
        else:
            chat = group(alpha, beta, max_bot_turns=5)
            line = sent(alpha, chat, at=timezone.now() - timedelta(seconds=1))
            Trigger.objects.create(key=f"answer:{line.id}", kind="answer", bot=beta, chat=chat)


def test_a_tick_does_not_visit_every_chat_a_bot_posted_in() -> None:
    # A drain of 2,000 one-bot chats made every later tick read each chat's history, so the
    # tick took seconds and the next backlog waited for it.
    def queries_for(more_chats: int) -> int:
        _chats_with_recent_sends(more_chats)
        with CaptureQueriesContext(connection) as captured:
            assert produce() == 0
        return len(captured)

    assert queries_for(2) == queries_for(20)  # 2 chats, then 22


def test_a_burst_of_messages_costs_the_producer_a_few_queries_not_two_each() -> None:
    quiet = make_intake_bot()
    chats = [group(quiet), group(quiet)]
    Membership.objects.update(replies_to_humans=False)
    for n in range(50):
        heard(chats[n % 2], f"message {n}")
    with CaptureQueriesContext(connection) as queries:
        assert produce() == 0
    assert not ChatMessage.objects.filter(produced=False).exists()  # each looked at once
    # The members of each chat once, every message marked in one statement.
    assert len(queries.captured_queries) < 50 / 5


def test_a_burst_queues_one_reply_per_bot_until_it_is_claimed() -> None:
    alpha, beta = make_intake_bot(), make_intake_bot()
    chat = group(alpha, beta)
    for n in range(50):
        heard(chat, f"message {n}")

    assert produce() == 2  # one waiting reply per bot answers all 50
    assert sorted(pending(chat).values_list("bot_id", flat=True)) == sorted([alpha.id, beta.id])

    heard(chat, "and another")
    assert produce() == 0  # folded into the replies still waiting
    queue.claim(10, make_run())
    heard(chat, "after the claim")
    assert produce() == 2  # the claimed replies were written already: new ones wait


def test_a_mention_raises_the_waiting_reply_instead_of_adding_one() -> None:
    alpha, beta = make_intake_bot(), make_intake_bot()
    chat = group(alpha, beta)
    heard(chat, "hello")
    produce()
    heard(chat, "@alpha what do you think?", addressed=alpha)

    assert produce() == 0
    waiting = {i.bot_id: i.priority for i in pending(chat)}
    assert waiting[alpha.id] == MENTION_PRIORITY and waiting[beta.id] < MENTION_PRIORITY


def test_a_claimed_reply_is_written_from_the_history_at_claim_time() -> None:
    from batchgen.delivery import drain

    alpha = make_intake_bot()
    chat = group(alpha)
    heard(chat, "first question")
    produce()
    heard(chat, "second question")
    produce()
    [item] = queue.claim(1, make_run())

    prompt = drain.prepare(item).prompt
    assert "first question" in prompt and "second question" in prompt
