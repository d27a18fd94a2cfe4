"""The wire models of a batch: what `GET /batches/{id}` and the JSON export say about it and its
crews, spans and tasks, and what a line of the history (`GET /batches`) says."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from crewdash.model.batch import BatchState, CrewState
from crewdash.model.pricing import batch_cost, crew_cost
from crewdash.model.summary import BatchSummary as HistoryLine
from crewdash.schemas.common import SPEEDUP_RULE, STATE_RULE, Tokens, WireModel

if TYPE_CHECKING:
    from crewdash.model.batch import BatchSnapshot, CrewSnapshot, Span, TaskResult


class SpanInfo(WireModel):
    """One LLM call, tool use, retry, task or Flow step of a crew (epoch seconds)."""

    key: str
    kind: str = Field(description="llm, tool, retry, task or step")
    name: str = Field(description="the model, or the tool's, task's or step's name")
    started_at: float | None
    finished_at: float | None
    tokens: Tokens
    error: str | None
    first_token_at: float | None = Field(None, description="a streamed LLM call's first text")
    ttft_s: float | None = Field(None, description="time to first token of a streamed call")
    generation_s: float | None = Field(None, description="first token to the call's end")
    tokens_per_s: float | None = Field(None, description="output tokens per second writing")

    @classmethod
    def from_span(cls, span: Span) -> SpanInfo:
        return cls(
            key=span.key,
            kind=span.kind,
            name=span.name,
            started_at=span.started_at,
            finished_at=span.finished_at,
            tokens=Tokens.from_usage(span.tokens),
            error=span.error,
            first_token_at=span.first_token_at,
            ttft_s=span.ttft,
            generation_s=span.generation_s,
            tokens_per_s=span.tokens_per_s,
        )


class TaskOutput(WireModel):
    """One finished task of a crew: what the CLI's `--json` reports for it."""

    name: str
    agent: str = Field(default="", description="the agent's role, if known")
    output: str


class TaskInfo(TaskOutput):
    """One finished task of a crew, with its id (one entry per task)."""

    key: str
    restored: bool = Field(
        default=False, description="finished before an interruption and kept by a resume"
    )

    @classmethod
    def from_task(cls, task: TaskResult) -> TaskInfo:
        return cls(
            key=task.key,
            name=task.name,
            agent=task.agent,
            output=task.output,
            restored=task.restored,
        )


class CrewDetail(WireModel):
    """One crew run: its state, answer, inputs, tasks, files and every span."""

    run_id: str
    index: int
    topic: str
    state: CrewState
    queued_at: float
    started_at: float | None
    finished_at: float | None
    result: str | None
    error: str | None
    step: str
    spans: list[SpanInfo]
    tokens: Tokens
    agent_ids: list[str]
    inputs: dict[str, str] = Field(description="this crew's kickoff inputs")
    tasks: list[TaskInfo]
    files: list[str] = Field(description="files its tasks wrote, relative to its own folder")
    duration_s: float | None = Field(description="start to finish (to now while running)")
    cost_usd: float | None = Field(description="at today's prices; null if the model has none")
    ttft_s: float | None = Field(
        None, description="time to first token of its first streamed LLM call; null unstreamed"
    )
    generation_s: float | None = Field(None, description="seconds its streamed calls spent writing")
    tokens_per_s: float | None = Field(None, description="output tokens per second writing")

    @classmethod
    def from_snapshot(cls, crew: CrewSnapshot, batch: BatchSnapshot) -> CrewDetail:
        return cls(
            run_id=crew.run_id,
            index=crew.index,
            topic=crew.topic,
            state=crew.state,
            queued_at=crew.queued_at,
            started_at=crew.started_at,
            finished_at=crew.finished_at,
            result=crew.result,
            error=crew.error,
            step=crew.step,
            spans=[SpanInfo.from_span(s) for s in crew.spans],
            tokens=Tokens.from_usage(crew.tokens),
            agent_ids=list(crew.agent_ids),
            inputs=dict(crew.inputs),
            tasks=[TaskInfo.from_task(t) for t in crew.tasks],
            files=list(crew.files),
            duration_s=crew.duration,
            cost_usd=crew_cost(batch, crew),
            ttft_s=crew.ttft_s,
            generation_s=crew.generation_s,
            tokens_per_s=crew.tokens_per_s,
        )


