"""The staff dashboard pages and JSON endpoint (batchgen.views)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.urls import include, path

from batchgen.dashboard.scrape import metrics_view
from tests.unit.test_dashboard import (
    BOT_TOKEN,
    make_batch,
    make_generation,
    make_message,
)

# The project mounts these the same way (botplatform/urls.py).
urlpatterns = [
    path("admin/", admin.site.urls),
    path("dashboard/", include("batchgen.urls")),
    path("metrics", metrics_view),
]
pytestmark = [pytest.mark.urls("tests.unit.test_views"), pytest.mark.django_db]


def make_full_batch(**fields: object):
    run = make_batch(status="partial", successes=1, failures=1, **fields)
    sent = make_generation(run, prompt="Write about BIST100 today", text="BIST100 rose.")
    make_message(sent, telegram_message_id=4242)
    make_generation(run, ok=False, error_kind="rate_limit", error="429 from provider")
    return run


@pytest.mark.parametrize("url", ["/dashboard/", "/dashboard/live/", "/dashboard/batches/1/",
                                 "/dashboard/api/batches/"])
def test_anonymous_visitors_are_sent_to_the_admin_login(client, url: str) -> None:
    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={url}"


@pytest.mark.parametrize("url", ["/dashboard/", "/dashboard/live/", "/dashboard/api/batches/"])
def test_logged_in_non_staff_get_403(client, url: str) -> None:
    client.force_login(User.objects.create(username="visitor"))

    assert client.get(url).status_code == 403


def test_dashboard_shows_cards_charts_and_history(operator_client) -> None:
    run = make_full_batch()

    page = operator_client.get("/dashboard/").content.decode()

    assert "Cards cover <b>today, " in page and "Circuit breakers" in page
    assert "50.0%" in page  # success rate today: 1 of 2
    assert page.count('<figure class="chart">') == 4  # all four charts drawn
    assert f'href="/dashboard/batches/{run.pk}/"' in page
    assert 'href="/admin/batchgen/setting/"' in page
    assert "dashboard/dashboard.js" in page


def test_dashboard_without_batches_shows_empty_states(operator_client) -> None:
    page = operator_client.get("/dashboard/").content.decode()

    assert page.count("No data yet") == 4
    assert "No batches yet." in page
    assert "no cost" in page  # once, in the Cost panel: the Tokens card no longer repeats it


def test_unknown_cost_shows_na_not_zero(operator_client) -> None:
    make_batch(cost_usd=None)

    page = operator_client.get("/dashboard/").content.decode()

    assert '<td class="n">n/a</td>' in page


def test_bad_filters_show_a_message_not_a_500(operator_client) -> None:
    make_batch()

    response = operator_client.get("/dashboard/?mode=turbo&date_to=31-31-2025&page=x")

    assert response.status_code == 200
    page = response.content.decode()
    assert "Ignored filter" in page and "turbo" in page


def test_live_fragment_holds_cards_and_history_without_the_page_shell(operator_client) -> None:
    make_full_batch()

    fragment = operator_client.get("/dashboard/live/?status=partial").content.decode()

    assert "<html" not in fragment
    assert 'aria-label="Overview"' in fragment and 'aria-label="Batch history"' in fragment


def test_detail_page_lists_every_item_with_its_outcome(operator_client) -> None:
    run = make_full_batch(cost_usd=Decimal("0.000321"))

    page = operator_client.get(f"/dashboard/batches/{run.pk}/").content.decode()

    assert "Write about BIST100 today" in page and "BIST100 rose." in page
    assert "tg 4242" in page and "rate_limit" in page and "429 from provider" in page
    assert "$0.000321" in page


def test_detail_of_a_missing_batch_is_404(operator_client) -> None:
    assert operator_client.get("/dashboard/batches/999999/").status_code == 404


def test_json_history_is_filtered_and_paginated(operator_client) -> None:
    for _ in range(27):
        make_batch(provider="gemini")
    make_batch(provider="groq")

    first = operator_client.get("/dashboard/api/batches/?provider=gemini").json()
    second = operator_client.get(first["next"]).json()

    assert (first["count"], first["num_pages"], len(first["results"])) == (27, 2, 25)
    assert first["next"] == "/dashboard/api/batches/?provider=gemini&page=2"
    assert len(second["results"]) == 2 and second["next"] is None
    assert {r["provider"] for r in first["results"] + second["results"]} == {"gemini"}
    assert first["results"][0]["cost_usd"] == "0.001200"


def test_json_history_rejects_bad_filters_with_400(operator_client) -> None:
    response = operator_client.get("/dashboard/api/batches/?status=exploded")

    assert response.status_code == 400
    assert "exploded" in json.dumps(response.json()["errors"])


@pytest.mark.parametrize("rows", [5, 60])
def test_history_queries_are_bounded_whatever_its_length(
        operator_client, django_assert_max_num_queries, rows: int) -> None:
    for _ in range(rows):
        make_full_batch()

    # Same bound for 5 and 60 rows: session + user + a fixed set of aggregates.
    # 12 for the page as before, plus one for the health panel's oldest pending item and
    # one for the cost panel; and 10 for the operator's panels (queue now with paused,
    # dead, failures by cause, paused bots/chats/providers, the effective setting).
    with django_assert_max_num_queries(24):
        assert operator_client.get("/dashboard/").status_code == 200
    with django_assert_max_num_queries(4):
        assert operator_client.get("/dashboard/api/batches/").status_code == 200


@pytest.mark.parametrize("items", [2, 30])
def test_detail_queries_are_bounded_whatever_the_batch_size(
        operator_client, django_assert_max_num_queries, items: int) -> None:
    run = make_batch()
    for _ in range(items):
        make_message(make_generation(run), telegram_message_id=1)

    with django_assert_max_num_queries(5):
        assert operator_client.get(f"/dashboard/batches/{run.pk}/").status_code == 200


def test_no_page_ever_shows_a_bot_token_or_api_key(operator_client, settings) -> None:
    settings.GROQ_API_KEY = "gsk-known-groq-key-987654"
    run = make_full_batch()
    make_generation(run, ok=False, error=f"bot {BOT_TOKEN} key gsk-known-groq-key-987654")

    bodies = [operator_client.get(url).content.decode() for url in (
        "/dashboard/", "/dashboard/live/", f"/dashboard/batches/{run.pk}/",
        "/dashboard/api/batches/")]

    for body in bodies:
        assert BOT_TOKEN not in body
        assert "gsk-known-groq-key-987654" not in body
    assert "[redacted]" in bodies[2]


@pytest.mark.parametrize(("bad", "field"), [("date_to=9999-12-31", "to"),
                                            ("date_from=9999-12-31", "from"),
                                            ("date_from=0001-01-01", "from")])
def test_a_date_out_of_range_is_a_form_error_not_a_500(operator_client, bad: str,
                                                       field: str) -> None:
    make_batch()

    page = operator_client.get(f"/dashboard/?{bad}")
    live = operator_client.get(f"/dashboard/live/?{bad}")
    api = operator_client.get(f"/dashboard/api/batches/?{bad}")

    rule = f"{field}: must be a date from 2000-01-01 to 2999-12-31"
    assert (page.status_code, live.status_code) == (200, 200)
    assert rule in page.content.decode() and rule in live.content.decode()
    assert api.status_code == 400 and api.json()["errors"] == [rule]


def test_a_single_send_shows_its_cost_not_zero(operator_client) -> None:
    make_batch(mode="single", size=1, cost_usd=Decimal("0.000031"))

    page = operator_client.get("/dashboard/").content.decode()

    assert '<td class="n">0.0000310</td>' in page and "0.0000<" not in page


def test_every_time_is_24_hour_with_the_zone(operator_client, settings) -> None:
    settings.TIME_ZONE = "Europe/Istanbul"
    run = make_full_batch()
    BatchRunModel = type(run)
    BatchRunModel.objects.filter(pk=run.pk).update(
        created_at="2026-05-01T13:04:05+00:00", started_at="2026-05-01T13:04:06+00:00")

    listing = operator_client.get("/dashboard/").content.decode()
    detail = operator_client.get(f"/dashboard/batches/{run.pk}/").content.decode()

    assert "2026-05-01 16:04:05 +03" in listing
    assert "2026-05-01 16:04:05 +03" in detail and "16:04:06 +03" in detail
    assert "p.m." not in listing + detail and " PM" not in listing + detail


def test_the_page_filters_change_the_cards_not_only_the_table(operator_client) -> None:
    make_message(make_generation(make_batch(provider="groq")))
    for _ in range(2):
        make_message(make_generation(make_batch(provider="openai")))

    every = operator_client.get("/dashboard/live/").content.decode()
    groq = operator_client.get("/dashboard/live/?provider=groq").content.decode()

    assert '<p class="big" data-card="sent">3</p>' in every
    assert '<p class="big" data-card="sent">1</p>' in groq
    assert "· groq</b>" in groq


def test_the_batch_page_links_to_its_items_messages_and_rq_job(operator_client) -> None:
    run = make_full_batch(rq_job_id="job-abc-123")

    page = operator_client.get(f"/dashboard/batches/{run.pk}/").content.decode()

    assert f'href="/admin/batchgen/queueitem/?batch_run__id__exact={run.pk}"' in page
    assert f'href="/admin/batchgen/message/?batch_run__id__exact={run.pk}"' in page
    assert 'href="/admin/django_rq/dashboard/queues/0/job-abc-123/"' in page


def test_the_404_page_is_styled_with_a_way_back(operator_client) -> None:
    response = operator_client.get("/dashboard/batches/999999/")

    page = response.content.decode()
    assert response.status_code == 404
    assert "dashboard/dashboard.css" in page and "Page not found" in page
    assert 'href="/dashboard/"' in page


def test_the_403_page_is_styled_and_explains_who_may_enter(client) -> None:
    client.force_login(User.objects.create(username="visitor"))

    page = client.get("/dashboard/").content.decode()

    assert "dashboard/dashboard.css" in page and "for staff members" in page
    assert 'href="/dashboard/"' in page


def test_the_500_page_renders_without_a_request_context(rf) -> None:
    from django.views.defaults import server_error

    response = server_error(rf.get("/boom"))

    page = response.content.decode()
    assert response.status_code == 500
    assert "dashboard/dashboard.css" in page and "Something went wrong" in page
    assert 'href="/dashboard/"' in page


def test_the_dashboard_shows_the_health_panel_from_the_heartbeats(operator_client,
                                                                   redis_url: str) -> None:
    from batchgen.dashboard import health

    before = operator_client.get("/dashboard/").content.decode()
    health.beat("tick")
    after = operator_client.get("/dashboard/").content.decode()

    assert 'aria-label="Health"' in before
    assert 'data-health="tick"' in before and "never" in before  # no tick has beaten yet
    assert "0 s ago" in after or "1 s ago" in after


@pytest.mark.postgres
@pytest.mark.parametrize(("bad", "field"), [("date_to=9999-12-31", "to"),
                                            ("date_from=0001-01-01", "from")])
def test_a_date_out_of_range_is_a_form_error_on_postgresql_too(operator_client, bad: str,
                                                               field: str) -> None:
    test_a_date_out_of_range_is_a_form_error_not_a_500(operator_client, bad, field)
