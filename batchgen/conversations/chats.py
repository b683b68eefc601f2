"""Chats as Telegram reveals them: discovered from updates, joined, left, migrated. The operator
never types a chat id: a chat row appears when a bot is added or a message arrives, and a send
that reveals a change calls ``Chat.bot_left`` or ``Chat.migrate_to``.
"""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef

from batchgen.models import Bot, Chat
from batchgen.models.conversations import Membership

log = logging.getLogger(__name__)

_TYPES = set(Chat.Type.values)


def discovered(telegram_chat_id: int, title: str, chat_type: str,
               heard_by: Bot | None = None) -> Chat:
    """The chat row for ``telegram_chat_id``, created or brought up to date; ``heard_by``
    (the bot a message reached) is made a member if it is not one yet."""
    chat_type = chat_type if chat_type in _TYPES else ""
    found = Chat.objects.filter(telegram_chat_id=telegram_chat_id)
    if heard_by is not None:
        # One query on every incoming message's path: the chat and whether the bot is in it.
        found = found.annotate(heard_by_member=Exists(
            Membership.objects.filter(chat=OuterRef("pk"), bot=heard_by)))
    chat = found.first()
    if heard_by is not None and not getattr(chat, "heard_by_member", False):
        chat = chat or _create(telegram_chat_id, title, chat_type)
        member(heard_by, chat)
    if chat is None:
        return _create(telegram_chat_id, title, chat_type)
    return _refresh(chat, title, chat_type)


def _create(telegram_chat_id: int, title: str, chat_type: str) -> Chat:
    try:
        with transaction.atomic():
            return Chat.objects.create(telegram_chat_id=telegram_chat_id, title=title,
                                       chat_type=chat_type)
    except IntegrityError:  # another update for the same new chat got there first
        return Chat.objects.get(telegram_chat_id=telegram_chat_id)


def _refresh(chat: Chat, title: str, chat_type: str) -> Chat:
    changes = {k: v for k, v in (("title", title), ("chat_type", chat_type))
               if v and getattr(chat, k) != v}
    if changes:
        Chat.objects.filter(id=chat.id).update(**changes)
        for name, value in changes.items():
            setattr(chat, name, value)
    return chat


def joined(bot: Bot, chat: Chat) -> Membership:
    """``bot`` is (again) in ``chat``: an active membership, the chat active."""
    membership, created = Membership.objects.get_or_create(bot=bot, chat=chat)
    if not created and not membership.is_active:
        Membership.objects.filter(id=membership.id).update(is_active=True, left_reason="")
        membership.is_active = True
    if not chat.is_active:
        Chat.objects.filter(id=chat.id).update(is_active=True)
        chat.is_active = True
    return membership


def member(bot: Bot, chat: Chat) -> None:
    """``bot`` hears messages in ``chat``, so it is a member (one statement: this is on
    every incoming message's path). Rejoining after a removal goes through ``joined``."""
    Membership.objects.bulk_create([Membership(bot=bot, chat=chat)], ignore_conflicts=True)
