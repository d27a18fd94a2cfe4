"""End to end in a real headless Chromium against `streamlit run app.py`."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from crewdash.model.batch import Batch
from crewdash.store.history import Store
from tests.browser import streamlit_app

pytestmark = pytest.mark.browser
# the answers' expanders: not the sidebar's, not the Run form folded while a batch is shown
MAIN_EXPANDERS = (
    "[data-testid='stMain'] :not([class*='st-key-run-setup']) > [data-testid='stExpander']"
)
STATUS_LINE = re.compile(r"\d+ queued · \d+ running · \d+ succeeded · \d+ failed")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    # Two tries per crew: the failure-injection test's doomed crew (a malformed body is retried)
    # ends in seconds instead of spending the default eight tries.
    env = {"CREWDASH_DEMO_LATENCY": "2.0", "CREWDASH_RETRY_TRIES": "2"}
    with streamlit_app(log, env) as url:
        yield url, log


@contextmanager
def browser_sessions(browser: Browser, url: str, texts: list[str]) -> Iterator[list[Page]]:
    """One browser context (a separate Streamlit session) per text, topics typed in."""
    contexts = [browser.new_context(viewport={"width": 1300, "height": 900}) for _ in texts]
    try:
        pages = []
        for context, text in zip(contexts, texts, strict=True):
            page = context.new_page()
            page.goto(url)
            page.wait_for_selector("[data-testid='stApp']")
            page.get_by_label("Topics (one per line)").fill(text)
            pages.append(page)
        yield pages
    finally:
        for context in contexts:
            context.close()


def open_app(browser: Browser, url: str) -> Page:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.wait_for_selector("[data-testid='stApp']")
    expect(page.get_by_role("button", name="Run")).to_be_visible(timeout=30_000)
    return page


def test_three_topics_stream_in_live(browser: Browser, app: tuple[str, Path]) -> None:
    url, log = app
    page = open_app(browser, url)
    page.get_by_label("Topics (one per line)").fill(
        "CrewAI async kickoff\nLangGraph vs CrewAI\nAutoGen new features"
    )
    page.get_by_role("button", name="Run").click()

    status = page.get_by_text(STATUS_LINE)
    seen: list[str] = []
    deadline = time.time() + 30
    while time.time() < deadline:
        if status.count():
            text = status.first.inner_text()
            if not seen or seen[-1] != text:
                seen.append(text)
            if text.startswith("0 queued · 0 running · 3 succeeded"):
                break
        time.sleep(0.1)
    assert seen and seen[-1].startswith("0 queued · 0 running · 3 succeeded"), seen
    assert any(re.search(r"[1-3] running", s) for s in seen), f"never saw a crew running: {seen}"
    assert len(seen) >= 2, "the page did not update while the batch ran"

    expanders = page.locator(MAIN_EXPANDERS)
    expect(expanders).to_have_count(3)
    for topic in ("CrewAI async kickoff", "LangGraph vs CrewAI", "AutoGen new features"):
        expect(expanders.filter(has_text=topic)).to_have_count(1)
        expect(expanders.filter(has_text=topic).locator("li")).to_have_count(3)  # 3 bullets
    timeline = page.locator(".js-plotly-plot").first
    expect(timeline).to_be_visible()
    assert timeline.locator("g.point").count() >= 6  # 3 crew bars + 3 LLM-call bars
    assert "batch=" in page.url

    server_log = log.read_text()
    assert "missing ScriptRunContext" not in server_log
    assert "Traceback" not in server_log


def test_bad_input_gets_a_clear_message(browser: Browser, app: tuple[str, Path]) -> None:
    url, log = app
    page = open_app(browser, url)
    page.get_by_label("Topics (one per line)").fill("\n   \n")
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_text("Enter at least one topic, one per line.")).to_be_visible()
    assert "Traceback" not in log.read_text()


def test_two_sessions_run_their_own_batches_at_once(
    browser: Browser, app: tuple[str, Path]
) -> None:
    url, log = app
    with browser_sessions(
        browser, url, [f"session {i} first\nsession {i} second" for i in range(2)]
    ) as pages:
        for page in pages:
            page.get_by_role("button", name="Run").click()
        for i, page in enumerate(pages):
            expanders = page.locator(MAIN_EXPANDERS)
            expect(expanders).to_have_count(2, timeout=30_000)
            expect(expanders.filter(has_text=f"session {i} first")).to_have_count(1)
            expect(expanders.filter(has_text=f"session {1 - i}")).to_have_count(0)
        assert pages[0].url != pages[1].url  # each session has its own batch id
    assert "Traceback" not in log.read_text()


def test_sidebar_settings_test_connection_and_failure_injection(
    browser: Browser, app: tuple[str, Path]
) -> None:
    url, log = app
    page = open_app(browser, url)
    sidebar = page.locator("[data-testid='stSidebar']")
    sidebar.get_by_role("button", name="Test connection").click()
    expect(sidebar.get_by_text("“pong”", exact=False)).to_be_visible(timeout=20_000)

    sidebar.get_by_text("Failure injection (%)").click()
    sidebar.get_by_label("malformed body").fill("100")  # every try fails
    sidebar.get_by_label("malformed body").press("Enter")
    page.get_by_label("Topics (one per line)").fill("doomed topic")
    page.get_by_role("button", name="Run").click()
    expect(
        page.get_by_text(re.compile(r"0 queued · 0 running · 0 succeeded · 1 failed"))
    ).to_be_visible(timeout=60_000)
    expect(page.locator(MAIN_EXPANDERS).filter(has_text="doomed topic")).to_have_count(1)

    sidebar.get_by_label("malformed body").fill("0")
    sidebar.get_by_label("malformed body").press("Enter")
    provider = sidebar.get_by_role("combobox", name="Provider")
    option = page.get_by_role("option", name=re.compile("OpenAI-compatible"))
    for _ in range(5):  # the rerun of the Enter above may redraw the sidebar and close the list
        provider.click()
        try:
            option.click(timeout=3_000)
            break
        except PlaywrightTimeoutError:
            continue
    sidebar.get_by_role("textbox", name="Base URL").fill("http://127.0.0.1:9/v1")
    sidebar.get_by_role("textbox", name="Base URL").press("Enter")
    sidebar.get_by_role("textbox", name="API key").fill("sk-SENTINEL-typed-key")
    sidebar.get_by_role("textbox", name="API key").press("Enter")
    sidebar.get_by_role("button", name="Test connection").click()
    # the URL is text: a word joiner after "http:" keeps Streamlit from making it a link
    error = sidebar.get_by_text(re.compile("Cannot reach http:\u2060?//127\\.0\\.0\\.1:9/v1"))
    expect(error).to_be_visible(timeout=30_000)
    # The key lives only in its own password field; nothing else on the page echoes it.
    page.evaluate("document.querySelectorAll('input[type=password]').forEach(e => e.remove())")
    assert "SENTINEL" not in page.content()
    assert "Traceback" not in log.read_text()


def test_optional_shared_password(browser: Browser, tmp_path: Path) -> None:
    with streamlit_app(tmp_path / "server.log", {"CREWDASH_PASSWORD": "open sesame"}) as url:
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("[data-testid='stApp']")
        expect(page.get_by_role("button", name="Enter")).to_be_visible(timeout=30_000)
        expect(page.get_by_text("Run crews concurrently")).to_have_count(0)
        expect(page.get_by_text("Benchmark")).to_have_count(0)  # no page menu either
        page.get_by_role("textbox", name="Password").fill("wrong")
        page.get_by_role("button", name="Enter").click()
        expect(page.get_by_text("Wrong password.")).to_be_visible()
        page.get_by_role("textbox", name="Password").fill("open sesame")
        page.get_by_role("button", name="Enter").click()
        expect(page.get_by_role("heading", name="Run crews concurrently")).to_be_visible(
            timeout=30_000  # the root switches to /run once signed in: one more page load
        )
        page.get_by_role("button", name="Log out").click()
        expect(page.get_by_role("button", name="Enter")).to_be_visible(timeout=30_000)
        expect(page.get_by_text("Run crews concurrently")).to_have_count(0)
        page.close()


# Every URL a user could type on a freshly started server: the pages, the entry script's name,
# and the names of modules that once sat in `pages/` and were served as pages. Each is a cold
# start of its own: the root, a page and a helper's name (the three that also sign in) run by
# default, the other seven under `long` (scripts/test.sh and CI run them, `--fast` does not).
_MORE = pytest.mark.long
DIRECT_URLS = [
    "/",
    pytest.param("/run", marks=_MORE),
    "/history",
    pytest.param("/experiments", marks=_MORE),
    pytest.param("/bench", marks=_MORE),
    pytest.param("/pitfalls", marks=_MORE),
    pytest.param("/account", marks=_MORE),
    pytest.param("/app", marks=_MORE),
    "/session",
    pytest.param("/batch_view", marks=_MORE),
]
SECRET_TOPIC = "quarterly merger plans of Initech"


@pytest.mark.parametrize("path", DIRECT_URLS)
def test_every_url_asks_for_the_password_on_a_fresh_server(
    browser: Browser, tmp_path: Path, path: str
) -> None:
    """Streamlit's folder-based page discovery served `/history` before `app.py` had run once."""
    store = Store(f"sqlite:///{tmp_path / 'history.db'}")
    batch = Batch("0123456789ab", "research", [SECRET_TOPIC], model_label="demo", max_concurrency=1)
    store.create_batch(batch.snapshot())
    store.close()
    with streamlit_app(tmp_path / "server.log", {"CREWDASH_PASSWORD": "pw123"}) as url:
        page = browser.new_page()
        page.goto(url + path)  # the first request this server sees
        page.wait_for_selector("[data-testid='stApp']")
        expect(page.get_by_role("button", name="Enter")).to_be_visible(timeout=30_000)
        page.wait_for_timeout(1000)  # give any page that slipped through time to render
        text = page.inner_text("body")
        assert SECRET_TOPIC not in text
        for leaked in ("History", "Run crews concurrently", "Benchmark", "session", "batch view"):
            assert leaked not in text, f"{leaked!r} shown before login at {path}"
        assert page.locator("[data-testid='stSidebarNav']").count() == 0
        if path not in ("/history", "/session", "/"):
            page.close()
            return
        dialog = page.get_by_role("dialog")  # Streamlit's "page not found" for a helper's name
        if dialog.count():
            page.keyboard.press("Escape")
            expect(dialog).to_have_count(0)
        page.get_by_role("textbox", name="Password").fill("pw123")
        page.get_by_role("button", name="Enter").click()
        expect(page.get_by_role("heading").first).to_be_visible(timeout=30_000)
        nav = page.locator("[data-testid='stSidebarNav']")
        expect(nav).to_be_visible(timeout=30_000)
        # each link's text is its icon's name, then its title
        links = sorted(t.split()[-1] for t in nav.locator("a").all_inner_texts())
        assert links == ["Account", "Benchmark", "Experiments", "History", "Pitfalls", "Run"]
        if path == "/history":
            expect(page.get_by_role("heading", name="History")).to_be_visible(timeout=30_000)
        page.close()


