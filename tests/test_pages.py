"""AppTest smoke and behaviour tests of every page (fragment timers: see the browser tests)."""

from __future__ import annotations

import ast
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from crewdash.model.batch import CrewState
from tests.apptest import APP, click, quick_demo, start
from tests.leaks import held, settled
from ui.session import runtime


@pytest.fixture(autouse=True)
def quick_demo_model() -> Iterator[None]:
    yield from quick_demo("0.3")


def run_topics(at: AppTest, text: str) -> AppTest:
    at.text_area(key="run.topics").input(text)
    click(at, "Run")
    assert not at.exception
    return at


def markdown_text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_run_page_renders_with_the_simulated_model_labelled() -> None:
    at = start()
    assert at.title[0].value == "Run crews concurrently"
    assert "Simulated model" in at.sidebar.info[0].value
    assert at.sidebar.selectbox(key="sidebar.blueprint").value == "research"


def test_empty_input_shows_a_message_and_starts_nothing() -> None:
    at = start()
    before = runtime().runner.batch_ids()
    run_topics(at, "\n  \n")
    assert at.error[0].value == "Enter at least one topic, one per line."
    assert runtime().runner.batch_ids() == before
    assert "run.batch_id" not in at.session_state


def test_too_many_and_too_long_topics_are_refused() -> None:
    at = start()
    run_topics(at, "\n".join(f"t{i}" for i in range(101)))
    assert "more than the limit of 100" in at.error[0].value
    run_topics(at, "x" * 301)
    assert "longer than 300 characters" in at.error[0].value
    assert "run.batch_id" not in at.session_state


def test_a_batch_runs_and_its_results_render() -> None:
    at = start()
    run_topics(at, "alpha topic\n\nbeta topic\nalpha topic\n<b>bold</b> {topic}")
    batch_id = at.session_state["run.batch_id"]
    assert at.query_params["batch"] == batch_id
    infos = [i.value for i in at.info]
    assert "Dropped 1 blank line." in infos and "Dropped 1 duplicate topic." in infos
    assert runtime().runner.batch(batch_id).wait(30)
    at.run()
    assert not at.exception
    assert len(answers(at)) == 3
    text = markdown_text(at)
    assert "alpha topic" in text and "beta topic" in text
    assert "3** succeeded" in text
    assert len(at.get("plotly_chart")) == 4  # timeline, latency, time to first token, tokens
    assert at.metric[0].value == "3 / 3"
    assert at.metric[5].label == "Cost" and at.metric[5].value == "$0.0000"  # the demo is free


def test_reattaching_by_url_shows_the_batch_and_unknown_ids_warn() -> None:
    batch_id = runtime().runner.submit("timing", ["crew-a"])
    assert runtime().runner.batch(batch_id).wait(30)
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params["batch"] = batch_id
    at.run()
    assert not at.exception
    assert "crew-a done" in markdown_text(at)
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params["batch"] = "doesnotexist"
    at.run()
    assert not at.exception
    assert "not in the history" in at.warning[0].value


def test_a_running_batch_shows_live_states() -> None:
    at = start()
    run_topics(at, "slow one\nslow two")
    deadline = time.time() + 5
    while "running" not in markdown_text(at) and time.time() < deadline:
        at.run()
    assert "running" in markdown_text(at) or "succeeded" in markdown_text(at)


def test_benchmark_page_runs_a_small_benchmark_and_charts_it() -> None:
    at = start()
    at.switch_page("pages/bench.py").run()
    assert not at.exception
    assert at.title[0].value.startswith("Benchmark")
    at.number_input(key="bench.n").set_value(2)
    at.number_input(key="bench.latency").set_value(0.1)
    at.multiselect(key="bench.strategies").set_value(["gather_akickoff", "crewdash"])
    click(at, "Run benchmark")
    assert not at.exception
    job = runtime().jobs.wait(at.session_state["bench.job_id"], timeout=60)
    assert job.error is None and job.done
    at.run()
    assert not at.exception
    assert len(at.dataframe) == 2  # this run, and the same run kept in "Earlier benchmarks"
    assert len(at.get("plotly_chart")) >= 6
    assert at.metric[0].label == "Floor"
    saved = runtime().store.list_bench()  # type: ignore[union-attr]
    assert saved and saved[0].title.startswith("N=2 · 2 strategies")


