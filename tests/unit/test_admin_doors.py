"""Admin forms never answer 500: a Setting value past the JSON limits and a bot token that is
not a token get a form error naming the field and the rule."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from batchgen.core.bot_tokens import token_problem
from batchgen.models import BatchRun, Bot, Setting
from batchgen.telegram.bot_api import BotApi, BotApiError
from tests.factories import make_bot, make_chat, make_item

pytestmark = pytest.mark.django_db


def change_setting(client: Client, key: str, raw_value: str):
    Setting.ensure_defaults()
    setting = Setting.objects.get(key=key)
    return client.post(reverse("admin:batchgen_setting_change", args=[setting.pk]),
                       {"key": key, "value": raw_value})


@pytest.mark.parametrize(("raw", "rule"), [
    ("[" * 2000 + "]" * 2000, "value nested deeper than 16 levels"),
    ("[" * 17 + "]" * 17, "value nested deeper than 16 levels"),
    ("[" + "1," * 6000 + "1]", "value longer than 10,000 characters"),
    ("NaN", "value NaN is not a JSON number"),
    ("1e999", "value the number 1e999 is out of range"),
])
def test_a_setting_value_past_a_json_limit_is_a_form_error_naming_it(staff_client, raw,
                                                                    rule) -> None:
    answer = change_setting(staff_client, "batch_route_providers", raw)
    assert answer.status_code == 200 and rule in answer.content.decode()
    assert Setting.objects.get(key="batch_route_providers").value == []


def test_a_setting_value_within_the_limits_still_saves(staff_client) -> None:
    answer = change_setting(staff_client, "batch_route_providers", '["openai"]')
    assert answer.status_code == 302
    assert Setting.objects.get(key="batch_route_providers").value == ["openai"]


@pytest.mark.parametrize(("token", "rule"), [
    ("123456:ABC\r\nX-Injected: 1", "must not contain control characters"),
    ("123456:ABC\x07DEF", "must not contain control characters"),
    ("123456:ABC\x00DEF", "Null characters are not allowed"),  # Django's own rule, first
    ("123456:ABC DEF", "must look like 123456:ABC-DEF1234ghIkl"),
    ("123456:ABC/../getMe", "must look like 123456:ABC-DEF1234ghIkl"),
    ("not a token", "must look like 123456:ABC-DEF1234ghIkl"),
    ("1:" + "x" * 300, "must be at most 200 characters, it has 302"),
])
def test_a_bot_token_that_is_not_a_token_is_a_form_error_not_a_500(staff_client, telegram_env,
                                                                   token, rule) -> None:
    bot = make_bot("formbot", telegram_token="111:KEPT-TOKEN")
    answer = staff_client.post(reverse("admin:batchgen_bot_change", args=[bot.pk]),
                               {"name": "formbot", "telegram_token": token, "persona": "",
                                "system_prompt": "", "is_active": "on"})
    page = answer.content.decode()
    assert answer.status_code == 200 and rule in page
    assert "Null" in rule or f"telegram_token {rule}" in page
    assert token not in page
    assert Bot.objects.get(pk=bot.pk).telegram_token == "111:KEPT-TOKEN"


def test_a_new_bot_with_a_good_token_is_still_checked_and_saved(staff_client,
                                                                telegram_env) -> None:
    answer = staff_client.post(reverse("admin:batchgen_bot_add"),
                               {"name": "newbot", "telegram_token": "4242:GOOD-token_x",
                                "persona": "", "system_prompt": "", "is_active": "on"})
    assert answer.status_code == 302
    assert Bot.objects.get(name="newbot").telegram_token == "4242:GOOD-token_x"


def test_the_bot_api_refuses_a_malformed_token_before_any_request(telegram_env) -> None:
    with BotApi() as api, pytest.raises(BotApiError) as raised:
        api.get_me("123:ABC\r\nHost: evil")
    assert raised.value.permanent and "evil" not in str(raised.value)
    assert "control characters" in str(raised.value)


def test_token_problem_accepts_the_shapes_botfather_gives() -> None:
    assert token_problem("123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw") == ""
    assert token_problem("1:x") == ""
    assert token_problem(":x") and token_problem("12:") and token_problem("12x:abc")


# PostgreSQL refuses NUL in any text parameter: a changelist filter, lookup or search holding
# one was a 500 ("PostgreSQL text fields cannot contain NUL"). Refused at the door on every
# database, so SQLite shows the same answer.
NUL_CHANGELISTS = [
    ("admin:batchgen_queueitem_changelist", "status=%00"),
    ("admin:batchgen_queueitem_changelist", "cause=%00"),
    ("admin:batchgen_queueitem_changelist", "cause_provider=a%00b"),
    ("admin:batchgen_queueitem_changelist", "q=%00"),
    ("admin:batchgen_batchrun_changelist", "provider=%00"),
    ("admin:batchgen_batchrun_changelist", "status=done&q=x%00"),
    ("admin:batchgen_bot_changelist", "q=%00"),
    ("admin:batchgen_message_changelist", "status=%00"),
    ("admin:batchgen_chatmessage_changelist", "q=%00"),
    ("admin:batchgen_setting_changelist", "o=%00"),
    ("admin:batchgen_batchrun_changelist", "prov%00ider=openai"),
]


def _nul_changelists(client: Client) -> None:
    bot = make_bot("nulbot", telegram_token="5:NUL-PROBE")
    make_item(bot, make_chat())
    BatchRun.objects.create(mode="batch", size=1, provider="openai")
    for name, query in NUL_CHANGELISTS:
        answer = client.get(f"{reverse(name)}?{query}")
        assert answer.status_code == 400, (name, query)
        assert b"NUL" in answer.content


def _nul_autocomplete(client: Client) -> None:
    make_bot("nulbot", telegram_token="5:NUL-PROBE")
    for field in ("bot", "chat"):
        answer = client.get("/admin/autocomplete/", {
            "app_label": "batchgen", "model_name": "queueitem", "field_name": field,
            "term": "nul\x00bot"})
        # A term holding NUL matches nothing: no stored text holds one (docs/design.md,
        # "Storable text").
        assert answer.status_code == 200 and answer.json()["results"] == [], field


def test_a_nul_in_an_admin_changelist_query_is_refused_400(staff_client) -> None:
    _nul_changelists(staff_client)


def test_a_nul_in_an_admin_autocomplete_term_matches_nothing(staff_client) -> None:
    _nul_autocomplete(staff_client)


@pytest.mark.postgres
def test_on_postgresql_a_nul_in_an_admin_changelist_query_is_a_400_not_a_500(
        staff_client) -> None:
    _nul_changelists(staff_client)


@pytest.mark.postgres
def test_on_postgresql_a_nul_in_an_admin_autocomplete_term_is_not_a_500(staff_client) -> None:
    _nul_autocomplete(staff_client)
