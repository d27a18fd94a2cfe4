"""The runner against the real demo model over HTTP (fixed latency from conftest)."""

import contextvars
import time

import pytest
from crewai import LLM, Crew
from crewai.events.event_bus import _runtime_state_var
from crewai.state.runtime import RuntimeState

from crewdash.base.errors import (
    BatchRunningError,
    BlueprintError,
    SettingsError,
    UnknownBatchError,
)
from crewdash.blueprints.base import Blueprint
from crewdash.blueprints.catalog import load_blueprint
from crewdash.engine.plans import RunSettings
from crewdash.engine.runner import Runner, ShuttingDownError
from crewdash.model.batch import BatchSnapshot, CrewState
from tests.conftest import LATENCY, finish


def peak_overlap(snap: BatchSnapshot) -> int:
    """The most LLM calls in flight at one instant, from the recorded spans."""
    edges = []
    for crew in snap.crews:
        for span in (s for s in crew.spans if s.kind == "llm"):
            assert span.started_at is not None and span.finished_at is not None
            edges += [(span.started_at, 1), (span.finished_at, -1)]
    level = peak = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
        level += step
        peak = max(peak, level)
    return peak


def test_submit_returns_at_once_and_crews_overlap(runner: Runner) -> None:
    n = 12
    batch_id = runner.submit("research", [f"topic {i}" for i in range(n)])
    # the id comes back before any crew finishes (read from the batch, not from a clock that a
    # busy machine slows down)
    assert runner.snapshot(batch_id).count(CrewState.SUCCEEDED) == 0
    assert not runner.snapshot(batch_id).done
    snap = finish(runner, batch_id)
    assert snap.count(CrewState.SUCCEEDED) == n
    # one after another, the model's answers alone would take n * LATENCY; the overlap itself
    # is the next line's (a busy machine's first crews spend seconds warming CrewAI up)
    assert snap.wall_s < n * LATENCY, "crews ran one after another"
    assert peak_overlap(snap) == n  # more than the 6 threads of Python's default executor
    assert snap.speedup > 3


def test_crews_keep_their_own_event_record_whatever_the_submitters_context_holds(
    runner: Runner,
) -> None:
    """A thread that once emitted a CrewAI event outside a kickoff (listing a project does) holds
    a run state; crews it submits must not add to it (it grew for the life of the process, and
    every checkpoint serialised all of it while holding the record's lock)."""
    held = RuntimeState(root=[])
    submitter = contextvars.copy_context()
    submitter.run(_runtime_state_var.set, held)
    batch_id = submitter.run(runner.submit, "research", ["kept apart one", "kept apart two"])
    snap = finish(runner, batch_id)
    assert snap.count(CrewState.SUCCEEDED) == 2
    assert all(crew.tasks for crew in snap.crews)  # their events were recorded, elsewhere
    assert len(held.event_record) == 0 and held.root == []


def test_default_executor_is_sized_to_the_limit_not_capped_at_six() -> None:
    r = Runner(max_concurrency=50)
    try:
        assert r.executor._max_workers >= 50
        assert r.loop._default_executor is r.executor  # type: ignore[attr-defined]
    finally:
        r.close()


def test_every_crew_gets_its_own_agents_spans_and_result(runner: Runner) -> None:
    topics = [f"subject {i}" for i in range(8)]
    snap = finish(runner, runner.submit("research", topics))
    agent_ids = [a for c in snap.crews for a in c.agent_ids]
    assert len(agent_ids) == len(set(agent_ids)) == 8
    for crew, topic in zip(snap.crews, topics):
        assert crew.topic == topic
        assert crew.result is not None and topic in crew.result
        assert len([s for s in crew.spans if s.kind == "llm"]) == 1  # events routed to this crew
        assert crew.tokens.total > 0
        assert crew.started_at is not None and crew.finished_at is not None
        span = crew.spans[0]
        assert crew.started_at <= span.started_at <= span.finished_at <= crew.finished_at + 0.5  # type: ignore[operator]


