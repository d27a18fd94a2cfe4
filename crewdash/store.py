"""Run history in a database: batches, crew runs and their LLM/tool spans (SQLAlchemy 2).

A SQLite file under `data/` by default (WAL mode, created on first start); `DATABASE_URL`
selects PostgreSQL. The schema is owned by Alembic migrations, applied when a store opens.
Writes happen off the runner's event loop (callers use `asyncio.to_thread`).

Every batch belongs to an *owner*: one start of one process (a random id, with host and PID
only for messages). An owner renews a heartbeat in the `owners` table; one whose heartbeat is
older than the lease is presumed dead, and any process sweeping the store ends its unfinished
batches as interrupted. PIDs and host names are never trusted: in a container the server is
PID 1 at every start, and a replaced pod has a new host name.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from crewdash.batch import (
    BatchSnapshot,
    CrewSnapshot,
    CrewState,
    Span,
    TaskResult,
    TokenUsage,
    batch_state,
    topics_preview,
)
from crewdash.config import PROJECT_ROOT
from crewdash.errors import BatchElsewhereError, StoreError, UnknownBatchError
from crewdash.settings import default_of, load_settings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
DEFAULT_URL = f"sqlite:///{PROJECT_ROOT / 'data' / 'crewdash.db'}"
DEFAULT_LEASE_S: float = default_of("CREWDASH_OWNER_LEASE_S")
INTERRUPTED_ERROR = "interrupted: the server stopped before this crew finished"
OPEN_STATES = (CrewState.QUEUED.value, CrewState.RUNNING.value)


class Base(DeclarativeBase):
    pass


class BatchRow(Base):
    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    finished_at: Mapped[float | None] = mapped_column(Float, index=True)
    blueprint: Mapped[str] = mapped_column(String(100))
    model_label: Mapped[str] = mapped_column(String(300))
    model: Mapped[str] = mapped_column(String(200), default="")
    max_concurrency: Mapped[int] = mapped_column(Integer)
    notes: Mapped[str] = mapped_column(Text, default="[]")
    owner: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(20), default="page")
    kind: Mapped[str] = mapped_column(String(20), default="yaml")
    budget_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    budget_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class CrewRow(Base):
    __tablename__ = "crew_runs"

    run_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), index=True)
    idx: Mapped[int] = mapped_column(Integer)
    topic: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20), index=True)
    queued_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    result: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    step: Mapped[str] = mapped_column(Text, default="")
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    total_tokens: Mapped[int] = mapped_column(Integer, default=0)
    agent_ids: Mapped[str] = mapped_column(Text, default="[]")
    inputs: Mapped[str] = mapped_column(Text, default="{}")
    tasks: Mapped[str] = mapped_column(Text, default="[]")  # [{key, name, output, agent}]
    files: Mapped[str] = mapped_column(Text, default="[]")


class SpanRow(Base):
    __tablename__ = "spans"
    __table_args__ = (UniqueConstraint("run_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(
        ForeignKey("crew_runs.run_id", ondelete="CASCADE"), index=True
    )
    key: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(10))
    name: Mapped[str] = mapped_column(String(300))
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    total_tokens: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    first_token_at: Mapped[float | None] = mapped_column(Float)  # streamed calls (TTFT)


class OwnerRow(Base):
    """One process start that runs batches, alive while its heartbeat is within the lease."""

    __tablename__ = "owners"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float, index=True)  # the database's clock


class BenchRunRow(Base):
    __tablename__ = "bench_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    title: Mapped[str] = mapped_column(String(300))
    reports: Mapped[str] = mapped_column(Text)


@dataclass(frozen=True)
class SavedBench:
    """One benchmark run: its reports as JSON-ready dicts (one per N)."""

    bench_id: int
    created_at: float
    title: str
    reports: list[dict[str, Any]]


@dataclass(frozen=True)
class BatchSummary:
    """One line of the history: what was run and how it went, without the crews' texts."""

    batch_id: str
    created_at: float
    finished_at: float | None
    blueprint: str
    model_label: str
    source: str
    crews: int
    counts: dict[str, int]
    wall_s: float | None
    sum_crew_s: float
    tokens: int
    topics_preview: str
    kind: str = "yaml"

    @property
    def state(self) -> str:
        """A batch whose crews have all ended is finished, even if its end was never written."""
        return batch_state(self.counts, self.finished_at)

    @property
    def speedup(self) -> float | None:
        return self.sum_crew_s / self.wall_s if self.wall_s else None


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


