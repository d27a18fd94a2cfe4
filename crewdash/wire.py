"""The JSON crewdash sends, each shape defined once: the API (and so its OpenAPI schema), the
JSON export and the CLI's `--json` build these models from the core's frozen snapshots, so a
field added to one shows up in all of them and in generated clients.

Every model forbids fields it does not name: JSON read back into one (a client, a test) that
holds anything else is an error, not silently dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from crewdash.batch import BatchState, CrewState, batch_state, topics_preview
from crewdash.config import DEFAULT_BLUEPRINT
from crewdash.pricing import batch_cost, crew_cost

if TYPE_CHECKING:
    from crewdash.batch import BatchSnapshot, CrewSnapshot, Span, TaskResult, TokenUsage
    from crewdash.blueprints import BlueprintInfo, PinnedAgent
    from crewdash.experiments import Cell, Grid, VariantSummary
    from crewdash.resume import CrewResume, ResumeOutcome
    from crewdash.store import BatchSummary as StoredSummary


class WireModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tokens(WireModel):
    prompt: int = 0
    completion: int = 0
    total: int = 0

    @classmethod
    def from_usage(cls, usage: TokenUsage) -> Tokens:
        return cls(prompt=usage.prompt, completion=usage.completion, total=usage.total)


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


def _counts(snap: BatchSnapshot) -> dict[str, int]:
    return {s.value: snap.count(s) for s in dict.fromkeys(c.state for c in snap.crews)}


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
    state: BatchState
    done: bool
    finished_at: float | None
    wall_s: float
    sum_crew_s: float
    speedup: float
    tokens: Tokens
    cost_usd: float | None
    budget_usd: float | None = Field(None, description="the batch's budget in USD, if any")
    budget_tokens: int | None = Field(None, description="the batch's budget in tokens, if any")

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
            state=batch_state(_counts(snap), snap.finished_at),
            done=snap.done,
            finished_at=snap.finished_at,
            wall_s=snap.wall_s,
            sum_crew_s=snap.sum_crew_s,
            speedup=snap.speedup,
            tokens=Tokens.from_usage(snap.tokens),
            cost_usd=batch_cost(snap),
            budget_usd=snap.budget_usd,
            budget_tokens=snap.budget_tokens,
        )


class BatchSummary(WireModel):
    """One line of the history (`GET /batches`): what was run and how it went, no texts."""

    batch_id: str
    created_at: float
    finished_at: float | None
    state: BatchState
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
    speedup: float | None
    tokens: int = Field(description="total tokens")
    topics: str = Field(description="the first topics")

    @classmethod
    def from_row(cls, row: StoredSummary) -> BatchSummary:
        """A line of the history database."""
        return cls(
            batch_id=row.batch_id,
            created_at=row.created_at,
            finished_at=row.finished_at,
            state=batch_state(row.counts, row.finished_at),
            done=batch_state(row.counts, row.finished_at) != "running",
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
        )

    @classmethod
    def from_snapshot(cls, snap: BatchSnapshot, source: str | None = None) -> BatchSummary:
        """A batch of this process (a server without history)."""
        return cls(
            batch_id=snap.batch_id,
            created_at=snap.created_at,
            finished_at=snap.finished_at,
            state=batch_state(_counts(snap), snap.finished_at),
            done=snap.done,
            blueprint=snap.blueprint,
            kind=snap.kind,
            model=snap.model_label,
            source=source,
            crews=len(snap.crews),
            counts=_counts(snap),
            wall_s=snap.wall_s,
            sum_crew_s=snap.sum_crew_s,
            speedup=snap.speedup,
            tokens=snap.tokens.total,
            topics=topics_preview([c.topic for c in snap.crews]),
        )


class CrewEvent(WireModel):
    """The `data` of an SSE `crew` event: one crew changed state."""

    run_id: str
    index: int
    topic: str
    state: CrewState
    result: str | None
    error: str | None
    duration_s: float | None

    @classmethod
    def from_snapshot(cls, crew: CrewSnapshot) -> CrewEvent:
        return cls(
            run_id=crew.run_id,
            index=crew.index,
            topic=crew.topic,
            state=crew.state,
            result=crew.result,
            error=crew.error,
            duration_s=crew.duration,
        )


class ChunkEvent(WireModel):
    """The `data` of an SSE `chunk` event: new streamed text of a running crew (coalesced, a few
    times a second); a crew's chunks come before its final `crew` event."""

    run_id: str
    text: str


