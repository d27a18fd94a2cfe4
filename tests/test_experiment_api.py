"""Experiments through every door: the CLI's `--json`, the REST API over real HTTP and the page
(AppTest) show the same figures for one experiment, and bad input is a message everywhere."""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from crewdash.cli.main import main
from crewdash.experiments.spec import build_spec, parse_variant
from crewdash.model.people import Person
from tests.api_server import api_server
from tests.apptest import APP, click
from tests.test_people_pages import COMPLETE_AUTH
from tests.test_store import POSTGRES_URL
from ui.session import runtime

FAST = "name=fast,model=demo-fast"
THOROUGH = "name=thorough,model=demo-thorough"
logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("experiment-api")


@pytest.fixture(scope="module")
def cli_run(workdir: Path) -> dict[str, Any]:
    """One judged experiment run by the CLI into the history the API and the page read."""
    out = workdir / "grid.json"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DATABASE_URL", f"sqlite:///{workdir / 'history.db'}")
        command = ["experiment", "--variant", FAST, "--variant", THOROUGH, "--judge", "Concrete"]
        assert (
            main([*command, "cli alpha", "cli beta", "--latency", "0.2", "--json", str(out)]) == 0
        )
    body: dict[str, Any] = json.loads(out.read_text())
    return body


@pytest.fixture(scope="module")
def api(workdir: Path, cli_run: dict[str, Any]) -> Iterator[httpx.Client]:
    with api_server(workdir) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client


def test_the_cli_writes_cells_and_variant_summaries(cli_run: dict[str, Any]) -> None:
    assert cli_run["done"] and len(cli_run["cells"]) == 4
    for cell in cli_run["cells"]:
        assert {"topic", "variant", "state", "latency_s", "tokens", "cost_usd", "score"} <= set(
            cell
        )
        assert cell["state"] == "succeeded" and 1 <= cell["score"] <= 10
    fast, thorough = cli_run["variants"]
    assert (fast["name"], thorough["name"]) == ("fast", "thorough")
    assert fast["median_latency_s"] < thorough["median_latency_s"]
    assert fast["success_rate"] == 1.0 and thorough["mean_score"] > fast["mean_score"]


def test_the_api_gives_the_clis_figures(api: httpx.Client, cli_run: dict[str, Any]) -> None:
    experiment_id = cli_run["experiment_id"]
    assert api.get(f"/experiments/{experiment_id}").json() == cli_run
    listed = api.get("/experiments").json()
    assert listed[0]["experiment_id"] == experiment_id
    assert listed[0]["variants"] == ["fast", "thorough"]
    exported = api.get(f"/experiments/{experiment_id}/export", params={"format": "csv"})
    rows = [r for r in csv.reader(io.StringIO(exported.text)) if r[0] == "cell"]
    assert [(r[1], r[2], int(r[5]), int(r[7])) for r in rows] == [
        (c["topic"], c["variant"], c["tokens"], c["score"]) for c in cli_run["cells"]
    ]
    markdown = api.get(f"/experiments/{experiment_id}/export", params={"format": "md"}).text
    assert "| topic | fast | thorough |" in markdown
    assert api.get("/experiments/nope").status_code == 404


@pytest.mark.parametrize(
    ("variants", "status", "message"),
    [
        ([{"name": f"v{i}", "temperature": i / 10} for i in range(7)], 422, "at most 6 items"),
        ([{"name": "a", "model": "demo-fast"}, {"name": "b", "model": "demo-fast"}], 400,
         "identical"),
        ([{"name": "a"}, {"name": "b", "provider": "acme"}], 422, "unknown provider 'acme'"),
        ([{"name": "a"}, {"name": "b", "model": "gpt-9"}], 400, "has no model 'gpt-9'"),
        ([{"name": "a"}, {"name": "b", "blueprint": "nope"}], 400, "no blueprint named 'nope'"),
    ],
)  # fmt: skip
def test_bad_experiments_are_refused_before_anything_starts(
    api: httpx.Client, variants: list[dict[str, Any]], status: int, message: str
) -> None:
    before = len(api.get("/batches").json())
    answer = api.post("/experiments", json={"topics": ["x"], "variants": variants})
    assert answer.status_code == status and message in answer.json()["detail"]
    assert len(api.get("/batches").json()) == before


