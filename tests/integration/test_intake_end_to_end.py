"""The whole loop with real processes: the fake Telegram, `manage.py telegram_poll`, the
webhook, the producer, `manage.py tick --sync` (which processes what the webhook kept), and
the fake LLM. Database state is committed
(transactional tests) so the child processes see it.

`tick` processes updates and produces before it runs; the test also calls
``behaviour.produce`` itself where it asserts how many replies a message queued.
"""

from __future__ import annotations

from collections import Counter

import httpx
import pytest

from batchgen.conversations.behaviour import produce
from batchgen.conversations.setup import enable_webhook
from batchgen.fakes.telegram_intake import INTAKE
from batchgen.models import Chat, Message, QueueItem
from batchgen.models.conversations import ChatMessage, Membership
from tests.factories import make_bot, make_chat, set_batch_mode
from tests.intake_support import make_intake_bot, membership_change, say
from tests.processes import manage, process_env

pytestmark = pytest.mark.django_db(transaction=True)

GROUP = -100777


def poll(env: dict) -> str:
    result = manage(env, "telegram_poll")
    assert result.returncode == 0, result.stderr
    return result.stdout


def tick(env: dict) -> str:
    result = manage(env, "tick", "--sync")
    assert result.returncode == 0, result.stderr
    return result.stdout


def group_with(fake, env: dict, *bots) -> Chat:
    for bot in bots:
        membership_change(fake, bot, GROUP, chat_title="Food lovers", chat_type="supergroup")
    poll(env)
    return Chat.objects.get(telegram_chat_id=GROUP)


def sent_in_group(fake) -> list[dict]:
    return [m for m in fake.messages() if m["chat_id"] == GROUP]


def test_a_human_message_gets_replies_whose_prompt_contains_it(pipeline_env, settings) -> None:
    _, fake = pipeline_env
    alpha, beta = make_intake_bot("Alpha"), make_intake_bot("Beta")
    env = process_env(settings)
    chat = group_with(fake, env, alpha, beta)
    assert (chat.title, chat.chat_type) == ("Food lovers", "supergroup")

    say(fake, GROUP, "Has anyone tried the new ramen place?", [alpha, beta])
    assert "stored 2" in poll(env)
    assert ChatMessage.objects.count() == 1  # one message, reaching two bots
    assert produce() == 2
    set_batch_mode(2)
    tick(env)

    delivered = sent_in_group(fake)
    assert sorted(m["token"] for m in delivered) == sorted(
        [alpha.telegram_token, beta.telegram_token])
    for message in Message.objects.filter(chat=chat):
        assert message.status == "sent"
        assert "Alice: Has anyone tried the new ramen place?" in message.prompt


def test_the_bots_answer_each_other_until_k_turns_then_stop(pipeline_env, settings) -> None:
    _, fake = pipeline_env
    alpha, beta = make_intake_bot("Alpha"), make_intake_bot("Beta")
    env = process_env(settings)
    chat = group_with(fake, env, alpha, beta)
    Chat.objects.filter(id=chat.id).update(max_bot_turns=3)
    Membership.objects.filter(bot=beta).update(replies_to_humans=False)
    say(fake, GROUP, "Pineapple on pizza: yes or no?", [alpha, beta])
    poll(env)
    set_batch_mode(5)
    for _ in range(6):
        produce()
        tick(env)
    speakers = [m["token"] for m in sent_in_group(fake)]
    assert len(speakers) == 3  # Alpha answers the human, then Beta, then Alpha: K = 3
    assert speakers == [alpha.telegram_token, beta.telegram_token, alpha.telegram_token]
    last = Message.objects.filter(chat=chat).order_by("-sent_at").first()
    assert "Alpha: " in last.prompt and "Beta: " in last.prompt  # each saw the other


def test_a_mention_is_answered_before_a_500_item_backlog(pipeline_env, settings) -> None:
    _, fake = pipeline_env
    alpha, beta = make_intake_bot("Alpha"), make_intake_bot("Beta")
    env = process_env(settings)
    group_with(fake, env, alpha, beta)
    filler_bot, filler_chat = make_bot(), make_chat()
    QueueItem.objects.bulk_create(QueueItem(bot=filler_bot, chat=filler_chat, priority=500)
                                  for _ in range(500))
    say(fake, GROUP, f"@{beta.username} what's your favourite cheese?", [alpha, beta])
    poll(env)
    assert produce() == 1
    set_batch_mode(1, enabled=False)
    tick({**env, "BATCH_DRAIN_MAX_ITEMS": "1"})  # one item: the first the queue gives
    [first] = fake.messages()
    assert (first["chat_id"], first["token"]) == (GROUP, beta.telegram_token)


def test_a_bot_removed_from_the_group_gets_nothing_more_queued(pipeline_env, settings) -> None:
    _, fake = pipeline_env
    alpha, beta = make_intake_bot("Alpha"), make_intake_bot("Beta")
    env = process_env(settings)
    chat = group_with(fake, env, alpha, beta)
    membership_change(fake, beta, GROUP, status="kicked")
    poll(env)
    say(fake, GROUP, f"@{beta.username} are you still here?", [alpha])
    say(fake, GROUP, "hello?", [alpha])
    poll(env)
    produce()
    assert set(QueueItem.objects.filter(chat=chat).values_list("bot_id", flat=True)) == {
        alpha.id}


def test_a_webhook_delivery_goes_through_the_same_handler_once(pipeline_env, live_server,
                                                              settings) -> None:
    _, fake = pipeline_env
    alpha = make_intake_bot("Alpha")
    enable_webhook(alpha, live_server.url)
    answer = say(fake, GROUP, "via the webhook", [alpha], chat_title="Hooked")
    assert answer["delivered"][alpha.telegram_token]["status"] == 200
    assert not ChatMessage.objects.exists()  # kept by the webhook, for tick to process
    # The tick process handles it, and queues the reply to it in the same tick.
    assert "1 updates processed, 1 items produced" in tick(process_env(settings))
    stored = ChatMessage.objects.get()
    assert (stored.text, stored.chat.title) == ("via the webhook", "Hooked")
    # Telegram redelivers an update when it missed our answer: stored once.
    update = {"update_id": answer["delivered"][alpha.telegram_token]["update_id"],
              "message": {"message_id": answer["message_id"], "date": 1, "text": "again",
                          "chat": {"id": GROUP, "type": "group"}, "from": {"id": 5}}}
    # The database keeps only the secret's HMAC: the plaintext is what Telegram was given.
    secret = {"X-Telegram-Bot-Api-Secret-Token":
              fake.server.app[INTAKE].webhooks[alpha.telegram_token][1]}
    again = httpx.post(f"{live_server.url}/telegram/webhook/{alpha.id}/", json=update,
                       headers=secret)
    assert again.json()["outcome"] == "duplicate"
    assert Counter(ChatMessage.objects.values_list("text", flat=True)) == {"via the webhook": 1}
    assert QueueItem.objects.filter(chat=stored.chat).count() == 1
