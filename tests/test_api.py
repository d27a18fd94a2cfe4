"""The REST API over real HTTP against a running uvicorn."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from crewdash.model.batch import Batch, TokenUsage
from crewdash.store.history import Store
from tests.api_server import SharedAPI, api_server
from tests.test_store import postgres_url  # noqa: F401 - a schema of its own in PostgreSQL


@pytest.fixture(scope="module")
def workdir(shared_api: SharedAPI) -> Path:
    return shared_api.workdir


@pytest.fixture(scope="module")
def api(shared_api: SharedAPI) -> Iterator[httpx.Client]:
    """The session's API server (tests/api_server.py): what a test here needs of its own, it
    starts with `api_server`."""
    with httpx.Client(base_url=shared_api.url, timeout=60) as client:
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
    n = 10
    started = time.perf_counter()
    assert api.post("/research", json={"topics": ["one alone"]}).status_code == 200
    alone = time.perf_counter() - started  # one crew, measured now: the machine's pace today
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
    # Overlapped, not one after another: ten crews one by one would take ten times one crew.
    assert done["research"] < n * alone * 0.6
    # the server answered while crews ran (a blocked loop would hold a call for the whole run)
    assert health and max(health) < max(0.5, done["research"] / 2)


def test_batches_start_at_once_and_show_up_in_the_history(api: httpx.Client, workdir: Path) -> None:
    started = time.perf_counter()
    response = api.post("/batches", json={"topics": ["a1", "A1", "a2"], "blueprint": "timing"})
    assert time.perf_counter() - started < 5.0  # at once: not after the crews (generous bound)
    assert response.status_code == 202
    accepted = response.json()
    assert accepted["crews"] == 2
    assert accepted["notes"] == ["'A1' is the same topic as 'a1': one crew answers both."]
    assert accepted["links"]["events"] == f"/batches/{accepted['batch_id']}/events"
    body = wait_done(api, accepted["batch_id"])
    assert [c["result"] for c in body["crews"]] == ["a1 done", "a2 done"]
    assert all(
        c["state"] == "succeeded" and [s["kind"] for s in c["spans"]].count("llm") == 1
        for c in body["crews"]
    )
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
    assert time.perf_counter() - started < 10.0  # not a crew's full run, nor a hang
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
        (
            "post",
            "/research",
            {"json": {"topics": ["", "  "]}},
            422,
            "topics: Topic 1, 2 are blank",
        ),
        ("post", "/research", {"json": {"topics": ["ok", "\u0000\t"]}}, 422, "Topic 2 is blank"),
        ("post", "/research", {"json": {"topics": ["\u200b\u2060\ufeff"]}}, 422, "1 is blank"),
        ("post", "/batches", {"json": {"topics": ["a", "\u200c\u200d"]}}, 422, "2 is blank"),
        (
            "post",
            "/batches",
            {"json": {"topics": [f"t{i}" for i in range(101)]}},
            422,
            "topics: 101 topics is more than the limit of 100",
        ),
        (
            "post",
            "/batches",
            {"json": {"topics": ["x" * 301]}},
            422,
            "topics: Topic 1 is longer than 300 characters",
        ),
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
        ("delete", "/batches/does-not-exist", {}, 404, "no batch"),
        ("delete", "/batches/0123456789ab", {}, 404, "no batch with id '0123456789ab'"),
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
    assert "pattern" not in response.json()["detail"]  # plain words, never a raw regex


def test_unsupported_export_format(api: httpx.Client) -> None:
    batch_id = api.post("/batches", json={"topics": ["f1"], "blueprint": "timing"}).json()[
        "batch_id"
    ]
    response = api.get(f"/batches/{batch_id}/export", params={"format": "pdf"})
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


def test_uvicorn_finds_the_app_however_often_it_looks() -> None:
    """`crewdash.api:app` is the ASGI app on every look-up, not the module `crewdash.api.app`
    (uvicorn looks it up twice: to check it, then to run it)."""
    import subprocess
    import sys

    from tests.browser import ROOT

    script = (
        "from uvicorn.importer import import_from_string as load\n"
        "first, again = load('crewdash.api:app'), load('crewdash.api:app')\n"
        "from crewdash.api.app import app\n"
        "assert first is again is app, (first, again)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


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


SHORT_LEASE = {"CREWDASH_OWNER_HEARTBEAT_S": "0.5", "CREWDASH_OWNER_LEASE_S": "6"}


def test_kill_9_mid_batch_then_restart_keeps_finished_and_marks_the_rest(tmp_path: Path) -> None:
    import os
    import signal

    topics = [f"durable {i}" for i in range(8)]
    with api_server(tmp_path, CREWDASH_DEMO_PROFILE="hosted", **SHORT_LEASE) as url:
        client = httpx.Client(base_url=url, timeout=30)
        batch_id, finished_before = start_until_half_done(client, topics)
        pid = client.get("/healthz").json()["pid"]
        os.kill(pid, signal.SIGKILL)
        client.close()
    assert finished_before and len(finished_before) < len(topics)
    with (
        api_server(tmp_path, **SHORT_LEASE) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        body = wait_done(client, batch_id)  # once the dead server's lease has run out
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
    from crewdash.store.history import Store

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


@pytest.fixture(scope="module")
def projects_api(shared_api: SharedAPI) -> Iterator[tuple[httpx.Client, Path]]:
    """The API with the test projects (and broken ones) on its search path: the shared one."""
    with httpx.Client(base_url=shared_api.url, timeout=60) as client:
        yield client, shared_api.outputs


def test_blueprints_lists_kinds_inputs_pins_and_broken_ones(
    projects_api: tuple[httpx.Client, Path],
) -> None:
    api, _ = projects_api
    listed = {b["name"]: b for b in api.get("/blueprints").json()}
    assert {n: listed[n]["kind"] for n in ("research", "analyst_crew", "brief_json")} == {
        "research": "yaml",
        "analyst_crew": "crew",
        "brief_json": "json_crew",
    }
    assert listed["triage_flow"]["kind"] == "flow" and listed["route_flow"]["kind"] == "flow_yaml"
    assert listed["brief_json"]["inputs"] == {"tone": "plain", "topic": "AI agents"}
    assert listed["analyst_crew"]["required"] == ["audience", "topic"]
    assert listed["route_flow"]["fan_out"] == "topic"
    assert listed["bad_syntax"]["error"].startswith("bad_syntax/src/bad_syntax/crew.py line 3")
    assert listed["bad_syntax"]["kind"] == "crew"


def test_a_project_batch_with_inputs_and_fan_out_keeps_tasks_and_files_per_crew(
    projects_api: tuple[httpx.Client, Path],
) -> None:
    api, _ = projects_api
    topics = [f"api subject {chr(65 + i)}x" for i in range(10)]
    accepted = api.post(
        "/batches",
        json={
            "topics": topics,
            "blueprint": "analyst_crew",
            "inputs": {"audience": "CTOs"},
            "fan_out": "topic",
        },
    )
    assert accepted.status_code == 202, accepted.text
    batch_id = accepted.json()["batch_id"]
    body = wait_done(api, batch_id)
    assert body["kind"] == "crew"
    for crew in body["crews"]:
        assert crew["state"] == "succeeded"
        assert crew["inputs"] == {"audience": "CTOs", "topic": crew["topic"]}
        assert [t["name"] for t in crew["tasks"]] == ["gather", "measure", "brief"]
        assert crew["topic"] in crew["tasks"][0]["output"]
        assert crew["files"] == ["report.md"]
        assert {"task", "llm", "tool"} <= {s["kind"] for s in crew["spans"]}
        report = api.get(f"/batches/{batch_id}/crews/{crew['run_id']}/files/report.md")
        assert report.status_code == 200 and crew["topic"] in report.text
        others = [t for t in topics if t != crew["topic"]]
        assert not any(o in report.text for o in others)
    run_id = body["crews"][0]["run_id"]
    for path in ("nope.md", "../../history.db", "%2e%2e/%2e%2e/history.db"):
        missing = api.get(f"/batches/{batch_id}/crews/{run_id}/files/{path}")
        assert missing.status_code == 404 and "detail" in missing.json()


def test_a_flow_batch_through_the_api_records_its_steps(
    projects_api: tuple[httpx.Client, Path],
) -> None:
    api, _ = projects_api
    accepted = api.post(
        "/batches",
        json={
            "topics": ["flow a", "flow b"],
            "blueprint": "route_flow",
            "inputs": {"mode": "deep"},
        },
    )
    body = wait_done(api, accepted.json()["batch_id"])
    for crew in body["crews"]:
        assert crew["state"] == "succeeded", crew["error"]
        assert {s["name"] for s in crew["spans"] if s["kind"] == "step"} == {"pick", "deep_dive"}
        assert [t["name"] for t in crew["tasks"]] == ["research"]
        assert crew["files"] == ["deep.md"]


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (
            {"topics": ["x"], "blueprint": "bad_syntax"},
            400,
            "bad_syntax/src/bad_syntax/crew.py line 3",
        ),
        (
            {"topics": ["x"], "blueprint": "bad_json"},
            400,
            "bad_json/crew.jsonc: invalid JSON at line",
        ),
        ({"topics": ["x"], "blueprint": "analyst_crew"}, 400, "needs a value for {audience}"),
        (
            {"topics": ["x"], "blueprint": "brief_json", "fan_out": "nope"},
            400,
            "no placeholder {nope}",
        ),
        ({"topics": ["x"], "blueprint": "brief_json", "inputs": {"bad key": "v"}}, 422, "inputs"),
    ],
)
def test_bad_project_input_is_a_4xx_naming_the_problem(
    projects_api: tuple[httpx.Client, Path],
    body: dict,
    status: int,
    detail: str,  # type: ignore[type-arg]
) -> None:
    api, _ = projects_api
    response = api.post("/batches", json=body)
    assert response.status_code == status
    assert detail in response.json()["detail"]


def read_events(client: httpx.Client, path: str, deadline: float) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    """The SSE events of `path` up to `done` (or the deadline: pings come every 15 s)."""
    events: list[tuple[str, dict]] = []  # type: ignore[type-arg]
    with client.stream("GET", path) as stream:
        assert stream.status_code == 200
        name = ""
        for line in stream.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line.split(":", 1)[1])))
                if name == "done":
                    break
            if time.time() > deadline:
                break
    return events


def test_a_killed_servers_batch_ends_within_its_lease_on_a_replacement_pod(
    tmp_path: Path,
) -> None:
    """kill -9, then a server with another host name (a replaced pod; in a container the PID
    would be 1 again): the old batch must not stay running forever."""
    import os
    import signal

    lease = float(SHORT_LEASE["CREWDASH_OWNER_LEASE_S"])
    heartbeat = float(SHORT_LEASE["CREWDASH_OWNER_HEARTBEAT_S"])
    with api_server(tmp_path, CREWDASH_DEMO_LATENCY="30", **SHORT_LEASE) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            topics = ["slow a", "slow b", "slow c"]
            batch_id = client.post("/batches", json={"topics": topics, "blueprint": "timing"})
            batch_id = batch_id.json()["batch_id"]
            while "running" not in {
                c["state"] for c in client.get(f"/batches/{batch_id}").json()["crews"]
            }:
                time.sleep(0.05)
            os.kill(client.get("/healthz").json()["pid"], signal.SIGKILL)
            killed = time.time()
    with (
        api_server(tmp_path, hostname="replacement-pod", **SHORT_LEASE) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        up = time.time()
        events = read_events(client, f"/batches/{batch_id}/events", deadline=time.time() + 40)
        ended = time.time()
        body = client.get(f"/batches/{batch_id}").json()
        again = client.post(f"/batches/{batch_id}/cancel")
        listed = client.get("/batches").json()
    assert events and events[-1][0] == "done", f"no done event: {events[-3:]}"
    assert events[-1][1]["done"] is True
    assert body["done"] and [c["state"] for c in body["crews"]] == ["interrupted"] * 3
    assert again.status_code == 200 and again.json()["cancelled"] == 0
    assert listed[0]["state"] == "interrupted" and listed[0]["finished_at"] is not None
    # the bound: lease + one sweep interval after the kill, or at once if the new server
    # only came up after that (its first sweep); generous room for a busy machine
    assert ended - killed <= max(lease + heartbeat, up - killed) + 10


class CountingStore(Store):
    """The real store, counting full loads of a batch."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.loads = 0
        self._count = threading.Lock()

    def load(self, batch_id: str):  # type: ignore[no-untyped-def]
        with self._count:
            self.loads += 1
        return super().load(batch_id)