def test_cancel_a_batch_from_the_page(browser: Browser, app: tuple[str, Path]) -> None:
    url, log = app
    page = open_app(browser, url)
    # the crews wait 60 s for their model: still running whenever the click lands
    page.get_by_label("Topics (one per line)").fill(
        "stop me 1 [demo:wait=60]\nstop me 2 [demo:wait=60]\nstop me 3 [demo:wait=60]"
    )
    page.get_by_role("button", name="Run").click()
    cancel = page.get_by_role("button", name="Cancel batch")
    expect(cancel).to_be_visible(timeout=60_000)
    # the live fragment redraws every 0.75 s: on a busy machine Playwright never sees the button
    # stable between two redraws, as a person's click needs no such thing
    cancel.click(force=True, timeout=60_000)
    # The crews end at once (tests/test_runner.py); the page shows it after a 0.75 s poll and a
    # full rerun that draws three charts (about 3.2 s here when idle; how fast is a benchmark's
    # business, not this test's: a busy machine gets a generous bound)
    expect(
        page.get_by_text(re.compile(r"0 queued · 0 running · 0 succeeded · 0 failed · 3 cancelled"))
    ).to_be_visible(timeout=60_000)
    assert "Traceback" not in log.read_text()


def test_model_output_cannot_run_scripts_in_the_page(
    browser: Browser, app: tuple[str, Path]
) -> None:
    url, _ = app
    page = open_app(browser, url)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.get_by_label("Topics (one per line)").fill(
        '<img src=x onerror="window.__xss=1;alert(1)">\n<script>window.__xss=2</script>\n'
        "[click](javascript:window.__xss=3)"
    )
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_text(re.compile(r"0 queued · 0 running · 3 succeeded"))).to_be_visible(
        timeout=30_000
    )
    main = page.locator("[data-testid='stMain']")
    expect(main.locator(MAIN_EXPANDERS.split(" ", 1)[1])).to_have_count(3)
    hrefs = [a.get_attribute("href") or "" for a in main.locator("a").all()]
    assert not any(h.strip().lower().startswith("javascript:") for h in hrefs)
    page.wait_for_timeout(500)
    assert page.evaluate("window.__xss") is None
    assert dialogs == []
    assert main.locator("img[src='x']").count() == 0
    scripts = page.evaluate(
        "[...document.querySelectorAll('[data-testid=stMain] script')].map(s => s.textContent)"
    )
    assert not any("__xss" in text for text in scripts)


