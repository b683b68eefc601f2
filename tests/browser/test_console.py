"""Issue 23 in Debian's chromium: requeue, pause and resume, search, failures by cause, the
effective setting, no sideways scrolling from 360 to 1920 px, WCAG AA contrast measured from
computed styles, and the branded error pages."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import SuspiciousOperation
from django.urls import include, path
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect

from batchgen.models import BatchRun, Bot, Chat, Generation, QueueItem, Setting
from tests.browser_support import (  # noqa: F401 - fixtures, used by name
    TIMEOUT_MS,
    admin_login,
    browser_context_args_fixture,
    browser_fixture,
    browser_type_launch_args_fixture,
    playwright_fixture,
    screenshot_path,
)
from tests.factories import make_bot, make_chat, make_item, make_run, set_batch_mode

pytestmark = [pytest.mark.browser,
              pytest.mark.django_db(transaction=True, serialized_rollback=True)]

PASSWORD = "console-pass-1234"
Status = QueueItem.Status


def boom(request: Any) -> None:
    raise RuntimeError("a bug, for the 500 page")


def bad(request: Any) -> None:
    raise SuspiciousOperation("a malformed request, for the 400 page")


# This module is also a URLconf: the project's URLs plus two that fail on purpose.
urlpatterns = [path("boom/", boom), path("bad/", bad), path("", include("botplatform.urls"))]


@pytest.fixture(name="page")
def page_fixture(browser: Browser, live_server: Any, django_user_model: Any) -> Iterator[Page]:
    """A logged-in superuser's page at 1280 px."""
    django_user_model.objects.create_superuser("ops", "ops@example.invalid", PASSWORD)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    admin_login(page, live_server.url, "ops", PASSWORD, "/dashboard/")
    yield page
    context.close()


def died(chat: Chat | None = None, kind: str = "server_error", provider: str = "openai",
         bot: Bot | None = None) -> QueueItem:
    item = make_item(bot=bot, chat=chat, status=Status.DEAD, attempts=3,
                     finished_at=timezone.now(),
                     last_error=f"gave up after 3 attempts: {kind}: upstream said no")
    Generation.objects.create(batch_run=make_run(status="failed"), queue_item=item,
                              bot=item.bot, chat=item.chat, ok=False, error_kind=kind,
                              provider=provider, prompt="Talk about the markets")
    return item


def make_console_data() -> None:
    """Dead items in two causes, a paused bot, a running run: every panel has rows."""
    traders = make_chat(title="traders")
    died(traders), died(traders), died(make_chat(title="news"), "timeout", "groq")
    paused = make_bot("sleepy")
    Bot.objects.filter(id=paused.id).update(paused_at=timezone.now())
    make_item(bot=paused)
    run = make_run(status=BatchRun.Status.RUNNING, model="gpt-4o-mini", provider="openai")
    Generation.objects.create(batch_run=run, ok=True, model="gpt-4o-mini", prompt_tokens=100,
                              completion_tokens=20, text="Markets rose.")


def test_requeue_from_the_dashboard_by_keyboard(page: Page, live_server: Any) -> None:
    chat = make_chat(title="traders")
    item = died(chat)
    page.goto(f"{live_server.url}/dashboard/")

    button = page.locator("[data-panel=failures] tr[data-failure=server_error] button")
    button.focus()
    page.keyboard.press("Enter")

    expect(page.locator(".messages")).to_contain_text("Requeued 1 item.")
    item.refresh_from_db()
    assert (item.status, item.attempts) == (Status.PENDING, 0)
    assert "upstream said no" in item.history[0]["reason"]
    expect(page.locator("[data-panel=failures]")).to_contain_text("No dead items.")


def refresh_now(page: Page) -> None:
    """Run dashboard.js's auto-refresh now (it also refreshes when the tab turns visible) and
    wait until it has answered."""
    status = page.locator("#refresh-status")
    before = status.inner_text()
    page.evaluate("() => document.dispatchEvent(new Event('visibilitychange'))")
    expect(status).not_to_have_text(before)


