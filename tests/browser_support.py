"""Playwright (pytest-playwright) on Debian's chromium, and page helpers for the browser tests.

A test module imports the fixtures by their function names, as with tests.fakes:

    from tests.browser_support import (browser_context_args_fixture, browser_fixture,
                                       browser_type_launch_args_fixture, playwright_fixture)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and nothing that would reach the internet (updates, sync, QUIC probes).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
RESULTS_DIR = Path(__file__).resolve().parent.parent / "test-results"
TIMEOUT_MS = 10_000
CHART_NAMES = ("sent", "latency", "outcomes", "cost")


def _no_chromium(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: a missing browser is a failure)", pytrace=False)
    pytest.skip(f"{reason}; install Debian's chromium (apt-get install chromium)")


@pytest.fixture(scope="session", name="browser_type_launch_args")
def browser_type_launch_args_fixture() -> dict[str, Any]:
    """pytest-playwright's launch options: Debian's chromium, never a downloaded browser."""
    if not CHROMIUM.exists():
        _no_chromium(f"{CHROMIUM} is missing")
    if not os.access(CHROMIUM, os.X_OK):
        _no_chromium(f"{CHROMIUM} is not executable")
    return {"executable_path": str(CHROMIUM), "args": CHROMIUM_ARGS, "headless": True}


# Module-scoped overrides of pytest-playwright's session fixtures. Playwright's
# sync API keeps an asyncio loop running in the main thread (in a suspended
# greenlet) from start() until stop(); for the rest of a session that would
# break every later test calling asyncio.run(), so it lives only as long as
# the browser test module.
@pytest.fixture(scope="module", name="playwright")
def playwright_fixture(_pw_api_request_contexts: Any) -> Iterator[Playwright]:
    """pytest-playwright's ``playwright``, with Django's ORM allowed while it lives.

    While the loop runs, Django's async-safety guard would refuse every query
    made in the main thread: the test's own rows, the tick it runs, the database
    flush after it. Those queries are synchronous and on the thread's own
    connection, which is exactly what the guard's escape hatch is for.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        pw = sync_playwright().start()
        if _pw_api_request_contexts:  # the plugin's --tracing support
            _pw_api_request_contexts.instrument(pw)
        yield pw
        pw.stop()


@pytest.fixture(scope="module", name="browser")
def browser_fixture(playwright: Playwright,
                    browser_type_launch_args: dict[str, Any]) -> Iterator[Browser]:
    browser = playwright.chromium.launch(**browser_type_launch_args)
    yield browser
    browser.close()


@pytest.fixture(scope="module", name="browser_context_args")
def browser_context_args_fixture() -> dict[str, Any]:
    # The plugin's version needs the session-wide ``playwright``; devices,
    # base_url and video recording are not used here.
    return {"viewport": {"width": 1280, "height": 900}}


def screenshot_path(name: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    return RESULTS_DIR / name


def admin_login(page: Page, base_url: str, username: str, password: str, next_path: str) -> None:
    """Log in through the admin's own login form and land on ``next_path``."""
    page.goto(f"{base_url}/admin/login/?next={next_path}")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base_url}{next_path}")


def edit_setting(page: Page, key: str, value: str) -> None:
    """From the Setting changelist: open ``key``'s row, type the JSON value, save."""
    page.click(f"#result_list a:text-is('{key}')")
    page.fill("#id_value", value)
    page.click("input[name=_save]")


def chart_state(page: Page, name: str) -> dict[str, int]:
    """How chart ``name`` rendered: its svg count, data marks, and empty placeholders."""
    return page.eval_on_selector(f"[data-chart={name}]", """cell => ({
        svg: cell.querySelectorAll("figure.chart svg").length,
        marks: cell.querySelectorAll("svg circle.dot, svg rect.bar, svg polyline.line").length,
        empty: cell.querySelectorAll(".chart-empty").length,
    })""")


def row_cells(page: Page, selector: str) -> list[str]:
    return [text.strip() for text in page.locator(selector).locator("td").all_inner_texts()]