def test_benchmark_page_refuses_bad_input() -> None:
    at = start()
    at.switch_page("pages/bench.py").run()
    at.text_input(key="bench.sweep").input("1, many")
    click(at, "Run benchmark")
    assert "whole numbers" in at.error[0].value
    at.text_input(key="bench.sweep").input("1, 500")
    click(at, "Run benchmark")
    assert "N must be between 1 and 200" in at.error[0].value
    at.text_input(key="bench.sweep").input("")
    at.multiselect(key="bench.strategies").set_value([])
    click(at, "Run benchmark")
    assert "at least one strategy" in at.error[0].value
    assert "bench.job_id" not in at.session_state


def test_pitfalls_page_measures_a_demo_live() -> None:
    at = start()
    at.switch_page("pages/pitfalls.py").run()
    assert not at.exception
    at.multiselect(key="pitfalls.chosen").set_value(["asyncio_run"])
    at.number_input(key="pitfalls.latency").set_value(0.2)
    click(at, "Measure")
    job = runtime().jobs.wait(at.session_state["pitfalls.job_id"], timeout=60)
    assert job.error is None
    at.run()
    assert not at.exception
    assert "asyncio.run() cannot be called from a running event loop" in at.error[0].value
    assert len(at.code) == 2
    # issue 20 item 6: the code wraps instead of being cut at the column's edge, and the
    # figures' long labels are table rows instead of metric cards that cut them
    assert all(code.proto.wrap_lines for code in at.code)
    assert not at.metric and "fix: wall time" in list(at.table[0].value.index)


def answers(at: AppTest) -> list[Any]:
    """The results' expanders: not the Run form, folded into one while a batch is shown."""
    return [e for e in at.main.expander if e.label != "New batch: topics and settings"]


def finished_batch(topics: list[str], blueprint: str = "timing") -> str:
    batch_id = runtime().runner.submit(blueprint, topics)
    assert runtime().runner.batch(batch_id).wait(30)
    return batch_id


def test_history_lists_opens_and_compares_batches() -> None:
    first = finished_batch(["hist-a", "hist-b"])
    second = finished_batch(["hist-a", "hist-c [demo:fail-400]"])
    at = start()
    at.switch_page("pages/history.py").run()
    assert not at.exception
    listed = at.dataframe[0].value
    assert {first, second} <= set(listed["Batch"])
    at.text_input(key="history.search").input("hist-c").run()
    assert list(at.dataframe[0].value["Batch"]) == [second]

    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page("pages/history.py")
    at.query_params["batch"] = second
    at.run()
    assert not at.exception
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["Download CSV", "Download JSON", "Download MD"]
    rerun = [b for b in at.button if b.label.startswith("Re-run")]
    assert rerun and rerun[0].label == "Re-run 1 failed"

    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page("pages/history.py")
    at.query_params["compare"] = f"{first},{second}"
    at.run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 2
    assert set(at.dataframe[-1].value.columns) == {"Topic", f"{first} (s)", f"{second} (s)"}


def test_the_compare_view_shows_whole_figures_and_two_decimals() -> None:
    """Issue 20 item 6: six metrics in half the page were cut to "9.…" and "$…", and the
    durations showed four decimals."""
    first = finished_batch(["cmp-a", "cmp-b"])
    second = finished_batch(["cmp-a", "cmp-c"])
    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page("pages/history.py")
    at.query_params["compare"] = f"{first},{second}"
    at.run()
    assert not at.exception
    assert len(at.metric) == 12
    # each side's figures wrap three to a row (two rows), not six in a row
    holders = [c for c in at.columns if len(c.get("metric")) == 1]
    assert len(holders) == 12
    assert {round(c.weight, 3) for c in holders} == {round(1 / 3, 3)}, [c.weight for c in holders]
    config = json.loads(at.dataframe[-1].proto.columns)
    for batch_id in (first, second):
        assert config[f"{batch_id} (s)"]["type_config"]["format"] == "%.2f"


