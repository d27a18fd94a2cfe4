"""What a presenter sees at 1440×900 in a real Chromium against `streamlit run app.py` (issue 20,
items 5, 7 and 8): the live section in view right after Run, every declared URL opening its
page, and a benchmark started in one tab visible with its progress in another."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser import ROOT, streamlit_app

pytestmark = pytest.mark.browser
VIEWPORT = {"width": 1440, "height": 900}
HEADINGS = {
    "run": "Run crews concurrently",
    "history": "History",
    "experiments": "Experiments",
    "bench": "Benchmark: why async fan-out wins",
    "pitfalls": "Pitfalls that silently serialize crews",
    "account": "Account",
}
TOPICS = [
    "CrewAI async kickoff",
    "LangGraph vs CrewAI",
    "AutoGen new features",
    "Vector databases compared",
    "RAG evaluation metrics",
    "Agent memory designs",
    "Prompt caching costs",
    "Tool calling reliability",
]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    # a slow demo model that writes slowly: the batch runs, cards growing, while it is measured
    env = {"CREWDASH_DEMO_LATENCY": "4.0", "CREWDASH_DEMO_TOKENS_PER_S": "8"}
    with streamlit_app(log, env) as url:
        yield url


def declared_url_paths() -> list[str]:
    """Every `url_path` app.py declares for a page of its own (not the hidden default)."""
    source = (ROOT / "app.py").read_text()
    pages = re.findall(r"st\.Page\((.*?)\)", source, flags=re.S)
    return [
        m.group(1)
        for body in pages
        if "default=True" not in body and (m := re.search(r'url_path="(\w+)"', body))
    ]


def open_page(browser: Browser, url: str) -> Page:
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(url)
    page.wait_for_selector("[data-testid='stApp']")
    return page


LAYOUT_JS = """() => {
    const box = e => { const r = e.getBoundingClientRect(); return [r.top, r.bottom]; };
    const main = document.querySelector("[data-testid='stMain']");
    const buttons = [...main.querySelectorAll("button")];
    const cancel = buttons.find(b => b.innerText.includes("Cancel batch"));
    return {
        scrollY: window.scrollY,
        metrics: [...main.querySelectorAll("[data-testid='stMetric']")]
            .map(e => [e.innerText, ...box(e)]),
        cancel: cancel ? box(cancel) : null,
        cards: main.querySelectorAll("[class*='st-key-live-']").length,
    };
}"""


def layout(page: Page) -> dict[str, Any]:
    """Where the headline figures, Cancel and the answer cards are, in one atomic look."""
    result: dict[str, Any] = page.evaluate(LAYOUT_JS)
    return result


def in_view(top: float, bottom: float) -> bool:
    return top >= 0 and bottom <= VIEWPORT["height"]


def test_every_declared_url_opens_its_page(browser: Browser, app: str) -> None:
    """`/run` opened a "Page not found" pop-up and fell back to `/` (the default page's path)."""
    paths = declared_url_paths()
    assert set(paths) == set(HEADINGS), paths
    for path in [*paths, "run?batch=0123456789ab"]:
        page = open_page(browser, f"{app}/{path}")
        name = path.split("?")[0]
        expect(page.get_by_role("heading", name=HEADINGS[name]).first).to_be_visible(timeout=60_000)
        page.wait_for_timeout(1500)  # a "Page not found" dialog comes with the first run
        assert page.get_by_text("Page not found").count() == 0, path
        assert page.url == f"{app}/{path}", (path, page.url)
        active = page.locator("[data-testid='stSidebarNav'] a[aria-current='page']")
        expect(active).to_have_count(1)
        page.close()
    page = open_page(browser, f"{app}/?batch=0123456789ab")  # the root opens Run, query kept
    expect(page.get_by_role("heading", name=HEADINGS["run"])).to_be_visible(timeout=60_000)
    expect(page).to_have_url(f"{app}/run?batch=0123456789ab")
    assert page.get_by_text("Page not found").count() == 0
    page.close()


def test_the_live_section_is_in_view_right_after_run(browser: Browser, app: str) -> None:
    page = open_page(browser, f"{app}/run")
    topics = page.get_by_label("Topics (one per line)")
    expect(topics).to_be_visible(timeout=90_000)  # a fresh server imports CrewAI first
    topics.fill("\n".join(TOPICS))
    page.get_by_role("button", name="Run").click()
    speedup = page.get_by_text("Speedup so far", exact=True)
    expect(speedup).to_be_visible(timeout=30_000)
    expect(topics).to_be_hidden()  # the form folded away
    first = layout(page)
    assert first["scrollY"] == 0
    assert len(first["metrics"]) == 6 and first["cancel"] is not None, first
    assert all(in_view(top, bottom) for _, top, bottom in first["metrics"]), first
    assert in_view(*first["cancel"]), first
    # while the answer cards grow, the figures stay in view
    with_cards = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and page.get_by_text("Speedup so far").count():
        now = layout(page)
        if now["cards"] and any("so far" in text for text, _, _ in now["metrics"]):
            with_cards.append(now)
            assert all(in_view(top, bottom) for _, top, bottom in now["metrics"]), now
        time.sleep(0.2)
    assert with_cards, "no answer card was seen while the batch ran"
    # the finished batch: final figures, and every answer opens with one toggle
    expect(page.get_by_text("Speedup", exact=True)).to_be_visible(timeout=60_000)
    toggle = page.get_by_text(f"Expand all {len(TOPICS)} answers")
    expect(toggle).to_be_visible(timeout=30_000)
    toggle.click()
    details = page.locator("[data-testid='stMain'] [data-testid='stExpander'] details[open]")
    expect(details).to_have_count(len(TOPICS), timeout=30_000)
    # tokens, cost and TTFT are in the status table without a horizontal scroll
    scroller = page.locator("[data-testid='stDataFrame'] .dvn-scroller").first
    widths = scroller.evaluate("e => [e.scrollWidth, e.clientWidth]")
    assert widths[0] <= widths[1] + 1, widths
    page.close()


def test_a_benchmark_started_in_one_tab_shows_in_another(browser: Browser, app: str) -> None:
    first = browser.new_context(viewport=VIEWPORT)
    second = browser.new_context(viewport=VIEWPORT)
    try:
        starter = first.new_page()
        starter.goto(f"{app}/bench")
        n = starter.get_by_label("Crews per strategy (N)")
        expect(n).to_be_visible(timeout=60_000)
        n.fill("3")
        starter.get_by_label("Fixed latency (s)").fill("1.5")
        starter.get_by_role("button", name="Run benchmark").click()
        expect(starter.get_by_text(re.compile(r"benchmark N=3 .*: "))).to_be_visible(timeout=30_000)
        first.close()  # the tab that started it is gone

        watcher = second.new_page()
        watcher.goto(f"{app}/bench")
        progress = watcher.get_by_text(re.compile(r"benchmark N=3 \(7 strategies\): "))
        expect(progress).to_be_visible(timeout=60_000)
        # the finished strategies' rows show while the job still runs
        table = watcher.locator("[data-testid='stDataFrame']").first
        expect(table).to_be_visible(timeout=60_000)
        assert progress.is_visible(), "the table came only after the job ended"
        started = time.monotonic()
        expect(progress).to_be_hidden(timeout=180_000)  # and it ends, in this tab too
        assert time.monotonic() - started < 180
        expect(watcher.get_by_text("Runner loop lag p99")).to_be_visible(timeout=30_000)
    finally:
        second.close()
