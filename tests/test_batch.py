import threading
from dataclasses import replace

from crewdash.model.batch import Batch, CrewState, Span, TokenUsage


def make(n: int = 3) -> Batch:
    return Batch(
        "b1", "research", [f"t{i}" for i in range(n)], model_label="demo", max_concurrency=4
    )


def test_new_batch_is_all_queued_and_not_done() -> None:
    snap = make().snapshot()
    assert [c.state for c in snap.crews] == [CrewState.QUEUED] * 3
    assert not snap.done and snap.finished_at is None
    assert [c.topic for c in snap.crews] == ["t0", "t1", "t2"]


def test_lifecycle_and_derived_figures() -> None:
    batch = make(2)
    a, b = batch.run_ids
    batch.mark_running(a)
    batch.mark_running(b)
    batch.mark_succeeded(a, "ok", TokenUsage(10, 5, 15))
    assert not batch.wait(0)
    batch.mark_failed(b, "boom")
    assert batch.wait(0)
    snap = batch.snapshot()
    assert snap.done
    assert snap.count(CrewState.SUCCEEDED) == 1 and snap.count(CrewState.FAILED) == 1
    assert snap.crews[0].result == "ok" and snap.crews[1].error == "boom"
    assert snap.tokens == TokenUsage(10, 5, 15)
    assert snap.finished_at is not None and snap.finished_at >= snap.created_at
    assert abs(snap.sum_crew_s - sum(c.duration or 0 for c in snap.crews)) < 1e-9
    assert snap.speedup == snap.sum_crew_s / snap.wall_s


def test_final_state_is_not_reopened_by_late_updates() -> None:
    batch = make(1)
    (run,) = batch.run_ids
    batch.mark_running(run)
    batch.mark_succeeded(run, "done", None)
    batch.note_step(run, "late step")
    batch.mark_failed(run, "late failure")
    crew = batch.snapshot().crews[0]
    assert crew.state is CrewState.SUCCEEDED and crew.step == "done" and crew.error is None


def test_a_crew_failing_before_it_started_gets_a_zero_length_run() -> None:
    batch = make(1)
    (run,) = batch.run_ids
    batch.mark_failed(run, "bad input")
    crew = batch.snapshot().crews[0]
    assert crew.started_at == crew.finished_at


def test_spans_merge_when_events_arrive_out_of_order() -> None:
    batch = make(1)
    (run,) = batch.run_ids
    batch.mark_running(run)
    batch.record_span(run, "c1", lambda s: replace(s, finished_at=12.0, tokens=TokenUsage(3, 2, 5)))
    batch.record_span(run, "c1", lambda s: replace(s, started_at=10.0, name="m"))
    (span,) = batch.snapshot().crews[0].spans
    assert span == Span(
        key="c1", name="m", started_at=10.0, finished_at=12.0, tokens=TokenUsage(3, 2, 5)
    )
    assert span.duration == 2.0
    assert batch.snapshot().crews[0].tokens == TokenUsage(3, 2, 5)


def test_snapshot_is_cached_until_something_changes() -> None:
    batch = make(1)
    first = batch.snapshot()
    assert batch.snapshot() is first
    batch.note_step(batch.run_ids[0], "x")
    assert batch.snapshot() is not first


def test_concurrent_writers_lose_nothing() -> None:
    batch = make(1)
    (run,) = batch.run_ids
    batch.mark_running(run)

    def write(worker: int) -> None:
        for i in range(200):
            batch.record_span(
                run,
                f"{worker}-{i}",
                lambda s: replace(s, started_at=float(i), tokens=TokenUsage(1, 0, 1)),
            )

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    crew = batch.snapshot().crews[0]
    assert len(crew.spans) == 1600 and crew.tokens.total == 1600


def test_token_usage_reads_dicts_and_objects() -> None:
    class Usage:
        prompt_tokens = 4
        completion_tokens = 6
        total_tokens = 0

    assert TokenUsage.from_mapping({"prompt_tokens": 1, "completion_tokens": 2}) == TokenUsage(
        1, 2, 3
    )
    assert TokenUsage.from_mapping(Usage()) == TokenUsage(4, 6, 10)
    assert TokenUsage.from_mapping(None) == TokenUsage()