class Store:
    """Thread-safe access to the history database."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or load_settings(only={"DATABASE_URL"}).database_url or DEFAULT_URL
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

    def create_batch(self, snap: BatchSnapshot, source: str = "page") -> None:
        with self._owner_lock, Session(self.engine) as session, session.begin():
            self._renew(session)  # the batch's owner is alive from its first row on
            self._registered = True
            session.add(
                BatchRow(
                    id=snap.batch_id,
                    created_at=snap.created_at,
                    finished_at=None,
                    blueprint=snap.blueprint,
                    model_label=snap.model_label,
                    model=snap.model,
                    max_concurrency=snap.max_concurrency,
                    notes=json.dumps(list(snap.notes)),
                    owner=self.owner_id,
                    source=source,
                    kind=snap.kind,
                    budget_usd=snap.budget_usd,
                    budget_tokens=snap.budget_tokens,
                )
            )
            session.add_all(_crew_row(snap.batch_id, c) for c in snap.crews)

    def save_crew(self, batch_id: str, crew: CrewSnapshot) -> None:
        """Write one crew's state and spans; committed when this returns. A crew's start
        written late (a cancel or an interruption overtook it) never reopens its ending."""
        with Session(self.engine) as session, session.begin():
            fresh = _crew_row(batch_id, crew)
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
                row.kind, row.name = span.kind, span.name[:300]
                row.started_at, row.finished_at, row.error = (
                    span.started_at,
                    span.finished_at,
                    span.error,
                )
                row.prompt_tokens = span.tokens.prompt
                row.completion_tokens = span.tokens.completion
                row.total_tokens = span.tokens.total
                row.first_token_at = span.first_token_at
                session.add(row)

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

    # --- owners and their leases -------------------------------------------------------------

    def _now(self) -> Any:
        """The database's clock in epoch seconds: replicas compare heartbeats on one clock."""
        if self.engine.dialect.name == "postgresql":
            return sql_cast(func.extract("epoch", func.clock_timestamp()), Float)
        if self.engine.dialect.name == "sqlite":
            return (func.julianday("now") - 2440587.5) * 86400.0
        return literal(time.time(), Float)  # pragma: no cover - only SQLite and PostgreSQL

    def _renew(self, session: Session) -> bool:
        """Renew this owner's heartbeat; False if its row was missing (and is written now)."""
        connection = session.connection()
        renewed = connection.execute(
            update(OwnerRow).where(OwnerRow.id == self.owner_id).values(heartbeat_at=self._now())
        ).rowcount
        if renewed:
            return True
        connection.execute(
            insert(OwnerRow).values(
                id=self.owner_id,
                host=socket.gethostname()[:200],
                pid=os.getpid(),
                started_at=time.time(),
                heartbeat_at=self._now(),
            )
        )
        return False

    def beat(self) -> bool:
        """Renew this process's lease. False if another process had presumed it dead meanwhile
        (its heartbeat was late by more than the lease): its open batches were ended then."""
        with self._owner_lock, Session(self.engine) as session, session.begin():
            known = self._renew(session)
            registered, self._registered = self._registered, True
            return known or not registered

    def release(self) -> None:
        """Give the lease up on a clean exit: whatever this process left open is ended by the
        next sweep of any process, without waiting for the lease to run out."""
        with self._owner_lock, Session(self.engine) as session, session.begin():
            session.execute(
                update(OwnerRow).where(OwnerRow.id == self.owner_id).values(heartbeat_at=0.0)
            )

    def interrupt_orphans(self, lease_s: float = DEFAULT_LEASE_S) -> int:
        """End the batches of owners silent for longer than `lease_s`; returns how many crews.

        Their queued and running crews become interrupted and the batch gets its end; finished
        crews stay as they are. Batches written before owners had heartbeats count from their
        creation. This store's own batches are never touched, and owners with nothing left open
        are forgotten.
        """
        with Session(self.engine) as session, session.begin():
            expired = session.execute(select(self._now())).scalar_one() - lease_s
            dead = session.execute(
                select(BatchRow.id, BatchRow.created_at, OwnerRow.heartbeat_at)
                .outerjoin(OwnerRow, OwnerRow.id == BatchRow.owner)
                .where(
                    BatchRow.finished_at.is_(None),
                    BatchRow.owner != self.owner_id,
                    or_(
                        OwnerRow.heartbeat_at < expired,
                        and_(OwnerRow.id.is_(None), BatchRow.created_at < expired),
                    ),
                )
            ).all()
            changed = sum(
                _end_batch(session, row.id, row.heartbeat_at or row.created_at) for row in dead
            )
            session.execute(
                delete(OwnerRow).where(
                    OwnerRow.heartbeat_at < expired,
                    OwnerRow.id != self.owner_id,
                    ~exists().where(BatchRow.owner == OwnerRow.id, BatchRow.finished_at.is_(None)),
                )
            )
            return changed

    def end_orphan(self, batch_id: str, lease_s: float = DEFAULT_LEASE_S) -> int:
        """Cancel a batch no running process holds, as far as the store can: its unfinished
        crews become interrupted at once (they stopped when their server did). Returns how many.

        Raises `UnknownBatchError` for an unknown id and `BatchElsewhereError` while the batch's
        owner is alive, i.e. another server runs it and only that server can stop its crews.
        """
        with Session(self.engine) as session, session.begin():
            batch = session.get(BatchRow, batch_id)
            if batch is None:
                raise UnknownBatchError(batch_id)
            open_crews = session.scalar(
                select(func.count())
                .select_from(CrewRow)
                .where(CrewRow.batch_id == batch_id, CrewRow.state.in_(OPEN_STATES))
            )
            if not open_crews and batch.finished_at is not None:
                return 0
            now = session.execute(select(self._now())).scalar_one()
            owner = session.get(OwnerRow, batch.owner)
            last_seen = (owner.heartbeat_at if owner is not None else 0.0) or batch.created_at
            if open_crews and (batch.owner == self.owner_id or now - last_seen <= lease_s):
                where = (
                    f"host {owner.host}, pid {owner.pid}, last heartbeat "
                    f"{max(now - last_seen, 0):.0f} s ago"
                    if owner is not None
                    else batch.owner
                )
                raise BatchElsewhereError(
                    f"batch {batch_id} runs on another server ({where}); cancel it there, or if "
                    f"that server has stopped, its crews end as interrupted once its "
                    f"{lease_s:g} s lease runs out"
                )
            return _end_batch(session, batch_id, last_seen)

    # --- reads --------------------------------------------------------------------------------

    def load(self, batch_id: str) -> BatchSnapshot | None:
        with Session(self.engine) as session:
            batch = session.get(BatchRow, batch_id)
            if batch is None:
                return None
            crews = _load_crews(session, batch_id, None)
        return BatchSnapshot(
            batch_id=batch.id,
            blueprint=batch.blueprint,
            model_label=batch.model_label,
            created_at=batch.created_at,
            max_concurrency=batch.max_concurrency,
            notes=tuple(json.loads(batch.notes or "[]")),
            model=batch.model,
            kind=batch.kind,
            crews=tuple(crews),
            budget_usd=batch.budget_usd,
            budget_tokens=batch.budget_tokens,
        )

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
        self, search: str | None = None, limit: int = 200, offset: int = 0
    ) -> list[BatchSummary]:
        """Newest first; `search` matches topics, blueprint, model or the batch id, as plain
        text (`%` and `_` are themselves, not LIKE wildcards), ignoring case."""
        if search and "\x00" in search:
            return []  # nothing stored holds NUL (PostgreSQL cannot), and it must not reach it
        with Session(self.engine) as session:
            query = select(BatchRow).order_by(BatchRow.created_at.desc())
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
            stats: dict[str, dict[str, Any]] = {
                i: {"counts": {}, "sum": 0.0, "tokens": 0, "topics": [], "last": None} for i in ids
            }
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
                s = stats[row.batch_id]
                s["counts"][row.state] = s["counts"].get(row.state, 0) + 1
                if row.started_at and row.finished_at:
                    s["sum"] += row.finished_at - row.started_at
                s["tokens"] += row.total_tokens or 0
                s["topics"].append(row.topic)
        summaries = []
        for b in batches:
            s = stats[b.id]
            summaries.append(
                BatchSummary(
                    batch_id=b.id,
                    created_at=b.created_at,
                    finished_at=b.finished_at,
                    blueprint=b.blueprint,
                    model_label=b.model_label,
                    source=b.source,
                    crews=sum(s["counts"].values()),
                    counts=s["counts"],
                    wall_s=(b.finished_at - b.created_at) if b.finished_at else None,
                    sum_crew_s=s["sum"],
                    tokens=s["tokens"],
                    topics_preview=topics_preview(s["topics"]),
                    kind=b.kind,
                )
            )
        return summaries

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
            return [SavedBench(r.id, r.created_at, r.title, json.loads(r.reports)) for r in rows]

    def delete_all(self) -> None:
        """Empty every table (tests only)."""
        with Session(self.engine) as session, session.begin():
            for table in (SpanRow, CrewRow, BatchRow, BenchRunRow, OwnerRow):
                session.query(table).delete()