def test_bring_your_own_crew_placeholders_become_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from crewdash.base.config import CREWS_DIR

    shutil.copytree(CREWS_DIR / "timing", tmp_path / "timing")
    duo = tmp_path / "duo" / "config"
    duo.mkdir(parents=True)
    (duo / "agents.yaml").write_text(
        "writer:\n  role: Writer\n  goal: Write about {topic} for {audience}\n  backstory: B\n"
    )
    (duo / "tasks.yaml").write_text(
        'brief:\n  description: "Reply with exactly: {topic} for {audience}"\n'
        "  expected_output: a brief\n  agent: writer\n"
    )
    broken = tmp_path / "broken" / "config"
    broken.mkdir(parents=True)
    (broken / "agents.yaml").write_text("a:\n  role: [unclosed\n")
    (broken / "tasks.yaml").write_text("t: {}\n")
    monkeypatch.setenv("CREWDASH_CREWS_DIR", str(tmp_path))

    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state["sidebar.blueprint"] = "broken"
    at.run()
    assert not at.exception
    assert "agents.yaml at line" in at.error[0].value

    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state["sidebar.blueprint"] = "duo"
    at.run()
    assert at.selectbox(key="run.fan_out").value == "topic"
    run_topics(at, "edge AI")
    assert "Fill in {audience}." in at.error[0].value
    at.text_input(key="run.input.audience").input("CTOs")
    run_topics(at, "edge AI\nRAG")
    batch_id = at.session_state["run.batch_id"]
    assert runtime().runner.batch(batch_id).wait(30)
    results = [c.result for c in runtime().runner.snapshot(batch_id).crews]
    assert results == ["edge AI for CTOs", "RAG for CTOs"]


def test_pages_folder_holds_only_gated_pages() -> None:
    """Streamlit serves every module in `pages/`: each one is a page of the navigation and checks
    the login before it draws anything (helpers live in `ui/`)."""
    root = Path(APP).parent
    declared = set(re.findall(r'"(pages/\w+\.py)"', (root / "app.py").read_text()))
    present = {f"pages/{p.name}" for p in (root / "pages").iterdir() if p.name != "__pycache__"}
    assert present == declared
    for name in present:
        tree = ast.parse((root / name).read_text())
        first_statement = next(
            node for node in tree.body[1:] if not isinstance(node, ast.Import | ast.ImportFrom)
        )
        assert ast.unparse(first_statement) == "require_login()", name


PROJECTS = Path(__file__).resolve().parent / "projects"


@pytest.fixture()
def projects_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from tests.broken_projects import write_broken_projects
    from tests.test_projects import write_pinned_project

    write_broken_projects(tmp_path / "broken")
    write_pinned_project(tmp_path / "pinned")
    folders = (PROJECTS, tmp_path / "broken", tmp_path / "pinned")
    monkeypatch.setenv("CREWDASH_CREWS_DIR", os.pathsep.join(str(f) for f in folders))
    monkeypatch.setenv("CREWDASH_OUTPUTS_DIR", str(tmp_path / "outputs"))
    return tmp_path


def test_picker_shows_each_kind_and_broken_projects_with_their_message(
    projects_path: Path,
) -> None:
    at = start()
    picker = at.sidebar.selectbox(key="sidebar.blueprint")
    labels = set(picker.options)
    assert {
        "research · YAML crew",
        "analyst_crew · crew project",
        "brief_json · JSON crew",
        "triage_flow · Python Flow",
        "route_flow · declarative Flow",
        "⚠ bad_syntax · crew project · broken",
        "⚠ bad_json · JSON crew · broken",
    } <= labels
    picker.set_value("bad_syntax").run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("bad_syntax/src/bad_syntax/crew.py line 3: syntax error" in e for e in errors)
    assert len(at.text_area) == 1  # the page still works: another blueprint can be picked
    at.sidebar.selectbox(key="sidebar.blueprint").set_value("timing").run()
    assert not at.exception and not at.error


def test_project_inputs_are_prefilled_and_pinned_agents_are_named_before_run(
    projects_path: Path,
) -> None:
    at = start()
    at.sidebar.selectbox(key="sidebar.blueprint").set_value("brief_json").run()
    assert "JSON crew" in at.caption[0].value
    assert at.selectbox(key="run.fan_out").value == "topic"
    assert at.text_input(key="run.input.tone").value == "plain"  # crew.jsonc's default
    at.sidebar.selectbox(key="sidebar.blueprint").set_value("triage_flow").run()
    assert at.text_input(key="run.input.depth").value == "quick"  # the Flow state's default
    assert not [i for i in at.info if "pin their own model" in i.value]
    at.sidebar.selectbox(key="sidebar.blueprint").set_value("pinned_crew").run()
    pinned = next(i.value for i in at.info if "pin their own model" in i.value)
    assert "**Pinned critic**: `crewdash-pinned`" in pinned and "Writer" not in pinned


