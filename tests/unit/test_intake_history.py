"""The chat history a prompt sees, and the prompt built from it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from batchgen.conversations import history
from batchgen.conversations.prompting import prompt_for
from batchgen.core.prompts import DEFAULT_SYSTEM_PROMPT
from batchgen.models import Message, QueueItem
from batchgen.models.conversations import ChatMessage
from tests.factories import make_chat, make_item
from tests.intake_support import make_intake_bot

pytestmark = pytest.mark.django_db


def say(chat, speaker: str, text: str, seconds_ago: int, message_id: int) -> None:
    ChatMessage.objects.create(chat=chat, telegram_message_id=message_id, speaker=speaker,
                               text=text, sent_at=timezone.now() - timedelta(seconds=seconds_ago))


def bot_said(bot, chat, text: str, seconds_ago: int, status: str = Message.Status.SENT) -> None:
    item = make_item(bot, chat)
    QueueItem.objects.filter(id=item.id).update(status=QueueItem.Status.DONE)
    Message.objects.create(queue_item=item, bot=bot, chat=chat, text=text, status=status,
                           sent_at=timezone.now() - timedelta(seconds=seconds_ago))


def test_recent_messages_merge_people_and_bots_oldest_first_with_speakers() -> None:
    chat, bot = make_chat(), make_intake_bot("Robo")
    say(chat, "Alice", "morning!", 30, 1)
    bot_said(bot, chat, "morning Alice", 20)
    say(chat, "Bob Smith", "coffee?", 10, 2)
    bot_said(bot, chat, "never sent", 5, status=Message.Status.FAILED)
    assert history.recent_messages(chat) == ["Alice: morning!", "Robo: morning Alice",
                                             "Bob Smith: coffee?"]


def test_recent_messages_stay_within_the_token_budget_keeping_the_newest() -> None:
    chat = make_chat()
    for n in range(40):
        say(chat, "Alice", f"message number {n} " + "x" * 40, 100 - n, n)
    lines = history.recent_messages(chat, budget_tokens=60)
    assert lines[-1].startswith("Alice: message number 39")
    assert sum(history.estimate_tokens(line) for line in lines) <= 60
    assert 1 < len(lines) < 40


def test_the_budget_comes_from_settings(settings) -> None:
    chat = make_chat()
    for n in range(10):
        say(chat, "A", "y" * 100, 100 - n, n)
    settings.INTAKE_HISTORY_TOKENS = 30
    assert len(history.recent_messages(chat)) == 1
    settings.INTAKE_HISTORY_TOKENS = 1000
    assert len(history.recent_messages(chat)) == 10


def test_a_single_message_longer_than_the_budget_is_cut_not_dropped() -> None:
    chat = make_chat()
    say(chat, "Alice", "z" * 2000, 1, 1)
    [line] = history.recent_messages(chat, budget_tokens=50)
    assert line.startswith("Alice: zzz") and line.endswith("…") and len(line) <= 201


def test_the_prompt_has_the_bots_system_prompt_persona_and_the_history(settings) -> None:
    chat = make_chat(title="Lounge")
    bot = make_intake_bot("Robo", persona="a grumpy pirate", system_prompt="Talk like 1700.")
    say(chat, "Alice", "ahoy", 5, 1)
    system, user = prompt_for(bot, chat)
    assert system == "Talk like 1700."
    assert "Robo" in user and "a grumpy pirate" in user and "Lounge" in user
    assert "- Alice: ahoy" in user


def test_without_its_own_system_prompt_a_bot_gets_the_configured_default(settings) -> None:
    bot, chat = make_intake_bot(), make_chat()
    settings.BOT_DEFAULT_SYSTEM_PROMPT = "Be brief."
    assert prompt_for(bot, chat)[0] == "Be brief."
    settings.BOT_DEFAULT_SYSTEM_PROMPT = ""
    assert prompt_for(bot, chat)[0] == DEFAULT_SYSTEM_PROMPT


def test_several_chats_read_together_give_each_its_own_history(django_assert_num_queries
                                                               ) -> None:
    _several_chats_read_together(django_assert_num_queries)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_several_chats_read_together_in_one_statement_on_postgresql(django_assert_num_queries
                                                                    ) -> None:
    _several_chats_read_together(django_assert_num_queries)


def _several_chats_read_together(django_assert_num_queries) -> None:
    from django.db import connection

    statements = 1 if connection.vendor == "postgresql" else 3  # elsewhere one per chat
    bot, quiet = make_intake_bot("Robo"), make_chat()
    busy, other = make_chat(), make_chat()
    for n in range(70):  # more than a prompt reads: the newest are kept
        say(busy, "Alice", f"line {n}", 200 - n, n)
    bot_said(bot, busy, "the bot's own reply", 50)
    bot_said(bot, busy, "not sent", 40, status=Message.Status.FAILED)
    say(other, "Bob", "hello?", 5, 1)
    one_by_one = {chat.pk: history.lines(chat) for chat in (busy, other, quiet)}

    with django_assert_num_queries(statements):
        together = history.lines_of([busy, other, quiet, other])

    assert together == one_by_one
    assert len(together[busy.pk]) == 60 and together[quiet.pk] == []
    assert "Robo: the bot's own reply" in [str(line) for line in together[busy.pk]]
