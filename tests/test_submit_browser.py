"""In a real Chromium against `streamlit run app.py` (issue 20): one submit is one batch, and the
login form works at a batch's URL."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from crewdash.store.history import Store
from tests.browser import streamlit_app

pytestmark = pytest.mark.browser


def test_ctrl_enter_then_run_starts_one_batch(browser: Browser, tmp_path: Path) -> None:
    env = {"CREWDASH_DEMO_LATENCY": "1.0"}
    with streamlit_app(tmp_path / "server.log", env) as url:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(url)
        run = page.get_by_role("button", name="Run", exact=True)
        expect(run).to_be_visible(timeout=60_000)
        topics = page.get_by_label("Topics (one per line)")
        topics.fill("only once\nand only once more")
        topics.press("Control+Enter")  # submits the form...
        # ...and a click right after sends the same form again: dispatched on the button as
        # it is, since the first submit may already have folded the form away (hidden)
        submit = page.locator("[data-testid='stBaseButton-primaryFormSubmit']").first
        try:
            submit.dispatch_event("click", timeout=10_000)
        except PlaywrightTimeoutError:
            pass  # the first submit's rerun already replaced the form: no second send possible
        expect(page.get_by_text(re.compile(r"0 queued · 0 running · 2 succeeded"))).to_be_visible(
            timeout=90_000
        )
        page.close()
    store = Store(f"sqlite:///{tmp_path / 'history.db'}")
    try:
        batches = store.list_batches(None, 50, 0)
    finally:
        store.close()
    assert len(batches) == 1, [b.topics_preview for b in batches]
    assert "Traceback" not in (tmp_path / "server.log").read_text()


def test_a_batch_url_shows_a_working_login_form(browser: Browser, tmp_path: Path) -> None:
    """With a password, `/run?batch=…` showed a "Page not found" dialog over the login form."""
    with streamlit_app(tmp_path / "server.log", {"CREWDASH_PASSWORD": "pw-20"}) as url:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(url + "/run?batch=0123456789ab")
        enter = page.get_by_role("button", name="Enter")
        expect(enter).to_be_visible(timeout=60_000)
        page.wait_for_load_state("networkidle")
        expect(page.get_by_role("dialog")).to_have_count(0)
        expect(page.get_by_text("Page not found")).to_have_count(0)
        page.get_by_role("textbox", name="Password").fill("pw-20")
        enter.click()
        expect(page.get_by_role("heading", name="Run crews concurrently")).to_be_visible(
            timeout=30_000
        )
        expect(page.get_by_text("is not in the history", exact=False)).to_be_visible()
        page.close()
