"""The intake admin in a real browser: chat behaviour rules with members, memberships, and the
prompt preview."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from batchgen.models import Chat
from batchgen.models.conversations import ChatMessage, Membership
from tests.browser_support import TIMEOUT_MS, admin_login, screenshot_path
from tests.factories import make_chat
from tests.intake_support import make_intake_bot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "operator-pass-1234"


@pytest.fixture
def operator(django_user_model: Any) -> str:
    django_user_model.objects.create_superuser("boss", "b@example.invalid", PASSWORD)
    return "boss"


def test_the_operator_sets_quiet_hours_and_a_members_cadence(page: Page, live_server,
                                                             operator: str) -> None:
    page.set_default_timeout(TIMEOUT_MS)
    alpha, beta = make_intake_bot("Alpha"), make_intake_bot("Beta")
    chat = make_chat(title="Night owls", chat_type="supergroup")
    Membership.objects.create(bot=alpha, chat=chat)
    Membership.objects.create(bot=beta, chat=chat)
    path = f"/admin/batchgen/chatbehaviour/{chat.pk}/change/"
    admin_login(page, live_server.url, operator, PASSWORD, path)

    page.fill("#id_time_zone", "Mars/Olympus")
    page.click("input[name=_save]")
    expect(page.locator(".errorlist")).to_contain_text("time_zone must be an IANA time zone")
    page.fill("#id_time_zone", "Europe/Berlin")
    page.fill("#id_quiet_start", "22:00")
    page.fill("#id_quiet_end", "07:00")
    page.fill("#id_max_bot_turns", "2")
    page.fill("#id_memberships-1-cadence_minutes", "45")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_contain_text("was changed successfully")
    page.screenshot(path=screenshot_path("intake-behaviour-rules.png"), full_page=True)

    chat = Chat.objects.get(pk=chat.pk)
    assert (chat.time_zone, str(chat.quiet_start), str(chat.quiet_end), chat.max_bot_turns) \
        == ("Europe/Berlin", "22:00:00", "07:00:00", 2)
    assert Membership.objects.get(bot=beta).cadence_minutes == 45
    # Chats are discovered from Telegram, never typed in: no "add" on this page.
    page.goto(f"{live_server.url}/admin/batchgen/chatbehaviour/")
    expect(page.locator(".object-tools a.addlink")).to_have_count(0)


def test_memberships_are_switched_off_from_the_list(page: Page, live_server,
                                                    operator: str) -> None:
    page.set_default_timeout(TIMEOUT_MS)
    bot, chat = make_intake_bot("Alpha"), make_chat(title="Lounge")
    membership = Membership.objects.create(bot=bot, chat=chat)
    admin_login(page, live_server.url, operator, PASSWORD, "/admin/batchgen/membership/")
    page.uncheck("#id_form-0-replies_to_humans")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_contain_text("was changed successfully")
    assert not Membership.objects.get(pk=membership.pk).replies_to_humans


def test_the_prompt_preview_shows_what_the_bot_would_get_now(page: Page, live_server,
                                                             operator: str) -> None:
    page.set_default_timeout(TIMEOUT_MS)
    bot = make_intake_bot("Remy", persona="a French chef", system_prompt="Answer in French.")
    chat = make_chat(title="Kitchen")
    membership = Membership.objects.create(bot=bot, chat=chat)
    ChatMessage.objects.create(chat=chat, telegram_message_id=1, speaker="Dana",
                               text="<script>alert(1)</script> what's for dinner?",
                               sent_at=timezone.now())
    path = f"/admin/batchgen/membership/{membership.pk}/change/"
    admin_login(page, live_server.url, operator, PASSWORD, path)
    expect(page.locator("pre.system-prompt")).to_have_text("Answer in French.")
    user_prompt = page.locator("pre.user-prompt")
    expect(user_prompt).to_contain_text("You are Remy. Persona: a French chef")
    expect(user_prompt).to_contain_text("Chat: Kitchen")
    expect(user_prompt).to_contain_text("- Dana: <script>alert(1)</script> what's for dinner?")
    page.screenshot(path=screenshot_path("intake-prompt-preview.png"), full_page=True)
