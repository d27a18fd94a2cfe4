"""Regenerate docs/run-page.png (the Run page mid-batch) and docs/flow-timeline.png (a Python Flow
project's batch: Flow steps, tasks and model calls in the timeline), in headless Chromium.

.venv/bin/python scripts/screenshot.py
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import CHROMIUM_ARGS, chromium_path, streamlit_app  # noqa: E402

TOPICS = """CrewAI async kickoff
LangGraph vs CrewAI
AutoGen new features
vLLM throughput tuning
Ollama on a laptop
llama.cpp GGUF formats
Agent evaluation benchmarks
Structured outputs in practice"""


def main() -> None:
    out = ROOT / "docs" / "run-page.png"
    log = Path("/tmp/crewdash-screenshot.log")
    # what a presenter sees at 1440×900 while the answers are being written (a slow writer)
    env = {"CREWDASH_DEMO_LATENCY": "2.0", "CREWDASH_DEMO_TOKENS_PER_S": "2"}
    with streamlit_app(log, env) as url:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(url)
            page.wait_for_selector("[data-testid='stApp']")
            page.get_by_label("Topics (one per line)").fill(TOPICS)
            page.get_by_role("button", name="Run").click()
            page.locator("[class*='st-key-live-']").nth(5).wait_for(timeout=60_000)
            time.sleep(4)  # a few lines into each answer
            page.screenshot(path=str(out), full_page=False)
            browser.close()
    print(f"wrote {out}")


def flow_timeline() -> None:
    out = ROOT / "docs" / "flow-timeline.png"
    log = Path("/tmp/crewdash-screenshot-flow.log")
    env = {"CREWDASH_DEMO_PROFILE": "hosted", "CREWDASH_CREWS_DIR": str(ROOT / "tests/projects")}
    with streamlit_app(log, env) as url:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(url)
            page.wait_for_selector("[data-testid='stApp']")
            picker = page.get_by_test_id("stSidebar").get_by_role("combobox", name="Crew blueprint")
            picker.click()
            picker.fill("triage_flow")
            page.get_by_role("option", name=re.compile(r"^triage_flow · ")).click()
            page.get_by_label("Topics (one per line)").fill("\n".join(TOPICS.splitlines()[:6]))
            page.get_by_role("button", name="Run").click()
            page.get_by_text(re.compile(r"0 queued · 0 running · 6 succeeded")).wait_for(
                timeout=120_000
            )
            time.sleep(1.0)
            chart = page.locator("[data-testid='stPlotlyChart']").first
            chart.scroll_into_view_if_needed()
            chart.screenshot(path=str(out))
            browser.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
    flow_timeline()
