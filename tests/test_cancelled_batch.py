"""Issue 20, items 1-2, over real HTTP against uvicorn on SQLite and PostgreSQL: a batch cancelled
while its crews wait on a slow model is `cancelled` everywhere (not `succeeded` with a speedup of
3.6), and its crews' spans end with them (the History timeline stretched to the time since
submission)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from crewdash.model.batch import Batch, CrewState
from crewdash.present.charts import timeline_figure
from crewdash.store.history import Store
from tests.api_server import api_server
from tests.test_store import (  # noqa: F401 - fixtures: the store on both databases
    half_run_batch,
    other,
    postgres_url,
    silence,
    store,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture()
def api(database: str, tmp_path: Path) -> Iterator[httpx.Client]:
    # the slow demo profile: each model call takes seconds, so the cancel lands mid-call
    with (
        api_server(tmp_path, DATABASE_URL=database, CREWDASH_DEMO_PROFILE="slow") as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        yield client
    assert "Traceback" not in (tmp_path / "api.log").read_text()


def wait_for(api: httpx.Client, batch_id: str, ready: Any, what: str) -> dict[str, Any]:
    """Poll the batch until `ready(body)`: the event is the batch's own state, 60 s at most."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body: dict[str, Any] = api.get(f"/batches/{batch_id}").json()
        if ready(body):
            return body
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id}: {what} never came")


def in_a_model_call(body: dict[str, Any]) -> bool:
    """Every crew runs and waits on a model call it has started."""
    return all(
        c["state"] == "running"
        and any(s["kind"] == "llm" and s["finished_at"] is None for s in c["spans"])
        for c in body["crews"]
    )


def check_spans_end_with_their_crews(crews: list[dict[str, Any]]) -> None:
    for crew in crews:
        assert crew["finished_at"] is not None and crew["spans"], crew["run_id"]
        for span in crew["spans"]:
            assert span["finished_at"] is not None, span
            assert span["finished_at"] <= crew["finished_at"], span
        cut = [s for s in crew["spans"] if s["kind"] in ("llm", "task")]
        assert cut and all("cut off: the crew was cancelled" in (s["error"] or "") for s in cut)


def test_a_cancelled_batch_is_cancelled_everywhere_and_its_bars_close(
    api: httpx.Client, database: str
) -> None:
    topics = [f"cancel me {i}" for i in range(4)]
    batch_id = api.post("/batches", json={"topics": topics}).json()["batch_id"]
    wait_for(api, batch_id, in_a_model_call, "all four crews in a model call")
    assert api.post(f"/batches/{batch_id}/cancel").json()["cancelled"] == 4
    body = wait_for(api, batch_id, lambda b: b["done"], "the batch's end")

    # GET /batches/{id}
    assert body["state"] == "cancelled" and body["speedup"] is None
    assert [c["state"] for c in body["crews"]] == ["cancelled"] * 4
    check_spans_end_with_their_crews(body["crews"])
    assert body["finished_at"] == max(c["finished_at"] for c in body["crews"])

    # GET /batches: the history's line
    (line,) = [b for b in api.get("/batches").json() if b["batch_id"] == batch_id]
    assert line["state"] == "cancelled" and line["speedup"] is None and line["done"] is True
    assert line["counts"] == {"cancelled": 4}

    # the SSE stream's last event
    with api.stream("GET", f"/batches/{batch_id}/events") as stream:
        data = [json.loads(x[5:]) for x in stream.iter_lines() if x.startswith("data:")]
    assert data[-1]["state"] == "cancelled" and data[-1]["speedup"] is None

    # the exports
    exported = api.get(f"/batches/{batch_id}/export", params={"format": "json"}).json()
    assert exported["state"] == "cancelled" and exported["speedup"] is None
    report = api.get(f"/batches/{batch_id}/export", params={"format": "md"}).text
    assert "- State: cancelled (4 cancelled)" in report and "speedup" not in report

    # what the History page reads: the store's rows, and the batch as stored
    history = Store(database)
    try:
        (row,) = [s for s in history.list_batches() if s.batch_id == batch_id]
        assert row.state == "cancelled" and row.speedup is None
        saved = history.load(batch_id)
    finally:
        history.close()
    assert saved is not None and saved.state == "cancelled" and saved.speedup is None
    for crew in saved.crews:  # persisted closed, not open
        assert crew.finished_at is not None
        assert all(
            s.finished_at is not None and s.finished_at <= crew.finished_at for s in crew.spans
        )
    # the timeline's extent is the batch's wall time, not the time since submission
    figure = timeline_figure(saved)
    ends = [b + x for bar in figure.data for b, x in zip(bar.base, bar.x, strict=True)]
    assert max(ends) <= saved.wall_s + 1e-6


def test_a_dead_servers_crews_end_with_their_spans_closed_in_the_store(
    store: Store,  # noqa: F811 - the fixture
    other: Store,  # noqa: F811 - the fixture
) -> None:
    """The store's sweep ends a dead server's open crews as interrupted: their spans, persisted
    open while they ran, end with them (the timeline drew them to the time since submission)."""
    batch = half_run_batch(other)
    flying = batch.run_ids[1]
    start = (batch.crew(flying).started_at or 0.0) - 5.0
    batch.record_span(flying, "call", lambda s: replace(s, kind="llm", started_at=start))
    batch.record_span(flying, "task", lambda s: replace(s, kind="task", started_at=start))
    other.save_crew("b1", batch.crew(flying))
    silence(store, other, seconds_ago=60)
    assert store.interrupt_orphans(lease_s=30) == 2
    saved = store.load("b1")
    assert saved is not None and saved.state == "interrupted"
    crew = saved.crews[1]
    assert crew.finished_at is not None and len(crew.spans) == 2
    for span in crew.spans:
        assert span.finished_at == crew.finished_at
        assert span.error == "cut off: the crew was interrupted"


def test_the_history_finds_a_state_past_its_newest_page(
    store: Store,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """History filtered its newest 200 batches: an older cancelled one was never found."""
    monkeypatch.setattr("crewdash.store.history.STATE_SCAN_PAGE", 2)
    ending = ["cancelled", "succeeded", "failed", "succeeded", "succeeded"]  # oldest first
    for i, state in enumerate(ending):
        batch = Batch(f"b{i}", "research", ["a", "b"], model_label="demo", max_concurrency=2)
        store.create_batch(replace(batch.snapshot(), created_at=1000.0 + i))
        for run_id in batch.run_ids:
            batch.mark_running(run_id)
            batch.mark_failed(run_id, state, CrewState(state))
            store.save_crew(batch.batch_id, batch.crew(run_id))
    assert [s.batch_id for s in store.list_batches(limit=2, state="cancelled")] == ["b0"]
    assert [s.batch_id for s in store.list_batches(limit=2, state="succeeded")] == ["b4", "b3"]
    assert [s.batch_id for s in store.list_batches(offset=1, state="succeeded")] == ["b3", "b1"]
    assert store.list_batches(state="partial") == []
    assert [s.state for s in store.list_batches()] == ending[::-1]
