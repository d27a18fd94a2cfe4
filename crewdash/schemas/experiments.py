"""The wire models of experiments (`/experiments`, crewdash/experiments/spec.py): the request
with its variants, the grid of cells and each variant's summary, marks and re-runs; the CLI's
`experiment --json` writes the same `ExperimentDetail`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from crewdash.base.config import DEFAULT_BLUEPRINT, MAX_TOPICS
from crewdash.experiments.spec import MAX_RUBRIC_CHARS, MAX_VARIANTS, MIN_VARIANTS
from crewdash.model.batch import CrewState
from crewdash.providers.llm import PROVIDERS
from crewdash.schemas.common import InputName, InputValue, StoredText, Topic, WireModel

if TYPE_CHECKING:
    from crewdash.experiments.spec import Cell, Grid, VariantSummary


class VariantChoice(WireModel):
    """One variant of an experiment: a named choice of provider, model, temperature, blueprint
    and inputs (an empty model: the provider's default)."""

    name: StoredText = Field(
        min_length=1,
        max_length=40,
        description="1 to 40 letters, digits, spaces, '.', '-' or '_'; unique in the experiment",
    )
    provider: str = Field(default="demo", json_schema_extra={"enum": list(PROVIDERS)})
    model: StoredText = Field(default="", max_length=200)
    temperature: float | None = Field(default=None, ge=0, le=2, strict=True)
    blueprint: StoredText = Field(default=DEFAULT_BLUEPRINT, max_length=200)
    inputs: dict[InputName, InputValue] = Field(default_factory=dict, max_length=100)

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, value: str) -> str:
        if value not in PROVIDERS:
            raise ValueError(f"unknown provider {value!r}; use one of {', '.join(PROVIDERS)}")
        return value


class ExperimentRequest(WireModel):
    """`POST /experiments`: 2 to 6 variants, each topic runs through every one of them."""

    topics: list[Topic] = Field(
        min_length=1,
        max_length=MAX_TOPICS,
        description="at least one topic that is not blank after cleaning (as for /batches)",
    )
    variants: list[VariantChoice] = Field(min_length=MIN_VARIANTS, max_length=MAX_VARIANTS)
    rubric: StoredText | None = Field(
        default=None,
        max_length=MAX_RUBRIC_CHARS,
        description="judge every answer against it (1-10)",
    )
    cache: bool = Field(
        default=False, strict=True, description="answer identical model calls from the cache"
    )
    max_concurrency: int | None = Field(default=None, ge=1, le=1000, strict=True)
    crew_timeout_s: float | None = Field(default=None, gt=0, le=86_400, strict=True)


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
    note: StoredText | None = Field(default=None, max_length=2000)


class RerunRequest(WireModel):
    variant: StoredText | None = Field(
        default=None, max_length=40, description="only this variant; all if left out"
    )
    cache: bool = Field(
        default=True, strict=True, description="unchanged calls come from the cache"
    )