class DoneEvent(WireModel):
    """The `data` of the SSE `done` event: every crew has ended; the batch's figures."""

    batch_id: str
    done: bool
    crews: int
    wall_s: float
    sum_crew_s: float
    speedup: float
    counts: dict[str, int] = Field(description="crews per state")

    @classmethod
    def from_snapshot(cls, snap: BatchSnapshot) -> DoneEvent:
        return cls(
            batch_id=snap.batch_id,
            done=snap.done,
            crews=len(snap.crews),
            wall_s=snap.wall_s,
            sum_crew_s=snap.sum_crew_s,
            speedup=snap.speedup,
            counts=_counts(snap),
        )


class PinnedAgentInfo(WireModel):
    """An agent that keeps its own model, whatever the run's model is."""

    role: str
    model: str
    where: str = Field(description="the inner crew or Flow step it belongs to, if any")

    @classmethod
    def from_pin(cls, pin: PinnedAgent) -> PinnedAgentInfo:
        return cls(role=pin.role, model=pin.model, where=pin.where)


class BlueprintDescription(WireModel):
    """One blueprint of `GET /blueprints`; a broken one has its `error` and empty inputs."""

    name: str
    kind: str
    error: str | None
    inputs: dict[str, str] = Field(default_factory=dict, description="name -> default")
    required: list[str] = Field(default_factory=list)
    fan_out: str | None = Field(default=None, description="the input each topic fills")
    pinned_agents: list[PinnedAgentInfo] = Field(default_factory=list)

    @classmethod
    def from_info(cls, info: BlueprintInfo) -> BlueprintDescription:
        bp = info.blueprint
        if bp is None:
            return cls(name=info.name, kind=info.kind, error=info.error)
        return cls(
            name=info.name,
            kind=info.kind,
            error=None,
            inputs=dict(bp.inputs),
            required=sorted(bp.required),
            fan_out=bp.fan_out,
            pinned_agents=[PinnedAgentInfo.from_pin(p) for p in bp.pinned_agents],
        )


class Health(WireModel):
    status: Literal["ok"]
    pid: int
    running_batches: int
    backend: str
    database: str = Field(description="sqlite, postgresql or none")


class CrewReport(WireModel):
    """One crew in the CLI's `--json` (`crews_detail[]`)."""

    run_id: str
    topic: str
    state: CrewState
    duration_s: float | None
    error: str | None
    inputs: dict[str, str]
    result: str | None
    tasks: list[TaskOutput]
    files: list[str] = Field(description="absolute paths of the files its tasks wrote")
    ttft_s: float | None = Field(None, description="time to first token; null unstreamed")
    tokens_per_s: float | None = Field(None, description="output tokens per second writing")

    @classmethod
    def from_snapshot(cls, crew: CrewSnapshot, folder: Path) -> CrewReport:
        return cls(
            run_id=crew.run_id,
            topic=crew.topic,
            state=crew.state,
            duration_s=None if crew.duration is None else round(crew.duration, 3),
            error=crew.error,
            inputs=dict(crew.inputs),
            result=crew.result,
            tasks=[TaskOutput(name=t.name, agent=t.agent, output=t.output) for t in crew.tasks],
            files=[str(folder / f) for f in crew.files],
            ttft_s=None if crew.ttft_s is None else round(crew.ttft_s, 3),
            tokens_per_s=None if crew.tokens_per_s is None else round(crew.tokens_per_s, 1),
        )