def test_a_requeue_after_an_auto_refresh_lands_on_the_filtered_dashboard(
        page: Page, live_server: Any) -> None:
    died(make_chat(title="traders"))
    page.goto(f"{live_server.url}/dashboard/?mode=single")
    refresh_now(page)

    page.locator("[data-requeue=all]").click()

    expect(page).to_have_url(f"{live_server.url}/dashboard/?mode=single")
    expect(page.locator(".messages")).to_contain_text("Requeued 1 item.")


def test_keyboard_focus_on_a_button_survives_an_auto_refresh(page: Page,
                                                            live_server: Any) -> None:
    died(make_chat(title="traders"))
    page.goto(f"{live_server.url}/dashboard/")
    on_requeue = "() => document.activeElement.matches('[data-requeue=all]')"
    for _ in range(80):
        page.keyboard.press("Tab")
        if page.evaluate(on_requeue):
            break
    assert page.evaluate(on_requeue), "Tab never reached the Requeue button"

    refresh_now(page)

    assert page.evaluate(on_requeue)
    page.keyboard.press("Enter")
    expect(page.locator(".messages")).to_contain_text("Requeued 1 item.")


def test_requeue_from_the_admin(page: Page, live_server: Any) -> None:
    item, other = died(), died()
    page.goto(f"{live_server.url}/admin/batchgen/queueitem/?status__exact=dead")
    expect(page.locator("#result_list")).to_contain_text("upstream said no")  # error column

    page.check(f"input[name=_selected_action][value='{item.id}']")
    page.select_option("select[name=action]", "requeue")
    page.click("button[name=index]")

    expect(page.locator(".messagelist")).to_contain_text("Requeued 1 item.")
    assert QueueItem.objects.get(id=item.id).status == Status.PENDING
    assert QueueItem.objects.get(id=other.id).status == Status.DEAD


def test_requeue_one_item_from_its_row_in_a_batch_detail(page: Page, live_server: Any) -> None:
    item, other = died(), died()
    run = item.generations.get().batch_run
    page.goto(f"{live_server.url}/dashboard/batches/{run.pk}/")

    page.locator(f"tr[data-item='{item.id}'] button[data-requeue=item]").click()

    expect(page).to_have_url(f"{live_server.url}/dashboard/batches/{run.pk}/")
    expect(page.locator(".messages")).to_contain_text("Requeued 1 item.")
    assert QueueItem.objects.get(id=item.id).status == Status.PENDING
    assert QueueItem.objects.get(id=other.id).status == Status.DEAD
    expect(page.locator(f"tr[data-item='{item.id}'] button[data-requeue=item]")).to_have_count(0)


def test_pause_and_resume_a_bot_from_the_dashboard(page: Page, live_server: Any) -> None:
    make_item(bot=make_bot("alpha"))
    page.goto(f"{live_server.url}/dashboard/")

    form = page.locator("form.pause-form")
    form.locator("select[name=kind]").select_option("bot")
    form.locator("input[name=target]").fill("alpha")
    form.locator("button[value=pause]").click()

    expect(page.locator(".messages")).to_contain_text("Paused bot alpha.")
    expect(page.locator("[data-paused=bot-alpha]")).to_be_visible()
    expect(page.locator("[data-queue=paused] b")).to_have_text("1")
    expect(page.locator("[data-queue=pending] b")).to_have_text("0")

    page.locator("[data-paused=bot-alpha] button").click()

    expect(page.locator(".messages")).to_contain_text("Resumed bot alpha.")
    expect(page.locator("[data-panel=paused]")).to_contain_text("Nothing is paused.")
    expect(page.locator("[data-queue=pending] b")).to_have_text("1")


def test_pause_and_resume_a_provider_from_the_admin(page: Page, live_server: Any) -> None:
    page.goto(f"{live_server.url}/admin/batchgen/setting/")

    page.locator("#providers [data-provider=groq] button[value=pause]").click()

    expect(page.locator(".messagelist")).to_contain_text("Paused provider groq.")
    expect(page.locator("#providers [data-provider=groq]")).to_contain_text("paused")
    page.goto(f"{live_server.url}/dashboard/")
    expect(page.locator("[data-paused=provider-groq]")).to_be_visible()

    page.goto(f"{live_server.url}/admin/batchgen/setting/")
    page.locator("#providers [data-provider=groq] button[value=resume]").click()

    expect(page.locator(".messagelist")).to_contain_text("Resumed provider groq.")
    assert Setting.load().paused_providers == []


