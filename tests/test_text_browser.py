"""What the user typed is text, and no page loads an image from another host: a hostile topic
through Run, History and Experiments in a real headless Chromium against `streamlit run app.py`,
with an image server of the test's own that counts every request it gets."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.browser import streamlit_app

pytestmark = pytest.mark.browser
MAIN = "[data-testid='stMain']"
# each crew's expander, not the expander the Run form folds into once a batch has run
CREWS = f"{MAIN} :not([class*='st-key-run-setup']) > [data-testid='stExpander']"
WORD_JOINER = "\u2060"
CONTROL = "/control.png"  # the one request the test makes itself
# One transparent pixel: what a tracking image would answer.
PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


class ImageServer:
    """An HTTP server on 127.0.0.1 that answers every GET with a pixel and records the path."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        seen = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(PIXEL)))
                self.end_headers()
                self.wfile.write(PIXEL)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ImageServer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def images() -> Iterator[ImageServer]:
    with ImageServer() as server:
        yield server


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    with streamlit_app(log, {"CREWDASH_DEMO_LATENCY": "0.3"}) as url:
        yield url, log


def hostile(port: int) -> str:
    """The issue's topic: HTML, Markdown, a javascript: link and an image on the test's host."""
    return (
        "<b>bold</b> **markdown** [link](javascript:alert(2)) "
        f"![x](http://127.0.0.1:{port}/topic.png)"
    )


def shown(locator: Locator) -> str:
    return locator.inner_text().replace(WORD_JOINER, "")


def assert_no_markup_from(page: Page, where: Locator) -> None:
    """Nothing in `where` was made from the typed Markdown or HTML."""
    assert where.locator("b, strong, em, img, script").count() == 0, where.inner_html()
    hrefs = [a.get_attribute("href") or "" for a in where.locator("a").all()]
    assert not [h for h in hrefs if "javascript" in h or "127.0.0.1" in h], hrefs


def assert_no_image_from(page: Page, images: ImageServer) -> None:
    """No element of the page points at the test's host, and the host saw no request: every
    image that is in the page has finished loading (so one that was asked for would have been
    counted by now)."""
    page.wait_for_function(
        "[...document.images].every(i => i.complete)", timeout=30_000, polling=100
    )
    sources = page.evaluate("[...document.images].map(i => i.src)")
    assert not [s for s in sources if f":{images.port}/" in s], sources
    assert [r for r in images.requests if r != CONTROL] == [], images.requests


def assert_timeline_shows_it_literally(page: Page, topic: str) -> None:
    """The timeline's crew labels and a bar's hover text hold the typed text, not markup."""
    chart = page.locator(f"{MAIN} .js-plotly-plot").first
    expect(chart).to_be_visible(timeout=30_000)
    ticks = chart.locator("g.ytick text").all_text_contents()
    assert any(t.startswith("#1 <b>bold</b> **markdown**") for t in ticks), ticks
    bold = chart.locator("tspan[style*='bold'], a").count()
    assert bold == 0, chart.inner_html()
    bar = chart.locator("g.trace.bars g.point path").first
    bar.scroll_into_view_if_needed()
    box = bar.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    hover = chart.locator("g.hoverlayer g.hovertext")
    expect(hover.first).to_be_visible(timeout=10_000)
    text = " ".join(hover.all_text_contents())
    assert "#1 <b>bold</b> **markdown**" in text, text
    assert hover.locator("tspan[style*='bold'], a").count() == 0


