"""Resume, not restart: interrupted crews continue from their last checkpoint (in one process:
the runner stopped as SIGTERM stops it, then a second runtime on the same database resumes)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session

from crewdash.base.errors import BatchElsewhereError, UnknownBatchError
from crewdash.cli.main import main
from crewdash.demo.profiles import LatencyProfile, ProfileKind
from crewdash.demo.server import DemoLLMServer
from crewdash.engine.checkpoints import CheckpointSink
from crewdash.engine.plans import RunSettings
from crewdash.engine.resume import ResumeError, resume
from crewdash.model.batch import Batch, CrewState
from crewdash.present.exports import export
from crewdash.providers.llm import LLMSettings
from crewdash.runtime import Liveness, Runtime
from crewdash.store.history import Store
from crewdash.store.tables import CheckpointRow

CREWS = Path(__file__).parent / "resume_crews"
LATENCY = 0.3
FIRST_STEP = "Outline the main questions"  # three_step's first task (resume_crews/three_step)
HELD_S = 300.0  # longer than any wait of these tests: a held call ends when its crew is stopped


@dataclass(frozen=True)
class HeldProfile(LatencyProfile):
    """The demo model at a fixed `LATENCY`; while `hold` is set, a three_step crew's calls after
    its first task wait `HELD_S` instead. The test sets the pace, not the machine: every crew
    checkpoints its first step and none gets further, however slow or busy the machine is, until
    the test stops the runtime (which cancels the held calls)."""

    kind: ProfileKind = "fixed"
    seconds: float = LATENCY
    hold: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)

    def ttft_for(self, key: str) -> float:
        if self.hold.is_set() and FIRST_STEP not in key:
            return HELD_S
        return super().ttft_for(key)


def held_demo() -> DemoLLMServer:
    return DemoLLMServer(HeldProfile())


@contextmanager
def held(demo: DemoLLMServer) -> Iterator[None]:
    """Inside, crews started on `demo` stop after their first step (see `HeldProfile`)."""
    assert isinstance(demo.profile, HeldProfile), "start the demo model with held_demo()"
    demo.profile.hold.set()
    try:
        yield
    finally:
        demo.profile.hold.clear()


@pytest.fixture(autouse=True)
def resume_crews(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREWDASH_CREWS_DIR", str(CREWS))


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoLLMServer]:
    """A demo model outside the runtimes, so its request count outlives them."""
    with held_demo() as server:
        yield server


def runtime(url: str, demo: DemoLLMServer) -> Runtime:
    llm = LLMSettings(provider="openai_compatible", model="crewdash-demo", base_url=demo.base_url)
    return Runtime(
        RunSettings(llm=llm, max_concurrency=8),
        LatencyProfile(kind="fixed", seconds=LATENCY),
        Store(url),
        liveness=Liveness(heartbeat_s=0.2, lease_s=1.0),
    )


def checkpointed(store: Store, batch_id: str) -> dict[str, int]:
    with Session(store.engine) as session:
        rows = session.scalars(select(CheckpointRow).where(CheckpointRow.batch_id == batch_id))
        return {r.run_id: r.steps for r in rows}


def interrupt_after_checkpoints(
    rt: Runtime, demo: DemoLLMServer, topics: list[str]
) -> tuple[str, dict[str, int]]:
    """Start a three_step batch on `demo` (a `held_demo()`), and stop the runtime (as SIGTERM
    does) once every crew has checkpointed its first step: the demo model holds every later
    call until then, so no crew can end first."""
    assert rt.store is not None
    with held(demo):
        batch_id = rt.runner.submit("three_step", topics, rt.default_settings)
        deadline = time.monotonic() + 120  # generous: a loaded two-core machine is slow
        while True:
            steps = checkpointed(rt.store, batch_id)
            if len(steps) == len(topics) and min(steps.values()) >= 1:
                break
            assert time.monotonic() < deadline, f"no checkpoints: {steps}"
            time.sleep(0.02)
        url = rt.store.engine.url.render_as_string(hide_password=False)
        rt.close()
    # a crew may finish one more task between the look above and the stop: read what was kept
    store = Store(url)
    steps = checkpointed(store, batch_id)
    store.close()
    return batch_id, steps


def wait_done(rt: Runtime, batch_id: str) -> None:
    assert rt.runner.batch(batch_id).wait(60), "the resumed batch did not finish"


def test_a_stopped_batch_resumes_without_paying_again_for_finished_tasks(
    tmp_path: Path, demo: DemoLLMServer
) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    topics = ["EV batteries", "Solid-state cells", "Heat pumps", "Tidal power"]
    first = runtime(url, demo)
    before = demo.stats.requests
    batch_id, _ = interrupt_after_checkpoints(first, demo, topics)
    store = Store(url)
    stopped = store.load(batch_id)
    assert stopped is not None
    assert {c.state for c in stopped.crews} == {CrewState.INTERRUPTED}
    steps = checkpointed(store, batch_id)  # what the checkpoints hold at the interruption
    paid = demo.stats.requests - before

    second = runtime(url, demo)
    try:
        resumed_at = demo.stats.requests
        outcome = resume(second, batch_id)
        assert not outcome.offers
        assert outcome.restored_tasks == sum(steps.values())
        wait_done(second, batch_id)
        snap = second.runner.snapshot(batch_id)
        new_calls = demo.stats.requests - resumed_at
    finally:
        second.close()
    # every crew ends with its three tasks, those of its checkpoint kept and marked restored
    assert [c.state for c in snap.crews] == [CrewState.SUCCEEDED] * len(topics)
    for crew in snap.crews:
        assert [t.name for t in crew.tasks] == ["outline_task", "findings_task", "summary_task"]
        assert [t.restored for t in crew.tasks] == [i < steps[crew.run_id] for i in range(3)]
        assert crew.tokens.total > 0
        bars = [s.name for s in crew.spans if s.kind == "task"]
        assert bars.count("outline_task (restored)") == 1 and "outline_task" not in bars
    # one call per task: only the tasks no checkpoint held were called again
    assert new_calls == 3 * len(topics) - sum(steps.values())
    assert paid >= sum(steps.values())
    # the history says so too, and the checkpoints are gone with the crews' ends
    saved = store.load(batch_id)
    assert saved is not None
    assert [[t.restored for t in c.tasks] for c in saved.crews] == [
        [t.restored for t in c.tasks] for c in snap.crews
    ]
    assert checkpointed(store, batch_id) == {}
    store.close()


def test_an_unreadable_checkpoint_is_offered_a_rerun_not_resumed(
    tmp_path: Path, demo: DemoLLMServer
) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    first = runtime(url, demo)
    batch_id, steps = interrupt_after_checkpoints(first, demo, ["a", "b", "c"])
    broken, gone, fine = sorted(steps)
    store = Store(url)
    with store.engine.begin() as conn:
        conn.execute(
            update(CheckpointRow).where(CheckpointRow.run_id == broken).values(payload="{not json")
        )
        conn.execute(delete(CheckpointRow).where(CheckpointRow.run_id == gone))
    second = runtime(url, demo)
    try:
        outcome = resume(second, batch_id)
        assert [p.run_id for p in outcome.resumed] == [fine]
        reasons = {p.run_id: p.problem or "" for p in outcome.offers}
        assert "its checkpoint is unreadable" in reasons[broken]
        assert "its checkpoint is missing" in reasons[gone]
        wait_done(second, batch_id)
        snap = second.runner.snapshot(batch_id)
        assert {c.run_id: c.state for c in snap.crews} == {
            fine: CrewState.SUCCEEDED,
            broken: CrewState.INTERRUPTED,
            gone: CrewState.INTERRUPTED,
        }
        # the offer taken: a re-run from the start, nothing restored
        again = resume(second, batch_id, from_start=[broken, gone])
        assert {p.run_id for p in again.resumed} == {broken, gone}
        assert again.restored_tasks == 0 and not again.offers
        wait_done(second, batch_id)
        for run_id in (broken, gone):
            crew = second.runner.batch(batch_id).crew(run_id)
            assert crew.state is CrewState.SUCCEEDED
            assert [t.restored for t in crew.tasks] == [False] * 3
        with pytest.raises(ResumeError, match="no interrupted crews"):
            resume(second, batch_id)
    finally:
        second.close()
        store.close()


def test_a_changed_blueprint_is_offered_a_rerun_with_the_reason(
    tmp_path: Path, demo: DemoLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    first = runtime(url, demo)
    batch_id, _ = interrupt_after_checkpoints(first, demo, ["a"])
    changed = tmp_path / "crews" / "three_step" / "config"
    changed.mkdir(parents=True)
    for name in ("agents.yaml", "tasks.yaml"):
        source = (CREWS / "three_step" / "config" / name).read_text()
        (changed / name).write_text(source.replace("Summarize", "Sum up"))
    monkeypatch.setenv("CREWDASH_CREWS_DIR", str(tmp_path / "crews"))
    second = runtime(url, demo)
    try:
        outcome = resume(second, batch_id)
        assert not outcome.resumed
        assert "changed since this batch ran" in (outcome.offers[0].problem or "")
        store = second.store
        assert store is not None
        snap = store.load(batch_id)
        assert snap is not None and snap.crews[0].state is CrewState.INTERRUPTED
    finally:
        second.close()


def test_checkpoints_hold_no_key_and_are_pruned_when_a_crew_ends(
    tmp_path: Path, demo: DemoLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    rt = runtime(url, demo)
    secret = "sk-resume-SENTINEL-4242"
    settings = RunSettings(
        llm=LLMSettings(
            provider="openai_compatible",
            model="crewdash-demo",
            base_url=demo.base_url,
            api_key=secret,
        )
    )
    assert rt.store is not None
    store = rt.store
    seen: list[str] = []
    write = CheckpointSink.write

    def read_back(sink: CheckpointSink, payload: str, kind: str, root: str) -> None:
        """Every checkpoint as the database holds it right after its write (a look from another
        thread could miss one on a busy machine: the crew ends and prunes it first)."""
        write(sink, payload, kind, root)
        with store.engine.connect() as conn:
            seen.extend(p for (p,) in conn.execute(text("select payload from crew_checkpoints")))

    monkeypatch.setattr(CheckpointSink, "write", read_back)
    batch_id = rt.runner.submit("three_step", ["keys"], settings)
    try:
        assert rt.runner.batch(batch_id).wait(120), "the crew did not finish"
        with rt.store.engine.connect() as conn:
            settings_row = conn.execute(text("select settings from resume_batches")).scalar()
    finally:
        rt.close()
    assert seen, "no checkpoint was written while the crew ran"
    assert all(secret not in p for p in seen)
    assert secret not in str(settings_row)
    assert json.loads(str(settings_row))["llm"]["model"] == "crewdash-demo"
    store = Store(url)
    assert checkpointed(store, batch_id) == {}
    store.close()


def test_the_cli_resumes_a_batch_and_the_exports_mark_restored_tasks(
    tmp_path: Path, demo: DemoLLMServer, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    batch_id, steps = interrupt_after_checkpoints(runtime(url, demo), demo, ["cli one", "cli two"])
    monkeypatch.setenv("DATABASE_URL", url)
    one, other = sorted(steps)
    assert main(["resume", batch_id, "--run-id", one]) == 0  # one crew
    out = capsys.readouterr().out
    assert f"batch {batch_id}: 1 crews resumed, {steps[one]} finished tasks kept" in out
    assert main(["resume", batch_id]) == 0  # every interrupted one: the other
    out = capsys.readouterr().out
    assert f"batch {batch_id}: 1 crews resumed, {steps[other]} finished tasks kept" in out
    assert f"{other} succeeded" in out
    assert main(["resume", batch_id]) == 2  # nothing left to resume: a plain error, no trace
    assert "has no interrupted crews" in capsys.readouterr().err
    store = Store(url)
    snap = store.load(batch_id)
    store.close()
    assert snap is not None and {c.state for c in snap.crews} == {CrewState.SUCCEEDED}
    restored = sum(steps.values())
    assert export(snap, "md").count("(restored: finished before an interruption)") == restored
    assert export(snap, "csv").count('""restored"": true') == restored
    detail = json.loads(export(snap, "json"))
    assert sum(t["restored"] for c in detail["crews"] for t in c["tasks"]) == restored


def test_auto_resume_on_start_resumes_a_batch_once(
    tmp_path: Path, demo: DemoLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    batch_id, _ = interrupt_after_checkpoints(runtime(url, demo), demo, ["auto one", "auto two"])
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("CREWDASH_AUTO_RESUME", "1")
    with held(demo):  # the resumed crews cannot finish before the stop below
        rt = Runtime.from_env()
        try:
            assert len(rt.auto_resumed) == 1 and batch_id in rt.auto_resumed[0]
            assert (
                rt.runner.batch(batch_id).snapshot().count(CrewState.QUEUED)
                + rt.runner.batch(batch_id).snapshot().count(CrewState.RUNNING)
                == 2
            )
        finally:
            rt.close()  # stopped again before its crews finished: interrupted again
    store = Store(url)
    again = store.load(batch_id)
    store.close()
    assert again is not None and again.count(CrewState.INTERRUPTED) == 2
    rt = Runtime.from_env()  # once: a batch resumed automatically is not resumed again
    try:
        assert rt.auto_resumed == []
        with pytest.raises(UnknownBatchError):
            rt.runner.batch(batch_id)
    finally:
        rt.close()


def test_a_batch_another_live_server_runs_is_not_resumed(
    tmp_path: Path, demo: DemoLLMServer
) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    other = Store(url)  # another server, alive, running a batch
    running = Batch(
        "a1b2c3d4e5f6", "three_step", ["elsewhere"], model_label="demo", max_concurrency=1
    )
    other.create_batch(running.snapshot())
    rt = runtime(url, demo)
    try:
        with pytest.raises(BatchElsewhereError, match="still runs on another server"):
            resume(rt, running.batch_id)
    finally:
        rt.close()
        other.close()
