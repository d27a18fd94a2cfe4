"""Every table of the history database, in one module: one metadata for Alembic to compare.

The batches, their crews and spans, the owners that run them and benchmark runs; what resuming
a batch needs and its crews' checkpoints; experiments, their cells and the shared response
cache; personal API tokens and the audit log. The schema itself is owned by the migrations
(`migrations/versions`); these classes are how the code reads and writes it.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


# --- batches, crews and spans ------------------------------------------------------------------


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
    # who started it (migration 0010): an e-mail address, `service`, `team`, `cli:<user>`...
    created_by: Mapped[str] = mapped_column(String(320), default="", index=True)
    created_by_name: Mapped[str] = mapped_column(String(200), default="")
    # what it was estimated at when it started (migration 0011): it counts as at least that
    # toward its person's daily cap until it is done
    estimate_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    estimate_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


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


# --- owners, benchmarks ------------------------------------------------------------------------


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


# --- resuming: a batch's run settings and its crews' checkpoints (migration 0009) ---------------


class ResumeBatchRow(Base):
    """What a batch needs to run again: its model settings (no key) and blueprint version."""

    __tablename__ = "resume_batches"

    batch_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    version: Mapped[str] = mapped_column(String(80))
    settings: Mapped[str] = mapped_column(Text)
    auto_resumed_at: Mapped[float | None] = mapped_column(Float)


class CheckpointRow(Base):
    """One crew run's latest checkpoint: CrewAI's payload and crewdash's view of it."""

    __tablename__ = "crew_checkpoints"

    run_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    batch_id: Mapped[str] = mapped_column(String(40), index=True)
    saved_at: Mapped[float] = mapped_column(Float)
    steps: Mapped[int] = mapped_column(Integer, default=0)
    payload: Mapped[str] = mapped_column(Text)
    tasks: Mapped[str] = mapped_column(Text, default="[]")
    spans: Mapped[str] = mapped_column(Text, default="[]")


# --- experiments and cached model answers (migration 0008) -------------------------------------


class ExperimentRow(Base):
    __tablename__ = "experiments"

    id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    spec: Mapped[str] = mapped_column(Text)


class CellRow(Base):
    __tablename__ = "experiment_cells"

    experiment_id: Mapped[str] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True
    )
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    score: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    judge_error: Mapped[str | None] = mapped_column(Text)
    mark: Mapped[str | None] = mapped_column(String(10))
    note: Mapped[str | None] = mapped_column(Text)


class CacheRow(Base):
    __tablename__ = "llm_cache"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float)
    model: Mapped[str] = mapped_column(String(200), default="")
    content_type: Mapped[str] = mapped_column(String(100))
    body: Mapped[str] = mapped_column(Text)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    total_tokens: Mapped[int] = mapped_column(Integer, default=0)


# --- people: personal API tokens and the audit log (migration 0010) ----------------------------


class ApiTokenRow(Base):
    """A personal API token: only a digest of it is kept; its owner acts through it."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # also the token's prefix
    digest: Mapped[str] = mapped_column(String(64))  # sha256 of the whole token
    user_id: Mapped[str] = mapped_column(String(320), index=True)
    user_name: Mapped[str] = mapped_column(String(200), default="")
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[float] = mapped_column(Float)
    last_used_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: never


class AuditRow(Base):
    """One thing someone did (or was refused): time, who, what, on what, how it ended."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    user_id: Mapped[str] = mapped_column(String(320), index=True)
    action: Mapped[str] = mapped_column(String(40))
    object: Mapped[str] = mapped_column(String(200), default="")
    outcome: Mapped[str] = mapped_column(String(20))
    detail: Mapped[str] = mapped_column(Text, default="")


class KeptSpendRow(Base):
    """What a deleted batch spent, kept (migration 0011): a person's spend stays true after
    they delete their batches, so deleting is no way around a daily cap."""

    __tablename__ = "kept_spend"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(40))
    user_id: Mapped[str] = mapped_column(String(320), index=True)
    created_at: Mapped[float] = mapped_column(Float, index=True)  # when the batch started
    model: Mapped[str] = mapped_column(String(200), default="")
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    total_tokens: Mapped[int] = mapped_column(BigInteger, default=0)


class SheetRow(Base):
    """The sheet a batch ran one crew per row of (migration 0012): the file as uploaded (or the
    API's rows as CSV), which sheet of it, and how its columns filled the blueprint's inputs, so
    the enriched sheet can be rebuilt from the record after any restart."""

    __tablename__ = "batch_sheets"

    batch_id: Mapped[str] = mapped_column(
        ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True
    )
    filename: Mapped[str] = mapped_column(String(300))
    sheet_name: Mapped[str | None] = mapped_column(String(300), nullable=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    input_map: Mapped[str] = mapped_column(Text)  # {"columns": {...}, "values": {...}}
    required: Mapped[str] = mapped_column(Text, default="[]")
