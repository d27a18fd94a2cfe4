"""Streaming on the Run page, in a real headless Chromium against `streamlit run app.py`: each
crew's card grows while the crew runs, and the page's final text is the stored result."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from crewdash.store.history import Store
from tests.browser import streamlit_app

pytestmark = pytest.mark.browser
# the answers' expanders, not the Run form folded while a batch is shown
MAIN_EXPANDERS = (
    "[data-testid='stMain'] :not([class*='st-key-run-setup']) > [data-testid='stExpander']"
)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    log = tmp_path_factory.mktemp("streamlit-stream") / "server.log"
    # ~50 tokens at 4 tokens/s: about twelve seconds of writing per answer, so even a busy
    # machine's slow page refreshes see each card grow several times
    env = {"CREWDASH_DEMO_LATENCY": "0.5", "CREWDASH_DEMO_TOKENS_PER_S": "4"}
    with streamlit_app(log, env) as url:
        yield url, log


def test_cards_grow_while_crews_run_and_end_as_the_stored_result(
    browser: Browser, app: tuple[str, Path]
) -> None:
    url, log = app
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.wait_for_selector("[data-testid='stApp']")
    expect(page.get_by_role("button", name="Run")).to_be_visible(timeout=30_000)
    page.get_by_label("Topics (one per line)").fill("Streaming cards\nTokens in flight")
    page.get_by_role("button", name="Run").click()

    seen: dict[str, list[str]] = {}  # card key -> distinct texts, in order
    deadline = time.time() + 120
    while time.time() < deadline:
        cards = page.locator("[class*='st-key-live-']")
        for i in range(cards.count()):
            card = cards.nth(i)
            try:
                key = next(c for c in card.get_attribute("class").split() if "st-key-live-" in c)
                text = card.inner_text(timeout=1000)
            except Exception:  # noqa: BLE001 - the card was redrawn between the two reads
                continue
            texts = seen.setdefault(key, [])
            if not texts or texts[-1] != text:
                texts.append(text)
        if page.locator(MAIN_EXPANDERS).count() == 2 and not cards.count():
            break
        time.sleep(0.15)
    assert len(seen) == 2, f"expected a card per crew, saw {list(seen)}"
    for key, texts in seen.items():
        lengths = [len(t) for t in texts]
        grew = sum(1 for a, b in itertools.pairwise(lengths) if b > a)
        assert grew >= 2, f"{key} grew {grew} times: {lengths}"

    expect(page.locator(MAIN_EXPANDERS)).to_have_count(2, timeout=30_000)
    batch_id = page.evaluate("new URLSearchParams(window.location.search).get('batch')")
    store = Store(f"sqlite:///{log.parent / 'history.db'}")
    try:
        stored = store.load(batch_id)
    finally:
        store.close()
    assert stored is not None and stored.done
    for crew in stored.crews:
        assert crew.result and crew.ttft_s is not None
        expander = page.locator(MAIN_EXPANDERS).filter(has_text=crew.topic)
        body = expander.locator(
            "[data-testid='stExpanderDetails'] [data-testid='stMarkdownContainer']"
        )
        shown = body.first.inner_text()
        # the answer is Markdown bullets: the page shows each line without its "- "
        lines = [line.removeprefix("- ") for line in crew.result.splitlines()]
        assert [line.strip() for line in shown.splitlines() if line.strip()] == lines
