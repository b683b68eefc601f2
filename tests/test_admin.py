from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from batchgen.models import Bot, Setting
from tests.factories import make_bot

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client() -> Client:
    user = get_user_model().objects.create_superuser("staff", "s@example.invalid", "pw-123456")
    client = Client()
    client.force_login(user)
    return client


def change_setting(client: Client, key: str, raw_value: str):
    setting = Setting.objects.get(key=key)
    url = reverse("admin:batchgen_setting_change", args=[setting.pk])
    return client.post(url, {"key": key, "value": raw_value})


@pytest.mark.parametrize(("key", "raw", "shown"), [
    ("batch_size", "0", "batch_size must be an integer from 1 to 50, got 0"),
    ("batch_size", "51", "batch_size must be an integer from 1 to 50, got 51"),
    ("batch_size", "abc", "batch_size must be an integer from 1 to 50"),
    ("batch_mode_enabled", "maybe", "batch_mode_enabled must be a boolean: true or false"),
])
def test_a_bad_value_is_shown_on_the_form_and_nothing_is_saved(
        staff_client: Client, key: str, raw: str, shown: str) -> None:
    before = Setting.objects.get(key=key).value
    response = change_setting(staff_client, key, raw)
    assert response.status_code == 200
    assert shown in response.content.decode()
    assert Setting.objects.get(key=key).value == before


def test_a_good_value_is_saved_and_the_next_load_sees_it(staff_client: Client) -> None:
    response = change_setting(staff_client, "batch_size", "20")
    assert response.status_code == 302
    assert Setting.load().batch_size == 20


def test_unknown_keys_are_refused_on_add(staff_client: Client) -> None:
    response = staff_client.post(reverse("admin:batchgen_setting_add"),
                                 {"key": "colour", "value": "1"})
    assert response.status_code == 200
    assert "colour is not one of the available choices" in response.content.decode()
    assert not Setting.objects.filter(key="colour").exists()


def test_staff_switch_batch_mode_with_one_click(staff_client: Client) -> None:
    changelist = staff_client.get(reverse("admin:batchgen_setting_changelist")).content.decode()
    assert "Switch batch mode on" in changelist
    toggle = reverse("admin:batchgen_setting_toggle")
    assert staff_client.post(toggle).status_code == 302
    assert Setting.load().batch_mode_enabled is True
    staff_client.post(toggle)
    assert Setting.load().batch_mode_enabled is False


def test_toggle_needs_post_and_csrf(staff_client: Client) -> None:
    toggle = reverse("admin:batchgen_setting_toggle")
    assert staff_client.get(toggle).status_code == 405
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(get_user_model().objects.get(username="staff"))
    assert strict.post(toggle).status_code == 403
    assert Setting.load().batch_mode_enabled is False


def test_anonymous_and_non_staff_users_are_kept_out() -> None:
    url = reverse("admin:batchgen_setting_changelist")
    anonymous = Client().get(url)
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]
    user = get_user_model().objects.create_user("plain", password="pw-123456")
    client = Client()
    client.force_login(user)
    assert client.get(url).status_code == 302
    assert client.post(reverse("admin:batchgen_setting_toggle")).status_code == 302
    assert Setting.load().batch_mode_enabled is False


def test_the_bot_token_is_write_only(staff_client: Client, telegram_env) -> None:
    bot = make_bot("tokenbot", telegram_token="123456:SECRET-TOKEN-VALUE-abcdefghijklmnop")
    url = reverse("admin:batchgen_bot_change", args=[bot.pk])
    page = staff_client.get(url).content.decode()
    assert "SECRET-TOKEN-VALUE" not in page
    staff_client.post(url, {"name": "tokenbot", "telegram_token": "", "persona": "p",
                            "is_active": "on"})
    assert Bot.objects.get(pk=bot.pk).telegram_token.endswith("abcdefghijklmnop")
    staff_client.post(url, {"name": "tokenbot", "telegram_token": "999:NEW", "persona": "p",
                            "is_active": "on"})
    assert Bot.objects.get(pk=bot.pk).telegram_token == "999:NEW"
    listing = staff_client.get(reverse("admin:batchgen_bot_changelist")).content.decode()
    assert "999:NEW" not in listing


def test_django_rq_dashboard_is_reachable_for_staff(staff_client: Client) -> None:
    assert staff_client.get(reverse("admin:django_rq_home")).status_code == 200
    assert Client().get(reverse("admin:django_rq_home")).status_code == 302


def test_the_settings_page_lists_every_known_setting_even_after_a_delete(
        staff_client: Client) -> None:
    Setting.objects.all().delete()
    page = staff_client.get(reverse("admin:batchgen_setting_changelist")).content.decode()
    assert "batch_mode_enabled" in page and "batch_size" in page
    assert dict(Setting.objects.values_list("key", "value")) == {
        "batch_mode_enabled": False, "batch_size": 1}