@pytest.mark.long
def test_five_sessions_of_twenty_topics_at_once(browser: Browser, app: tuple[str, Path]) -> None:
    import httpx

    url, log = app
    texts = ["\n".join(f"session{i} topic{j}" for j in range(20)) for i in range(5)]
    with browser_sessions(browser, url, texts) as pages:
        for page in pages:
            page.get_by_role("button", name="Run").click()
        health = []
        for _ in range(10):  # the server keeps answering while 100 crews run
            started = time.perf_counter()
            assert httpx.get(f"{url}/_stcore/health", timeout=5).status_code == 200
            health.append(time.perf_counter() - started)
            time.sleep(0.2)
        # a server blocked by its crews would miss the 5-s timeout; a busy two-core machine
        # (five browser sessions, 100 crews) answered in up to 2.3 s
        assert max(health) < 4.0, health
        for i, page in enumerate(pages):
            expect(
                page.get_by_text(re.compile(r"0 queued · 0 running · 20 succeeded"))
            ).to_be_visible(timeout=90_000)
            expanders = page.locator(MAIN_EXPANDERS)
            expect(expanders).to_have_count(20)
            expect(expanders.filter(has_text=f"session{i} topic")).to_have_count(20)
            other = (i + 1) % 5
            expect(expanders.filter(has_text=f"session{other} topic")).to_have_count(0)
        assert len({page.url for page in pages}) == 5
    assert "Traceback" not in log.read_text()


