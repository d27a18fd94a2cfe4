"""The history store against SQLite and the real PostgreSQL server on 127.0.0.1:5432."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from crewdash.batch import Batch, CrewState, Span, TokenUsage
from crewdash.runner import Runner
from crewdash.store import Store, StoreError

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
    with store.engine.connect() as conn:
        assert conn.execute(text("select version_num from alembic_version")).scalar() == "0003"


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


def test_unfinished_crews_of_a_dead_process_become_interrupted(store: Store) -> None:
    batch = sample_batch(topics=("done", "in flight", "waiting"))
    store.create_batch(batch.snapshot())
    done, flying, _ = batch.run_ids
    batch.mark_running(done)
    batch.mark_succeeded(done, "kept", None)
    batch.mark_running(flying)
    for crew in batch.snapshot().crews:
        store.save_crew("b1", crew)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with store.engine.begin() as conn:
        conn.execute(text("update batches set owner = :o"), {"o": f"{socket.gethostname()}:{dead}"})
    assert store.interrupt_orphans() == 2
    loaded = store.load("b1")
    assert loaded is not None and loaded.done
    assert [c.state for c in loaded.crews] == [
        CrewState.SUCCEEDED,
        CrewState.INTERRUPTED,
        CrewState.INTERRUPTED,
    ]
    assert loaded.crews[0].result == "kept"
    assert store.list_batches()[0].state == "interrupted"
    assert store.interrupt_orphans() == 0


def test_a_live_batch_of_this_process_is_left_alone(store: Store) -> None:
    batch = sample_batch()
    store.create_batch(batch.snapshot())
    assert store.interrupt_orphans() == 0


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
    assert all(len(c.spans) == 1 for c in saved.crews)
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
