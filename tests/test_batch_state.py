"""The one rule of a batch's state (`crewdash.model.batch.batch_state`) over every combination
of its crews' states, the figures that only mean something for some states, and a crew's spans
ending with it."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import pytest

from crewdash.model.batch import (
    BATCH_STATES,
    Batch,
    CrewState,
    batch_speedup,
    batch_state,
)
from crewdash.schemas import batches, events

FINAL = [s for s in CrewState if s.final]
OPEN = [CrewState.QUEUED, CrewState.RUNNING]
KW = {"model_label": "demo", "max_concurrency": 4}
COMBINATIONS = [
    frozenset(c) for n in range(1, len(CrewState) + 1) for c in itertools.combinations(CrewState, n)
]


def expected(present: frozenset[CrewState]) -> str:
    """The rule as the issue and the README state it, one clause per line."""
    others = present - {CrewState.SUCCEEDED}
    if present & set(OPEN):
        return "running"
    if not others:
        return "succeeded"  # all succeeded
    if CrewState.INTERRUPTED in present:
        return "interrupted"  # its server stopped: resumable
    if CrewState.CANCELLED in present:
        return "cancelled"  # a user cancelled it
    if others == {CrewState.BUDGET_EXCEEDED}:
        return "budget_exceeded"  # the budget is all that stopped it
    if CrewState.SUCCEEDED not in present:
        return "failed"  # none succeeded
    return "partial"  # some succeeded, some did not


@pytest.mark.parametrize("present", COMBINATIONS, ids=lambda c: "+".join(sorted(c)))
@pytest.mark.parametrize("each", [1, 3])
def test_the_state_rule_over_every_combination_of_crew_states(
    present: frozenset[CrewState], each: int
) -> None:
    counts = {state.value: each for state in present}
    want = expected(present)
    assert batch_state(counts, None) == want
    assert batch_state(counts, 123.0) == want  # a written end changes nothing once crews say
    batch = Batch("b1", "research", [f"t{i}" for i in range(len(present) * each)], **KW)
    for run_id, state in zip(batch.run_ids, sorted(present) * each, strict=True):
        if state is CrewState.RUNNING:
            batch.mark_running(run_id)
        elif state.final:
            batch.mark_running(run_id)
            batch.mark_failed(run_id, "x", state)
    snap = batch.snapshot()
    assert snap.state == want
    assert snap.done == (want != "running")  # over, by the same rule
    assert batches.BatchDetail.from_snapshot(snap).state == want
    assert batches.BatchSummary.from_snapshot(snap).state == want
    assert events.DoneEvent.from_snapshot(snap).state == want


def test_the_historys_summary_row_says_what_the_snapshot_says(tmp_path: Path) -> None:
    """The stored batch, its history line and the API's line built from it take the state (and
    whether it is over) from the same rule as the live snapshot, for a batch of each state."""
    from crewdash.store.history import Store

    store = Store(f"sqlite:///{tmp_path / 'history.db'}")
    try:
        cases = {expected(c): c for c in COMBINATIONS}  # one batch per state
        for n, (want, present) in enumerate(sorted(cases.items())):
            batch = Batch(f"{n:012x}", "research", [f"t{i}" for i in range(len(present))], **KW)
            store.create_batch(batch.snapshot(), "cli")
            for run_id, state in zip(batch.run_ids, sorted(present), strict=True):
                if state is not CrewState.QUEUED:
                    batch.mark_running(run_id)
                if state.final:
                    batch.mark_failed(run_id, "x", state)
            snap = batch.snapshot()
            if snap.done:
                store.finish_batch(snap)
            else:
                for crew in snap.crews:
                    store.save_crew(snap.batch_id, crew)
            (row,) = [r for r in store.list_batches() if r.batch_id == snap.batch_id]
            line = batches.BatchSummary.from_row(row)
            loaded = store.load(snap.batch_id)
            assert loaded is not None
            assert snap.state == row.state == line.state == loaded.state == want
            assert snap.done == row.done == line.done == loaded.done == (want != "running")
        assert len(cases) == len(BATCH_STATES)
    finally:
        store.close()


def test_every_state_is_reachable_and_none_is_left_over() -> None:
    reached = {expected(c) for c in COMBINATIONS}
    assert reached == set(BATCH_STATES)
    assert set(BATCH_STATES) >= {
        "running",
        "succeeded",
        "cancelled",
        "failed",
        "partial",
        "interrupted",
        "budget_exceeded",
    }
    assert batch_state({}, None) == "running"  # nothing recorded yet


def test_the_issues_cancelled_batch_is_cancelled_with_no_speedup() -> None:
    """Four crews cancelled on a slow model: recorded as `succeeded` with a speedup of 3.6."""
    batch = Batch("b1", "research", ["a", "b", "c", "d"], **KW)
    for run_id in batch.run_ids:
        batch.mark_running(run_id)
    for run_id in batch.run_ids:
        batch.mark_failed(run_id, "cancelled", CrewState.CANCELLED)
    snap = batch.snapshot()
    assert snap.state == "cancelled" and snap.counts == {"cancelled": 4}
    assert snap.speedup is None
    assert batches.BatchDetail.from_snapshot(snap).speedup is None


@pytest.mark.parametrize(
    ("sum_s", "wall_s", "succeeded", "done", "speedup"),
    [
        (8.0, 2.0, 4, True, 4.0),
        (8.0, 2.0, 1, True, 4.0),  # partial: the concurrency was real
        (8.0, 2.0, 0, True, None),  # nothing succeeded: no speedup
        (8.0, 2.0, 0, False, 4.0),  # still running: so far
        (8.0, 0.0, 4, True, None),
        (8.0, None, 4, True, None),
    ],
)
def test_speedup_only_where_it_means_something(
    sum_s: float, wall_s: float | None, succeeded: int, done: bool, speedup: float | None
) -> None:
    assert batch_speedup(sum_s, wall_s, succeeded, done) == speedup


def spans_of(batch: Batch, run_id: str) -> list[tuple[str, float | None, float | None]]:
    return [(s.key, s.started_at, s.finished_at) for s in batch.crew(run_id).spans]


@pytest.mark.parametrize(
    "state",
    [
        CrewState.CANCELLED,
        CrewState.FAILED,
        CrewState.TIMED_OUT,
        CrewState.BUDGET_EXCEEDED,
        CrewState.INTERRUPTED,
    ],
)
def test_every_open_span_of_a_crew_ends_with_it(state: CrewState) -> None:
    batch = Batch("b1", "research", ["a"], **KW)
    (run,) = batch.run_ids
    batch.mark_running(run)
    t0 = (batch.crew(run).started_at or 0.0) - 10.0  # event times lie in the past
    batch.record_span(run, "task", lambda s: replace(s, kind="task", started_at=t0))
    batch.record_span(run, "llm", lambda s: replace(s, kind="llm", started_at=t0 + 1))
    batch.record_span(
        run, "done", lambda s: replace(s, kind="llm", started_at=t0, finished_at=t0 + 1)
    )
    ended = batch.ending(run, state, error=state.value)
    assert all(s.finished_at is not None for s in ended.spans)  # what the store is given
    # a span opened between the ending and its apply (events come on other threads)
    batch.record_span(run, "tool", lambda s: replace(s, kind="tool", started_at=t0 + 2))
    assert batch.end(ended)
    crew = batch.crew(run)
    end = crew.finished_at
    assert end is not None
    assert {k: f for k, _, f in spans_of(batch, run)} == {
        "task": end,
        "llm": end,
        "tool": end,
        "done": t0 + 1,
    }
    cut = {s.key: s.error for s in crew.spans}
    assert cut["done"] is None and all("cut off" in (cut[k] or "") for k in ("task", "llm"))

    # the cancelled crew's thread goes on: its call answers late, a new one starts
    batch.record_span(run, "llm", lambda s: replace(s, finished_at=end + 30.0))
    batch.record_span(run, "later", lambda s: replace(s, kind="llm", started_at=end + 31.0))
    assert {k: f for k, _, f in spans_of(batch, run)}["llm"] == end
    assert "later" not in {k for k, _, _ in spans_of(batch, run)}
    assert all(f is not None and f <= end for _, _, f in spans_of(batch, run))
    assert batch.snapshot().finished_at == end  # the batch's wall time is the crew's


def test_a_succeeded_crews_late_events_keep_their_own_times() -> None:
    batch = Batch("b1", "research", ["a"], **KW)
    (run,) = batch.run_ids
    batch.mark_running(run)
    t0 = (batch.crew(run).started_at or 0.0) - 10.0
    batch.record_span(run, "llm", lambda s: replace(s, kind="llm", started_at=t0))
    batch.mark_succeeded(run, "ok", None)
    end = batch.crew(run).finished_at or 0.0
    (span,) = batch.crew(run).spans
    assert span.finished_at == end and span.error is None  # closed for now, no error
    batch.record_span(run, "llm", lambda s: replace(s, finished_at=t0 + 1))  # its real end
    (span,) = batch.crew(run).spans
    assert span.finished_at == t0 + 1 and span.error is None


def test_the_cli_says_the_state_and_exits_0_only_when_every_crew_succeeded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from crewdash.cli.main import main

    out = tmp_path / "run.json"
    args = ["run", "--latency", "0.1", "--no-history", "--json", str(out)]
    assert main([*args, "fine", "broken [demo:fail-400]"]) == 1
    figures = json.loads(out.read_text())
    assert figures["state"] == "partial" and figures["counts"] == {"succeeded": 1, "failed": 1}
    assert figures["speedup"] is not None
    assert "partial: 1/2 succeeded (1 failed)" in capsys.readouterr().out

    assert main([*args, "broken [demo:fail-400]"]) == 1
    figures = json.loads(out.read_text())
    assert figures["state"] == "failed" and figures["speedup"] is None
    said = capsys.readouterr().out
    assert "failed: 0/1 succeeded (1 failed)" in said and "speedup" not in said