def test_a_project_batch_shows_every_task_output_steps_and_files(projects_path: Path) -> None:
    at = start()
    at.sidebar.selectbox(key="sidebar.blueprint").set_value("triage_flow").run()
    at.text_input(key="run.input.depth").input("deep")
    run_topics(at, "page subject Ax\npage subject Bx")
    batch_id = at.session_state["run.batch_id"]
    assert runtime().runner.batch(batch_id).wait(60)
    at.run()
    assert not at.exception
    snap = runtime().runner.snapshot(batch_id)
    assert snap.count(CrewState.SUCCEEDED) == 2 and snap.kind == "flow"
    assert len(answers(at)) == 2
    captions = [c.value for c in at.main.caption]
    assert any(c.startswith("Flow steps: intake") and "deep_brief" in c for c in captions)
    assert [t.label for t in at.main.tabs].count("1. explain") == 2  # a tab per task output
    assert "page subject Ax" in markdown_text(at)
    files = [b for b in at.get("download_button") if b.proto.label == "brief.md"]
    assert len(files) == 2


def test_a_crews_folder_of_ones_own_keeps_the_built_in_blueprints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = tmp_path / "mine" / "config"
    mine.mkdir(parents=True)
    (mine / "agents.yaml").write_text("a:\n  role: R\n  goal: G {topic}\n  backstory: B\n")
    (mine / "tasks.yaml").write_text(
        "t:\n  description: D {topic}\n  expected_output: E\n  agent: a\n"
    )
    monkeypatch.setenv("CREWDASH_CREWS_DIR", str(tmp_path))
    at = start()
    assert not at.error
    options = at.sidebar.selectbox(key="sidebar.blueprint").options  # "name · kind" labels
    assert {"mine · YAML crew", "research · YAML crew", "timing · YAML crew"} <= set(options)


def test_a_failed_start_says_why_and_leaves_nothing_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every load of a dashboard that cannot start used to leave a runner thread and a demo model
    server (with its listening socket) behind; now a failed start closes what it began."""
    monkeypatch.setattr("crewdash.blueprints.catalog.CREWS_DIR", tmp_path)  # a broken install

    def load() -> None:
        at = AppTest.from_file(APP, default_timeout=30)
        at.run()
        assert not at.exception
        assert len(at.error) == 1
        assert at.error[0].value.startswith("crewdash cannot start: no blueprint named 'timing'")

    load()  # Streamlit starts its own long-lived threads on a first run
    before = held()
    for _ in range(4):
        load()
    # nothing more than before (a thread of an earlier test may end meanwhile: fewer is fine)
    threads, sockets = settled(before)
    assert threads <= before[0] and sockets <= before[1], (before, (threads, sockets))


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("CREWDASH_MAX_CONCURRENCY", "abc", "must be a whole number, got 'abc'"),
        ("CREWDASH_DEMO_LATENCY", "soon", "must be a number, got 'soon'"),
        ("CREWDASH_PRICES_FILE", "/no/such/prices.yaml", "cannot read prices from"),
    ],
)
def test_a_bad_setting_is_one_error_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    assert not at.exception
    (error,) = at.error
    assert error.value.startswith(f"crewdash cannot start: {name}")
    assert message in error.value and "\n" not in error.value


def test_the_sidebars_stream_switch_reaches_the_batch() -> None:
    at = start()
    assert at.sidebar.toggle(key="sidebar.stream").value is True  # on by default
    at.sidebar.toggle(key="sidebar.stream").set_value(False).run()
    run_topics(at, "switch off topic")
    batch = runtime().runner.batch(at.session_state["run.batch_id"])
    assert batch.wait(30)
    (crew,) = batch.snapshot().crews
    assert crew.result and crew.live_text == "" and crew.ttft_s is None