def _end_batch(session: Session, batch_id: str, last_seen: float) -> int:
    """Interrupt a dead owner's unfinished crews and end the batch; returns how many crews.

    Conditional updates, so two processes sweeping at once never count a crew twice. The crews
    ran until the owner's last sign of life at most; that (or the latest crew's end) is their end.
    """
    connection = session.connection()
    latest = session.scalar(
        select(func.max(CrewRow.finished_at)).where(CrewRow.batch_id == batch_id)
    )
    stamp = max(last_seen, latest or 0.0)
    ended = connection.execute(
        update(CrewRow)
        .where(CrewRow.batch_id == batch_id, CrewRow.state.in_(OPEN_STATES))
        .values(
            state=CrewState.INTERRUPTED.value,
            error=INTERRUPTED_ERROR,
            step="interrupted",
            finished_at=func.coalesce(CrewRow.finished_at, stamp),
            started_at=func.coalesce(CrewRow.started_at, CrewRow.finished_at, stamp),
        )
    ).rowcount
    connection.execute(
        update(BatchRow)
        .where(BatchRow.id == batch_id, BatchRow.finished_at.is_(None))
        .values(finished_at=stamp)
    )
    return ended


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
        spans.setdefault(row.run_id, []).append(_span(row))
    return [_crew(c, spans.get(c.run_id, [])) for c in crews]