class BatchDetail(WireModel):
    """Everything about one batch, crews and spans included (also the JSON export)."""

    batch_id: str
    blueprint: str
    model_label: str
    created_at: float
    crews: list[CrewDetail]
    max_concurrency: int
    notes: list[str]
    model: str = Field(description="the model's name, for pricing")
    kind: str = Field(description="the blueprint's kind: yaml, crew, json_crew, flow, flow_yaml")
    state: BatchState = Field(description=STATE_RULE)
    done: bool
    finished_at: float | None
    wall_s: float
    sum_crew_s: float
    speedup: float | None = Field(description=SPEEDUP_RULE)
    tokens: Tokens
    cost_usd: float | None
    budget_usd: float | None = Field(None, description="the batch's budget in USD, if any")
    budget_tokens: int | None = Field(None, description="the batch's budget in tokens, if any")
    created_by: str = Field("", description="who started it: an e-mail address, service, team...")
    created_by_name: str = Field("", description="their name, for display")

    @classmethod
    def from_snapshot(cls, snap: BatchSnapshot) -> BatchDetail:
        return cls(
            batch_id=snap.batch_id,
            blueprint=snap.blueprint,
            model_label=snap.model_label,
            created_at=snap.created_at,
            crews=[CrewDetail.from_snapshot(c, snap) for c in snap.crews],
            max_concurrency=snap.max_concurrency,
            notes=list(snap.notes),
            model=snap.model,
            kind=snap.kind,
            state=snap.state,
            done=snap.done,
            finished_at=snap.finished_at,
            wall_s=snap.wall_s,
            sum_crew_s=snap.sum_crew_s,
            speedup=snap.speedup,
            tokens=Tokens.from_usage(snap.tokens),
            cost_usd=batch_cost(snap),
            budget_usd=snap.budget_usd,
            budget_tokens=snap.budget_tokens,
            created_by=snap.created_by,
            created_by_name=snap.created_by_name,
        )


class BatchSummary(WireModel):
    """One line of the history (`GET /batches`): what was run and how it went, no texts."""

    batch_id: str
    created_at: float
    finished_at: float | None
    state: BatchState = Field(description=STATE_RULE)
    done: bool
    blueprint: str
    kind: str
    model: str = Field(description="the model's label")
    source: str | None = Field(
        description="page, api or cli; null for a batch of a server without history"
    )
    crews: int
    counts: dict[str, int] = Field(description="crews per state")
    wall_s: float | None
    sum_crew_s: float
    speedup: float | None = Field(description=SPEEDUP_RULE)
    tokens: int = Field(description="total tokens")
    topics: str = Field(description="the first topics")
    created_by: str = Field("", description="who started it (empty: before accounts)")
    created_by_name: str = Field("", description="their name, for display")

    @classmethod
    def from_row(cls, row: HistoryLine) -> BatchSummary:
        """A line of the history database."""
        return cls(
            batch_id=row.batch_id,
            created_at=row.created_at,
            finished_at=row.finished_at,
            state=row.state,
            done=row.done,
            blueprint=row.blueprint,
            kind=row.kind,
            model=row.model_label,
            source=row.source,
            crews=row.crews,
            counts=row.counts,
            wall_s=row.wall_s,
            sum_crew_s=row.sum_crew_s,
            speedup=row.speedup,
            tokens=row.tokens,
            topics=row.topics_preview,
            created_by=row.created_by,
            created_by_name=row.created_by_name,
        )

    @classmethod
    def from_snapshot(cls, snap: BatchSnapshot, source: str | None = None) -> BatchSummary:
        """A batch of this process (a server without history)."""
        return cls.from_row(HistoryLine.of_snapshot(snap, source))