def test_pause_a_chat_from_the_admin_shows_its_work_as_paused(page: Page,
                                                              live_server: Any) -> None:
    chat = make_chat(title="quiet room")
    make_item(chat=chat)
    page.goto(f"{live_server.url}/admin/batchgen/chat/")
    page.check(f"input[name=_selected_action][value='{chat.id}']")
    page.select_option("select[name=action]", "pause")
    page.click("button[name=index]")
    expect(page.locator(".messagelist")).to_contain_text("Paused 1")

    page.goto(f"{live_server.url}/admin/batchgen/queueitem/")

    expect(page.locator("#result_list td.field-state")).to_have_text("paused")


def test_search_filters_the_history_and_the_queue(page: Page, live_server: Any) -> None:
    chat = make_chat(title="traders")
    item = make_item(chat=chat)
    wanted = make_run(status="succeeded")
    Generation.objects.create(batch_run=wanted, queue_item=item, chat=chat, ok=True,
                              text="BIST100 rose.")
    make_run(status="succeeded"), make_item()
    page.goto(f"{live_server.url}/dashboard/")

    page.fill("input[name=search]", "BIST100")
    page.click("form.filters button[type=submit]")

    rows = page.locator("section.history tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first.locator("td").first).to_have_text(str(wanted.pk))
    expect(page.locator("section.history h2")).to_contain_text("matching “BIST100”")

    page.click("text=the queue items matching")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    expect(page.locator("#result_list tbody tr th.field-id")).to_have_text(str(item.id))


def test_failures_are_grouped_with_counts_linking_to_the_items(page: Page,
                                                               live_server: Any) -> None:
    traders = make_chat(title="traders")
    died(traders), died(traders), died(traders, "timeout", "groq"), died()
    page.goto(f"{live_server.url}/dashboard/")

    groups = page.locator("[data-panel=failures] tbody tr")
    expect(groups).to_have_count(3)
    first = groups.first
    expect(first).to_contain_text("server_error")
    expect(first).to_contain_text("traders")
    first.locator("td.n a").click()

    expect(page.locator("#result_list tbody tr")).to_have_count(2)
    page.goto(f"{live_server.url}/dashboard/")
    page.click("[data-queue-link=dead]")
    expect(page.locator("#result_list tbody tr")).to_have_count(4)


def test_the_batch_mode_card_shows_the_effective_setting(page: Page, live_server: Any,
                                                         settings: Any) -> None:
    settings.BATCH_MAX_WORKERS = 10
    set_batch_mode(25)
    page.goto(f"{live_server.url}/dashboard/")

    expect(page.locator("[data-card=batch-mode] [data-effective]")).to_have_text(
        "batch size 25 → 10 in flight: BATCH_MAX_WORKERS")


def page_overflow(page: Page) -> int:
    return page.evaluate("() => document.documentElement.scrollWidth"
                         " - document.documentElement.clientWidth")


def spilled(page: Page) -> list[str]:
    """Elements whose content runs past their card or panel's right edge."""
    return page.evaluate("""() => [...document.querySelectorAll(
        '.card *, .panel *, .filters *')].filter(el => {
          const box = el.closest('.card, .panel, .filters').getBoundingClientRect();
          const r = el.getBoundingClientRect();
          return r.width > 0 && !el.closest('.table-scroll') && r.right > box.right + 1;
        }).map(el => el.tagName + ': ' + el.textContent.trim().slice(0, 40))""")


def long_detail() -> BatchRun:
    """A finished run with long prompts, replies and errors, a dead item and a failed send."""
    run = make_run(status="partial", model="gpt-4o-mini", provider="openai", rq_job_id="job-7",
                   size=3, successes=1, failures=2)
    for ok, status in ((False, Status.DEAD), (True, Status.DONE), (True, Status.DEAD)):
        item = make_item(chat=make_chat(title="a chat with a rather long title " * 2),
                         status=status, batch_run=run)
        Generation.objects.create(
            batch_run=run, queue_item=item, bot=item.bot, chat=item.chat, ok=ok,
            prompt="Talk about the markets and the weather today " * 8,
            text="A long reply about markets, " * 12 if ok else "",
            error="" if ok else "upstream_said_no_" * 12, error_kind="" if ok else "server_error")
    return run


@pytest.mark.parametrize("width", [360, 390, 1400, 1920])
def test_nothing_scrolls_sideways_from_360_to_1920_px(browser: Browser, live_server: Any,
                                                      django_user_model: Any,
                                                      width: int) -> None:
    make_console_data()
    django_user_model.objects.create_superuser("ops", "ops@example.invalid", PASSWORD)
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    admin_login(page, live_server.url, "ops", PASSWORD, "/dashboard/")
    try:
        page.screenshot(path=str(screenshot_path(f"console-{width}.png")), full_page=True)
        assert page_overflow(page) == 0
        assert spilled(page) == []
        response = page.goto(f"{live_server.url}/dashboard/batches/{long_detail().pk}/")
        assert response is not None and response.status == 200  # a real page, not the 404
        expect(page.locator("table.items tbody tr")).to_have_count(3)
        page.screenshot(path=str(screenshot_path(f"console-detail-{width}.png")), full_page=True)
        assert page_overflow(page) == 0
    finally:
        context.close()


CONTRAST_JS = """() => {
  const rgb = s => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map(c => c / 255).map(c =>
      c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4)
      .reduce((sum, c, i) => sum + c * [0.2126, 0.7152, 0.0722][i], 0);
  const background = el => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || c[3] > 0) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const low = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!node.textContent.trim() || !el || el.closest('svg, .sr-only, option')) continue;
    const style = getComputedStyle(el);
    if (style.visibility === 'hidden' || style.display === 'none'
        || !el.getClientRects().length) continue;
    const [a, b] = [lum(rgb(style.color)), lum(background(el))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const text = node.textContent.trim().slice(0, 30);
    if (ratio < 4.5) low.push(`${ratio.toFixed(2)} ${style.color} "${text}"`);
  }
  return low;
}"""


def test_text_contrast_is_at_least_4_5_to_1(page: Page, live_server: Any) -> None:
    make_console_data()
    failed = make_run(status="partial", successes=1, failures=1, size=2)
    Generation.objects.create(batch_run=failed, ok=False, error_kind="timeout", error="slow")
    for path_ in ("/dashboard/", f"/dashboard/batches/{failed.pk}/", "/dashboard/nowhere/"):
        page.goto(f"{live_server.url}{path_}")
        assert page.evaluate(CONTRAST_JS) == [], path_


BREAKER_STATES = ("closed", "half_open", "open", "unknown", "not_configured")


def test_contrast_also_on_the_admin_banners_the_csrf_page_and_every_breaker_state(
        page: Page, live_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from batchgen.dashboard import queries

    monkeypatch.setattr(queries, "breaker_states", lambda: [
        {"name": f"{state}_api", "provider": "openai" if state != "not_configured" else "x",
         "state": state, "failures": 1, "retry_after": 5.0} for state in BREAKER_STATES])
    died(), make_bot("alpha")
    page.goto(f"{live_server.url}/dashboard/")
    for state in BREAKER_STATES:
        expect(page.locator(f".cards .state-{state}")).not_to_have_count(0)
    assert page.evaluate(CONTRAST_JS) == [], "breaker states"

    form = page.locator("form.pause-form")
    form.locator("input[name=target]").fill("alpha")
    form.locator("button[value=pause]").click()  # a success banner
    expect(page.locator(".messages .msg-success")).to_be_visible()
    assert page.evaluate(CONTRAST_JS) == [], "success banner"
    form.locator("input[name=target]").fill("ghost")
    form.locator("button[value=pause]").click()  # an error banner
    expect(page.locator(".messages .msg-error")).to_be_visible()
    assert page.evaluate(CONTRAST_JS) == [], "error banner"

    page.goto(f"{live_server.url}/admin/batchgen/queueitem/?status__exact=dead")
    page.check("#action-toggle")
    page.select_option("select[name=action]", "requeue")
    page.click("button[name=index]")
    expect(page.locator(".messagelist")).to_contain_text("Requeued 1 item.")
    assert page.evaluate(CONTRAST_JS) == [], "admin list with its banner"

    page.goto(f"{live_server.url}/dashboard/")
    page.context.clear_cookies(name="csrftoken")
    page.locator("form.pause-form input[name=target]").fill("alpha")
    page.locator("form.pause-form button[value=pause]").click()
    expect(page.locator(".error-page")).to_contain_text("CSRF_TRUSTED_ORIGINS")
    assert page.evaluate(CONTRAST_JS) == [], "CSRF failure page"


def test_the_error_pages_are_branded(page: Page, live_server: Any, settings: Any,
                                     browser: Browser) -> None:
    settings.ROOT_URLCONF = __name__
    for path_, status, heading in (("/bad/", 400, "could not be understood"),
                                   ("/dashboard/batches/424242/", 404, "Page not found"),
                                   ("/boom/", 500, "Something went wrong")):
        response = page.goto(f"{live_server.url}{path_}")
        assert response is not None and response.status == status, path_
        expect(page.locator(".error-page h1")).to_contain_text(heading)
        expect(page.locator("a.brand")).to_have_text("botplatform")
    context = browser.new_context()
    stranger = context.new_page()
    response = stranger.goto(f"{live_server.url}/favicon.ico")
    assert response is not None and response.ok
    assert "svg" in response.headers["content-type"]
    context.close()


def test_a_failed_csrf_check_names_https_and_trusted_origins(page: Page,
                                                            live_server: Any) -> None:
    page.goto(f"{live_server.url}/dashboard/")
    page.context.clear_cookies(name="csrftoken")

    page.locator("form.pause-form input[name=target]").fill("alpha")
    page.locator("form.pause-form button[value=pause]").click()

    expect(page.locator(".error-page")).to_contain_text("HTTPS")
    expect(page.locator(".error-page")).to_contain_text("CSRF_TRUSTED_ORIGINS")


def test_a_non_staff_user_gets_the_branded_403(browser: Browser, live_server: Any,
                                               django_user_model: Any) -> None:
    django_user_model.objects.create_user("visitor", "v@example.invalid", PASSWORD,
                                          is_staff=True)  # may log in to the admin only
    context = browser.new_context()
    page = context.new_page()
    admin_login(page, live_server.url, "visitor", PASSWORD, "/admin/")
    django_user_model.objects.filter(username="visitor").update(is_staff=False)

    response = page.goto(f"{live_server.url}/dashboard/")

    assert response is not None and response.status == 403
    expect(page.locator(".error-page h1")).to_have_text("You may not see this page")
    context.close()


def cut_chart_labels(page: Page) -> list[str]:
    """Chart texts that run past the edge of their chart (drawn cut: "essages / s")."""
    return page.evaluate("""() => [...document.querySelectorAll('.chart-svg text')]
        .filter(t => { const s = t.ownerSVGElement.getBoundingClientRect();
                       const r = t.getBoundingClientRect();
                       return r.top < s.top - 1 || r.bottom > s.bottom + 1
                           || r.left < s.left - 1 || r.right > s.right + 1; })
        .map(t => t.textContent)""")


@pytest.mark.parametrize("width", [360, 390])
def test_chart_labels_are_not_cut_on_a_phone(browser: Browser, live_server: Any,
                                             django_user_model: Any, width: int) -> None:
    from tests.browser.test_browser_layout import make_history

    make_history()
    django_user_model.objects.create_superuser("ops", "ops@example.invalid", PASSWORD)
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    admin_login(page, live_server.url, "ops", PASSWORD, "/dashboard/")
    try:
        assert page.locator(".chart-svg").count() == 4
        assert cut_chart_labels(page) == []
    finally:
        context.close()