@contextmanager
def in_process_api(store: Store) -> Iterator[str]:
    """The API under uvicorn over real HTTP, in this process so the test can see its store."""
    import uvicorn

    from crewdash.api.app import create_app
    from crewdash.demo.profiles import LatencyProfile
    from crewdash.engine.plans import RunSettings
    from crewdash.runtime import Liveness, Runtime
    from tests.browser import free_port

    def runtime() -> Runtime:
        # a long heartbeat: no sweep of its own during the test, leases are set by hand
        liveness = Liveness(heartbeat_s=600, lease_s=1200)
        return Runtime(
            RunSettings(), LatencyProfile(kind="fixed", seconds=0.1), store, liveness=liveness
        )

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(runtime), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "the API did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def another_servers_batch(owner: Store, batch_id: str, crews: int, spans: int = 0) -> Batch:
    """A batch `owner` runs: the first half of its crews done, the rest running."""
    batch = Batch(
        batch_id,
        "timing",
        [f"t{i}" for i in range(crews)],
        model_label="demo",
        max_concurrency=crews,
    )
    owner.create_batch(batch.snapshot())
    for i, run_id in enumerate(batch.run_ids):
        batch.mark_running(run_id)
        for k in range(spans):
            batch.record_span(
                run_id, f"call-{k}", lambda s: replace(s, name="demo", started_at=1.0)
            )
        if i < crews // 2:
            batch.mark_succeeded(run_id, f"t{i} done", TokenUsage(1, 1, 2))
        owner.save_crew(batch_id, batch.crew(run_id))
    return batch