def test_sigterm_to_the_dashboard_marks_unfinished_crews_interrupted(
    browser: Browser, tmp_path: Path
) -> None:
    import signal

    from crewdash.store.history import Store

    log = tmp_path / "server.log"
    with streamlit_app(log, {"CREWDASH_DEMO_LATENCY": "30"}) as url:
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("[data-testid='stApp']")
        page.get_by_label("Topics (one per line)").fill("never finishes 1\nnever finishes 2")
        page.get_by_role("button", name="Run").click()
        expect(page.get_by_text(re.compile(r"0 queued · 2 running"))).to_be_visible(timeout=20_000)
        page.close()
        port = url.rsplit(":", 1)[1]
        for pid in subprocess.run(
            ["pgrep", "-f", f"server.port {port}"], capture_output=True, text=True
        ).stdout.split():
            os.kill(int(pid), signal.SIGTERM)
        store = Store(f"sqlite:///{tmp_path / 'history.db'}")
        try:
            deadline = time.time() + 15
            while time.time() < deadline:
                (summary,) = store.list_batches()
                saved = store.load(summary.batch_id)
                if saved is not None and saved.done:
                    break
                time.sleep(0.2)
        finally:
            store.close()
    assert saved is not None and saved.done
    assert [c.state.value for c in saved.crews] == ["interrupted", "interrupted"]


