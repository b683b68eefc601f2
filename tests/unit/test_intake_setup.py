"""Bot setup in the admin: getMe on save, the token write-only, memberships and the preview."""

from __future__ import annotations

import httpx
import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from batchgen.conversations.setup import enable_webhook
from batchgen.fakes.telegram_intake import INTAKE
from batchgen.models import Bot
from batchgen.models.conversations import ChatMessage, Membership
from batchgen.models.secrets import webhook_digest
from tests.factories import make_chat
from tests.intake_support import make_intake_bot

pytestmark = pytest.mark.django_db

TOKEN = "424242:GOOD-TOKEN-abcdefghijklmnopqrstuvwxyz"


def add_bot(client: Client, token: str, **fields: str):
    return client.post(reverse("admin:batchgen_bot_add"), {
        "name": "Robo", "telegram_token": token, "persona": "", "system_prompt": "",
        "is_active": "on", **fields})


def test_saving_a_bot_checks_the_token_with_getme_and_stores_the_username(
        staff_client, telegram_env) -> None:
    httpx.post(f"{telegram_env.base_url}/_bots", json={"token": TOKEN, "username": "robo_bot"})
    response = add_bot(staff_client, TOKEN, system_prompt="Speak in haiku.")
    assert response.status_code == 302
    bot = Bot.objects.get(name="Robo")
    assert (bot.username, bot.telegram_id, bot.system_prompt) == ("robo_bot", 424242,
                                                                 "Speak in haiku.")


@pytest.mark.parametrize(("token", "reason"), [
    ("not-a-token", "telegram_token must look like 123456:ABC-DEF1234ghIkl"),  # never sent
    ("424242:REVOKED-abcdefgh", "Telegram refused this token: getMe: Unauthorized")])
def test_a_wrong_token_is_refused_with_telegrams_reason(staff_client, telegram_env,
                                                        token, reason) -> None:
    httpx.post(f"{telegram_env.base_url}/_bots", json={"revoke": "424242:REVOKED-abcdefgh"})
    page = add_bot(staff_client, token).content.decode()
    assert reason in page
    assert token not in page and not Bot.objects.exists()


def test_an_unreachable_telegram_is_named_without_the_token(staff_client, settings) -> None:
    settings.TELEGRAM_API_BASE_URL = "http://127.0.0.1:9"  # nothing listens on discard
    page = add_bot(staff_client, TOKEN).content.decode()
    assert "Telegram refused this token: getMe: ConnectError" in page
    assert "GOOD-TOKEN" not in page and not Bot.objects.exists()


def test_the_help_text_fits_adding_and_editing(staff_client, telegram_env) -> None:
    add_page = staff_client.get(reverse("admin:batchgen_bot_add")).content.decode()
    assert "@BotFather" in add_page and "leave empty to keep" in add_page


def test_the_membership_page_previews_the_prompt_right_now(staff_client) -> None:
    bot = make_intake_bot("Robo", persona="a cheerful gardener", system_prompt="Be kind.")
    chat = make_chat(title="Allotment")
    membership = Membership.objects.create(bot=bot, chat=chat)
    ChatMessage.objects.create(chat=chat, telegram_message_id=1, speaker="Alice",
                               text="my <b>tomatoes</b> died", sent_at=timezone.now())
    page = staff_client.get(reverse("admin:batchgen_membership_change",
                                    args=[membership.pk])).content.decode()
    assert '<pre class="system-prompt">Be kind.</pre>' in page
    assert "a cheerful gardener" in page and "Allotment" in page
    assert "Alice: my &lt;b&gt;tomatoes&lt;/b&gt; died" in page  # escaped, never markup


def test_enabling_the_webhook_registers_url_and_a_fresh_secret(telegram_env) -> None:
    bot = make_intake_bot()
    url = enable_webhook(bot, "https://bots.example.invalid")
    assert url == f"https://bots.example.invalid/telegram/webhook/{bot.id}/"
    secret = telegram_env.server.app[INTAKE].webhooks[bot.telegram_token][1]
    assert len(secret) >= 32
    # Only its HMAC is stored: the database cannot give the secret away.
    assert Bot.objects.get(id=bot.id).webhook_secret == webhook_digest(secret) != secret
    conflict = httpx.post(f"{telegram_env.base_url}/bot{bot.telegram_token}/getUpdates")
    assert conflict.status_code == 409  # Telegram refuses polling while a webhook is set


def test_the_admin_switches_a_bot_between_webhook_and_polling(staff_client, telegram_env,
                                                              settings) -> None:
    bot = make_intake_bot()
    changelist = reverse("admin:batchgen_bot_changelist")
    settings.INTAKE_WEBHOOK_BASE_URL = ""
    page = staff_client.post(changelist, {"action": "use_webhook", "_selected_action": [bot.pk]},
                             follow=True).content.decode()
    assert "INTAKE_WEBHOOK_BASE_URL is empty" in page
    settings.INTAKE_WEBHOOK_BASE_URL = "https://bots.example.invalid"
    page = staff_client.post(changelist, {"action": "use_webhook", "_selected_action": [bot.pk]},
                             follow=True).content.decode()
    assert f"updates now arrive at https://bots.example.invalid/telegram/webhook/{bot.id}/" \
        in page and Bot.objects.get(id=bot.id).webhook_secret
    staff_client.post(changelist, {"action": "use_polling", "_selected_action": [bot.pk]})
    assert Bot.objects.get(id=bot.id).webhook_secret == ""
    polled = httpx.post(f"{telegram_env.base_url}/bot{bot.telegram_token}/getUpdates")
    assert polled.status_code == 200


@pytest.mark.parametrize(("start", "end", "field", "message"), [
    ("22:00", "", "quiet_end", "quiet hours need both quiet_start and quiet_end, or neither"),
    ("", "07:00", "quiet_start", "quiet hours need both quiet_start and quiet_end, or neither"),
    ("07:00", "07:00", "quiet_end", "quiet_end must differ from quiet_start"),
])
def test_half_set_or_empty_quiet_hours_are_refused_naming_the_field(
        staff_client, start, end, field, message) -> None:
    chat = make_chat(title="Night owls")
    url = reverse("admin:batchgen_chatbehaviour_change", args=[chat.pk])
    response = staff_client.post(url, {
        "title": "Night owls", "is_active": "on", "time_zone": "UTC", "quiet_start": start,
        "quiet_end": end, "max_bot_turns": "3", "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0"})
    assert response.status_code == 200  # the form again, with the error
    assert message in response.content.decode()
    assert field in response.context["adminform"].form.errors
