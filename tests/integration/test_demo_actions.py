"""`manage.py demo add-bot | say | fail`: the demo driven by commands, against the fakes."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from batchgen.conversations import poll, setup
from batchgen.dashboard import failures
from batchgen.models import Bot, Chat, QueueItem
from batchgen.models.conversations import ChatMessage

pytestmark = pytest.mark.django_db(transaction=True)
TOKEN = "7771234:DEMO-ACTIONS-kkkkkkkkkkkkkkkkkkkk"


def demo(*args: str) -> str:
    out = StringIO()
    call_command("demo", *args, stdout=out)
    return out.getvalue()


def make_demo_bot() -> Bot:
    identity = setup.check_token(TOKEN)
    return Bot.objects.create(name="Chef Remy", telegram_token=TOKEN,
                              username=identity.username, telegram_id=identity.telegram_id)


def test_adding_a_bot_to_a_group_makes_the_chat_appear(pipeline_env) -> None:
    make_demo_bot()

    shown = demo("add-bot", "Chef Remy", "--chat", "Book club")
    poll.poll_once()

    assert "added to 'Book club'" in shown
    assert Chat.objects.filter(title="Book club").exists()


def test_a_person_writes_and_the_member_bot_sees_it(pipeline_env) -> None:
    make_demo_bot()
    demo("add-bot", "Chef Remy", "--chat", "Book club")
    poll.poll_once()

    demo("say", "Any plans for Saturday?", "--chat", "Book club")
    poll.poll_once()

    assert ChatMessage.objects.filter(text__contains="Any plans for Saturday?").exists()


def test_a_provoked_failure_ends_dead_with_its_cause(pipeline_env) -> None:
    bot = make_demo_bot()
    Chat.objects.create(telegram_chat_id=-100999, title="Book club")
    bot.save()

    demo("fail", "--kind", "bad_request", "--count", "2")
    call_command("tick", sync=True, stdout=StringIO())

    assert QueueItem.objects.filter(status="dead").count() == 2
    [group] = failures.failures_by_cause()[0]
    assert (group.cause, group.count) == ("bad_request", 2)


def test_saying_in_an_unknown_chat_says_how_to_add_one(pipeline_env) -> None:
    with pytest.raises(CommandError, match="add a bot to it first: manage.py demo add-bot"):
        demo("say", "hello", "--chat", "Nowhere")