def test_twenty_watchers_of_another_servers_batch_leave_the_server_responsive(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    store, other = CountingStore(url), Store(url)
    watchers, crews = 20, 100
    batch = another_servers_batch(other, "e15e00000001", crews, spans=3)
    received: list[list[tuple[str, dict]]] = []  # type: ignore[type-arg]
    health: list[float] = []
    try:
        with in_process_api(store) as base, httpx.Client(base_url=base, timeout=60) as client:

            def watch() -> None:
                with httpx.Client(base_url=base, timeout=60) as own:
                    received.append(
                        read_events(own, "/batches/e15e00000001/events", time.time() + 60)
                    )

            threads = [threading.Thread(target=watch) for _ in range(watchers)]
            for thread in threads:
                thread.start()
            time.sleep(1.0)  # every watcher connected and polling
            until = time.time() + 3.0
            while time.time() < until:
                started = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                health.append(time.perf_counter() - started)
                time.sleep(0.05)
            loads_while_watching = store.loads
            for run_id in batch.run_ids[crews // 2 :]:  # the other server finishes its crews
                batch.mark_succeeded(run_id, "late", TokenUsage(1, 1, 2))
                other.save_crew("e15e00000001", batch.crew(run_id))
            other.finish_batch(batch.snapshot())
            for thread in threads:
                thread.join(60)
    finally:
        other.close()
    health.sort()
    median, worst = health[len(health) // 2], health[-1]
    print(f"healthz: median {median * 1000:.1f} ms, max {worst * 1000:.1f} ms; loads {store.loads}")
    assert len(received) == watchers
    for events in received:
        assert events[-1][0] == "done" and events[-1][1]["counts"] == {"succeeded": crews}
        finals = [e for n, e in events if n == "crew" and e["state"] == "succeeded"]
        assert sorted(e["index"] for e in finals) == list(range(crews))
    assert loads_while_watching <= watchers  # one per watcher, to start: no reloads
    assert store.loads <= watchers
    assert median < 0.1 and worst < 1.0


def test_cancel_of_a_dead_servers_batch_ends_it_and_a_live_ones_is_a_409(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    store, gone, alive = Store(url), Store(url), Store(url)
    another_servers_batch(gone, "dead00000001", 4)
    another_servers_batch(alive, "a11e00000001", 4)
    try:
        with in_process_api(store) as base, httpx.Client(base_url=base, timeout=60) as client:
            with store.engine.begin() as conn:  # its last heartbeat long ago: it was killed
                conn.execute(
                    text("update owners set heartbeat_at = :t where id = :o"),
                    {"t": time.time() - 3600, "o": gone.owner_id},
                )
            cancelled = client.post("/batches/dead00000001/cancel")
            dead = client.get("/batches/dead00000001").json()
            events = read_events(client, "/batches/dead00000001/events", time.time() + 30)
            refused = client.post("/batches/a11e00000001/cancel")
            still = client.get("/batches/a11e00000001").json()
    finally:
        gone.close()
        alive.close()
    assert cancelled.status_code == 200 and cancelled.json()["cancelled"] == 2
    assert (
        dead["done"]
        and [c["state"] for c in dead["crews"]] == ["succeeded"] * 2 + ["interrupted"] * 2
    )
    assert events[-1][0] == "done"
    assert refused.status_code == 409
    assert "runs on another server" in refused.json()["detail"]
    assert not still["done"]  # nothing of a live server's batch was touched


def first_answer(url: str, head: bytes, chunks: Iterator[bytes]) -> bytes:
    """Send a request's head and body chunks over a plain socket, stopping as soon as the
    server answers (it must not wait for a body that never ends); return the answer."""
    import select
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # answered before the body was all sent
            sock.sendall(chunk)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = sock.recv(65536)  # times out (fails the test) if the server waits for more
            if not data:
                break
            answer += data
        return answer


def test_a_body_over_the_limit_is_refused_before_it_is_read(api: httpx.Client) -> None:
    from crewdash.api.middleware import MAX_BODY_BYTES

    assert MAX_BODY_BYTES == 1024 * 1024  # every route but those taking a sheet (BODY_LIMITS)
    head = (
        b"POST /research HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000000\r\n\r\n"
    )
    # 100 MB announced, 1 MB sent, the rest never: the answer must come anyway
    answer = first_answer(str(api.base_url), head, (b" " * 65536 for _ in range(16)))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"larger than the limit of 1048576 bytes" in answer
    big = b'{"topics": ["x"], "pad": "' + b"y" * MAX_BODY_BYTES + b'"}'
    response = api.post("/research", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "1048576 bytes" in response.json()["detail"]


def test_a_chunked_body_is_counted_as_it_streams_in(api: httpx.Client) -> None:
    head = (
        b"POST /research HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    # no Content-Length and no end: 64 KiB chunks until the server answers (at most 64 MiB)
    answer = first_answer(str(api.base_url), head, (chunk for _ in range(1024)))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]

    def body() -> Iterator[bytes]:
        yield b'{"topics": ["'
        for _ in range(40):
            yield b"z" * 32768
        yield b'"]}'

    response = api.post("/research", content=body(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and "limit" in response.json()["detail"]


def test_limits_count_the_topics_that_would_run_after_cleaning(api: httpx.Client) -> None:
    topics = [f"t{i}" for i in range(98)] + ["T0", "  " + "x" * 299 + " \t", "t1"]
    body = json.dumps({"topics": topics, "blueprint": "timing"}) + " " * 500_000  # under 1 MiB
    response = api.post("/batches", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["crews"] == 99  # 101 sent, one case variant and one repeat
    api.post(f"/batches/{accepted['batch_id']}/cancel")
    crews = wait_done(api, accepted["batch_id"])["crews"]
    assert "x" * 299 in [c["topic"] for c in crews]


def test_research_answers_under_each_topic_exactly_as_sent(api: httpx.Client) -> None:
    sent = [
        "  padded  ",
        "tab\there",
        "new\nline",
        "nul\x00x",
        "double  space",
        "no\xa0break",
        "crewai",
        "CrewAI",
    ]
    response = api.post("/research", json={"topics": sent})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["results"]) == set(sent) and body["errors"] == {}
    assert "padded" in body["results"]["  padded  "] and "nul x" in body["results"]["nul\x00x"]
    assert body["results"]["CrewAI"] == body["results"]["crewai"]  # one crew answered both
    assert "'CrewAI' is the same topic as 'crewai': one crew answers both." in body["notes"]
    assert (
        "'nul\\x00x' runs as 'nul x' (spaces, control or invisible characters tidied)."
        in (body["notes"])
    )
    assert len(body["notes"]) == 7


def check_ids_and_search(client: httpx.Client) -> None:
    """Every id and search reaches the database only if it can be one: 4xx, never 500."""
    assert client.get("/batches", params={"search": "\x00"}).status_code == 422
    assert client.get("/batches", params={"search": "a\x00b"}).status_code == 422
    for bad in ("abc%00def", "0123456789a%00", "0123456789ab%00", "ABCDEF012345", "x" * 500):
        for path in (f"/batches/{bad}", f"/batches/{bad}/export", f"/batches/{bad}/events"):
            response = client.get(path)
            assert response.status_code == 404, (path, response.text)
            assert response.json()["detail"].startswith("no batch with id")
        assert client.post(f"/batches/{bad}/cancel").status_code == 404
    assert client.get("/batches/0123456789ab").status_code == 404  # the right shape, unknown
    with_underscore = client.post("/batches", json={"topics": ["rates_2024"]}).json()["batch_id"]
    without = client.post("/batches", json={"topics": ["plain s1"]}).json()["batch_id"]
    for run_id in ("x%00y", f"{with_underscore}-0%00", f"{with_underscore}-99"):
        response = client.post(f"/batches/{with_underscore}/crews/{run_id}/cancel")
        assert response.status_code == 404, (run_id, response.text)
    wait_done(client, with_underscore)
    wait_done(client, without)
    found = [b["batch_id"] for b in client.get("/batches", params={"search": "s_"}).json()]
    assert with_underscore in found and without not in found  # "_" is not a wildcard
    assert without not in [b["batch_id"] for b in client.get("/batches?search=%25").json()]


def test_ids_and_search_are_checked_before_the_database_sqlite(api: httpx.Client) -> None:
    check_ids_and_search(api)


def test_ids_and_search_are_checked_before_the_database_postgresql(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    database = request.getfixturevalue("postgres_url")  # a schema of its own
    with (
        api_server(tmp_path, DATABASE_URL=database) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        assert client.get("/healthz").json()["database"] == "postgresql"
        check_ids_and_search(client)
    assert "Traceback" not in (tmp_path / "api.log").read_text()


def test_a_cancel_reports_what_it_stopped_and_a_second_one_nothing(api: httpx.Client) -> None:
    batch_id = api.post(
        "/batches", json={"topics": [f"twice {i}" for i in range(4)], "blueprint": "timing"}
    ).json()["batch_id"]
    first = api.post(f"/batches/{batch_id}/cancel").json()["cancelled"]
    second = api.post(f"/batches/{batch_id}/cancel").json()["cancelled"]
    crews = wait_done(api, batch_id)["crews"]
    assert first == sum(c["state"] == "cancelled" for c in crews) and first >= 1
    assert second == 0

    batch_id = api.post("/batches", json={"topics": ["one", "two"], "blueprint": "timing"}).json()[
        "batch_id"
    ]
    run_id = f"{batch_id}-1"
    first = api.post(f"/batches/{batch_id}/crews/{run_id}/cancel").json()["cancelled"]
    second = api.post(f"/batches/{batch_id}/crews/{run_id}/cancel").json()["cancelled"]
    crews = wait_done(api, batch_id)["crews"]
    assert (first, second) == (int(crews[1]["state"] == "cancelled"), 0) and first == 1


def test_a_non_ascii_bearer_token_sent_as_utf8_is_accepted(tmp_path: Path) -> None:
    token = "clé-秘密-token"
    with (
        api_server(tmp_path, CREWDASH_API_TOKEN=token) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        ok = client.get("/batches", headers={"authorization": b"Bearer " + token.encode()})
        assert ok.status_code == 200, ok.text
        as_latin1 = "Bearer clé-token".encode("latin-1")  # é as one byte: not the token
        assert client.get("/batches", headers={"authorization": as_latin1}).status_code == 401
        assert client.get("/batches").status_code == 401
        too_big = client.post(
            "/research",
            content=b" " * (2 * 1024 * 1024),
            headers={"authorization": b"Bearer " + token.encode()},
        )
        assert too_big.status_code == 413  # past the token check, the body limit holds
