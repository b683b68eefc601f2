"""An operator's round trip in a real browser: admin settings, a tick, the dashboard."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from playwright.sync_api import Page, expect

from batchgen.delivery import scheduler
from batchgen.models import BatchRun, QueueItem, Setting
from batchgen.templatetags.dashboard_format import usd
from tests.browser_support import (
    CHART_NAMES,
    TIMEOUT_MS,
    admin_login,
    chart_state,
    edit_setting,
    row_cells,
    screenshot_path,
)
from tests.factories import make_bot, make_chat, make_item

# serialized_rollback: a transactional test flushes the tables, and the Setting
# rows made by the data migration must be there for the admin to edit.
pytestmark = [pytest.mark.browser,
              pytest.mark.django_db(transaction=True, serialized_rollback=True)]

PASSWORD = "operator-pass-1234"
BATCH_SIZE = 5


def make_operator(django_user_model: Any) -> str:
    """A staff member allowed to view and change settings, nothing more."""
    user = django_user_model.objects.create_user("operator", password=PASSWORD, is_staff=True)
    user.user_permissions.set(Permission.objects.filter(
        codename__in=["view_setting", "change_setting"]))
    return user.get_username()


def queue_work() -> list[QueueItem]:
    """Four ordinary items and one the fake provider refuses, so the batch is partial."""
    items = [make_item(make_bot(), make_chat()) for _ in range(BATCH_SIZE - 1)]
    items.append(make_item(make_bot(persona="[[fault:content_filter]]"), make_chat()))
    return items


def switch_batch_mode_on(page: Page) -> None:
    expect(page.locator("#batch-mode-state")).to_contain_text("Batch mode is off")
    page.click("#toggle-batch-mode")
    expect(page.locator("#batch-mode-state")).to_contain_text("Batch mode is on")
    edit_setting(page, "batch_size", str(BATCH_SIZE))
    expect(page.locator("#batch-mode-state")).to_contain_text(f"batch size {BATCH_SIZE}")


def refresh_without_reload(page: Page) -> None:
    # dashboard.js refreshes on its timer and whenever the tab becomes visible;
    # firing the latter refreshes now instead of waiting out the interval.
    page.evaluate("() => { window.__sameDocument = true; "
                  "document.dispatchEvent(new Event('visibilitychange')); }")


def assert_history_row(page: Page, run: BatchRun) -> None:
    selector = f"section.history tbody tr:has(a[href='/dashboard/batches/{run.pk}/'])"
    expect(page.locator(selector)).to_have_count(1)
    cells = row_cells(page, selector)
    assert cells[2:8] == [run.get_mode_display(), "partial", f"openai · {run.model}",
                          str(BATCH_SIZE), str(BATCH_SIZE - 1), "1"]
    assert cells[8] == f"{run.duration_s:.2f}"  # items and duration: no per-run msg/s
    assert cells[10] == str(run.prompt_tokens + run.completion_tokens)
    assert cells[11] == usd(run.cost_usd)
    assert cells[12] == str(BATCH_SIZE)  # in flight: the batch_size the operator set


def test_an_operator_sets_batch_mode_and_sees_the_batch_on_the_dashboard(
        page: Page, live_server: Any, django_user_model: Any, pipeline_env: Any,
        capsys: pytest.CaptureFixture) -> None:
    page.set_default_timeout(TIMEOUT_MS)
    base = live_server.url
    username = make_operator(django_user_model)
    admin_login(page, base, username, PASSWORD, "/admin/batchgen/setting/")
    switch_batch_mode_on(page)
    assert (Setting.load().batch_mode_enabled, Setting.load().batch_size) == (True, BATCH_SIZE)

    page.goto(f"{base}/dashboard/")
    expect(page.locator("section.history")).to_contain_text("No batches yet")
    assert [chart_state(page, name)["empty"] for name in CHART_NAMES] == [1, 1, 1, 1]
    items = queue_work()
    run = scheduler.tick(sync=True).run
    refresh_without_reload(page)
    assert_history_row(page, run)
    assert page.evaluate("() => window.__sameDocument") is True  # no full reload happened
    expect(page.locator("[data-card=sent]")).to_have_text(str(BATCH_SIZE - 1))
    for name in CHART_NAMES:
        state = chart_state(page, name)
        assert state["svg"] == 1 and state["marks"] > 0 and state["empty"] == 0, (name, state)

    shot = screenshot_path("dashboard.png")
    page.screenshot(path=str(shot), full_page=True)
    with capsys.disabled():  # shown in the run's output even when the test passes
        print(f"\ndashboard screenshot: {shot}")

    page.click(f"a[href='/dashboard/batches/{run.pk}/']")
    expect(page.locator("h1")).to_contain_text(f"Batch #{run.pk}")
    rows = page.locator("table.items tbody tr")
    expect(rows).to_have_count(BATCH_SIZE)
    bot_names = [t.strip() for t in rows.locator("td:nth-child(2)").all_inner_texts()]
    assert sorted(bot_names) == sorted(item.bot.name for item in items)
    expect(page.locator("table.items tr.failed")).to_contain_text("content_filter")
    page.screenshot(path=str(screenshot_path("batch-detail.png")), full_page=True)
