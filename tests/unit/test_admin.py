from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils.formats import reset_format_cache

from batchgen.models import MAX_PERSONA_CHARS, BatchRun, Bot, Chat, QueueItem, Setting
from tests.factories import make_bot

pytestmark = pytest.mark.django_db


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


def test_the_batch_route_is_turned_on_per_provider_and_an_unknown_one_is_named(
        staff_client: Client) -> None:
    Setting.ensure_defaults()
    refused = change_setting(staff_client, "batch_route_providers", '["openai", "mistral"]')
    assert "batch_route_providers must name only openai, groq, gemini; unknown: mistral" \
        in refused.content.decode()
    assert Setting.load().batch_route_providers == []
    assert change_setting(staff_client, "batch_route_providers", '["groq"]').status_code == 302
    assert Setting.load().batch_route_providers == ["groq"]


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
    user = get_user_model().objects.create_user("plain")
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


def test_a_bots_own_daily_spend_cap_is_set_on_its_page(staff_client: Client,
                                                       telegram_env) -> None:
    # The README sends operators to the bot's page for its own cap (issue 21): it was not
    # on the form.
    bot = make_bot("capbot")
    url = reverse("admin:batchgen_bot_change", args=[bot.pk])
    assert 'name="daily_spend_cap_usd"' in staff_client.get(url).content.decode()

    staff_client.post(url, {"name": "capbot", "telegram_token": "", "persona": "p",
                            "is_active": "on", "daily_spend_cap_usd": "2.50"})

    assert Bot.objects.get(pk=bot.pk).daily_spend_cap_usd == Decimal("2.50")


def test_a_persona_over_the_limit_is_refused_on_the_form_and_nothing_is_saved(
        staff_client: Client) -> None:
    bot = make_bot("longbot", persona="short and sweet")
    url = reverse("admin:batchgen_bot_change", args=[bot.pk])

    page = staff_client.post(url, {"name": "longbot", "telegram_token": "",
                                   "persona": "x" * (MAX_PERSONA_CHARS + 1), "is_active": "on"})

    assert page.status_code == 200  # the form again, with the error
    assert f"At most {MAX_PERSONA_CHARS:,} characters." in page.content.decode()
    assert (f"The persona may be at most {MAX_PERSONA_CHARS:,} characters (it has "
            f"{MAX_PERSONA_CHARS + 1})") in page.content.decode()
    assert Bot.objects.get(pk=bot.pk).persona == "short and sweet"


def test_django_rq_dashboard_is_reachable_for_staff(staff_client: Client) -> None:
    assert staff_client.get(reverse("admin:django_rq_home")).status_code == 200
    assert Client().get(reverse("admin:django_rq_home")).status_code == 302


def test_the_settings_page_lists_every_known_setting_even_after_a_delete(
        staff_client: Client) -> None:
    Setting.objects.all().delete()
    page = staff_client.get(reverse("admin:batchgen_setting_changelist")).content.decode()
    assert "batch_mode_enabled" in page and "batch_size" in page
    assert dict(Setting.objects.values_list("key", "value")) == {
        "batch_mode_enabled": False, "batch_size": 1, "batch_route_providers": [],
        "paused_providers": [], "chat_messages_per_hour": 0, "chat_daily_spend_cap_usd": 0.0,
        "bot_daily_spend_cap_usd": 0.0}


@pytest.mark.parametrize("next_url", ["https://evil.example/phish", "//evil.example/",
                                      "javascript:alert(1)"])
def test_toggle_never_redirects_off_site(staff_client: Client, next_url: str) -> None:
    response = staff_client.post(reverse("admin:batchgen_setting_toggle"), {"next": next_url})

    assert response.status_code == 302
    assert response["Location"] == reverse("admin:batchgen_setting_changelist")
    assert Setting.load().batch_mode_enabled is True


