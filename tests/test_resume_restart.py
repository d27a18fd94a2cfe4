"""Resume across a real restart: the API server killed (kill -9, SIGTERM) mid-batch, started
again on the same database, and the batch resumed; the demo model runs in this process, so its
request count shows which tasks were called again."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from crewdash.demo.profiles import LatencyProfile
from crewdash.demo.server import DemoLLMServer
from crewdash.model.batch import TokenUsage
from crewdash.model.pricing import cost
from crewdash.store.history import Store
from tests.api_server import api_server
from tests.test_store import postgres_url  # noqa: F401 - a schema of its own in PostgreSQL

CREWS = Path(__file__).parent / "resume_crews"
HOSTED_PRICE_MODEL = "gpt-4o-mini"  # the simulated cost: the demo's tokens at this price


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoLLMServer]:
    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=0.4)) as server:
        yield server


def server_env(demo: DemoLLMServer, **more: str) -> dict[str, str]:
    """The API on the demo model of this process (as an OpenAI endpoint), with a short lease."""
    return {
        "OPENAI_API_KEY": "sk-resume-test",
        "OPENAI_BASE_URL": demo.base_url,
        "CREWDASH_OPENAI_MODEL": "crewdash-demo",
        "CREWDASH_CREWS_DIR": str(CREWS),
        "CREWDASH_OWNER_HEARTBEAT_S": "0.2",
        "CREWDASH_OWNER_LEASE_S": "1",
        **more,
    }


def steps_by_crew(url: str, batch_id: str) -> dict[str, int]:
    store = Store(url)
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(
                text("select run_id, steps from crew_checkpoints where batch_id = :b"),
                {"b": batch_id},
            )
            return {run_id: steps for run_id, steps in rows}
    finally:
        store.close()


def ended_before(url: str, batch_id: str) -> set[str]:
    """The batch's crews that had succeeded when its server died."""
    store = Store(url)
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(
                text("select run_id from crew_runs where batch_id = :b and state = 'succeeded'"),
                {"b": batch_id},
            )
            return {run_id for (run_id,) in rows}
    finally:
        store.close()


def stop_mid_batch(
    url: str, client: httpx.Client, batches: dict[str, list[str]], how: signal.Signals
) -> list[str]:
    """Start a batch per blueprint; stop the server with `how` once most crews of each have
    checkpointed a step."""
    ids = [
        client.post("/batches", json={"topics": topics, "blueprint": blueprint}).json()["batch_id"]
        for blueprint, topics in batches.items()
    ]
    deadline = time.time() + 60
    # every batch at once, not one after another: while the test waited for the second batch,
    # the first one's crews could finish (and prune their checkpoints) before the stop
    while not all(
        sum(1 for s in steps_by_crew(url, batch_id).values() if s >= 1) >= len(topics) * 3 // 4
        for batch_id, topics in zip(ids, batches.values(), strict=True)
    ):
        assert time.time() < deadline, "the crews did not checkpoint"
        time.sleep(0.05)
    os.kill(client.get("/healthz").json()["pid"], how)
    time.sleep(1.5 if how == signal.SIGTERM else 0.2)
    return ids


def settled(client: httpx.Client, batch_id: str) -> dict:
    """The batch once none of its crews is queued or running."""
    deadline = time.time() + 90
    while True:
        body = client.get(f"/batches/{batch_id}").json()
        if not any(c["state"] in ("queued", "running") for c in body["crews"]):
            return body
        assert time.time() < deadline, "the resumed batch did not finish"
        time.sleep(0.2)


def resume_and_finish(client: httpx.Client, batch_id: str) -> tuple[dict, dict]:
    """Resume the batch; a crew stopped between its task's end and that task's checkpoint is
    offered a re-run (its checkpoint misses a finished task): take the offer once the resumed
    crews have ended, then wait for those too."""
    accepted = client.post(f"/batches/{batch_id}/resume", json={})
    assert accepted.status_code == 200, accepted.text
    body = settled(client, batch_id)
    offers = accepted.json()["rerun_offers"]
    if offers:
        assert all("no checkpoint" in o["reason"] for o in offers), offers
        rerun = [o["run_id"] for o in offers]
        again = client.post(f"/batches/{batch_id}/resume", json={"from_start": rerun})
        assert [c["run_id"] for c in again.json()["resumed"]] == rerun, again.text
        body = settled(client, batch_id)
    return accepted.json(), body


def check_resumed(body: dict, steps: dict[str, int], tasks_per_crew: int) -> int:
    """Every crew succeeded with all its tasks, the checkpointed ones restored; returns how
    many tasks were restored."""
    assert {c["state"] for c in body["crews"]} == {"succeeded"}, body["crews"]
    for crew in body["crews"]:
        restored = [t["restored"] for t in crew["tasks"]]
        assert len(restored) == tasks_per_crew
        assert restored == [i < steps.get(crew["run_id"], 0) for i in range(tasks_per_crew)]
    return sum(steps.values())


