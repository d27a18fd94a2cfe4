"""The history store against SQLite and the real PostgreSQL server on 127.0.0.1:5432."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from crewdash.base.errors import BatchElsewhereError, BatchRunningError, UnknownBatchError
from crewdash.engine.runner import Runner
from crewdash.model.batch import Batch, CrewState, Span, TaskResult, TokenUsage
from crewdash.model.summary import BatchSummary
from crewdash.store.history import Store, StoreError, _sqlite_pragmas

POSTGRES_URL = os.environ.get(
    "CREWDASH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A schema of its own in the `test` database, so runs (and checkouts) never share tables."""
    schema = f"crewdash_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except SQLAlchemyError as exc:
        admin.dispose()
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL is required in CI: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'history.db'}")
    else:
        s = Store(request.getfixturevalue("postgres_url"))
    s.delete_all()
    yield s
    s.delete_all()
    s.close()


def sample_batch(batch_id: str = "b1", topics: tuple[str, ...] = ("alpha", "beta")) -> Batch:
    return Batch(
        batch_id,
        "research",
        topics,
        model_label="demo",
        max_concurrency=4,
        notes=["Dropped 1 blank line."],
    )


def test_migrations_create_the_schema(store: Store) -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from crewdash.store.history import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()  # one head: a straight chain
    with store.engine.connect() as conn:
        assert conn.execute(text("select version_num from alembic_version")).scalar() == head
        assert head == "0012"  # 0005, 0008, 0009, 0006, 0007, 0010, 0011 (spend), 0012 (sheets)
        tables = {"experiments", "experiment_cells", "llm_cache", "api_tokens", "audit_log"}
        for table in tables:
            assert conn.execute(text(f"select count(*) from {table}")).scalar() == 0


def test_round_trip_of_a_batch_with_crews_and_spans(store: Store) -> None:
    batch = sample_batch()
    store.create_batch(batch.snapshot())
    a, b = batch.run_ids
    batch.mark_running(a, ["agent-1"])
    batch.record_span(
        a,
        "call-1",
        lambda s: replace(
            s, name="demo", started_at=1.0, finished_at=2.0, tokens=TokenUsage(3, 4, 7)
        ),
    )
    batch.mark_succeeded(a, "- result ünïcödé <b>", TokenUsage(3, 4, 7))
    batch.mark_failed(b, "RuntimeError: boom")
    for crew in batch.snapshot().crews:
        store.save_crew("b1", crew)
    store.finish_batch(batch.snapshot())
    loaded = store.load("b1")
    assert loaded is not None
    original = batch.snapshot()
    assert loaded.notes == ("Dropped 1 blank line.",)
    assert [c.state for c in loaded.crews] == [CrewState.SUCCEEDED, CrewState.FAILED]
    assert loaded.crews[0].result == "- result ünïcödé <b>"
    assert loaded.crews[0].spans == (
        Span(
            key="call-1", name="demo", started_at=1.0, finished_at=2.0, tokens=TokenUsage(3, 4, 7)
        ),
    )
    assert loaded.crews[0].agent_ids == ("agent-1",)
    assert loaded.crews[1].error == "RuntimeError: boom"
    assert loaded.done and loaded.finished_at == original.finished_at
    assert store.load("nope") is None


def test_a_projects_inputs_task_outputs_files_steps_and_kind_are_kept(store: Store) -> None:
    batch = Batch(
        "p1",
        "triage_flow",
        ["rust", "go"],
        model_label="demo",
        max_concurrency=2,
        inputs=[{"topic": "rust", "depth": "deep"}, {"topic": "go", "depth": "deep"}],
        kind="flow",
    )
    store.create_batch(batch.snapshot())
    a, _ = batch.run_ids
    batch.mark_running(a)
    batch.record_span(a, "step:1", lambda s: replace(s, kind="step", name="intake", started_at=1.0))
    batch.record_task(a, TaskResult("t1", "explain", "- rust ünï", "Rust analyst"))
    ended = batch.ending(a, CrewState.SUCCEEDED, result="done", files=["brief.md", "out/x.md"])
    batch.end(ended)
    store.finish_batch(batch.snapshot())
    loaded = store.load("p1")
    assert loaded is not None and loaded.kind == "flow"
    crew = loaded.crews[0]
    assert dict(crew.inputs) == {"topic": "rust", "depth": "deep"}
    assert crew.tasks == (TaskResult("t1", "explain", "- rust ünï", "Rust analyst"),)
    assert crew.files == ("brief.md", "out/x.md")
    assert [(s.kind, s.name) for s in crew.spans] == [("step", "intake")]
    assert dict(loaded.crews[1].inputs) == {"topic": "go", "depth": "deep"}