def test_toggle_follows_a_local_next(staff_client: Client) -> None:
    response = staff_client.post(reverse("admin:batchgen_setting_toggle"),
                                 {"next": "/dashboard/?status=partial"})

    assert response["Location"] == "/dashboard/?status=partial"


@pytest.mark.parametrize("model", ["queueitem", "message"])
def test_changelists_stay_small_with_thousands_of_bots_and_chats(
        staff_client: Client, model: str) -> None:
    bots = Bot.objects.bulk_create(
        Bot(name=f"bulk-bot-{n:04d}", telegram_token=f"{n}:T") for n in range(2000))
    chats = Chat.objects.bulk_create(
        Chat(telegram_chat_id=-5_000_000 - n, title=f"bulk-chat-{n:04d}") for n in range(2000))
    QueueItem.objects.create(bot=bots[0], chat=chats[0])

    page = staff_client.get(reverse(f"admin:batchgen_{model}_changelist")).content.decode()

    assert "bulk-bot-1999" not in page and "bulk-chat-1999" not in page
    assert len(page) < 60_000


@pytest.mark.parametrize("model", ["batchrun", "generation", "message"])
def test_derived_records_cannot_be_added_by_hand(staff_client: Client, model: str) -> None:
    changelist = staff_client.get(reverse(f"admin:batchgen_{model}_changelist"))

    assert changelist.status_code == 200
    assert f"/admin/batchgen/{model}/add/" not in changelist.content.decode()
    assert staff_client.get(f"/admin/batchgen/{model}/add/").status_code == 403


def test_a_setting_value_reads_as_json_before_and_after_the_toggle(
        staff_client: Client) -> None:
    url = reverse("admin:batchgen_setting_changelist")
    before = staff_client.get(url).content.decode()
    staff_client.post(reverse("admin:batchgen_setting_toggle"))
    after = staff_client.get(url).content.decode()

    assert '<td class="field-shown_value">false</td>' in before
    assert '<td class="field-shown_value">true</td>' in after


def test_a_rejected_value_never_shows_as_the_page_title(staff_client: Client) -> None:
    page = change_setting(staff_client, "batch_size", "51").content.decode()

    title = page.split("<title>")[1].split("</title>")[0]
    assert "51" not in title and "batch_size = 1" in title
    assert "&rsaquo; batch_size = 1\n</div>" in page  # the breadcrumb too


def test_the_queue_item_add_form_asks_only_what_a_person_decides(staff_client: Client) -> None:
    bot, chat = make_bot(), Chat.objects.create(telegram_chat_id=-42, title="room")
    add = reverse("admin:batchgen_queueitem_add")

    form = staff_client.get(add).content.decode()
    response = staff_client.post(add, {"bot": bot.pk, "chat": chat.pk, "priority": 5,
                                       "status": "done", "attempts": 9})

    for field in ("bot", "chat", "priority"):
        assert f'name="{field}"' in form
    for field in ("status", "attempts", "lease_expires_at", "batch_run", "recent_messages"):
        assert f'name="{field}"' not in form
    assert response.status_code == 302
    item = QueueItem.objects.get()
    assert (item.priority, item.status, item.attempts) == (5, "pending", 0)


def test_system_fields_of_a_queue_item_are_read_only(staff_client: Client) -> None:
    item = QueueItem.objects.create(bot=make_bot(), chat=Chat.objects.create(
        telegram_chat_id=-43), status="claimed", attempts=2)

    page = staff_client.get(reverse("admin:batchgen_queueitem_change",
                                    args=[item.pk])).content.decode()

    assert 'name="priority"' in page and 'name="status"' not in page
    assert 'name="attempts"' not in page and "claimed" in page


def test_the_admin_carries_the_product_name_and_readable_app_names(
        staff_client: Client) -> None:
    index = staff_client.get(reverse("admin:index")).content.decode()
    login = Client().get(reverse("admin:login")).content.decode()

    assert "botplatform administration" in index and "Django administration" not in index
    assert "<title>Log in | botplatform admin</title>" in login
    assert "Job queues (RQ)" in index


