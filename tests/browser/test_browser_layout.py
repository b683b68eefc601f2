"""The dashboard, admin and error pages in Debian's chromium, desktop and phone-sized.

Each test saves a screenshot under test-results/ as an artifact of the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser_support import CHART_NAMES, TIMEOUT_MS, admin_login, screenshot_path
from tests.unit.test_dashboard import make_batch, make_generation, make_message

pytestmark = [pytest.mark.browser,
              pytest.mark.django_db(transaction=True, serialized_rollback=True)]

PASSWORD = "layout-pass-1234"
WIDTHS = {"desktop": 1280, "phone": 420}
MIN_LABEL_PX = 11
WARN_COLOUR = "rgb(143, 92, 0)"  # --warn in dashboard.css (AA since issue 23)


@pytest.fixture(params=list(WIDTHS), name="sized_page")
def sized_page_fixture(request: pytest.FixtureRequest, browser: Browser, live_server: Any,
                       django_user_model: Any) -> Iterator[tuple[str, Page]]:
    """A logged-in superuser's page at one of WIDTHS."""
    django_user_model.objects.create_superuser("layout", "l@example.invalid", PASSWORD)
    context = browser.new_context(viewport={"width": WIDTHS[request.param], "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    admin_login(page, live_server.url, "layout", PASSWORD, "/admin/")
    yield request.param, page
    context.close()


@pytest.fixture(name="only_openai_configured")
def only_openai_configured_fixture(settings: Any, redis_url: str) -> None:
    settings.OPENAI_API_KEY, settings.GEMINI_API_KEY, settings.GROQ_API_KEY = "sk-browser-1", "", ""
    settings.OPENAI_API_KEYS = settings.GEMINI_API_KEYS = settings.GROQ_API_KEYS = ()


def make_history() -> None:
    """Runs of very different sizes and modes, as continuous refill will produce."""
    for size, throughput in ((1, 0.7), (50, 38.0), (2000, 900.0)):
        run = make_batch(size=size, successes=size - 1, failures=1, throughput=throughput,
                         model="gpt-4o-mini-2024-07-18", cost_usd=Decimal("0.000031") * size)
        make_message(make_generation(run))
    for _ in range(3):
        single = make_batch(mode="single", size=1, successes=1, throughput=1.2, provider="groq",
                            model="llama-3.1-8b-instant", cost_usd=Decimal("0.000012"))
        make_message(make_generation(single))


def page_overflow(page: Page) -> int:
    """How many pixels the page scrolls sideways (0: it does not)."""
    return page.evaluate("() => document.documentElement.scrollWidth"
                         " - document.documentElement.clientWidth")


def smallest_chart_label_px(page: Page) -> float:
    # Font size in SVG units times the SVG's on-screen scale: the size a reader sees.
    return page.evaluate("""() => Math.min(...[...document.querySelectorAll(
        ".chart-svg text")].map(t => parseFloat(getComputedStyle(t).fontSize)
        * t.ownerSVGElement.getScreenCTM().a))""")


def chart_columns(page: Page) -> int:
    return page.evaluate("""names => new Set(names.map(n => Math.round(document
        .querySelector(`[data-chart=${n}]`).getBoundingClientRect().left))).size""",
                         list(CHART_NAMES))


def shoot(page: Page, name: str, width: str) -> None:
    page.screenshot(path=str(screenshot_path(f"{name}-{width}.png")), full_page=True)


def test_the_dashboard_fits_the_screen_with_legible_charts(
        sized_page: tuple[str, Page], live_server: Any, only_openai_configured: None,
        capsys: pytest.CaptureFixture) -> None:
    width, page = sized_page
    make_history()

    page.goto(f"{live_server.url}/dashboard/")

    expect(page.locator("section.history tbody tr")).to_have_count(6)
    smallest = smallest_chart_label_px(page)
    with capsys.disabled():  # a figure for the run's output, pass or fail
        print(f"\n{width} ({WIDTHS[width]} px): smallest chart label {smallest:.1f} px, "
              f"page overflow {page_overflow(page)} px")
    assert page_overflow(page) == 0
    assert smallest >= MIN_LABEL_PX
    assert chart_columns(page) == (2 if width == "desktop" else 1)
    shoot(page, "dashboard", width)

    page.click("section.history tbody tr:first-child a")
    expect(page.locator("table.items tbody tr")).to_have_count(1)
    assert page_overflow(page) == 0
    shoot(page, "batch-detail", width)


def test_filters_change_the_cards(sized_page: tuple[str, Page], live_server: Any,
                                  only_openai_configured: None) -> None:
    width, page = sized_page
    make_history()
    page.goto(f"{live_server.url}/dashboard/")
    expect(page.locator("[data-card=sent]")).to_have_text("6")

    page.select_option("select[name=provider]", "groq")
    page.click("form.filters button[type=submit]")

    expect(page.locator("[data-card=sent]")).to_have_text("3")
    expect(page.locator("[data-window=cards]")).to_contain_text("groq")
    assert page_overflow(page) == 0
    shoot(page, "dashboard-filtered", width)


def test_an_unconfigured_provider_is_flagged(sized_page: tuple[str, Page], live_server: Any,
                                             only_openai_configured: None) -> None:
    width, page = sized_page
    page.goto(f"{live_server.url}/dashboard/")

    groq = page.locator("[data-breaker=groq] b")
    expect(groq).to_have_text("not configured")
    expect(groq).to_have_css("color", WARN_COLOUR)
    expect(page.locator("[data-breaker=openai] b")).to_have_text("closed")


@pytest.mark.parametrize("model", ["batchrun", "generation", "message"])
def test_the_admin_offers_no_add_on_derived_records(
        sized_page: tuple[str, Page], live_server: Any, model: str) -> None:
    width, page = sized_page
    make_history()

    page.goto(f"{live_server.url}/admin/batchgen/")
    expect(page.locator(f"tr.model-{model} .addlink")).to_have_count(0)
    expect(page.locator("tr.model-bot .addlink")).to_have_count(1)  # the check itself works
    page.goto(f"{live_server.url}/admin/batchgen/{model}/")

    expect(page.locator("#result_list tbody tr").first).to_be_visible()
    expect(page.locator(".object-tools .addlink")).to_have_count(0)
    shoot(page, f"admin-{model}", width)
    assert page_overflow(page) == 0


LIST_FITS = """() => {
    const table = document.querySelector("#result_list");
    const cut = [...table.querySelectorAll("th")].filter(th => th.scrollWidth > th.clientWidth + 1);
    return {cut: cut.map(th => th.innerText), table: table.scrollWidth,
            box: table.parentElement.clientWidth};
}"""


@pytest.mark.parametrize("model", ["batchrun", "generation", "message", "queueitem", "setting",
                                   "bot", "chat"])
def test_admin_list_columns_fit_at_1280(browser: Browser, live_server: Any,
                                        django_user_model: Any, model: str) -> None:
    django_user_model.objects.create_superuser("layout", "l@example.invalid", PASSWORD)
    make_history()
    context = browser.new_context(viewport={"width": WIDTHS["desktop"], "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    admin_login(page, live_server.url, "layout", PASSWORD, f"/admin/batchgen/{model}/")

    fits = page.evaluate(LIST_FITS)

    shoot(page, f"admin-list-{model}", "desktop")
    context.close()
    assert fits["cut"] == [] and fits["table"] <= fits["box"] + 1, fits


def test_the_404_page_is_styled_with_a_way_back(sized_page: tuple[str, Page],
                                                live_server: Any) -> None:
    width, page = sized_page

    response = page.goto(f"{live_server.url}/dashboard/batches/424242/")

    assert response is not None and response.status == 404
    shoot(page, "404", width)
    panel = page.locator(".error-page")
    expect(panel).to_contain_text("Page not found")
    expect(panel).to_have_css("background-color", "rgb(255, 255, 255)")
    expect(page.locator("header.topbar")).to_have_css("background-color", "rgb(29, 35, 48)")
    page.click(".error-page a:text-is('← Dashboard')")
    expect(page.locator("h1")).to_have_text("Batches")
    assert page_overflow(page) == 0
