"""Chats moving and going: what the outbox calls when a send reveals a change."""

from __future__ import annotations

import pytest
from django.utils import timezone

from batchgen.conversations import chats
from batchgen.models import Chat
from batchgen.models.conversations import ChatMessage, Membership
from tests.factories import make_chat
from tests.intake_support import make_intake_bot

pytestmark = pytest.mark.django_db


def test_a_migrated_group_keeps_its_row_under_the_new_supergroup_id() -> None:
    bot = make_intake_bot()
    chat = make_chat(-4001, title="Old group", chat_type="group")
    chats.joined(bot, chat)
    moved = chat.migrate_to(-1004001)
    assert moved.id == chat.id and moved.telegram_chat_id == -1004001
    assert moved.chat_type == "supergroup"
    assert Membership.objects.get(bot=bot, chat=moved).is_active


def test_migrating_into_an_already_known_supergroup_moves_members_and_history() -> None:
    bot = make_intake_bot()
    old, new = make_chat(-4002), make_chat(-1004002)
    chats.joined(bot, old)
    ChatMessage.objects.create(chat=old, telegram_message_id=1, speaker="A", text="before",
                               sent_at=timezone.now())
    target = old.migrate_to(-1004002)
    assert target.id == new.id
    assert Membership.objects.get(bot=bot, chat=new).is_active
    assert ChatMessage.objects.get().chat_id == new.id
    assert not Chat.objects.get(id=old.id).is_active


def test_a_bot_gone_from_a_chat_others_still_use_leaves_the_chat_active() -> None:
    alpha, beta = make_intake_bot(), make_intake_bot()
    chat = make_chat()
    chats.joined(alpha, chat)
    chats.joined(beta, chat)
    chat.bot_left(alpha, "Forbidden: bot was kicked from the group chat")
    assert not Membership.objects.get(bot=alpha, chat=chat).is_active
    assert Chat.objects.get(id=chat.id).is_active
    chats.joined(alpha, chat)  # added back
    assert Membership.objects.get(bot=alpha, chat=chat).left_reason == ""


def test_a_rediscovered_chat_gets_its_new_title() -> None:
    make_chat(-4003, title="Before")
    assert chats.discovered(-4003, "After", "supergroup").title == "After"
    assert Chat.objects.get(telegram_chat_id=-4003).chat_type == "supergroup"