def test_a_batch_run_links_to_its_items_messages_and_rq_job(staff_client: Client) -> None:
    run = BatchRun.objects.create(mode="batch", rq_job_id="job-77")

    page = staff_client.get(reverse("admin:batchgen_batchrun_change",
                                    args=[run.pk])).content.decode()

    assert f'href="/admin/batchgen/queueitem/?batch_run__id__exact={run.pk}"' in page
    assert f'href="/admin/batchgen/message/?batch_run__id__exact={run.pk}"' in page
    assert 'href="/admin/django_rq/dashboard/queues/0/job-77/"' in page
    assert f'href="/dashboard/batches/{run.pk}/"' in page


@pytest.fixture
def project_formats(settings):
    # Django caches format modules and does not drop the cache for FORMAT_MODULE_PATH.
    settings.FORMAT_MODULE_PATH = ["botplatform.formats"]
    reset_format_cache()
    yield
    del settings.FORMAT_MODULE_PATH
    reset_format_cache()


def test_admin_pages_show_times_in_the_dashboards_format(staff_client: Client,
                                                         project_formats: None) -> None:
    item = QueueItem.objects.create(bot=make_bot(), chat=Chat.objects.create(
        telegram_chat_id=-44))
    QueueItem.objects.filter(pk=item.pk).update(
        created_at=datetime(2026, 5, 1, 13, 4, 5, tzinfo=UTC))

    page = staff_client.get(reverse("admin:batchgen_queueitem_change",
                                    args=[item.pk])).content.decode()
    listing = staff_client.get(reverse("admin:batchgen_queueitem_changelist")).content.decode()

    assert "2026-05-01 13:04:05 UTC" in page and "2026-05-01 13:04:05 UTC" in listing
    assert "p.m." not in page + listing and "a.m." not in page + listing


def test_a_settings_change_page_says_what_its_value_means(staff_client) -> None:
    Setting.ensure_defaults()
    setting = Setting.objects.get(key="batch_size")

    page = staff_client.get(reverse("admin:batchgen_setting_change", args=[setting.pk]))

    text = page.content.decode()
    assert "How many prompts a run keeps in flight in batch mode" in text
    assert "a run refills until the queue is empty" in text


def test_staff_see_the_provider_batches_but_cannot_change_them(staff_client: Client) -> None:
    from batchgen.models import ProviderBatch

    batch = ProviderBatch.objects.create(provider="openai", model="gpt-4o-mini",
                                         external_id="batch_abc", size=3)
    listing = staff_client.get(reverse("admin:batchgen_providerbatch_changelist"))
    assert "batch_abc" in listing.content.decode()
    page = staff_client.get(reverse("admin:batchgen_providerbatch_change", args=[batch.pk]))
    assert page.status_code == 200
    staff_client.post(reverse("admin:batchgen_providerbatch_change", args=[batch.pk]),
                      {"external_id": "changed", "provider": "openai"})
    assert ProviderBatch.objects.get(pk=batch.pk).external_id == "batch_abc"


def test_the_settings_page_pauses_and_resumes_a_provider_and_resume_wakes_the_loops(
        staff_client: Client, monkeypatch: pytest.MonkeyPatch,
        django_capture_on_commit_callbacks) -> None:
    from batchgen.work import queue

    woken: list[bool] = []
    monkeypatch.setattr(queue, "nudge", lambda: woken.append(True))
    url = reverse("admin:batchgen_setting_provider_pause")
    page = staff_client.get(reverse("admin:batchgen_setting_changelist")).content.decode()
    assert f'action="{url}"' in page

    paused = staff_client.post(url, {"provider": "groq", "action": "pause"}, follow=True)
    assert Setting.load().paused_providers == ["groq"]
    assert "Paused provider groq." in paused.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(url, {"provider": "groq", "action": "resume"})
    assert Setting.load().paused_providers == [] and woken == [True]
