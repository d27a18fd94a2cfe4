"""Run history in a database: batches, crew runs and their LLM/tool spans (SQLAlchemy 2).

A SQLite file under `data/` by default (WAL mode, created on first start); `DATABASE_URL`
selects PostgreSQL. The schema is owned by Alembic migrations, applied when a store opens.
Writes happen off the runner's event loop (callers use `asyncio.to_thread`).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from crewdash.batch import BatchSnapshot, CrewSnapshot, CrewState, Span, TokenUsage
from crewdash.config import PROJECT_ROOT
from crewdash.errors import CrewdashError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
DEFAULT_URL = f"sqlite:///{PROJECT_ROOT / 'data' / 'crewdash.db'}"
OWNER = f"{socket.gethostname()}:{os.getpid()}"


class StoreError(CrewdashError):
    """The database cannot be reached or used; the message names the setting."""


class Base(DeclarativeBase):
    pass


class BatchRow(Base):
    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    finished_at: Mapped[float | None] = mapped_column(Float)
    blueprint: Mapped[str] = mapped_column(String(100))
    model_label: Mapped[str] = mapped_column(String(300))
    model: Mapped[str] = mapped_column(String(200), default="")
    max_concurrency: Mapped[int] = mapped_column(Integer)
    notes: Mapped[str] = mapped_column(Text, default="[]")
    owner: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(20), default="page")


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

    @property
    def state(self) -> str:
        if self.counts.get(CrewState.INTERRUPTED.value):
            return "interrupted"
        if self.finished_at is None:
            return "running"
        return "failed" if self.counts.get(CrewState.FAILED.value) else "succeeded"

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
        self.url = url or os.environ.get("DATABASE_URL") or DEFAULT_URL
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
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._lock = threading.Lock()

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
        with Session(self.engine) as session, session.begin():
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
                    owner=OWNER,
                    source=source,
                )
            )
            session.add_all(_crew_row(snap.batch_id, c) for c in snap.crews)

    def save_crew(self, batch_id: str, crew: CrewSnapshot) -> None:
        """Write one crew's state and spans; committed when this returns."""
        with Session(self.engine) as session, session.begin():
            session.merge(_crew_row(batch_id, crew))
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

    def interrupt_orphans(self) -> int:
        """Mark crews of batches whose process is gone as interrupted; returns how many.

        A batch belongs to the process that ran it (`host:pid`). Unfinished batches of this
        host whose process no longer exists are ended: their finished crews stay as they are.
        """
        host = socket.gethostname()
        with Session(self.engine) as session, session.begin():
            open_batches = session.scalars(
                select(BatchRow).where(BatchRow.finished_at.is_(None))
            ).all()
            dead = [b for b in open_batches if _owner_is_gone(b.owner, host)]
            changed = 0
            for batch in dead:
                rows = session.scalars(select(CrewRow).where(CrewRow.batch_id == batch.id)).all()
                ends = [r.finished_at for r in rows if r.finished_at]
                stamp = max(ends, default=batch.created_at)
                for row in rows:
                    if row.state in (CrewState.QUEUED.value, CrewState.RUNNING.value):
                        row.state = CrewState.INTERRUPTED.value
                        row.error = "interrupted: the server stopped before this crew finished"
                        row.step = "interrupted"
                        row.finished_at = row.finished_at or stamp
                        row.started_at = row.started_at or row.finished_at
                        changed += 1
                batch.finished_at = stamp
            return changed

    # --- reads --------------------------------------------------------------------------------

    def load(self, batch_id: str) -> BatchSnapshot | None:
        with Session(self.engine) as session:
            batch = session.get(BatchRow, batch_id)
            if batch is None:
                return None
            crews = session.scalars(
                select(CrewRow).where(CrewRow.batch_id == batch_id).order_by(CrewRow.idx)
            ).all()
            spans: dict[str, list[Span]] = {}
            for row in session.scalars(
                select(SpanRow).where(SpanRow.run_id.in_([c.run_id for c in crews]))
            ):
                spans.setdefault(row.run_id, []).append(_span(row))
        return BatchSnapshot(
            batch_id=batch.id,
            blueprint=batch.blueprint,
            model_label=batch.model_label,
            created_at=batch.created_at,
            max_concurrency=batch.max_concurrency,
            notes=tuple(json.loads(batch.notes or "[]")),
            model=batch.model,
            crews=tuple(_crew(c, spans.get(c.run_id, [])) for c in crews),
        )

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
                    topics_preview=", ".join(s["topics"][:3])
                    + ("…" if len(s["topics"]) > 3 else ""),
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
            for table in (SpanRow, CrewRow, BatchRow, BenchRunRow):
                session.query(table).delete()


def _owner_is_gone(owner: str, host: str) -> bool:
    owner_host, _, pid = owner.rpartition(":")
    if owner == OWNER or owner_host != host or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


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
    )