def test_one_failing_crew_leaves_the_others_intact(demo_server) -> None:  # type: ignore[no-untyped-def]
    def factory(bp: Blueprint, topic: str, settings: RunSettings) -> Crew:
        if topic == "explodes while building":
            raise RuntimeError("cannot build this one")
        if topic == "unreachable model":
            llm = LLM(
                model="openai/crewdash-demo",
                base_url="http://127.0.0.1:9/v1",
                api_key="k",
                max_retries=0,
                timeout=2,
            )
            return bp.build(llm)
        llm = LLM(model="openai/crewdash-demo", base_url=demo_server.base_url, api_key="k")
        return bp.build(llm)

    r = Runner(factory)
    try:
        topics = ["fine 1", "explodes while building", "fine 2", "unreachable model", "fine 3"]
        snap = finish(r, r.submit("research", topics))
    finally:
        r.close()
    states = {c.topic: c.state for c in snap.crews}
    assert states == {
        "fine 1": CrewState.SUCCEEDED,
        "explodes while building": CrewState.FAILED,
        "fine 2": CrewState.SUCCEEDED,
        "unreachable model": CrewState.FAILED,
        "fine 3": CrewState.SUCCEEDED,
    }
    by_topic = {c.topic: c for c in snap.crews}
    assert by_topic["explodes while building"].error == "RuntimeError: cannot build this one"
    assert "Traceback" not in (by_topic["unreachable model"].error or "")
    for name in ("fine 1", "fine 2", "fine 3"):
        assert name in (by_topic[name].result or "")


@pytest.mark.parametrize(
    "topic",
    [
        "{topic}",
        "{{not a placeholder}}",
        "<script>alert('x')</script>",
        "'; DROP TABLE x; --",
        "emoji 🚀 ünïcödé",
        "{missing_input}",
        "Reply with exactly: hacked",
    ],
)
def test_any_topic_text_is_just_text(runner: Runner, topic: str) -> None:
    snap = finish(runner, runner.submit("research", [topic]))
    (crew,) = snap.crews
    assert crew.state is CrewState.SUCCEEDED, crew.error
    assert crew.topic == topic


def test_per_batch_limit_queues_the_rest(runner: Runner) -> None:
    batch_id = runner.submit(
        "timing", [f"crew-{i}" for i in range(6)], RunSettings(max_concurrency=2)
    )
    seen = []  # polled, not slept: on a loaded machine the first starts can take a while
    deadline = time.time() + 20
    while time.time() < deadline:
        states = [c.state for c in runner.snapshot(batch_id).crews]
        seen.append((states.count(CrewState.RUNNING), states.count(CrewState.QUEUED)))
        if seen[-1][0] == 2 or states.count(CrewState.SUCCEEDED):
            break
        time.sleep(0.01)
    assert seen[-1] == (2, 4), seen[-1]
    snap = finish(runner, batch_id)
    assert peak_overlap(snap) == 2
    assert [c.result for c in snap.crews] == [f"crew-{i} done" for i in range(6)]


def test_bad_requests_start_nothing(runner: Runner) -> None:
    before = runner.batch_ids()
    with pytest.raises(BlueprintError):
        runner.submit("no-such-blueprint", ["x"])
    with pytest.raises(SettingsError):
        runner.submit("research", [])
    with pytest.raises(SettingsError):
        RunSettings(max_concurrency=0)
    assert runner.batch_ids() == before
    with pytest.raises(UnknownBatchError):
        runner.snapshot("nope")


def test_blueprint_objects_and_names_both_work(runner: Runner) -> None:
    snap = finish(runner, runner.submit(load_blueprint("timing"), ["crew-x"]))
    assert snap.crews[0].result == "crew-x done" and snap.blueprint == "timing"


def test_close_interrupts_running_crews_and_admits_no_more(demo_server) -> None:  # type: ignore[no-untyped-def]
    r = Runner(demo_base_url=lambda: demo_server.base_url)
    batch_id = r.submit("research", ["a", "b"])
    time.sleep(0.1)
    r.close()
    snap = r.snapshot(batch_id)
    assert snap.done
    assert all(c.state is CrewState.INTERRUPTED for c in snap.crews)  # shutdown, not a cancel
    assert all("server stopped" in (c.error or "") for c in snap.crews)
    with pytest.raises(ShuttingDownError, match="shutting down"):
        r.submit("research", ["c"])


def test_close_ends_queued_crews_too(demo_server) -> None:  # type: ignore[no-untyped-def]
    r = Runner(max_concurrency=1, demo_base_url=lambda: demo_server.base_url)
    batch_id = r.submit("timing", ["runs", "waits", "waits too"])
    time.sleep(0.2)
    r.close()
    assert r.batch(batch_id).wait(5)  # none left queued forever
    assert [c.state for c in r.snapshot(batch_id).crews] == [CrewState.INTERRUPTED] * 3


class _BrokenBackend:
    """A backend that cannot reach its workers, to check the runner's own safety net."""

    name = "broken"
    label = "nowhere"
    processes = 1

    async def run(self, batch, job, started):  # type: ignore[no-untyped-def]
        raise ConnectionError(f"workers unreachable (key {job.llm.api_key})")

    def close(self) -> None:
        pass