def test_saving_twice_updates_instead_of_duplicating(store: Store) -> None:
    batch = sample_batch()
    store.create_batch(batch.snapshot())
    a = batch.run_ids[0]
    batch.mark_running(a)
    batch.record_span(a, "c", lambda s: replace(s, started_at=1.0))
    store.save_crew("b1", batch.snapshot().crews[0])
    batch.record_span(a, "c", lambda s: replace(s, finished_at=2.0))
    store.save_crew("b1", batch.snapshot().crews[0])
    loaded = store.load("b1")
    assert loaded is not None and len(loaded.crews[0].spans) == 1
    assert loaded.crews[0].spans[0].finished_at == 2.0


def test_history_lists_newest_first_with_figures_and_search(store: Store) -> None:
    for i, topics in enumerate((("quantum networks", "edge AI"), ("vector databases",))):
        batch = sample_batch(f"b{i}", topics)
        store.create_batch(batch.snapshot())
        for run_id in batch.run_ids:
            batch.mark_running(run_id)
            batch.mark_succeeded(run_id, "ok", TokenUsage(1, 1, 2))
        store.finish_batch(batch.snapshot())
    listed = store.list_batches()
    assert [s.batch_id for s in listed] == ["b1", "b0"]
    first = listed[1]
    assert first.crews == 2 and first.counts == {"succeeded": 2} and first.state == "succeeded"
    assert first.tokens == 4 and first.wall_s is not None and first.speedup is not None
    assert first.topics_preview == "quantum networks, edge AI"
    assert [s.batch_id for s in store.list_batches(search="VECTOR")] == ["b1"]
    assert [s.batch_id for s in store.list_batches(search="research")] == ["b1", "b0"]
    assert store.list_batches(search="no such thing") == []


def test_search_is_plain_text_not_a_like_pattern(store: Store) -> None:
    topics = (("alpha", "beta"), ("rates_2024",), ("100% sure",), ("a/b and a\\b",))
    for i, these in enumerate(topics):
        store.create_batch(sample_batch(f"b{i}", these).snapshot())

    def found(search: str) -> list[str]:
        return sorted(s.batch_id for s in store.list_batches(search=search))

    assert found("s_") == ["b1"]  # not "s then any character" ("research" has "se")
    assert found("_") == ["b1"]
    assert found("%") == ["b2"]
    assert found("0% S") == ["b2"]
    assert found("a/b") == ["b3"] and found("a\\b") == ["b3"]  # the escape characters too
    assert found("/") == ["b3"]


@pytest.mark.parametrize("search", ["\x00", "a\x00b", "research\x00"])
def test_a_nul_byte_in_the_search_matches_nothing_and_never_reaches_the_database(
    store: Store, search: str
) -> None:
    store.create_batch(sample_batch().snapshot())
    assert store.list_batches(search=search) == []  # PostgreSQL refuses NUL in text outright


def half_run_batch(owner: Store, batch_id: str = "b1") -> Batch:
    """A batch of `owner` with one crew done, one running and one queued, as its rows are."""
    batch = sample_batch(batch_id, topics=("done", "in flight", "waiting"))
    owner.create_batch(batch.snapshot())
    done, flying, _ = batch.run_ids
    batch.mark_running(done)
    batch.mark_succeeded(done, "kept", None)
    batch.mark_running(flying)
    for crew in batch.snapshot().crews:
        owner.save_crew(batch_id, crew)
    return batch


def silence(store: Store, owner: Store, seconds_ago: float) -> None:
    """Fake an owner whose last heartbeat was `seconds_ago` (no sleeping through a lease)."""
    with store.engine.begin() as conn:
        conn.execute(
            text("update owners set heartbeat_at = :t where id = :o"),
            {"t": time.time() - seconds_ago, "o": owner.owner_id},
        )


