"""Resume through the page, in headless Chromium: a batch stopped mid-run (as SIGTERM stops
it) is resumed from the History page and finishes live on the Run page, its finished tasks
kept and marked restored."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.browser import streamlit_app
from tests.test_resume import CREWS, held_demo, interrupt_after_checkpoints, runtime

MAIN = "[data-testid='stMain']"


def test_the_history_page_resumes_an_interrupted_batch(
    browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREWDASH_CREWS_DIR", str(CREWS))
    url = f"sqlite:///{tmp_path / 'history.db'}"  # the dashboard's database (streamlit_app)
    with held_demo() as demo:
        batch_id, steps = interrupt_after_checkpoints(
            runtime(url, demo), demo, ["page one", "page two"]
        )
        restored = sum(steps.values())
        log = tmp_path / "server.log"
        with streamlit_app(log, {"CREWDASH_CREWS_DIR": str(CREWS)}) as app:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{app}/history?batch={batch_id}")
            expect(page.get_by_text(re.compile(r"2 crew\(s\) were interrupted"))).to_be_visible(
                timeout=30_000
            )
            expect(page.get_by_text(f"{restored} finished steps kept")).to_be_visible()
            before = demo.stats.requests
            page.get_by_role("button", name="Resume all interrupted").click()
            # the Run page shows the same batch live, then finished
            expect(page.get_by_text(re.compile(r"Resumed: batch " + batch_id))).to_be_visible(
                timeout=30_000
            )
            expect(
                page.get_by_text(re.compile(r"0 queued · 0 running · 2 succeeded")).first
            ).to_be_visible(timeout=60_000)
            assert demo.stats.requests - before == 6 - restored
            tabs = page.locator(MAIN).get_by_role("tab", name=re.compile(r"\(restored\)$"))
            expect(tabs).to_have_count(restored)
            page.close()
    assert "Traceback" not in log.read_text()