def _crew_row(batch_id: str, c: CrewSnapshot) -> CrewRow:
    return CrewRow(
        run_id=c.run_id,
        batch_id=batch_id,
        idx=c.index,
        topic=c.topic,
        state=c.state.value,
        queued_at=c.queued_at,
        started_at=c.started_at,
        finished_at=c.finished_at,
        result=c.result,
        error=c.error,
        step=c.step,
        prompt_tokens=c.tokens.prompt,
        completion_tokens=c.tokens.completion,
        total_tokens=c.tokens.total,
        agent_ids=json.dumps(list(c.agent_ids)),
        inputs=json.dumps(dict(c.inputs)),
        tasks=json.dumps([asdict(t) for t in c.tasks]),
        files=json.dumps(list(c.files)),
    )


def _span(row: SpanRow) -> Span:
    return Span(
        key=row.key,
        kind=row.kind,
        name=row.name,
        started_at=row.started_at,
        finished_at=row.finished_at,
        error=row.error,
        tokens=TokenUsage(row.prompt_tokens, row.completion_tokens, row.total_tokens),
        first_token_at=row.first_token_at,
    )


def _crew(row: CrewRow, spans: Sequence[Span]) -> CrewSnapshot:
    return CrewSnapshot(
        run_id=row.run_id,
        index=row.idx,
        topic=row.topic,
        state=CrewState(row.state),
        queued_at=row.queued_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        result=row.result,
        error=row.error,
        step=row.step,
        spans=tuple(sorted(spans, key=lambda s: s.started_at or 0.0)),
        tokens=TokenUsage(row.prompt_tokens, row.completion_tokens, row.total_tokens),
        agent_ids=tuple(json.loads(row.agent_ids or "[]")),
        inputs=json.loads(row.inputs or "{}"),
        tasks=tuple(TaskResult(**t) for t in json.loads(row.tasks or "[]")),
        files=tuple(json.loads(row.files or "[]")),
    )