@pytest.fixture()
def other(store: Store) -> Iterator[Store]:
    """Another server's store on the same database: a second start, same host, same PID
    (what a container's PID 1 looks like after a restart)."""
    s = Store(store.url)
    yield s
    s.close()


def test_a_dead_owners_batch_is_interrupted_once_its_lease_expires(
    store: Store, other: Store
) -> None:
    assert other.owner_id != store.owner_id
    half_run_batch(other)
    assert store.interrupt_orphans(lease_s=30) == 0  # alive: a fresh heartbeat
    silence(store, other, seconds_ago=20)
    assert store.interrupt_orphans(lease_s=30) == 0  # late, but within its lease
    silence(store, other, seconds_ago=31)
    assert store.interrupt_orphans(lease_s=30) == 2
    loaded = store.load("b1")
    assert loaded is not None and loaded.done
    assert [c.state for c in loaded.crews] == [
        CrewState.SUCCEEDED,
        CrewState.INTERRUPTED,
        CrewState.INTERRUPTED,
    ]
    assert loaded.crews[0].result == "kept"
    assert all("server stopped" in (c.error or "") for c in loaded.crews[1:])
    (summary,) = store.list_batches()
    assert summary.state == "interrupted" and summary.finished_at is not None
    assert summary.finished_at == loaded.finished_at
    assert store.interrupt_orphans(lease_s=30) == 0
    with store.engine.connect() as conn:  # nothing of the dead owner left open: forgotten
        assert conn.execute(text("select count(*) from owners")).scalar() == 0


def test_a_restart_with_the_same_host_and_pid_does_not_adopt_the_old_batches(
    store: Store, other: Store
) -> None:
    """Both stores live in this process: same host, same PID, as PID 1 in a container."""
    half_run_batch(other)
    other.close()  # the old start is gone without a word (kill -9)
    silence(store, other, seconds_ago=60)
    assert store.interrupt_orphans(lease_s=30) == 2  # old code: "my own PID, still alive"


def test_the_sweep_never_ends_its_own_batches(store: Store) -> None:
    half_run_batch(store)
    silence(store, store, seconds_ago=3600)
    assert store.interrupt_orphans(lease_s=30) == 0


def test_a_late_heartbeat_says_the_owner_was_presumed_dead(store: Store, other: Store) -> None:
    half_run_batch(other)
    assert other.beat()
    silence(store, other, seconds_ago=60)
    assert store.interrupt_orphans(lease_s=30) == 2
    assert not other.beat()  # its row was forgotten: it knows its batches were ended
    assert other.beat()


def test_a_released_lease_ends_what_was_left_open_at_once(store: Store, other: Store) -> None:
    half_run_batch(other)
    other.release()
    assert store.interrupt_orphans(lease_s=30) == 2


def test_batches_from_before_heartbeats_count_from_their_creation(store: Store) -> None:
    for batch_id, age in (("old", 3600.0), ("new", 1.0)):
        batch = sample_batch(batch_id)
        store.create_batch(batch.snapshot())
        with store.engine.begin() as conn:
            conn.execute(
                text("update batches set owner = :o, created_at = :t where id = :b"),
                {
                    "o": f"{socket.gethostname()}:{os.getpid()}",
                    "t": time.time() - age,
                    "b": batch_id,
                },
            )
    assert store.interrupt_orphans(lease_s=30) == 2
    assert [s.state for s in store.list_batches()] == ["running", "interrupted"]


def test_cancelling_a_batch_whose_server_died(store: Store, other: Store) -> None:
    half_run_batch(other)
    silence(store, other, seconds_ago=60)
    with pytest.raises(BatchElsewhereError, match=r"runs on another server \(host .*, pid \d+"):
        store.end_orphan("b1", lease_s=120)  # within its lease: only its owner can stop it
    assert store.load("b1").count(CrewState.RUNNING) == 1  # type: ignore[union-attr]
    assert store.end_orphan("b1", lease_s=30) == 2
    loaded = store.load("b1")
    assert loaded is not None and loaded.done
    assert loaded.count(CrewState.INTERRUPTED) == 2 and loaded.crews[0].result == "kept"
    assert store.list_batches()[0].finished_at is not None
    assert store.end_orphan("b1", lease_s=30) == 0  # already ended: nothing to cancel
    with pytest.raises(UnknownBatchError):
        store.end_orphan("nope")


