"""The REST API over real HTTP against a running uvicorn."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from crewdash.store import Store
from tests.api_server import api_server


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api")


@pytest.fixture(scope="module")
def api(workdir: Path) -> Iterator[httpx.Client]:
    with api_server(workdir) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client


def wait_done(api: httpx.Client, batch_id: str) -> dict:  # type: ignore[type-arg]
    deadline = time.time() + 60
    while time.time() < deadline:
        body = api.get(f"/batches/{batch_id}").json()
        if body["done"]:
            return body  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError("batch did not finish")


def test_research_is_the_tutorials_contract(api: httpx.Client) -> None:
    response = api.post(
        "/research", json={"topics": ["CrewAI async", "LangGraph streaming", "CrewAI async"]}
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body["results"]) == {"CrewAI async", "LangGraph streaming"}
    assert all(text.count("\n- ") == 2 and topic in text for topic, text in body["results"].items())
    assert body["errors"] == {}


def test_research_runs_crews_concurrently_and_never_blocks_the_loop(api: httpx.Client) -> None:
    n, latency = 10, 0.2
    done: dict[str, float] = {}

    def call() -> None:
        started = time.perf_counter()
        api.post("/research", json={"topics": [f"parallel {i}" for i in range(n)]})
        done["research"] = time.perf_counter() - started

    worker = threading.Thread(target=call)
    worker.start()
    health = []
    while worker.is_alive():
        started = time.perf_counter()
        assert api.get("/healthz").status_code == 200
        health.append(time.perf_counter() - started)
        time.sleep(0.02)
    worker.join()
    assert done["research"] < n * latency  # overlapped, not one after another
    assert health and max(health) < 0.5  # the server answered while crews ran


def test_batches_start_at_once_and_show_up_in_the_history(api: httpx.Client, workdir: Path) -> None:
    started = time.perf_counter()
    response = api.post("/batches", json={"topics": ["a1", "A1", "a2"], "blueprint": "timing"})
    assert time.perf_counter() - started < 1.0
    assert response.status_code == 202
    accepted = response.json()
    assert accepted["crews"] == 2 and accepted["notes"] == ["Dropped 1 duplicate topic."]
    assert accepted["links"]["events"] == f"/batches/{accepted['batch_id']}/events"
    body = wait_done(api, accepted["batch_id"])
    assert [c["result"] for c in body["crews"]] == ["a1 done", "a2 done"]
    assert all(c["state"] == "succeeded" and len(c["spans"]) == 1 for c in body["crews"])
    listed = api.get("/batches", params={"search": "a1"}).json()
    assert listed[0]["batch_id"] == accepted["batch_id"] and listed[0]["source"] == "api"
    store = Store(f"sqlite:///{workdir / 'history.db'}")  # what the dashboard's History reads
    try:
        assert accepted["batch_id"] in [s.batch_id for s in store.list_batches()]
    finally:
        store.close()


def test_sse_stream_delivers_every_crews_completion(api: httpx.Client) -> None:
    batch_id = api.post(
        "/batches", json={"topics": [f"s{i}" for i in range(6)], "blueprint": "timing"}
    ).json()["batch_id"]
    events: list[tuple[str, dict]] = []  # type: ignore[type-arg]
    with api.stream("GET", f"/batches/{batch_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in stream.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line.split(":", 1)[1])))
                if name == "done":
                    break
    finals = {e["topic"]: e for n, e in events if n == "crew" and e["state"] == "succeeded"}
    assert set(finals) == {f"s{i}" for i in range(6)}
    assert all(finals[f"s{i}"]["result"] == f"s{i} done" for i in range(6))
    assert events[-1][0] == "done" and events[-1][1]["done"] is True


def test_cancel_ends_the_batch_and_keeps_finished_results(api: httpx.Client) -> None:
    batch_id = api.post(
        "/batches", json={"topics": [f"c{i}" for i in range(4)], "blueprint": "timing"}
    ).json()["batch_id"]
    started = time.perf_counter()
    response = api.post(f"/batches/{batch_id}/cancel")
    assert response.status_code == 200 and response.json()["batch_id"] == batch_id
    body = wait_done(api, batch_id)
    assert time.perf_counter() - started < 2.0
    states = {c["state"] for c in body["crews"]}
    assert states <= {"cancelled", "succeeded"} and "cancelled" in states
    assert api.post(f"/batches/{batch_id}/cancel").json()["cancelled"] == 0


@pytest.mark.parametrize(
    "fmt, mime, marker",
    [
        ("csv", "text/csv", "batch_id,index,topic,state"),
        ("json", "application/json", '"batch_id"'),
        ("md", "text/markdown", "# crewdash batch"),
    ],
)
def test_exports(api: httpx.Client, fmt: str, mime: str, marker: str) -> None:
    batch_id = api.post("/batches", json={"topics": ["e1"], "blueprint": "timing"}).json()[
        "batch_id"
    ]
    wait_done(api, batch_id)
    response = api.get(f"/batches/{batch_id}/export", params={"format": fmt})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(mime)
    assert marker in response.text and "e1" in response.text
    assert f"crewdash-{batch_id}.{fmt}" in response.headers["content-disposition"]


def test_csv_export_gives_a_spreadsheet_no_formula(api: httpx.Client) -> None:
    formula = '=HYPERLINK("http://evil.example","x")'
    batch_id = api.post("/batches", json={"topics": [formula], "blueprint": "timing"}).json()[
        "batch_id"
    ]
    wait_done(api, batch_id)
    text = api.get(f"/batches/{batch_id}/export", params={"format": "csv"}).text
    (row,) = csv.DictReader(io.StringIO(text, newline=""))
    assert row["topic"] == "'" + formula
    assert row["result"] == "'" + formula + " done"


@pytest.mark.parametrize(
    "method, path, kwargs, status, message",
    [
        (
            "post",
            "/research",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            422,
            "JSON",
        ),
        ("post", "/research", {"json": {"topics": "not a list"}}, 422, "topics"),
        ("post", "/research", {"json": {"topics": [1, 2]}}, 422, "topics"),
        ("post", "/research", {"json": {"topics": []}}, 422, "topics"),
        ("post", "/research", {"json": {}}, 422, "topics: Field required"),
        ("post", "/research", {"json": {"topics": ["", "  "]}}, 422, "topics.0: String should"),
        ("post", "/research", {"json": {"topics": ["\u0000\t"]}}, 422, "topics.0: String"),
        (
            "post",
            "/batches",
            {"json": {"topics": [f"t{i}" for i in range(101)]}},
            422,
            "at most 100 items",
        ),
        ("post", "/batches", {"json": {"topics": ["x" * 301]}}, 422, "at most 300 characters"),
        (
            "post",
            "/batches",
            {"json": {"topics": ["x"], "blueprint": "nope"}},
            422,
            "no blueprint named 'nope'",
        ),
        (
            "post",
            "/batches",
            {"json": {"topics": ["x"], "max_concurrency": 0}},
            422,
            "max_concurrency",
        ),
        ("get", "/batches/does-not-exist", {}, 404, "no batch with id 'does-not-exist'"),
        ("get", "/batches/does-not-exist/events", {}, 404, "no batch"),
        ("post", "/batches/does-not-exist/cancel", {}, 404, "no batch"),
        ("get", "/batches/does-not-exist/export", {}, 404, "no batch"),
        ("get", "/batches", {"params": {"limit": 0}}, 422, "limit"),
    ],
)
def test_bad_input_is_a_4xx_with_a_clear_message(
    api: httpx.Client,
    method: str,
    path: str,
    kwargs: dict,
    status: int,
    message: str,  # type: ignore[type-arg]
) -> None:
    response = getattr(api, method)(path, **kwargs)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


def test_unsupported_export_format(api: httpx.Client) -> None:
    batch_id = api.post("/batches", json={"topics": ["f1"], "blueprint": "timing"}).json()[
        "batch_id"
    ]
    response = api.get(f"/batches/{batch_id}/export", params={"format": "xlsx"})
    assert response.status_code == 422 and "format" in response.json()["detail"]


def test_docs_and_openapi_are_served(api: httpx.Client) -> None:
    assert api.get("/docs").status_code == 200
    paths = api.get("/openapi.json").json()["paths"]
    assert {
        "/research",
        "/batches",
        "/batches/{batch_id}",
        "/batches/{batch_id}/events",
        "/batches/{batch_id}/cancel",
        "/batches/{batch_id}/export",
        "/healthz",
    } <= set(paths)


def test_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.browser import ROOT

    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "crewdash.api:app", "--port", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **__import__("os").environ,
            "DATABASE_URL": "postgresql://u:secret@127.0.0.1:9/x?connect_timeout=2",
        },
    )
    assert result.returncode != 0
    assert "crewdash cannot start: cannot open the database at DATABASE_URL=" in result.stderr
    assert "Traceback" not in result.stderr and "secret" not in result.stderr


@pytest.mark.parametrize(
    "name, value",
    [("CREWDASH_MAX_CONCURRENCY", "abc"), ("CREWDASH_PRICES_FILE", "/no/such/prices.yaml")],
)
def test_a_bad_setting_is_one_clear_line(name: str, value: str) -> None:
    import subprocess
    import sys

    from tests.browser import ROOT

    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "crewdash.api:app", "--port", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, name: value},
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if name in line]
    assert len(errors) == 1 and f"crewdash cannot start: {name}" in errors[0]
    assert "Traceback" not in result.stderr


def start_until_half_done(client: httpx.Client, topics: list[str]) -> tuple[str, dict[str, str]]:
    """Start a batch and return once some crews have finished and others still run."""
    batch_id = client.post("/batches", json={"topics": topics}).json()["batch_id"]
    deadline = time.time() + 30
    while time.time() < deadline:
        crews = client.get(f"/batches/{batch_id}").json()["crews"]
        if {"succeeded", "running"} <= {c["state"] for c in crews}:
            break
        time.sleep(0.05)
    return batch_id, {c["topic"]: c["result"] for c in crews if c["state"] == "succeeded"}


def test_kill_9_mid_batch_then_restart_keeps_finished_and_marks_the_rest(tmp_path: Path) -> None:
    import os
    import signal

    topics = [f"durable {i}" for i in range(8)]
    with api_server(tmp_path, CREWDASH_DEMO_PROFILE="hosted") as url:
        client = httpx.Client(base_url=url, timeout=30)
        batch_id, finished_before = start_until_half_done(client, topics)
        pid = client.get("/healthz").json()["pid"]
        os.kill(pid, signal.SIGKILL)
        client.close()
    assert finished_before and len(finished_before) < len(topics)
    with api_server(tmp_path) as url, httpx.Client(base_url=url, timeout=30) as client:
        body = client.get(f"/batches/{batch_id}").json()
    assert body["done"]
    after = {c["topic"]: c for c in body["crews"]}
    for topic, result in finished_before.items():
        assert after[topic]["state"] == "succeeded" and after[topic]["result"] == result
    others = [c for t, c in after.items() if t not in finished_before]
    assert others and all(c["state"] in ("interrupted", "succeeded") for c in others)
    assert any(c["state"] == "interrupted" for c in others)
    assert all("interrupted" in (c["error"] or "") for c in others if c["state"] == "interrupted")


def test_sigterm_stops_admitting_and_marks_unfinished_crews_interrupted(tmp_path: Path) -> None:
    import os
    import signal

    topics = [f"graceful {i}" for i in range(8)]
    with api_server(tmp_path, CREWDASH_DEMO_PROFILE="hosted") as url:
        client = httpx.Client(base_url=url, timeout=30)
        batch_id, finished_before = start_until_half_done(client, topics)
        os.kill(client.get("/healthz").json()["pid"], signal.SIGTERM)
        time.sleep(3)
        client.close()
    assert "Traceback" not in (tmp_path / "api.log").read_text()
    from crewdash.store import Store

    store = Store(f"sqlite:///{tmp_path / 'history.db'}")
    try:
        saved = store.load(batch_id)
    finally:
        store.close()
    assert saved is not None and saved.done
    for crew in saved.crews:
        if crew.topic in finished_before:
            assert crew.state.value == "succeeded" and crew.result == finished_before[crew.topic]
        else:
            assert crew.state.value in ("succeeded", "interrupted")
    assert any(c.state.value == "interrupted" for c in saved.crews)


def test_bearer_token_when_configured(tmp_path: Path) -> None:
    with (
        api_server(tmp_path, CREWDASH_API_TOKEN="s3cret-token") as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        assert client.get("/healthz").status_code == 200
        assert client.get("/docs").status_code == 200
        denied = client.get("/batches")
        assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
        assert "CREWDASH_API_TOKEN" in denied.json()["detail"]
        wrong = client.get("/batches", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = client.get("/batches", headers={"authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200


def test_cancel_one_crew_through_the_api(api: httpx.Client) -> None:
    body = api.post("/batches", json={"topics": ["k1", "k2"], "blueprint": "timing"}).json()
    run_id = api.get(f"/batches/{body['batch_id']}").json()["crews"][1]["run_id"]
    answer = api.post(f"/batches/{body['batch_id']}/crews/{run_id}/cancel")
    assert answer.status_code == 200
    done = wait_done(api, body["batch_id"])
    assert done["crews"][1]["state"] in ("cancelled", "succeeded")  # it may have won the race
    missing = api.post(f"/batches/{body['batch_id']}/crews/nope/cancel")
    assert missing.status_code == 404