def test_typed_markdown_is_text_and_no_image_is_fetched_on_run_history_and_experiments(
    browser: Browser, app: tuple[str, Path], images: ImageServer
) -> None:
    url, log = app
    topic = hostile(images.port)
    # the research crew's answer repeats its topic: this one's answer holds an image too
    answer_image = f"answer pixel ![y](http://127.0.0.1:{images.port}/answer.png)"
    raw_html = f'raw <img src="http://127.0.0.1:{images.port}/raw.png">'
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    # --- Run ---
    page.goto(url)
    page.wait_for_selector("[data-testid='stApp']")
    expect(page.get_by_role("button", name="Run")).to_be_visible(timeout=90_000)
    page.get_by_label("Topics (one per line)").fill("\n".join([topic, answer_image, raw_html]))
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_text(re.compile(r"0 queued · 0 running · 3 succeeded"))).to_be_visible(
        timeout=60_000
    )
    expanders = page.locator(CREWS)
    expect(expanders).to_have_count(3)
    header = expanders.first.locator("summary")
    assert "#1 " + topic[:70] in shown(header), shown(header)
    for i in range(3):
        assert_no_markup_from(page, expanders.nth(i).locator("summary"))
    # the answers are Markdown, with each image shown as a link that is not followed
    answers = page.locator(f"{CREWS} [data-testid='stExpanderDetails']")
    expect(answers.first).to_contain_text("image not loaded: x")
    expect(answers.nth(1)).to_contain_text("image not loaded: y")
    expect(answers.nth(2)).to_contain_text('<img src="http://127.0.0.1')  # raw HTML is text
    assert_timeline_shows_it_literally(page, topic)
    assert_no_image_from(page, images)
    batch_id = re.search(r"batch=([\w-]+)", page.url)
    assert batch_id is not None, page.url

    # --- History: the same batch, opened from its link ---
    page.goto(f"{url}/history?batch={batch_id.group(1)}")
    expanders = page.locator(CREWS)
    expect(expanders).to_have_count(3, timeout=30_000)
    assert "#1 " + topic[:70] in shown(expanders.first.locator("summary"))
    for i in range(3):
        assert_no_markup_from(page, expanders.nth(i).locator("summary"))
    assert_timeline_shows_it_literally(page, topic)
    assert_no_image_from(page, images)

    # --- Experiments: topics and a rubric that hold images ---
    page.goto(f"{url}/experiments")
    expect(page.get_by_role("button", name="Start experiment")).to_be_visible(timeout=30_000)
    page.get_by_label("Topics (one per line)").fill(topic)
    rubric = f"Be <i>specific</i> ![r](http://127.0.0.1:{images.port}/rubric.png)"
    page.get_by_label("Judge rubric").fill(rubric)
    page.get_by_role("button", name="Start experiment").click()
    expect(page.get_by_text("Finished.")).to_be_visible(timeout=90_000)
    caption = page.locator(MAIN).get_by_text("judged against:")
    assert rubric in shown(caption), shown(caption)
    assert_no_markup_from(page, caption)
    grid = page.locator(f"{MAIN} [data-testid='stTable']").first
    assert topic in shown(grid), shown(grid)
    assert_no_markup_from(page, grid)
    picker = page.locator(f"{MAIN} [data-testid='stSelectbox']").filter(has_text="Topic")
    chosen = picker.evaluate(
        "e => e.textContent + [...e.querySelectorAll('input')].map(i => i.value).join(' ')"
    )
    assert topic[:40] in chosen.replace(WORD_JOINER, ""), chosen  # the chosen topic, as typed
    assert_no_markup_from(page, picker)
    topic_pick = page.locator(MAIN).get_by_text("image not loaded: x")
    expect(topic_pick.first).to_be_visible()  # the compared answers, images as links
    assert_no_image_from(page, images)

    assert dialogs == []
    assert "Traceback" not in log.read_text()
    # the counter is live: a request the test makes itself is recorded
    httpx.get(f"http://127.0.0.1:{images.port}{CONTROL}", timeout=5)
    assert images.requests == [CONTROL]


def test_a_typed_input_is_text_in_the_result(
    browser: Browser, app: tuple[str, Path], images: ImageServer
) -> None:
    """The judge crew's {rubric} and {answer} inputs, typed once for every crew, are shown
    under each result as typed."""
    url, _ = app
    typed = hostile(images.port).replace("topic.png", "input.png")
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(url)
    expect(page.get_by_role("button", name="Run")).to_be_visible(timeout=90_000)
    picker = page.get_by_test_id("stSidebar").get_by_role("combobox", name="Crew blueprint")
    picker.click()
    picker.fill("judge")
    page.get_by_role("option", name=re.compile(r"^judge · ")).click()
    rubric = page.get_by_role("textbox", name="{rubric} (the same for every crew)")
    expect(rubric).to_be_visible(timeout=30_000)
    rubric.fill(typed)
    page.get_by_role("textbox", name="{answer} (the same for every crew)").fill("an answer")
    page.get_by_label("Topics (one per line)").fill("inputs as text")
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_text(re.compile(r"0 queued · 0 running · 1 succeeded"))).to_be_visible(
        timeout=60_000
    )
    inputs = page.locator(MAIN).get_by_text("Inputs:")
    expect(inputs).to_be_visible()
    assert f"rubric = {typed}" in shown(inputs), shown(inputs)
    assert_no_markup_from(page, inputs)
    assert_no_image_from(page, images)
