"""Bot tokens are encrypted at rest, webhook secrets kept as an HMAC, and no admin filter,
lookup or search can probe either of them."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import FieldError, ImproperlyConfigured
from django.core.management import call_command
from django.db import connection
from django.urls import reverse

from batchgen.admin.protected import SECRET_FIELDS
from batchgen.models import Bot
from batchgen.models.secrets import webhook_digest, webhook_secret_matches
from tests.factories import make_bot, make_chat, make_item

pytestmark = pytest.mark.django_db

TOKEN = "123456:AAF-prefix-probe-target-q9Zx"
OLD_KEY, NEW_KEY = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def stored(bot: Bot, column: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM batchgen_bot WHERE id = %s", [bot.id])
        return cursor.fetchone()[0]


def test_it_stores_the_token_encrypted_and_reads_it_back_in_plain() -> None:
    bot = make_bot(telegram_token=TOKEN)
    assert TOKEN not in stored(bot, "telegram_token")
    assert "123456" not in stored(bot, "telegram_token")
    assert Bot.objects.get(id=bot.id).telegram_token == TOKEN
    assert list(Bot.objects.filter(id=bot.id).values_list("telegram_token", flat=True)) == [TOKEN]
    Bot.objects.filter(id=bot.id).update(telegram_token="654321:NEW")
    assert Bot.objects.get(id=bot.id).telegram_token == "654321:NEW"


def test_it_refuses_any_orm_filter_on_the_token() -> None:
    make_bot(telegram_token=TOKEN)
    with pytest.raises(FieldError):
        list(Bot.objects.filter(telegram_token__startswith="1"))
    with pytest.raises(FieldError):
        list(Bot.objects.filter(telegram_token=TOKEN))


@pytest.mark.parametrize(("path", "lookup"), [
    ("admin:batchgen_bot_changelist", "telegram_token__startswith"),
    ("admin:batchgen_bot_changelist", "webhook_secret__startswith"),
    ("admin:batchgen_bot_changelist", "telegram_token__contains"),
    ("admin:batchgen_queueitem_changelist", "bot__telegram_token__startswith"),
    ("admin:batchgen_membership_changelist", "bot__webhook_secret__startswith"),
])
def test_a_prefix_probe_on_the_admin_changelist_learns_nothing(staff_client, path,
                                                               lookup) -> None:
    bot = make_bot(telegram_token=TOKEN, webhook_secret=webhook_digest("hook-secret"))
    make_item(bot, make_chat())
    prefixes = (TOKEN[:4], "9999") if "token" in lookup else (stored(bot, "webhook_secret")[:4],
                                                              "zzzz")
    answers = [staff_client.get(reverse(path), {lookup: prefix}) for prefix in prefixes]
    # Refused (Django's 400 for a disallowed lookup) whatever the prefix: nothing to compare.
    assert [answer.status_code for answer in answers] == [400, 400]
    assert b"1 result" not in answers[0].content


def test_admin_search_never_looks_at_a_secret(staff_client) -> None:
    make_bot("searchable", telegram_token=TOKEN)
    page = staff_client.get(reverse("admin:batchgen_bot_changelist"), {"q": TOKEN[:10]})
    assert page.status_code == 200 and b"0 results" in page.content
    from django.contrib import admin

    for model_admin in admin.site._registry.values():
        named = {*model_admin.search_fields, *map(str, model_admin.list_filter),
                 *map(str, model_admin.list_display)}
        assert not any(secret in name for name in named for secret in SECRET_FIELDS), \
            type(model_admin).__name__


def test_the_webhook_secret_is_an_hmac_compared_under_every_key(settings) -> None:
    settings.FIELD_ENCRYPTION_KEYS = [OLD_KEY]
    digest = webhook_digest("the-secret")
    assert len(digest) == 64 and "the-secret" not in digest
    assert webhook_secret_matches("the-secret", digest)
    assert not webhook_secret_matches("the-secreT", digest)
    assert not webhook_secret_matches("", "")  # no secret set: nothing matches
    settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY, OLD_KEY]  # rotated: still verified
    assert webhook_secret_matches("the-secret", digest)
    settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY]
    assert not webhook_secret_matches("the-secret", digest)


def test_keys_rotate_old_tokens_stay_readable_and_rotate_field_keys_reencrypts(
        settings) -> None:
    settings.FIELD_ENCRYPTION_KEYS = [OLD_KEY]
    bot = make_bot(telegram_token=TOKEN)
    settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY, OLD_KEY]
    assert Bot.objects.get(id=bot.id).telegram_token == TOKEN
    call_command("rotate_field_keys")
    settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY]
    assert Bot.objects.get(id=bot.id).telegram_token == TOKEN


def test_a_token_no_configured_key_opens_is_an_error_naming_the_variable(settings) -> None:
    settings.FIELD_ENCRYPTION_KEYS = [OLD_KEY]
    bot = make_bot(telegram_token=TOKEN)
    settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY]
    with pytest.raises(ImproperlyConfigured, match="FIELD_ENCRYPTION_KEYS") as raised:
        Bot.objects.get(id=bot.id)
    assert TOKEN not in str(raised.value)