def test_a_batch_whose_crews_all_ended_reads_as_finished(store: Store) -> None:
    """Rows an older version left: every crew final, the batch's end never written."""
    batch = sample_batch()
    store.create_batch(batch.snapshot())
    for run_id in batch.run_ids:
        batch.mark_running(run_id)
        batch.mark_succeeded(run_id, "ok", None)
        store.save_crew("b1", batch.crew(run_id))
    assert store.list_batches()[0].state == "succeeded"
    assert BatchSummary("x", 0, None, "", "", "", 0, {}, None, 0, 0, "").state == "running"


def test_refresh_reads_only_the_crews_that_changed(store: Store, other: Store) -> None:
    batch = half_run_batch(other)
    seen = store.load("b1")
    assert seen is not None
    assert store.refresh(seen) is seen  # nothing changed: nothing loaded
    flying = batch.run_ids[1]
    batch.record_span(flying, "call", lambda s: replace(s, name="demo", started_at=1.0))
    batch.mark_succeeded(flying, "landed", TokenUsage(1, 2, 3))
    other.save_crew("b1", batch.crew(flying))
    fresh = store.refresh(seen)
    assert fresh.crews[0] is seen.crews[0] and fresh.crews[2] is seen.crews[2]
    assert fresh.crews[1].state is CrewState.SUCCEEDED and fresh.crews[1].result == "landed"
    assert fresh.crews[1].spans[0].name == "demo" and fresh.crews[1].tokens.total == 3
    assert fresh == store.load("b1")


def test_runner_commits_every_result_before_it_is_shown(store: Store, demo_server) -> None:  # type: ignore[no-untyped-def]
    runner = Runner(demo_base_url=lambda: demo_server.base_url, store=store)
    seen_unsaved: list[str] = []
    try:
        batch_id = runner.submit("timing", [f"crew-{i}" for i in range(5)], source="api")
        batch = runner.batch(batch_id)
        while not batch.wait(0.02):
            for crew in batch.snapshot().crews:
                if crew.state.final:
                    saved = store.load(batch_id)
                    assert saved is not None
                    if not saved.crews[crew.index].state.final:
                        seen_unsaved.append(crew.run_id)
        assert seen_unsaved == []
        runner.cancel(batch_id)  # a finished batch: nothing to cancel, nothing breaks
    finally:
        runner.close()
    saved = store.load(batch_id)
    assert saved is not None and saved.done
    assert [c.result for c in saved.crews] == [f"crew-{i} done" for i in range(5)]
    assert all([s.kind for s in c.spans].count("llm") == 1 for c in saved.crews)
    assert store.list_batches()[0].source == "api"


def test_cancelling_a_batch_keeps_finished_results(store: Store, demo_server) -> None:  # type: ignore[no-untyped-def]
    runner = Runner(demo_base_url=lambda: demo_server.base_url, store=store)
    try:
        batch_id = runner.submit("timing", ["a", "b", "c"], settings=None)
        assert runner.cancel(batch_id) == 3
        assert runner.batch(batch_id).wait(5)
    finally:
        runner.close()
    saved = store.load(batch_id)
    assert saved is not None
    assert {c.state for c in saved.crews} == {CrewState.CANCELLED}


def test_unreachable_database_is_a_clear_message_naming_the_setting() -> None:
    with pytest.raises(StoreError, match=r"DATABASE_URL=postgresql\+psycopg://u:\*\*\*@127"):
        Store("postgresql+psycopg://u:secret@127.0.0.1:9/nodb?connect_timeout=2")


def test_sqlite_file_is_created_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "h.db"
    s = Store(f"sqlite:///{path}")
    try:
        assert path.exists()
        with s.engine.connect() as conn:
            assert conn.execute(text("pragma journal_mode")).scalar() == "wal"
    finally:
        s.close()


# --- deleting a batch ---------------------------------------------------------------------------


