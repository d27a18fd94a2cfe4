"""Rows and the domain, both ways: a batch's snapshot into its rows and back, a history line
out of a batch's rows, and the plain records the store hands out instead of its rows.

Lists and mappings (notes, agent ids, inputs, tasks, files) are stored as JSON text, so one
schema serves SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from crewdash.model.batch import (
    BatchSnapshot,
    CrewSnapshot,
    CrewState,
    Span,
    TaskResult,
    TokenUsage,
    topics_preview,
)
from crewdash.model.summary import BatchSummary
from crewdash.store.tables import BatchRow, BenchRunRow, CrewRow, ResumeBatchRow, SpanRow

OPEN_STATES = (CrewState.QUEUED.value, CrewState.RUNNING.value)


@dataclass(frozen=True)
class SavedBench:
    """One benchmark run: its reports as JSON-ready dicts (one per N)."""

    bench_id: int
    created_at: float
    title: str
    reports: list[dict[str, Any]]


@dataclass(frozen=True)
class ResumeRecord:
    """What a batch needs to run again: its blueprint's version and its run settings as stored
    (JSON without the key: the engine reads them back)."""

    batch_id: str
    version: str
    settings: str


# --- a batch into its rows ---------------------------------------------------------------------


def batch_row(snap: BatchSnapshot, owner: str, source: str) -> BatchRow:
    return BatchRow(
        id=snap.batch_id,
        created_at=snap.created_at,
        finished_at=None,
        blueprint=snap.blueprint,
        model_label=snap.model_label,
        model=snap.model,
        max_concurrency=snap.max_concurrency,
        notes=json.dumps(list(snap.notes)),
        owner=owner,
        source=source,
        kind=snap.kind,
        budget_usd=snap.budget_usd,
        budget_tokens=snap.budget_tokens,
        created_by=snap.created_by,
        created_by_name=snap.created_by_name,
    )


def crew_row(batch_id: str, c: CrewSnapshot) -> CrewRow:
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


def fill_span_row(row: SpanRow, span: Span) -> SpanRow:
    """`row` (new, or the span's stored row) holding `span` as it is now."""
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
    return row


# --- rows back into a batch --------------------------------------------------------------------


def span_of(row: SpanRow) -> Span:
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


def crew_of(row: CrewRow, spans: Sequence[Span]) -> CrewSnapshot:
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


def snapshot_of(batch: BatchRow, crews: Sequence[CrewSnapshot]) -> BatchSnapshot:
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
        created_by=batch.created_by,
        created_by_name=batch.created_by_name,
    )


# --- a batch's rows as a line of the history ---------------------------------------------------


@dataclass
class CrewTally:
    """What a history line says of a batch's crews, added up one crew row at a time."""

    counts: dict[str, int] = field(default_factory=dict)
    sum_crew_s: float = 0.0
    tokens: int = 0
    topics: list[str] = field(default_factory=list)

    def add(
        self,
        state: str,
        topic: str,
        started_at: float | None,
        finished_at: float | None,
        total_tokens: int | None,
    ) -> None:
        self.counts[state] = self.counts.get(state, 0) + 1
        if started_at and finished_at:
            self.sum_crew_s += finished_at - started_at
        self.tokens += total_tokens or 0
        self.topics.append(topic)


def summary_of(batch: BatchRow, tally: CrewTally) -> BatchSummary:
    return BatchSummary(
        batch_id=batch.id,
        created_at=batch.created_at,
        finished_at=batch.finished_at,
        blueprint=batch.blueprint,
        model_label=batch.model_label,
        source=batch.source,
        crews=sum(tally.counts.values()),
        counts=tally.counts,
        wall_s=(batch.finished_at - batch.created_at) if batch.finished_at else None,
        sum_crew_s=tally.sum_crew_s,
        tokens=tally.tokens,
        topics_preview=topics_preview(tally.topics),
        kind=batch.kind,
        created_by=batch.created_by,
        created_by_name=batch.created_by_name,
    )


# --- the other records -------------------------------------------------------------------------


def saved_bench(row: BenchRunRow) -> SavedBench:
    return SavedBench(row.id, row.created_at, row.title, json.loads(row.reports))


def resume_record(row: ResumeBatchRow) -> ResumeRecord:
    return ResumeRecord(row.batch_id, row.version, row.settings)
