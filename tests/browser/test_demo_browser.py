"""The live demo in a real browser: a toggle in the admin changes the next batches shown."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from batchgen.demo.seed import STAFF_PASSWORD, STAFF_USERNAME
from tests.browser_support import TIMEOUT_MS, admin_login, edit_setting, screenshot_path
from tests.demo_support import READY, LiveDemo
from tests.processes import wait_for

pytestmark = pytest.mark.browser

NEWEST = "section.history tbody tr:first-child"


def newest_batch(page: Page, mode: str, in_flight: int) -> None:
    """The dashboard's own live refresh (every 10 s) shows a newest run of this shape (a run
    refills, so its item count varies; what the admin sets is how many it keeps in flight)."""
    expect(page.locator(f"{NEWEST} td:nth-child(3)")).to_have_text(
        re.compile(rf"^\s*{mode}\s*$", re.I), timeout=45_000)
    expect(page.locator(f"{NEWEST} td:nth-child(13)")).to_have_text(str(in_flight),
                                                                     timeout=45_000)


def test_toggling_batch_mode_in_the_admin_changes_the_next_batches_on_the_dashboard(
        page: Page, live_demo: LiveDemo) -> None:
    # The session's demo, which tests/integration/test_demo_processes.py then stops.
    page.set_default_timeout(TIMEOUT_MS)
    proc, log, base = live_demo.proc, live_demo.log, live_demo.base_url
    wait_for(lambda: READY in log.read_text() or proc.poll() is not None, 240,
             "the demo to serve")
    assert proc.poll() is None, log.read_text()
    admin_login(page, base, STAFF_USERNAME, STAFF_PASSWORD, "/admin/batchgen/setting/")
    expect(page.locator("#batch-mode-state")).to_contain_text("Batch mode is on")
    edit_setting(page, "batch_size", "3")
    dashboard = page.context.new_page()
    dashboard.goto(f"{base}/dashboard/")
    newest_batch(dashboard, "batch", 3)

    page.click("#toggle-batch-mode")
    expect(page.locator("#batch-mode-state")).to_contain_text("Batch mode is off")
    newest_batch(dashboard, "single", 1)
    dashboard.screenshot(path=str(screenshot_path("demo-live.png")), full_page=True)