def test_start_mark_and_rerun_over_http(api: httpx.Client) -> None:
    variants = [{"name": "fast", "model": "demo-fast"}, {"name": "base"}]
    answer = api.post(
        "/experiments", json={"topics": ["http one", "http two"], "variants": variants}
    )
    assert answer.status_code == 202, answer.text
    experiment_id = answer.json()["experiment_id"]
    assert answer.json()["cells"] == 4
    deadline = time.time() + 60
    while not (grid := api.get(f"/experiments/{experiment_id}").json())["done"]:
        assert time.time() < deadline, grid
        time.sleep(0.1)
    assert all(c["judge"] == "off" and c["score"] is None for c in grid["cells"])
    marked = api.post(
        f"/experiments/{experiment_id}/cells/1/mark", json={"mark": "good", "note": "crisp"}
    )
    assert marked.json()["mark"] == "good" and marked.json()["note"] == "crisp"
    assert api.get(f"/experiments/{experiment_id}").json()["cells"][1]["mark"] == "good"
    assert api.post(f"/experiments/{experiment_id}/cells/9/mark", json={}).status_code == 400
    rerun = api.post(f"/experiments/{experiment_id}/rerun", json={"variant": "base"})
    assert rerun.status_code == 202 and rerun.json()["cells"] == 2
    again = api.post(f"/experiments/{experiment_id}/rerun", json={"variant": "slow"})
    assert again.status_code == 400 and "no variant 'slow'" in again.json()["detail"]