PROJECTS = Path(__file__).resolve().parent / "projects"


@pytest.fixture(scope="module")
def projects_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The dashboard with the test CrewAI projects on its blueprint search path."""
    log = tmp_path_factory.mktemp("streamlit-projects") / "server.log"
    env = {"CREWDASH_DEMO_LATENCY": "0.5", "CREWDASH_CREWS_DIR": str(PROJECTS)}
    with streamlit_app(log, env) as url:
        yield url, log


@pytest.mark.parametrize(
    "blueprint, kind, file_name, inputs",
    [
        ("triage_flow", "Python Flow", "brief.md", {}),
        ("analyst_crew", "crew project", "report.md", {"audience": "CFOs"}),
    ],
)
def test_a_crewai_project_runs_ten_topics_from_the_page(
    browser: Browser,
    projects_app: tuple[str, Path],
    blueprint: str,
    kind: str,
    file_name: str,
    inputs: dict[str, str],
) -> None:
    url, log = projects_app
    page = open_app(browser, url)
    picker = page.get_by_test_id("stSidebar").get_by_role("combobox", name="Crew blueprint")
    picker.click()
    picker.fill(blueprint)  # the list is virtual: filter it down to the one option
    option = page.get_by_role("option", name=re.compile(rf"^{blueprint} · "))
    expect(option).to_contain_text(kind, ignore_case=True)
    option.click()
    # the picker's rerun draws the chosen blueprint's fields: type only once they are there
    expect(
        page.locator("[data-testid='stMain'] [data-testid='stCaptionContainer']").filter(
            has_text=f"Blueprint {blueprint}"
        )
    ).to_be_visible(timeout=30_000)
    for name, value in inputs.items():  # the project's other inputs, one value for every crew
        field = page.get_by_role("textbox", name=f"{{{name}}} (the same for every crew)")
        field.fill(value)
        field.press("Tab")  # committed before the next field is typed
    topics = [f"{blueprint} topic {i}" for i in range(10)]
    area = page.get_by_label("Topics (one per line)")
    expect(area).to_have_count(1, timeout=30_000)  # the picker's rerun leaves no stale form
    area.fill("\n".join(topics))
    expect(area).to_have_value("\n".join(topics))
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_text(re.compile(r"0 queued · 0 running · 10 succeeded"))).to_be_visible(
        timeout=90_000
    )
    # the last live refresh's elements stay until the final full run replaces them
    expect(page.get_by_role("tab", name="Timeline")).to_have_count(1, timeout=30_000)
    expect(page.get_by_role("tab", name="Timeline")).to_be_visible()
    results = page.locator(MAIN_EXPANDERS)
    expect(results).to_have_count(10, timeout=30_000)
    for i in range(10):
        crew = results.filter(has_text=re.compile(rf"{blueprint} topic {i}\b")).first
        if not crew.locator("details").get_attribute("open"):
            crew.locator("summary").click()
        # each crew's answer and its own file, nothing of another topic's
        expect(crew.get_by_role("button", name=file_name)).to_be_visible(timeout=30_000)
        text = crew.inner_text()
        assert f"{blueprint} topic {i}" in text
        others = [t for t in topics if t != topics[i] and re.search(rf"{t}\b", text)]
        assert not others, others
    assert "Traceback" not in log.read_text()
    page.close()
