"""The Experiments page in a real headless Chromium against `streamlit run app.py`: a judged
grid of 5 topics × 3 variants filling in live, its summary row, and the same figures stored."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import Browser, expect

from crewdash.experiments.spec import ExperimentSpec, build_grid
from crewdash.experiments.store import ExperimentStore
from crewdash.store.history import Store
from tests.browser import streamlit_app

pytestmark = pytest.mark.browser
TOPICS = [
    "Browser batteries",
    "Browser heat pumps",
    "Browser tidal",
    "Browser hydrogen",
    "Browser grids",
]
VARIANTS = (
    "name=fast,model=demo-fast\nname=base,model=crewdash-demo\nname=thorough,model=demo-thorough"
)
GRID = "[data-testid='stMain'] [data-testid='stTable'] >> nth=0"
SUMMARY = "[data-testid='stMain'] [data-testid='stTable'] >> nth=1"


def test_a_judged_grid_fills_live_and_its_summary_matches_the_store(
    browser: Browser, tmp_path: Path
) -> None:
    # 6 s per call: fast cells answer in under 2 s and thorough ones take 12 s, a window of ten
    # seconds in which some cells have finished while others run, however slowly a busy machine
    # refreshes the page (at 3 s, a run on a loaded two-core machine never saw the two together)
    with streamlit_app(tmp_path / "server.log", {"CREWDASH_DEMO_LATENCY": "6.0"}) as url:
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.goto(url + "/experiments")
        page.wait_for_selector("[data-testid='stApp']")
        expect(page.get_by_role("button", name="Start experiment")).to_be_visible(timeout=30_000)
        page.get_by_label("Topics (one per line)").fill("\n".join(TOPICS))
        page.get_by_label("Variants (one per line)").fill(VARIANTS)
        page.get_by_label("Judge rubric").fill("Specific, complete and concrete")
        page.get_by_text("Response cache: answer identical model calls").click()
        expect(page.get_by_label("Topics (one per line)")).to_have_value("\n".join(TOPICS))
        page.get_by_role("button", name="Start experiment").click()

        grid = page.locator(GRID)
        expect(grid).to_be_visible(timeout=30_000)
        mixed = False  # some cells finished while others still ran
        states: list[str] = []
        deadline = time.time() + 180
        while time.time() < deadline:
            text = grid.inner_text() if grid.count() else ""
            if text and (not states or states[-1] != text):
                states.append(text)
            if "succeeded" in text and ("running" in text or "queued" in text):
                mixed = True
            if page.get_by_text("Finished.").count():
                break
            time.sleep(0.1)
        assert mixed, f"never saw finished and running cells together: {states[:3]}"
        expect(page.get_by_text("Finished.")).to_be_visible()
        text = grid.inner_text()
        assert text.count("succeeded") == 15 and text.count("score ") == 15, text

        experiment_id = parse_qs(urlparse(page.url).query)["experiment"][0]
        summary = page.locator(SUMMARY)
        expect(summary).to_contain_text("thorough", timeout=30_000)
        # read in one go: the page may redraw the table between two reads of its rows
        table = summary.evaluate(
            "t => [...t.querySelectorAll('tr')]"
            ".map(r => [...r.querySelectorAll('th, td')].map(c => c.innerText.trim()))"
        )
        rows = {cells[0]: cells for cells in table if cells}
        assert {"fast", "base", "thorough"} <= set(rows), summary.inner_text()

        # the same experiment again with the cache on: every call is answered from the store
        page.get_by_role("button", name="Re-run (cache on)").click()
        expect(page.get_by_text("re-run of")).to_be_visible(timeout=30_000)
        expect(page.get_by_text("Finished.")).to_be_visible(timeout=60_000)
        cached = page.locator("[data-testid='stMetric']").filter(has_text="From the cache")
        expect(cached).to_contain_text("15 calls")
        expect(page.locator(SUMMARY)).to_contain_text("100%")
        page.close()

    store = Store(f"sqlite:///{tmp_path / 'history.db'}")
    try:
        notes = ExperimentStore(store)
        spec = ExperimentSpec.from_dict(notes.spec(experiment_id) or {})
        snap = store.load(experiment_id)
        assert snap is not None
        stored = build_grid(experiment_id, spec, snap, notes.cells(experiment_id))
    finally:
        store.close()
    for v in stored.variants:
        # variant, model, success, median s, p95 s, tokens, cost $, mean score, cached calls
        shown = rows[v.name]
        assert shown[2] == "100%"
        assert shown[3] == f"{v.median_latency_s:.2f}" and shown[4] == f"{v.p95_latency_s:.2f}"
        assert shown[5] == str(v.tokens) and shown[7] == f"{v.mean_score:.2f}"
    fast, base, thorough = stored.variants
    assert (fast.median_latency_s or 0) < (base.median_latency_s or 0)
    assert (base.median_latency_s or 0) < (thorough.median_latency_s or 0)