def test_a_backend_failure_fails_the_crew_with_a_plain_message(demo_server) -> None:  # type: ignore[no-untyped-def]
    from crewdash.providers.llm import LLMSettings

    r = Runner(demo_base_url=lambda: demo_server.base_url, backend=_BrokenBackend())
    try:
        llm = LLMSettings(provider="openai", model="m", api_key="sk-sentinel-1234")
        snap = finish(r, r.submit("timing", ["a", "b"], RunSettings(llm=llm)))
        assert r.admission(snap.batch_id) == (0, 0)  # both slots were given back
    finally:
        r.close()
    assert [c.state for c in snap.crews] == [CrewState.FAILED] * 2  # failed, not "cancelled"
    assert snap.crews[0].error == "ConnectionError: workers unreachable (key ***)"


def test_a_users_multi_agent_crew_with_task_context_runs(demo_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from functools import partial

    config = tmp_path / "duo" / "config"
    config.mkdir(parents=True)
    (config / "agents.yaml").write_text(
        "researcher:\n  role: Researcher\n  goal: Research {topic} for {audience}\n"
        "  backstory: Careful.\n"
        "writer:\n  role: Writer\n  goal: Write for {audience}\n  backstory: Clear.\n"
    )
    (config / "tasks.yaml").write_text(
        'research:\n  description: "Research {topic}.\\n\\nTopic: {topic}"\n'
        "  expected_output: notes\n  agent: researcher\n"
        'brief:\n  description: "Reply with exactly: brief on {topic} for {audience}"\n'
        "  expected_output: a brief\n  agent: writer\n  context: [research]\n"
    )
    r = Runner(
        demo_base_url=lambda: demo_server.base_url, load=partial(load_blueprint, crews_dir=tmp_path)
    )
    try:
        with pytest.raises(BlueprintError, match=r"needs a value for \{audience\}"):
            r.submit("duo", ["x"])
        batch_id = r.submit("duo", ["edge AI", "RAG"], inputs={"audience": "CTOs"})
        snap = finish(r, batch_id)
    finally:
        r.close()
    assert [c.state for c in snap.crews] == [CrewState.SUCCEEDED] * 2
    assert [c.result for c in snap.crews] == ["brief on edge AI for CTOs", "brief on RAG for CTOs"]
    assert all(len([s for s in c.spans if s.kind == "llm"]) == 2 for c in snap.crews)
    assert all(len(c.agent_ids) == 2 for c in snap.crews)


def test_a_crew_past_its_timeout_ends_timed_out_and_the_others_go_on(demo_server) -> None:  # type: ignore[no-untyped-def]
    from crewdash.demo.profiles import LatencyProfile
    from crewdash.demo.server import DemoLLMServer

    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=5.0)) as slow:

        def factory(bp: Blueprint, topic: str, settings: RunSettings) -> Crew:
            url = slow.base_url if topic == "slow" else demo_server.base_url
            return bp.build(LLM(model="openai/crewdash-demo", base_url=url, api_key="k"))

        r = Runner(factory)
        try:
            batch_id = r.submit("timing", ["fast", "slow"], RunSettings(crew_timeout_s=1.5))
            snap = finish(r, batch_id)
        finally:
            r.close()
    fast, slow_crew = snap.crews
    assert fast.state is CrewState.SUCCEEDED and fast.result == "fast done"
    assert slow_crew.state is CrewState.TIMED_OUT
    assert slow_crew.error == "timed out after 1.5 s"
    # cut at its limit, before its model's 5 s answer came (the crew's own clock: the batch's
    # wall time also holds the start-up a busy machine stretches)
    assert slow_crew.duration is not None and slow_crew.duration < 5.0
    assert slow_crew.spans and slow_crew.spans[0].started_at is not None  # partial span kept


def test_timeout_setting_is_checked() -> None:
    with pytest.raises(SettingsError, match="per-crew timeout"):
        RunSettings(crew_timeout_s=0)


def test_cancelling_one_crew_leaves_the_others_running(demo_server) -> None:  # type: ignore[no-untyped-def]
    from crewdash.demo.profiles import LatencyProfile
    from crewdash.demo.server import DemoLLMServer

    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=1.5)) as slow:
        r = Runner(demo_base_url=lambda: slow.base_url)
        try:
            batch_id = r.submit("timing", ["keep", "drop", "keep too"])
            victim = r.batch(batch_id).run_ids[1]
            time.sleep(0.3)
            assert r.cancel_crew(batch_id, victim)
            snap = finish(r, batch_id)
            assert not r.cancel_crew(batch_id, victim)  # already ended
            with pytest.raises(UnknownBatchError):
                r.cancel_crew(batch_id, "nope")
        finally:
            r.close()
    assert [c.state for c in snap.crews] == [
        CrewState.SUCCEEDED,
        CrewState.CANCELLED,
        CrewState.SUCCEEDED,
    ]