class RunReport(WireModel):
    """The figures `python -m crewdash run --json` writes."""

    batch_id: str
    blueprint: str
    model: str = Field(description="the model's label")
    crews: int
    succeeded: int
    failed: int
    budget_exceeded: int = Field(0, description="crews not started: the budget would be passed")
    max_concurrency: int
    wall_s: float
    slowest_crew_s: float
    sum_crew_s: float
    speedup: float
    wall_over_slowest: float | None
    tokens: int = Field(description="total tokens")
    kind: str
    crews_detail: list[CrewReport]

    @classmethod
    def from_snapshot(cls, snap: BatchSnapshot, outputs: Path) -> RunReport:
        """`outputs`: the folder the crews' files are in (one folder per batch and crew)."""
        return cls(
            batch_id=snap.batch_id,
            blueprint=snap.blueprint,
            model=snap.model_label,
            crews=len(snap.crews),
            succeeded=snap.count(CrewState.SUCCEEDED),
            failed=snap.count(CrewState.FAILED),
            budget_exceeded=snap.count(CrewState.BUDGET_EXCEEDED),
            max_concurrency=snap.max_concurrency,
            wall_s=round(snap.wall_s, 3),
            slowest_crew_s=round(snap.slowest_crew_s, 3),
            sum_crew_s=round(snap.sum_crew_s, 3),
            speedup=round(snap.speedup, 2),
            wall_over_slowest=round(snap.wall_s / snap.slowest_crew_s, 3)
            if snap.slowest_crew_s
            else None,
            tokens=snap.tokens.total,
            kind=snap.kind,
            crews_detail=[
                CrewReport.from_snapshot(c, outputs / snap.batch_id / c.run_id) for c in snap.crews
            ],
        )


class ResumeRequest(WireModel):
    """`POST /batches/{id}/resume`: which interrupted crews continue (default: all)."""

    run_ids: list[str] | None = Field(
        default=None, max_length=1000, description="only these crews (default: every interrupted)"
    )
    from_start: list[str] = Field(
        default_factory=list,
        max_length=1000,
        description="crews offered a re-run (unusable checkpoint) to run from the start now",
    )


class ResumedCrew(WireModel):
    run_id: str
    topic: str
    restored_tasks: int = Field(description="finished tasks kept from its checkpoint")
    reason: str | None = Field(
        default=None, description="for an offer: why it cannot continue from its checkpoint"
    )


class ResumeResult(WireModel):
    """What a resume started, and which crews it offers to re-run from the start instead."""

    batch_id: str
    resumed: list[ResumedCrew]
    rerun_offers: list[ResumedCrew] = Field(
        description="crews that were not resumed; resume them with `from_start` to re-run"
    )
    message: str

    @classmethod
    def from_outcome(cls, outcome: ResumeOutcome) -> ResumeResult:
        def crew(plan: CrewResume) -> ResumedCrew:
            tasks = len(plan.restore.tasks) if plan.restore is not None else 0
            return ResumedCrew(
                run_id=plan.run_id, topic=plan.topic, restored_tasks=tasks, reason=plan.problem
            )

        return cls(
            batch_id=outcome.batch_id,
            resumed=[crew(p) for p in outcome.resumed],
            rerun_offers=[crew(p) for p in outcome.offers],
            message=outcome.describe(),
        )


# --- experiments (crewdash/experiments.py) ---------------------------------------------------


class VariantChoice(WireModel):
    """One variant of an experiment: a named choice of provider, model, temperature, blueprint
    and inputs (an empty model: the provider's default)."""

    name: str = Field(max_length=40)
    provider: str = "demo"
    model: str = ""
    temperature: float | None = None
    blueprint: str = DEFAULT_BLUEPRINT
    inputs: dict[str, str] = Field(default_factory=dict, max_length=100)


class ExperimentRequest(WireModel):
    """`POST /experiments`: 2 to 6 variants, each topic runs through every one of them."""

    topics: list[str] = Field(max_length=100)
    variants: list[VariantChoice] = Field(max_length=50)
    rubric: str | None = Field(
        default=None, max_length=2000, description="judge every answer against it (1-10)"
    )
    cache: bool = Field(default=False, description="answer identical model calls from the cache")
    max_concurrency: int | None = Field(default=None, ge=1, le=1000)
    crew_timeout_s: float | None = Field(default=None, gt=0, le=86_400)


class ExperimentAccepted(WireModel):
    experiment_id: str
    cells: int
    notes: list[str]
    links: dict[str, str]