def full_batch(store: Store) -> Batch:
    """An ended experiment's batch with everything a batch can have in the database: crews
    with spans, a resume record, checkpoints, the experiment's spec and cell notes."""
    from crewdash.experiments.store import ExperimentStore
    from crewdash.store.tables import CheckpointRow

    batch = sample_batch(uuid.uuid4().hex[:12])
    store.create_batch(batch.snapshot())
    for run_id in batch.run_ids:
        batch.mark_running(run_id)
        batch.record_span(run_id, "call-1", lambda s: replace(s, name="demo", started_at=1.0))
        batch.mark_succeeded(run_id, "ok", TokenUsage(1, 1, 2))
    store.finish_batch(batch.snapshot())
    store.save_resume_record(batch.batch_id, "yaml:v1", "{}")
    with Session(store.engine) as session, session.begin():
        for run_id in batch.run_ids:
            session.add(
                CheckpointRow(run_id=run_id, batch_id=batch.batch_id, saved_at=1.0, payload="{}")
            )
    experiments = ExperimentStore(store)
    experiments.save_spec(batch.batch_id, 1.0, {"topics": ["alpha"]})
    experiments.save_cell(batch.batch_id, 0, score=4, mark="good")
    return batch


ROWS_OF_A_BATCH = {
    "batches": "id = :b",
    "crew_runs": "batch_id = :b",
    "spans": "run_id in (select run_id from crew_runs where batch_id = :b) or run_id like :p",
    "resume_batches": "batch_id = :b",
    "crew_checkpoints": "batch_id = :b or run_id like :p",
    "experiments": "id = :b",
    "experiment_cells": "experiment_id = :b",
}


def rows_of(store: Store, batch_id: str) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {
            table: conn.execute(
                text(f"select count(*) from {table} where {where}"),
                {"b": batch_id, "p": f"{batch_id}-%"},
            ).scalar_one()
            for table, where in ROWS_OF_A_BATCH.items()
        }


def test_deleting_a_batch_takes_every_row_of_it_and_nothing_else(store: Store) -> None:
    gone, kept = full_batch(store), full_batch(store)
    before = rows_of(store, kept.batch_id)
    assert all(before.values()) and rows_of(store, gone.batch_id) == before
    assert store.delete_batch(gone.batch_id) == 2
    assert set(rows_of(store, gone.batch_id).values()) == {0}
    assert rows_of(store, kept.batch_id) == before
    assert store.load(gone.batch_id) is None
    assert [s.batch_id for s in store.list_batches()] == [kept.batch_id]
    with pytest.raises(UnknownBatchError):
        store.delete_batch(gone.batch_id)  # once


def test_deleting_without_sqlites_foreign_keys_still_takes_everything(tmp_path: Path) -> None:
    """A connection without `PRAGMA foreign_keys=ON` does no cascade: the delete needs none."""
    s = Store(f"sqlite:///{tmp_path / 'history.db'}")
    try:
        batch = full_batch(s)
        event.remove(s.engine, "connect", _sqlite_pragmas)
        s.engine.dispose()  # new connections: SQLite's default, foreign keys off
        with s.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 0
        assert s.delete_batch(batch.batch_id) == 2
        assert set(rows_of(s, batch.batch_id).values()) == {0}
    finally:
        s.close()


def test_a_batch_with_a_crew_queued_or_running_is_not_deleted(store: Store, other: Store) -> None:
    half_run_batch(other, "c0ffee000001")  # another live server runs it
    with pytest.raises(BatchRunningError, match="cancel it first"):
        store.delete_batch("c0ffee000001")
    assert store.load("c0ffee000001") is not None
    silence(store, other, seconds_ago=60)
    assert store.end_orphan("c0ffee000001", lease_s=30) == 2  # cancelled: its server is gone
    assert store.delete_batch("c0ffee000001") == 3
    assert store.load("c0ffee000001") is None


@pytest.mark.parametrize("batch_id", ["\x00", "b1\x00", "\ud800", "x" * 41, "nope"])
def test_an_id_no_batch_can_have_is_unknown_before_it_reaches_the_database(
    store: Store, batch_id: str
) -> None:
    store.create_batch(sample_batch().snapshot())
    with pytest.raises(UnknownBatchError):
        store.delete_batch(batch_id)
    assert store.load(batch_id) is None
    assert store.load("b1") is not None
