from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from batchgen.models import Bot, Chat, Message, QueueItem, Setting
from tests.factories import make_bot, make_chat, make_item

pytestmark = pytest.mark.django_db


def test_the_documented_minimum_fields_are_enough_to_create_rows() -> None:
    bot = Bot.objects.create(name="b", telegram_token="1:x")
    chat = Chat.objects.create(telegram_chat_id=-100, title="Group")
    item = QueueItem.objects.create(bot=bot, chat=chat, priority=5)
    assert (item.status, item.attempts, item.recent_messages) == ("pending", 0, [])
    assert str(bot) == "b" and str(chat) == "Group"
    assert "b → Group [pending]" in str(item)


def test_bot_names_and_chat_ids_are_unique() -> None:
    make_bot("same")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_bot("same")
    make_chat(-5)
    with pytest.raises(IntegrityError), transaction.atomic():
        make_chat(-5)


def test_one_message_per_queue_item() -> None:
    item = make_item()
    Message.objects.create(queue_item=item, bot=item.bot, chat=item.chat, text="hi")
    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(queue_item=item, bot=item.bot, chat=item.chat, text="again")


def test_deleting_a_bot_keeps_its_queued_items() -> None:
    item = make_item()
    item.bot.delete()
    item.refresh_from_db()
    assert item.bot is None and item.status == "pending"


def test_settings_have_defaults_and_ignore_invalid_rows() -> None:
    loaded = Setting.load()
    assert (loaded.batch_mode_enabled, loaded.batch_size, loaded.claim_size) == (False, 1, 1)
    Setting.objects.filter(key="batch_size").update(value="lots")
    Setting.objects.filter(key="batch_mode_enabled").update(value=True)
    assert Setting.load().batch_size == 1 and Setting.load().batch_mode_enabled is True


@pytest.mark.parametrize(("key", "value", "message"), [
    ("batch_size", 0, "batch_size must be an integer from 1 to 50, got 0"),
    ("batch_size", 51, "batch_size must be an integer from 1 to 50, got 51"),
    ("batch_size", "abc", "batch_size must be an integer from 1 to 50"),
    ("batch_size", True, "batch_size must be an integer from 1 to 50"),
    ("batch_mode_enabled", "maybe", "batch_mode_enabled must be a boolean"),
])
def test_setting_values_are_validated_per_key(key: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        Setting(key=key, value=value).clean()
    assert message in str(info.value)


def test_unknown_setting_keys_are_refused() -> None:
    with pytest.raises(ValidationError, match="unknown setting 'colour'"):
        Setting(key="colour", value=1).clean()