class ExperimentCell(WireModel):
    """One topic through one variant."""

    index: int
    topic: str
    variant: str
    run_id: str
    state: CrewState
    latency_s: float | None
    tokens: int
    cost_usd: float | None
    score: int | None
    reason: str | None
    judge: Literal["off", "waiting", "judging", "scored", "failed"]
    judge_error: str | None
    mark: Literal["good", "bad"] | None
    note: str | None
    answer: str | None
    error: str | None
    cache_hits: int
    saved_usd: float | None

    @classmethod
    def from_cell(cls, c: Cell) -> ExperimentCell:
        return cls(
            index=c.index,
            topic=c.topic,
            variant=c.variant,
            run_id=c.run_id,
            state=CrewState(c.state),
            latency_s=None if c.latency_s is None else round(c.latency_s, 3),
            tokens=c.tokens,
            cost_usd=None if c.cost_usd is None else round(c.cost_usd, 8),
            score=c.score,
            reason=c.reason,
            judge=c.judge,  # type: ignore[arg-type]
            judge_error=c.judge_error,
            mark=c.mark,  # type: ignore[arg-type]
            note=c.note,
            answer=c.answer,
            error=c.error,
            cache_hits=c.cache_hits,
            saved_usd=None if c.saved_usd is None else round(c.saved_usd, 8),
        )


class ExperimentVariant(WireModel):
    """A variant's summary row: success rate, latency median and p95, tokens, cost, score."""

    name: str
    provider: str
    model: str
    blueprint: str
    temperature: float | None
    cells: int
    succeeded: int
    success_rate: float
    median_latency_s: float | None
    p95_latency_s: float | None
    tokens: int
    cost_usd: float | None
    mean_score: float | None
    scored: int
    cache_hits: int
    saved_usd: float | None

    @classmethod
    def from_summary(cls, v: VariantSummary) -> ExperimentVariant:
        def r(value: float | None, places: int) -> float | None:
            return None if value is None else round(value, places)

        return cls(
            name=v.name,
            provider=v.provider,
            model=v.model,
            blueprint=v.blueprint,
            temperature=v.temperature,
            cells=v.cells,
            succeeded=v.succeeded,
            success_rate=round(v.success_rate, 4),
            median_latency_s=r(v.median_latency_s, 3),
            p95_latency_s=r(v.p95_latency_s, 3),
            tokens=v.tokens,
            cost_usd=r(v.cost_usd, 8),
            mean_score=r(v.mean_score, 2),
            scored=v.scored,
            cache_hits=v.cache_hits,
            saved_usd=r(v.saved_usd, 8),
        )


class ExperimentDetail(WireModel):
    """`GET /experiments/{id}` and the CLI's `experiment --json`: the whole grid."""

    experiment_id: str
    created_at: float
    done: bool
    wall_s: float
    topics: list[str]
    rubric: str | None
    cache: bool
    rerun_of: str | None
    cache_hits: int
    saved_usd: float
    variants: list[ExperimentVariant]
    cells: list[ExperimentCell]

    @classmethod
    def from_grid(cls, grid: Grid) -> ExperimentDetail:
        return cls(
            experiment_id=grid.experiment_id,
            created_at=grid.created_at,
            done=grid.done,
            wall_s=round(grid.wall_s, 3),
            topics=list(grid.spec.topics),
            rubric=grid.spec.rubric,
            cache=grid.spec.cache,
            rerun_of=grid.spec.rerun_of,
            cache_hits=grid.cache_hits,
            saved_usd=round(grid.saved_usd, 8),
            variants=[ExperimentVariant.from_summary(v) for v in grid.variants],
            cells=[ExperimentCell.from_cell(c) for c in grid.cells],
        )


class ExperimentListItem(WireModel):
    experiment_id: str
    created_at: float
    topics: int
    variants: list[str]
    rubric: str | None
    cache: bool
    rerun_of: str | None


class CellMark(WireModel):
    """The analyst's verdict on one cell; `mark` null clears it."""

    mark: Literal["good", "bad"] | None = None
    note: str | None = Field(default=None, max_length=2000)


class RerunRequest(WireModel):
    variant: str | None = Field(default=None, description="only this variant; all if left out")
    cache: bool = Field(default=True, description="unchanged calls come from the cache")


class Problem(BaseModel):
    """Every error answer of the API: one line a person can act on."""

    detail: str


# The error answers every route documents (a route adds 409 where another server may own it).
PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem},
    404: {"model": Problem},
    413: {"model": Problem},
    422: {"model": Problem},
}