def test_kill_9_then_resume_20_crews_pays_no_finished_task_again(
    tmp_path: Path, demo: DemoLLMServer
) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    topics = [f"resumable {i}" for i in range(20)]
    start = demo.stats.requests
    with api_server(tmp_path, **server_env(demo)) as api:
        with httpx.Client(base_url=api, timeout=30) as client:
            (batch_id,) = stop_mid_batch(url, client, {"three_step": topics}, signal.SIGKILL)
    paid_before = demo.stats.requests - start
    steps = steps_by_crew(url, batch_id)  # what the checkpoints held when the server died
    finished = len(ended_before(url, batch_id))  # done before the kill: not run again
    with (
        api_server(tmp_path, **server_env(demo)) as api,
        httpx.Client(base_url=api, timeout=30) as client,
    ):
        before_resume = demo.stats.requests
        accepted, body = resume_and_finish(client, batch_id)
        resumed_calls = demo.stats.requests - before_resume
    restored = check_resumed(body, steps, 3)
    assert sum(c["restored_tasks"] for c in accepted["resumed"]) == restored
    # one model call per task: resume called exactly the tasks no checkpoint held
    assert resumed_calls == 3 * (len(topics) - finished) - restored
    assert restored >= len(topics) * 3 // 4 and paid_before >= restored
    # what a plain re-run would have paid again, and resume saved
    saved = TokenUsage()
    for crew in body["crews"]:
        for span in crew["spans"]:
            if span["kind"] == "llm" and span["started_at"] < crew["started_at"]:
                saved = saved + TokenUsage(**span["tokens"])
    saved_cost = cost(HOSTED_PRICE_MODEL, saved) or 0.0
    print(
        f"\n20 crews x 3 tasks, kill -9 mid-batch: {restored} finished tasks restored; a plain "
        f"re-run would have repeated {restored} calls ({saved.total} tokens, "
        f"${saved_cost:.6f} at {HOSTED_PRICE_MODEL} prices); resume made {resumed_calls} calls"
    )
    assert saved.total > 0


def test_sigterm_then_resume_a_flow_skips_its_finished_steps(
    tmp_path: Path, demo: DemoLLMServer
) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    topics = [f"flowing {i}" for i in range(6)]
    with api_server(tmp_path, **server_env(demo)) as api:
        with httpx.Client(base_url=api, timeout=30) as client:
            (batch_id,) = stop_mid_batch(url, client, {"chain_flow": topics}, signal.SIGTERM)
    assert "Traceback" not in (tmp_path / "api.log").read_text()
    steps = steps_by_crew(url, batch_id)
    finished = len(ended_before(url, batch_id))
    with (
        api_server(tmp_path, **server_env(demo)) as api,
        httpx.Client(base_url=api, timeout=30) as client,
    ):
        before_resume = demo.stats.requests
        _, body = resume_and_finish(client, batch_id)
        resumed_calls = demo.stats.requests - before_resume
    restored = check_resumed(body, steps, 3)  # one task per step, one step per restored task
    assert resumed_calls == 3 * (len(topics) - finished) - restored
    for crew in body["crews"]:
        bars = [s["name"] for s in crew["spans"] if s["kind"] == "step"]
        assert bars.count("outline (restored)") + bars.count("outline") == 1


def test_on_postgresql_another_replica_resumes_a_killed_servers_crews_and_flows(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The checkpoints are in the database, not on the dead server's disk: a server with
    another working folder resumes both batches, a crew's and a Flow's. Its model answers in
    1.5 s: twelve crews of two batches must all be mid-way at the stop, however busy the
    machine (at 0.4 s the crews of one batch could finish while the test read the other's)."""
    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=1.5)) as demo:
        replicated_resume(tmp_path, demo, request)


def replicated_resume(tmp_path: Path, demo: DemoLLMServer, request: pytest.FixtureRequest) -> None:
    database = request.getfixturevalue("postgres_url")  # a schema of its own
    batches = {
        "three_step": [f"replicated {i}" for i in range(8)],
        "chain_flow": [f"replicated flow {i}" for i in range(4)],
    }
    env = server_env(demo, DATABASE_URL=database)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with api_server(tmp_path / "a", **env) as api:
        with httpx.Client(base_url=api, timeout=30) as client:
            ids = stop_mid_batch(database, client, batches, signal.SIGKILL)
    steps = [steps_by_crew(database, batch_id) for batch_id in ids]
    # a crew of a busy machine may have finished before the kill: nothing of it runs again
    finished = sum(len(ended_before(database, batch_id)) for batch_id in ids)
    with (
        api_server(tmp_path / "b", **env) as api,
        httpx.Client(base_url=api, timeout=30) as client,
    ):
        assert client.get("/healthz").json()["database"] == "postgresql"
        before_resume = demo.stats.requests
        bodies = [resume_and_finish(client, batch_id)[1] for batch_id in ids]
        resumed_calls = demo.stats.requests - before_resume
    restored = sum(check_resumed(b, s, 3) for b, s in zip(bodies, steps, strict=True))
    assert resumed_calls == 3 * (sum(len(t) for t in batches.values()) - finished) - restored
    assert all(steps_by_crew(database, batch_id) == {} for batch_id in ids)  # pruned