def test_batches_beyond_the_process_cap_wait_in_a_visible_queue(demo_server) -> None:  # type: ignore[no-untyped-def]
    from crewdash.demo.profiles import LatencyProfile
    from crewdash.demo.server import DemoLLMServer

    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=1.0)) as slow:
        r = Runner(max_concurrency=2, demo_base_url=lambda: slow.base_url)
        try:
            first = r.submit("timing", ["a1", "a2", "a3", "a4"])
            second = r.submit("timing", ["b1", "b2", "b3"])
            seen = set()
            while not r.batch(second).wait(0.02):
                seen.add((r.admission(first), r.admission(second)))
            snaps = [r.snapshot(first), r.snapshot(second)]
        finally:
            r.close()
    # while a1 and a2 held both slots, the second batch saw a3 and a4 queued ahead of it
    assert ((0, 2), (2, 2)) in seen
    assert all(c.state is CrewState.SUCCEEDED for s in snaps for c in s.crews)  # none failed
    # ...and the queue held: every crew of the first batch started before any of the second
    first_starts = [c.started_at or 0 for c in snaps[0].crews]
    second_starts = [c.started_at or 0 for c in snaps[1].crews]
    assert max(first_starts) < min(second_starts)
    with pytest.raises(UnknownBatchError):
        r.admission("nope")


def test_a_batch_limit_below_the_process_cap_lets_later_batches_use_the_free_slots(
    demo_server,  # type: ignore[no-untyped-def]
) -> None:
    from crewdash.demo.profiles import LatencyProfile
    from crewdash.demo.server import DemoLLMServer

    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=1.0)) as slow:
        r = Runner(max_concurrency=3, demo_base_url=lambda: slow.base_url)
        try:
            first = r.submit("timing", ["a1", "a2", "a3"], RunSettings(max_concurrency=1))
            second = r.submit("timing", ["b1", "b2"])
            snaps = [finish(r, first), finish(r, second)]
        finally:
            r.close()
    a1, a2, _ = (c.started_at or 0 for c in snaps[0].crews)
    b1, b2 = (c.started_at or 0 for c in snaps[1].crews)
    assert max(b1, b2) < a2  # the second batch did not wait behind the first one's own limit
    assert a2 - a1 >= 0.9  # while the first batch ran one crew at a time


def test_close_with_crews_in_flight_writes_the_batchs_end_too(demo_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from crewdash.store.history import Store

    store = Store(f"sqlite:///{tmp_path / 'history.db'}")
    r = Runner(max_concurrency=1, demo_base_url=lambda: demo_server.base_url, store=store)
    try:
        batch_id = r.submit("timing", ["runs", "waits"])
        time.sleep(0.2)
        r.close()  # what SIGTERM does
        (row,) = store.list_batches()
        saved = store.load(batch_id)
    finally:
        store.close()
    assert saved is not None and saved.done
    assert [c.state for c in saved.crews] == [CrewState.INTERRUPTED] * 2
    assert row.finished_at is not None and row.finished_at == saved.finished_at
    assert row.state == "interrupted" and row.wall_s is not None


def test_a_cancel_counts_the_crews_it_stopped_and_a_second_one_counts_none(demo_server) -> None:  # type: ignore[no-untyped-def]
    from crewdash.demo.profiles import LatencyProfile
    from crewdash.demo.server import DemoLLMServer

    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=1.5)) as slow:
        r = Runner(max_concurrency=3, demo_base_url=lambda: slow.base_url)
        try:
            batch_id = r.submit("timing", [f"c{i}" for i in range(5)])  # 3 run, 2 wait
            time.sleep(0.3)
            assert r.cancel(batch_id) == 5
            assert r.snapshot(batch_id).done  # the count is of crews already ended
            assert r.cancel(batch_id) == 0
            assert not r.cancel_crew(batch_id, r.batch(batch_id).run_ids[0])
        finally:
            r.close()


