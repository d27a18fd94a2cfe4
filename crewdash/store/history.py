"""Run history in a database: saving, loading and deleting batches, their crews and their
LLM/tool spans (SQLAlchemy 2), the history's listing and benchmark runs.

A SQLite file under `data/` by default (WAL mode, created on first start); `DATABASE_URL`
selects PostgreSQL. The schema is owned by Alembic migrations, applied when a store opens.
Writes happen off the runner's event loop (callers use `asyncio.to_thread`). The tables are in
`tables.py`, their mapping to snapshots in `rows.py`; who owns a batch (leases, the sweep of
dead owners, the resume claim) in `owners.py`, which `Store` is built on.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, delete, event, func, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from crewdash.base.config import PROJECT_ROOT
from crewdash.base.errors import BatchRunningError, StoreError, UnknownBatchError
from crewdash.base.settings import process_settings
from crewdash.model.batch import (
    BatchSnapshot,
    BatchState,
    CrewSnapshot,
    CrewState,
    Span,
    TokenUsage,
)
from crewdash.model.storable import unstorable
from crewdash.model.summary import BatchSummary
from crewdash.store.accounts import Accounts
from crewdash.store.owners import Owners
from crewdash.store.rows import (
    OPEN_STATES,
    CrewTally,
    SavedBench,
    batch_row,
    crew_of,
    crew_row,
    fill_span_row,
    saved_bench,
    snapshot_of,
    span_of,
    summary_of,
)
from crewdash.store.sheets import Sheets
from crewdash.store.spending import Reservation, Spending
from crewdash.store.tables import (
    BatchRow,
    BenchRunRow,
    CellRow,
    CheckpointRow,
    CrewRow,
    ExperimentRow,
    KeptSpendRow,
    OwnerRow,
    ResumeBatchRow,
    SheetRow,
    SpanRow,
)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
DEFAULT_URL = f"sqlite:///{PROJECT_ROOT / 'data' / 'crewdash.db'}"
STATE_SCAN_PAGE = 500  # batches read at a time when the history is filtered by state


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as a shape only
        return "<unparsable DATABASE_URL>"


class Store(Owners, Accounts, Spending, Sheets):
    """Thread-safe access to the history database."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or process_settings("DATABASE_URL").database_url or DEFAULT_URL
        if self.url.startswith("postgresql://"):
            self.url = "postgresql+psycopg://" + self.url.removeprefix("postgresql://")
        try:
            if self.url.startswith("sqlite:///"):
                Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(self.url, pool_pre_ping=True)
            if self.engine.dialect.name == "sqlite":
                event.listen(self.engine, "connect", _sqlite_pragmas)
            self._migrate()
        except (SQLAlchemyError, OSError, ValueError) as exc:
            raise StoreError(
                f"cannot open the database at DATABASE_URL={_safe_url(self.url)}: "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from None
        self.owner_id = uuid.uuid4().hex  # this start's batches; never reused by a restart
        self._owner_lock = threading.Lock()
        self._registered = False

    def _migrate(self) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def close(self) -> None:
        self.engine.dispose()

    # --- writes -------------------------------------------------------------------------------

    def create_batch(
        self, snap: BatchSnapshot, source: str = "page", reserve: Reservation | None = None
    ) -> None:
        """Store a new batch; with `reserve`, only if it keeps its person under their daily cap
        (`SpendCapExceeded` otherwise, and nothing is stored)."""
        with self._owner_lock, Session(self.engine) as session, session.begin():
            if reserve is not None:
                self.lock_person(session, reserve.user_id)
            self._renew(session)  # the batch's owner is alive from its first row on
            row = batch_row(snap, self.owner_id, source)
            if reserve is not None:
                row.estimate_usd, row.estimate_tokens = reserve.cost_usd, reserve.tokens
            session.add(row)
            session.add_all(crew_row(snap.batch_id, c) for c in snap.crews)
            if reserve is not None:
                session.flush()  # written first: SQLite's write lock is held from here
                self.check_reservation(session, snap.batch_id, reserve)
        self._registered = True  # committed: the owner row is there

    def save_crew(self, batch_id: str, crew: CrewSnapshot) -> None:
        """Write one crew's state and spans; committed when this returns. A crew's start
        written late (a cancel or an interruption overtook it) never reopens its ending."""
        with Session(self.engine) as session, session.begin():
            fresh = crew_row(batch_id, crew)
            if crew.state.final:
                session.merge(fresh)
            else:  # one conditional update: a read, then a write, would race the ending
                values = {c.key: getattr(fresh, c.key) for c in CrewRow.__mapper__.column_attrs}
                opened = (
                    session.connection()
                    .execute(
                        update(CrewRow)
                        .where(CrewRow.run_id == crew.run_id, CrewRow.state.in_(OPEN_STATES))
                        .values(values)
                    )
                    .rowcount
                )
                if not opened:
                    if session.get(CrewRow, crew.run_id) is not None:
                        return  # it has ended meanwhile
                    session.add(fresh)
            existing = {
                row.key: row
                for row in session.scalars(select(SpanRow).where(SpanRow.run_id == crew.run_id))
            }
            for span in crew.spans:
                row = existing.get(span.key) or SpanRow(run_id=crew.run_id, key=span.key)
                session.add(fill_span_row(row, span))

    def finish_batch(self, snap: BatchSnapshot) -> None:
        """Write every crew (late spans included) and the batch's end."""
        for crew in snap.crews:
            self.save_crew(snap.batch_id, crew)
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(BatchRow)
                .where(BatchRow.id == snap.batch_id)
                .values(finished_at=snap.finished_at)
            )

    def delete_batch(self, batch_id: str) -> int:
        """Delete an ended batch and everything of it, in one transaction: its crews and their
        spans, checkpoints and resume record, and an experiment's spec and cell notes. Returns
        how many crews it had. `UnknownBatchError` for no such batch (an id no database could
        hold included), `BatchRunningError` while a crew is queued or running, here or on
        another server (cancelling it ends it; then it can go).

        Every table is emptied explicitly, children first, rather than left to the schema's
        ON DELETE CASCADE: SQLite honours that only on connections with `foreign_keys=ON`
        (`_sqlite_pragmas`), and a checkpoint's `batch_id` has no foreign key at all.
        """
        if len(batch_id) > 40 or unstorable(batch_id):
            raise UnknownBatchError(batch_id)  # PostgreSQL would refuse the query: a 500
        with Session(self.engine) as session, session.begin():
            connection = session.connection()
            # The crews first, locked (PostgreSQL; SQLite has one writer): a resume that claims
            # them at the same moment either committed (they are queued: refused) or waits and
            # then finds nothing to claim. The same order as the claim's: no deadlock.
            states = connection.execute(
                select(CrewRow.state).where(CrewRow.batch_id == batch_id).with_for_update()
            ).scalars()
            crews = list(states)
            found = connection.execute(
                select(BatchRow.id).where(BatchRow.id == batch_id).with_for_update()
            ).first()
            if found is None:
                raise UnknownBatchError(batch_id)
            if any(state in OPEN_STATES for state in crews):
                raise BatchRunningError(batch_id)
            self.keep_spend(session, batch_id)  # its spend still counts toward its person's
            run_ids = select(CrewRow.run_id).where(CrewRow.batch_id == batch_id)
            for statement in (
                delete(CellRow).where(CellRow.experiment_id == batch_id),
                delete(ExperimentRow).where(ExperimentRow.id == batch_id),
                delete(CheckpointRow).where(
                    or_(CheckpointRow.batch_id == batch_id, CheckpointRow.run_id.in_(run_ids))
                ),
                delete(ResumeBatchRow).where(ResumeBatchRow.batch_id == batch_id),
                delete(SheetRow).where(SheetRow.batch_id == batch_id),
                delete(SpanRow).where(SpanRow.run_id.in_(run_ids)),
                delete(CrewRow).where(CrewRow.batch_id == batch_id),
                delete(BatchRow).where(BatchRow.id == batch_id),
            ):
                connection.execute(statement)
        return len(crews)

    # --- reads --------------------------------------------------------------------------------

    def load(self, batch_id: str) -> BatchSnapshot | None:
        if len(batch_id) > 40 or unstorable(batch_id):
            return None  # no batch has that id, and PostgreSQL would refuse the query
        with Session(self.engine) as session:
            batch = session.get(BatchRow, batch_id)
            if batch is None:
                return None
            crews = _load_crews(session, batch_id, None)
        return snapshot_of(batch, crews)

    def refresh(self, snap: BatchSnapshot) -> BatchSnapshot:
        """`snap` with the crews whose state changed in the store read again, for watching a
        batch another process runs without loading all of it on every look.

        Crews are written when they start and when they end, so a crew's state says when its
        row changed: one small query of the states, then only the changed crews and spans.
        """
        with Session(self.engine) as session:
            states = {
                run_id: state
                for run_id, state in session.execute(
                    select(CrewRow.run_id, CrewRow.state).where(CrewRow.batch_id == snap.batch_id)
                )
            }
            changed = [c.run_id for c in snap.crews if states.get(c.run_id, c.state) != c.state]
            if not changed:
                return snap
            fresh = {c.run_id: c for c in _load_crews(session, snap.batch_id, changed)}
        return replace(snap, crews=tuple(fresh.get(c.run_id, c) for c in snap.crews))

    def list_batches(
        self,
        search: str | None = None,
        limit: int = 200,
        offset: int = 0,
        state: BatchState | None = None,
        user: str | None = None,
    ) -> list[BatchSummary]:
        """Newest first; `search` matches topics, blueprint, model or the batch id, as plain
        text (`%` and `_` are themselves, not LIKE wildcards), ignoring case. `state` keeps the
        batches in that state (`batch_state` of their crews, so the whole history is read page
        by page until `limit` of them are found). `user` keeps the batches they started."""
        if state is None:
            return self._list_batches(search, limit, offset, user)
        found: list[BatchSummary] = []
        at, page = 0, STATE_SCAN_PAGE
        while len(found) < offset + limit:
            rows = self._list_batches(search, page, at, user)
            found += [s for s in rows if s.state == state]
            if len(rows) < page:
                break
            at += page
        return found[offset : offset + limit]

    def _list_batches(
        self, search: str | None, limit: int, offset: int, user: str | None = None
    ) -> list[BatchSummary]:
        if any(text and "\x00" in text for text in (search, user)):
            return []  # nothing stored holds NUL (PostgreSQL cannot), and it must not reach it
        with Session(self.engine) as session:
            query = select(BatchRow).order_by(BatchRow.created_at.desc())
            if user is not None:
                query = query.where(BatchRow.created_by == user)
            if search:
                text = search.lower()

                def has(column: Any) -> Any:
                    return func.lower(column).contains(text, autoescape=True)

                matching = select(CrewRow.batch_id).where(has(CrewRow.topic))
                query = query.where(
                    or_(
                        BatchRow.id.in_(matching),
                        has(BatchRow.blueprint),
                        has(BatchRow.model_label),
                        has(BatchRow.id),
                    )
                )
            batches = session.scalars(query.limit(limit).offset(offset)).all()
            ids = [b.id for b in batches]
            tallies = {i: CrewTally() for i in ids}
            for row in session.execute(
                select(
                    CrewRow.batch_id,
                    CrewRow.state,
                    CrewRow.topic,
                    CrewRow.started_at,
                    CrewRow.finished_at,
                    CrewRow.total_tokens,
                )
                .where(CrewRow.batch_id.in_(ids))
                .order_by(CrewRow.idx)
            ):
                tallies[row.batch_id].add(
                    row.state, row.topic, row.started_at, row.finished_at, row.total_tokens
                )
        return [summary_of(b, tallies[b.id]) for b in batches]

    def batch_users(self) -> list[tuple[str, str]]:
        """Everyone who started a batch (id, name), for the history's filter."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(BatchRow.created_by, func.max(BatchRow.created_by_name))
                .where(BatchRow.created_by != "")
                .group_by(BatchRow.created_by)
                .order_by(BatchRow.created_by)
            )
            return [(user, name or "") for user, name in rows]

    def past_usage(
        self, blueprint: str, model: str, limit: int = 50
    ) -> list[tuple[dict[str, str], TokenUsage]]:
        """The inputs and token usage of the latest succeeded crews of batches of `blueprint`
        on `model`, newest first: what a budget's estimate learns from."""
        if "\x00" in blueprint + model:
            return []  # nothing stored holds NUL (PostgreSQL cannot)
        with Session(self.engine) as session:
            rows = session.execute(
                select(
                    CrewRow.inputs,
                    CrewRow.prompt_tokens,
                    CrewRow.completion_tokens,
                    CrewRow.total_tokens,
                )
                .join(BatchRow, BatchRow.id == CrewRow.batch_id)
                .where(
                    BatchRow.blueprint == blueprint,
                    BatchRow.model == model,
                    CrewRow.state == CrewState.SUCCEEDED.value,
                    CrewRow.total_tokens > 0,
                )
                .order_by(CrewRow.finished_at.desc())
                .limit(limit)
            ).all()
        return [(json.loads(r.inputs or "{}"), TokenUsage(r[1], r[2], r[3])) for r in rows]

    # --- benchmark runs -----------------------------------------------------------------------

    def save_bench(self, title: str, reports: Sequence[dict[str, Any]]) -> int:
        with Session(self.engine) as session, session.begin():
            row = BenchRunRow(
                created_at=time.time(), title=title[:300], reports=json.dumps(list(reports))
            )
            session.add(row)
            session.flush()
            return row.id

    def list_bench(self, limit: int = 50) -> list[SavedBench]:
        """Benchmark runs, newest first."""
        with Session(self.engine) as session:
            rows = session.scalars(
                select(BenchRunRow).order_by(BenchRunRow.created_at.desc()).limit(limit)
            ).all()
            return [saved_bench(r) for r in rows]

    def delete_all(self) -> None:
        """Empty every table (tests only)."""
        with Session(self.engine) as session, session.begin():
            for table in (
                SheetRow,
                SpanRow,
                CrewRow,
                BatchRow,
                BenchRunRow,
                OwnerRow,
                KeptSpendRow,
            ):
                session.query(table).delete()


def _load_crews(
    session: Session, batch_id: str, run_ids: Sequence[str] | None
) -> list[CrewSnapshot]:
    """A batch's crews (all, or those of `run_ids`) with their spans, in the batch's order."""
    query = select(CrewRow).where(CrewRow.batch_id == batch_id).order_by(CrewRow.idx)
    if run_ids is not None:
        query = query.where(CrewRow.run_id.in_(run_ids))
    crews = session.scalars(query).all()
    spans: dict[str, list[Span]] = {}
    for row in session.scalars(
        select(SpanRow).where(SpanRow.run_id.in_([c.run_id for c in crews]))
    ):
        spans.setdefault(row.run_id, []).append(span_of(row))
    return [crew_of(c, spans.get(c.run_id, [])) for c in crews]
