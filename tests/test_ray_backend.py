"""The Ray backend against a real two-node Ray cluster on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from crewdash.base.errors import SettingsError
from crewdash.base.run_context import crew_file
from crewdash.blueprints.projects import files as project_files
from crewdash.demo.profiles import FailureRates, LatencyProfile
from crewdash.demo.server import DemoLLMServer
from crewdash.engine.backends.ray import RayBackend, RaySettings
from crewdash.engine.plans import RunSettings
from crewdash.engine.runner import Runner
from crewdash.model.batch import CrewState
from crewdash.providers.llm import LLMSettings
from crewdash.runtime import Runtime, backend_from_env, warm_up
from crewdash.store.history import Store
from tests.api_server import api_server
from tests.browser import ROOT, free_port, streamlit_app
from tests.conftest import finish
from tests.ray_cluster import ray_cluster
from tests.test_projects import FILES, PROJECTS, STEPS, TASKS, check_isolated, covered, topics_for


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    with ray_cluster() as address:
        yield address


@pytest.fixture(scope="module")
def slow_model() -> Iterator[DemoLLMServer]:
    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=5.0)) as server:
        yield server


@pytest.fixture(scope="module")
def ray_runner(
    cluster: str, demo_server: DemoLLMServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runner]:
    """One driver connection for the module: two workers, a real SQLite history store."""
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('ray') / 'history.db'}")
    backend = RayBackend(RaySettings(address=cluster, workers=2))
    runner = Runner(
        max_concurrency=16, demo_base_url=lambda: demo_server.base_url, store=store, backend=backend
    )
    warm_up(runner, demo_server.base_url).result(120)  # one-off costs stay out of the timings
    yield runner
    runner.close()
    store.close()


def test_workers_spread_over_both_nodes(ray_runner: Runner) -> None:
    backend = ray_runner.backend
    assert isinstance(backend, RayBackend) and backend.processes == 2
    assert len({w["node"] for w in backend.placement}) == 2
    assert len({w["pid"] for w in backend.placement}) == 2


def test_a_batch_streams_progress_and_results_back(ray_runner: Runner) -> None:
    topics = [f"topic {i}" for i in range(8)]
    batch_id = ray_runner.submit("timing", topics)
    open_span_seen = False
    while not ray_runner.batch(batch_id).wait(0.05):
        for crew in ray_runner.snapshot(batch_id).crews:
            if crew.state is CrewState.RUNNING and any(s.finished_at is None for s in crew.spans):
                open_span_seen = True  # an LLM call in flight, seen live from the driver
    snap = ray_runner.snapshot(batch_id)
    assert open_span_seen
    assert [c.topic for c in snap.crews] == topics
    assert [c.index for c in snap.crews] == list(range(8))
    for crew in snap.crews:
        assert crew.state is CrewState.SUCCEEDED, crew.error
        assert crew.result and "done" in crew.result
        llm = [s for s in crew.spans if s.kind == "llm"]  # task spans hold them since projects
        assert llm and llm[0].tokens.total > 0
        assert crew.tokens.total > 0
    # concurrent, not one after another: crews' model calls were in flight together (a wall
    # time ceiling would measure how busy the machine is, not whether they overlapped)
    calls = sorted(
        (s.started_at, s.finished_at)
        for c in snap.crews
        for s in c.spans
        if s.kind == "llm" and s.started_at is not None and s.finished_at is not None
    )
    assert max(sum(1 for a, b in calls if a <= start < b) for start, _ in calls) >= 3
    saved = ray_runner.store.load(batch_id) if ray_runner.store else None
    assert saved is not None
    assert [c.state for c in saved.crews] == [CrewState.SUCCEEDED] * 8
    assert all(c.spans for c in saved.crews)  # the same history as the local backend keeps


def test_a_failing_crew_fails_alone(ray_runner: Runner) -> None:
    batch_id = ray_runner.submit("timing", ["fine", "broken [demo:fail-400]", "fine too"])
    snap = finish(ray_runner, batch_id)
    assert [c.state for c in snap.crews] == [
        CrewState.SUCCEEDED,
        CrewState.FAILED,
        CrewState.SUCCEEDED,
    ]
    assert "400" in (snap.crews[1].error or "")
    assert "Traceback" not in (snap.crews[1].error or "")


def test_cancelling_a_batch_stops_its_crews_on_the_workers(
    ray_runner: Runner, slow_model: DemoLLMServer
) -> None:
    llm = LLMSettings(base_url=slow_model.base_url)
    batch_id = ray_runner.submit("timing", [f"c{i}" for i in range(6)], RunSettings(llm=llm))
    deadline = time.time() + 30
    while ray_runner.snapshot(batch_id).count(CrewState.RUNNING) < 6 and time.time() < deadline:
        time.sleep(0.05)
    assert isinstance(ray_runner.backend, RayBackend)
    assert ray_runner.backend.running() == 6
    started = time.time()
    assert ray_runner.cancel(batch_id) == 6
    snap = finish(ray_runner, batch_id, timeout=5)
    assert time.time() - started < 3
    assert [c.state for c in snap.crews] == [CrewState.CANCELLED] * 6
    while ray_runner.backend.running() and time.time() - started < 5:
        time.sleep(0.05)
    assert ray_runner.backend.running() == 0  # stopped on the workers too, not just hidden


def test_timeouts_and_admission_hold_on_ray(ray_runner: Runner, slow_model: DemoLLMServer) -> None:
    llm = LLMSettings(base_url=slow_model.base_url)
    timed = ray_runner.submit("timing", ["slow"], RunSettings(llm=llm, crew_timeout_s=1.5))
    capped = ray_runner.submit(
        "timing", [f"q{i}" for i in range(6)], RunSettings(max_concurrency=2)
    )
    snap = finish(ray_runner, timed)
    assert snap.crews[0].state is CrewState.TIMED_OUT
    assert snap.crews[0].spans  # the call in flight when time ran out is kept
    capped_snap = finish(ray_runner, capped)
    assert all(c.state is CrewState.SUCCEEDED for c in capped_snap.crews)
    intervals = [(c.started_at or 0, c.finished_at or 0) for c in capped_snap.crews]
    peak = max(sum(1 for s, e in intervals if s <= t < e) for t, _ in intervals)
    assert peak == 2  # never more than the batch's limit at once, on any worker


def test_a_worker_that_dies_fails_its_crews_and_comes_back(
    ray_runner: Runner, slow_model: DemoLLMServer
) -> None:
    import ray

    backend = ray_runner.backend
    assert isinstance(backend, RayBackend)
    llm = LLMSettings(base_url=slow_model.base_url)
    batch_id = ray_runner.submit("timing", [f"d{i}" for i in range(4)], RunSettings(llm=llm))
    deadline = time.time() + 30
    while ray_runner.snapshot(batch_id).count(CrewState.RUNNING) < 4 and time.time() < deadline:
        time.sleep(0.05)
    ray.kill(backend._workers[0], no_restart=False)  # as if its process ran out of memory
    snap = finish(ray_runner, batch_id)
    failed = [c for c in snap.crews if c.state is CrewState.FAILED]
    assert len(failed) == 2 and all(c.error for c in failed)  # the two crews it held
    assert all("Ray worker running this crew failed" in (c.error or "") for c in failed)
    assert snap.count(CrewState.SUCCEEDED) == 2  # the other worker's crews were untouched
    again = finish(ray_runner, ray_runner.submit("timing", [f"e{i}" for i in range(4)]))
    assert again.count(CrewState.SUCCEEDED) == 4  # the worker restarted and takes crews again


def test_transient_failures_are_retried_on_the_workers(ray_runner: Runner) -> None:
    rates = FailureRates(rate_429=0.1, rate_500=0.2, retry_after_s=0.2)
    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=0.1), failures=rates) as flaky:
        llm = LLMSettings(base_url=flaky.base_url)
        topics = [f"flaky {i}" for i in range(20)]
        snap = finish(ray_runner, ray_runner.submit("timing", topics, RunSettings(llm=llm)))
        assert flaky.stats.failures >= 3
    assert [c.state for c in snap.crews] == [CrewState.SUCCEEDED] * 20
    assert all(c.result == f"{c.topic} done" for c in snap.crews)
    retries = sum(1 for c in snap.crews for s in c.spans if s.kind == "retry")
    assert retries >= 3  # the workers' retries show in the timeline, as on the local backend


def test_crewai_projects_travel_to_the_workers_and_their_files_come_back(
    ray_runner: Runner,
    demo_server: DemoLLMServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """10 topics of a classic crew and 10 of a Python Flow (on another model) on Ray, from a
    copy of each project that is deleted right after submitting: the workers run what was
    loaded here without reading this folder, and every crew's files land in its own folder
    on this side, where the API serves them."""
    crews, outputs = tmp_path / "crews", tmp_path / "outputs"
    for name in ("analyst_crew", "triage_flow"):
        shutil.copytree(PROJECTS / name, crews / name)
    monkeypatch.setenv("CREWDASH_CREWS_DIR", str(crews))
    monkeypatch.setenv("CREWDASH_OUTPUTS_DIR", str(outputs))
    other = LLMSettings(
        provider="openai_compatible", model="model-b", base_url=demo_server.base_url
    )
    started = time.time()
    ids = {
        "analyst_crew": ray_runner.submit(
            "analyst_crew", topics_for("analyst_crew"), inputs={"audience": "CTOs"}
        ),
        "triage_flow": ray_runner.submit(
            "triage_flow",
            topics_for("triage_flow"),
            RunSettings(llm=other),
            inputs={"depth": "deep"},
        ),
    }
    shutil.rmtree(crews)
    snaps = {name: finish(ray_runner, batch_id, 180) for name, batch_id in ids.items()}
    print(f"\n10 + 10 project topics on Ray: {time.time() - started:.1f} s wall")
    models = {"analyst_crew": "crewdash-demo", "triage_flow": "model-b"}
    for name, snap in snaps.items():
        assert [c.state for c in snap.crews] == [CrewState.SUCCEEDED] * 10, [
            c.error for c in snap.crews
        ]
        for crew in snap.crews:
            assert [t.name for t in crew.tasks] == TASKS[name]
            assert crew.files == FILES[name]
            folder = outputs / snap.batch_id / crew.run_id  # where the API serves them from
            assert all(crew_file(folder, f).stat().st_size for f in crew.files)
            check_isolated(crew, topics_for(name), folder)
            llm = [s for s in crew.spans if s.kind == "llm"]
            tasks = [s for s in crew.spans if s.kind == "task"]
            assert llm and {s.name for s in llm} == {models[name]}  # the batch's own model
            assert all(covered(s, tasks) for s in llm)
            if name in STEPS:
                steps = [s for s in crew.spans if s.kind == "step"]
                assert {s.name for s in steps} == STEPS[name]
                assert all(covered(t, steps) for t in tasks)
    assert all(any(s.kind == "tool" for s in c.spans) for c in snaps["analyst_crew"].crews)
    import ray

    backend = ray_runner.backend
    assert isinstance(backend, RayBackend)
    received = [ray.get(w.projects.remote(), timeout=30) for w in backend._workers]
    roots = [Path(root) for worker in received for root in worker]
    assert {r.name for r in roots} == {"analyst_crew", "triage_flow"}
    assert not any(r.is_relative_to(tmp_path) for r in roots)  # a copy of the worker's own
    assert all(count == 1 for worker in received for count in worker.values())  # once each


def test_a_project_too_large_to_send_fails_its_crews_saying_so(
    ray_runner: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(PROJECTS / "triage_flow", tmp_path / "crews" / "big_flow")  # about 3 KB
    monkeypatch.setattr(project_files, "MAX_PROJECT_BYTES", 2048)
    monkeypatch.setenv("CREWDASH_CREWS_DIR", str(tmp_path / "crews"))
    snap = finish(ray_runner, ray_runner.submit("big_flow", ["x", "y"]))
    assert [c.state for c in snap.crews] == [CrewState.FAILED] * 2
    for crew in snap.crews:
        assert re.search(r"project 'big_flow' has [\d.]+ MB of files, more than", crew.error or "")
        assert "move data files out of the project folder" in (crew.error or "")


def test_the_api_runs_unchanged_on_ray(cluster: str, tmp_path: Path) -> None:
    crews = tmp_path / "crews"
    shutil.copytree(PROJECTS / "triage_flow", crews / "triage_flow")
    env = {"CREWDASH_RUNNER": "ray", "RAY_ADDRESS": cluster, "CREWDASH_RAY_WORKERS": "1"}
    env |= {"CREWDASH_CREWS_DIR": str(crews), "CREWDASH_OUTPUTS_DIR": str(tmp_path / "out")}
    with api_server(tmp_path, **env) as url:
        answer = httpx.post(f"{url}/research", json={"topics": ["alpha", "beta"]}, timeout=120)
        assert answer.status_code == 200, answer.text
        assert sorted(answer.json()["results"]) == ["alpha", "beta"]
        assert answer.json()["errors"] == {}
        assert httpx.get(f"{url}/healthz", timeout=10).json()["backend"] == "ray"
        flow = {"topics": ["ray flow A", "ray flow B"], "blueprint": "triage_flow"}
        accepted = httpx.post(f"{url}/batches", json=flow, timeout=30)
        assert accepted.status_code == 202, accepted.text
        shutil.rmtree(crews)
        batch_id = accepted.json()["batch_id"]
        deadline = time.time() + 120
        while not (body := httpx.get(f"{url}/batches/{batch_id}", timeout=10).json())["done"]:
            assert time.time() < deadline, "batch did not finish"
            time.sleep(0.2)
        for crew in body["crews"]:
            assert crew["state"] == "succeeded", crew["error"]
            assert crew["files"] == ["brief.md"]
            path = f"{url}/batches/{batch_id}/crews/{crew['run_id']}/files/brief.md"
            brief = httpx.get(path, timeout=10)
            assert brief.status_code == 200 and crew["topic"] in brief.text


@pytest.mark.browser
def test_the_dashboard_runs_unchanged_on_ray(
    browser: Browser, cluster: str, tmp_path: Path
) -> None:
    env = {"CREWDASH_RUNNER": "ray", "RAY_ADDRESS": cluster, "CREWDASH_DEMO_LATENCY": "1.0"}
    with streamlit_app(tmp_path / "server.log", env) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        expect(page.get_by_text("Crews run on Ray (2 workers on")).to_be_visible(timeout=60_000)
        page.get_by_label("Topics (one per line)").fill("ray one\nray two\nray three")
        page.get_by_role("button", name="Run").click()
        expect(page.get_by_text(re.compile(r"\d+ running"))).to_be_visible(timeout=60_000)
        done = page.get_by_text(re.compile(r"0 queued · 0 running · 3 succeeded"))
        expect(done).to_be_visible(timeout=60_000)
        expect(page.locator(".js-plotly-plot").first).to_be_visible()
        page.close()
    assert "Traceback" not in (tmp_path / "server.log").read_text()


@pytest.mark.browser
def test_the_dashboard_names_an_unreachable_ray_address(browser: Browser, tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {"CREWDASH_RUNNER": "ray", "RAY_ADDRESS": address}
    with streamlit_app(tmp_path / "server.log", env) as url:
        page = browser.new_page()
        page.goto(url)
        expect(page.get_by_text(f"RAY_ADDRESS={address} is unreachable")).to_be_visible(
            timeout=30_000
        )
        expect(page.get_by_role("button", name="Run")).to_have_count(0)  # no silent local run
        page.close()
    assert "Traceback" not in (tmp_path / "server.log").read_text()


@pytest.mark.ray  # a Ray of its own, in the CLI's process
def test_the_cli_starts_a_local_ray_on_demand(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(CREWDASH_RUNNER="ray", CREWDASH_RAY_WORKERS="2")
    out = tmp_path / "run.json"
    command = [sys.executable, "-m", "crewdash", "run", "--n", "4", "--latency", "1.0"]
    command += ["--blueprint", "timing", "--no-history", "--json", str(out)]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["succeeded"] == 4
    assert figures["wall_s"] < 3.0  # concurrent on the workers (one after another: 4 s)


@pytest.mark.ray  # Ray's own client, in this process, looking for a cluster
def test_an_unreachable_ray_address_is_named_at_start() -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.time()
    with pytest.raises(SettingsError, match="RAY_ADDRESS") as caught:
        Runtime.from_env({"CREWDASH_RUNNER": "ray", "RAY_ADDRESS": address})
    assert time.time() - started < 15
    assert "local backend" in str(caught.value)  # says it does not fall back by itself
    with pytest.raises(SettingsError, match="RAY_ADDRESS"):
        backend_from_env({"CREWDASH_RUNNER": "ray", "RAY_ADDRESS": "not an address:port"})
    with pytest.raises(SettingsError, match="Ray Client"):  # it cannot stream progress
        backend_from_env({"CREWDASH_RUNNER": "ray", "RAY_ADDRESS": "ray://127.0.0.1:10001"})


def test_ray_missing_is_named_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as on a machine without the extra
    with pytest.raises(SettingsError, match=r"CREWDASH_RUNNER=ray.*requirements-ray\.txt"):
        backend_from_env({"CREWDASH_RUNNER": "ray"})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CREWDASH_RUNNER": "spark"}, "CREWDASH_RUNNER must be one of local, ray"),
        ({"CREWDASH_RUNNER": "ray", "CREWDASH_RAY_WORKERS": "two"}, "CREWDASH_RAY_WORKERS"),
        ({"CREWDASH_RUNNER": "ray", "CREWDASH_RAY_WORKERS": "0"}, "CREWDASH_RAY_WORKERS"),
    ],
)
def test_bad_backend_settings(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        backend_from_env(env)