@pytest.fixture()
def page_runtime(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{workdir / 'history.db'}")
    monkeypatch.setenv("CREWDASH_DEMO_LATENCY", "0.2")
    runtime.clear()
    yield
    runtime().close()
    runtime.clear()


def test_the_page_shows_the_same_figures(page_runtime: None, cli_run: dict[str, Any]) -> None:
    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page("pages/experiments.py")
    at.query_params["experiment"] = cli_run["experiment_id"]
    at.run()
    assert not at.exception
    grid, summary = at.table[0].value, at.table[1].value
    assert list(grid.columns) == ["fast", "thorough"]
    assert list(grid.index) == ["cli alpha", "cli beta"]
    assert grid.loc["cli alpha", "fast"].startswith("succeeded · ")
    for v in cli_run["variants"]:
        row = summary.loc[v["name"]]
        assert row["median s"] == f"{v['median_latency_s']:.2f}"
        assert row["p95 s"] == f"{v['p95_latency_s']:.2f}"
        assert row["tokens"] == str(v["tokens"])
        assert row["mean score"] == f"{v['mean_score']:.2f}"
        assert row["success"] == "100%"
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["Grid as CSV", "Grid as Markdown"]
    # the grid coloured by latency and by score, then latency and score by variant
    assert len(at.get("plotly_chart")) == 4

    experiment_id = cli_run["experiment_id"]  # mark the first topic's thorough cell as good
    at.radio(key=f"experiments.markv.{experiment_id}.1").set_value("good")
    at.text_input(key=f"experiments.note.{experiment_id}.1").input("the best one")
    next(b for b in at.button if b.label == "Save mark" and b.form_id.endswith(".1")).click().run()
    assert not at.exception
    cell = runtime().experiments.grid(experiment_id).cells[1]
    assert (cell.variant, cell.mark, cell.note) == ("thorough", "good", "the best one")
    assert "good" in at.table[0].value.loc["cli alpha", "thorough"]
    store = runtime().store
    assert store is not None
    (marked,) = [e for e in store.audit_log() if e.action == "mark"]
    assert (marked.user_id, marked.object) == ("anonymous", f"experiment {experiment_id} cell 1")

    # "Edit as a new experiment" fills the form with this one, to change a variant and run it
    next(b for b in at.button if b.label == "Edit as a new experiment").click().run()
    assert at.text_area(key="experiments.topics").value == "cli alpha\ncli beta"
    assert at.text_area(key="experiments.variants").value.splitlines() == [
        "name=fast,provider=demo,model=demo-fast,blueprint=research",
        "name=thorough,provider=demo,model=demo-thorough,blueprint=research",
    ]
    assert at.text_area(key="experiments.rubric").value == "Concrete"

    history = AppTest.from_file(APP, default_timeout=30)
    history.switch_page("pages/history.py")
    history.query_params["batch"] = experiment_id
    history.run()
    assert not history.exception
    links = [link.label for link in history.get("page_link")]
    assert "This batch is an experiment: open it as its grid" in links


def test_the_page_refuses_bad_variants_and_starts_good_ones(page_runtime: None) -> None:
    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page("pages/experiments.py").run()
    assert not at.exception
    at.text_area(key="experiments.topics").input("page topic")
    at.text_area(key="experiments.variants").input(f"{FAST}\n{FAST}")
    click(at, "Start experiment")
    assert not at.exception
    assert "two variants are named 'fast'" in at.error[0].value
    assert "experiment" not in at.query_params

    at.text_area(key="experiments.variants").input(f"{FAST}\n{THOROUGH}")
    click(at, "Start experiment")
    assert not at.exception and not at.error
    experiment_id = at.query_params["experiment"]
    cancel = [b for b in at.button if b.label == "Cancel the cells still running"]
    assert cancel, "no cancel while the experiment runs"
    cancel[0].click().run()
    assert not at.exception
    grid = runtime().experiments.wait(experiment_id, 60)
    assert grid.done and {c.state for c in grid.cells} <= {"succeeded", "cancelled"}
    store = runtime().store
    assert store is not None
    log = {(e.user_id, e.action, e.object) for e in store.audit_log()}
    assert ("anonymous", "run experiment", f"experiment {experiment_id}") in log
    assert ("anonymous", "cancel", f"experiment {experiment_id}") in log


def test_only_its_starter_or_an_admin_may_cancel_an_experiment_from_the_page(
    page_runtime: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREWDASH_ADMINS", "boss@example.com")
    monkeypatch.setenv("CREWDASH_MEMBERS", "@example.com")
    runtime.clear()  # the settings above, read at start
    experiments = runtime().experiments
    spec, _ = build_spec("held [demo:wait=120]", [parse_variant(FAST), parse_variant(THOROUGH)])
    ann = Person("ann@example.com", "Ann Analyst")
    experiment_id = experiments.start(spec, runtime().default_settings.llm, by=ann)

    def page(email: str) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=30)
        at.secrets["auth"] = COMPLETE_AUTH
        at.user = {"is_logged_in": True, "email": email, "name": email}
        at.switch_page("pages/experiments.py")
        at.query_params["experiment"] = experiment_id
        at.run()
        assert not at.exception
        return at

    bob = page("bob@example.com")
    assert not [b for b in bob.button if b.label == "Cancel the cells still running"]
    assert any("only they or an admin can cancel it" in c.value for c in bob.caption)
    boss = page("boss@example.com")
    next(b for b in boss.button if b.label == "Cancel the cells still running").click().run()
    assert not boss.exception
    grid = experiments.wait(experiment_id, 60)
    assert grid.done and {c.state for c in grid.cells} == {"cancelled"}
    store = runtime().store
    assert store is not None
    log = {(e.user_id, e.action, e.object) for e in store.audit_log()}
    assert ("boss@example.com", "cancel", f"experiment {experiment_id}") in log


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_an_experiment_id_with_a_nul_is_a_404_on_both_databases(
    tmp_path: Path, database: str
) -> None:
    """PostgreSQL refuses a NUL in a query parameter: the id is checked before any query."""
    env = {"CREWDASH_DEMO_LATENCY": "0.05"}
    if database == "postgresql":
        env["DATABASE_URL"] = POSTGRES_URL
    with api_server(tmp_path, **env) as url, httpx.Client(base_url=url, timeout=30) as client:
        for method, path, body in [
            ("GET", "/experiments/%00", None),
            ("GET", "/experiments/%00/export", None),
            ("POST", "/experiments/%00/cells/0/mark", {"mark": "good"}),
            ("POST", "/experiments/ab%09cd/rerun", {}),
        ]:
            answer = client.request(method, path, json=body)
            assert answer.status_code == 404, (path, answer.text)
            assert "no batch with id" in answer.json()["detail"]