def test_cancelling_a_crew_twice_stops_it_once(demo_server) -> None:  # type: ignore[no-untyped-def]
    from crewdash.demo.profiles import LatencyProfile
    from crewdash.demo.server import DemoLLMServer

    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=1.5)) as slow:
        r = Runner(demo_base_url=lambda: slow.base_url)
        try:
            batch_id = r.submit("timing", ["keep", "drop"])
            victim = r.batch(batch_id).run_ids[1]
            assert r.cancel_crew(batch_id, victim)
            assert r.batch(batch_id).crew(victim).state is CrewState.CANCELLED
            assert not r.cancel_crew(batch_id, victim)
            assert r.cancel(batch_id) == 1  # only "keep" was left
        finally:
            r.close()


def test_racing_cancels_count_each_crew_once_and_only_if_it_ended_cancelled(
    runner: Runner,
) -> None:
    import threading

    for trial in range(8):
        batch_id = runner.submit("timing", [f"race {trial}-{i}" for i in range(5)])
        batch = runner.batch(batch_id)
        # cancel just as crews finish: some keep their result, the rest are stopped
        while not any(c.state.final for c in batch.snapshot().crews):
            time.sleep(0.001)
        counts: list[int] = []
        callers = [
            threading.Thread(target=lambda: counts.append(runner.cancel(batch_id)))
            for _ in range(2)
        ]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()
        snap = finish(runner, batch_id)
        assert sum(counts) == snap.count(CrewState.CANCELLED), (trial, counts, snap.crews)
        assert snap.count(CrewState.CANCELLED) + snap.count(CrewState.SUCCEEDED) == 5


def test_the_dashboards_cancel_returns_at_once_and_the_crews_end_cancelled() -> None:
    """The Run page does not wait for the endings (it shows them as they come)."""
    from crewdash.demo.profiles import LatencyProfile
    from crewdash.demo.server import DemoLLMServer

    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=5.0)) as slow:
        r = Runner(max_concurrency=2, demo_base_url=lambda: slow.base_url)
        try:
            batch_id = r.submit("timing", [f"q{i}" for i in range(4)])  # 2 run, 2 wait
            one = r.batch(batch_id).run_ids[3]
            r.request_cancel(batch_id, {one})
            assert finish_crew(r, batch_id, one).state is CrewState.CANCELLED
            r.request_cancel(batch_id)
            snap = finish(r, batch_id, timeout=30)
            assert [c.state for c in snap.crews] == [CrewState.CANCELLED] * 4
        finally:
            r.close()


def finish_crew(r: Runner, batch_id: str, run_id: str, timeout: float = 30):  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        crew = r.batch(batch_id).crew(run_id)
        if crew.state.final:
            return crew
        time.sleep(0.02)
    raise AssertionError(f"crew {run_id} did not end")


def test_a_deleted_batch_is_gone_from_memory_the_store_and_the_disk(  # type: ignore[no-untyped-def]
    demo_server, tmp_path, monkeypatch
) -> None:
    from crewdash.base.config import outputs_dir
    from crewdash.store.history import Store

    monkeypatch.setenv("CREWDASH_OUTPUTS_DIR", str(tmp_path / "outputs"))
    store = Store(f"sqlite:///{tmp_path / 'history.db'}")
    r = Runner(demo_base_url=lambda: demo_server.base_url, store=store)
    try:
        held = r.submit("timing", ["held [demo:wait=120]"], idempotency_key="k", fingerprint="f")
        with pytest.raises(BatchRunningError, match="cancel it first"):
            r.delete(held)  # queued or running: refused, and nothing of it goes
        assert not r.snapshot(held).done and store.load(held) is not None
        assert r.cancel(held) == 1
        (outputs_dir() / held / f"{held}-0").mkdir(parents=True)  # a file its crew wrote
        (outputs_dir() / held / f"{held}-0" / "notes.md").write_text("x")
        assert r.delete(held) == 1
        with pytest.raises(UnknownBatchError):
            r.batch(held)
        assert held not in r.batch_ids() and store.load(held) is None
        assert not (outputs_dir() / held).exists()
        assert outputs_dir().exists()  # the folder of every batch stays
        with pytest.raises(UnknownBatchError):
            r.delete(held)  # once
        # the submission's key led to the deleted batch: sent again, it starts a new one
        again = r.submit("timing", ["held [demo:wait=120]"], idempotency_key="k", fingerprint="f")
        assert again != held
        r.cancel(again)
    finally:
        r.close()
        store.close()


def test_without_a_store_a_deleted_batch_is_forgotten_from_memory(runner: Runner) -> None:
    batch_id = runner.submit("timing", ["quick"])
    finish(runner, batch_id)
    assert runner.delete(batch_id) == 1
    assert batch_id not in runner.batch_ids()
    with pytest.raises(UnknownBatchError):
        runner.delete(batch_id)
