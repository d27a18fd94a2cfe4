"""Experiments: the same topics through 2 to 6 variants (provider, model, temperature, blueprint,
inputs) at once, as one batch, with a grid of figures and optional judge scores.

An experiment is one ordinary batch whose crews each carry a (topic, variant): cell `i` is topic
`i // len(variants)` through variant `i % len(variants)`. The runner runs it under the usual
admission, limits, retries, timeouts and cancellation, and the store keeps it like any batch; the
experiment's spec and each cell's score and mark sit beside it (`experiment_store`). This module
holds the spec, its checks and the grid; `experiment_runner` runs them, `experiment_exports`
writes them out.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from crewdash.base.config import DEFAULT_BLUEPRINT, MAX_TOPICS
from crewdash.base.errors import (
    CrewdashError,
    SettingsError,
)
from crewdash.blueprints.base import BaseBlueprint
from crewdash.blueprints.catalog import load_blueprint
from crewdash.demo.models import DEMO_MODELS
from crewdash.engine.plans import CrewPlan, RunSettings
from crewdash.experiments.store import CellNotes
from crewdash.model.batch import BatchSnapshot, CrewSnapshot, CrewState, TokenUsage
from crewdash.model.pricing import cost
from crewdash.model.storable import check_storable, check_storable_map
from crewdash.model.topics import parse_topics
from crewdash.providers.llm import DEFAULT_MODELS, KEY_VARIABLES, PROVIDERS, LLMSettings

MIN_VARIANTS, MAX_VARIANTS = 2, 6
JUDGE_BLUEPRINT = "judge"
MAX_RUBRIC_CHARS = 2000
VARIANT_KEYS = ("name", "provider", "model", "temperature", "blueprint")
_SCORE = re.compile(r"SCORE:\s*\**\s*(\d{1,2})\b", re.IGNORECASE)
_REASON = re.compile(r"REASON:\s*(.+)", re.IGNORECASE)
_NAME = re.compile(r"^[\w.\- ]{1,40}$")


class ExperimentError(CrewdashError, ValueError):
    """An experiment that cannot start; the message says which variant and why."""


@dataclass(frozen=True)
class Variant:
    """One column of the grid: a named choice of provider, model, temperature, blueprint and
    inputs. An empty model means the provider's default."""

    name: str
    provider: str = "demo"
    model: str = ""
    temperature: float | None = None
    blueprint: str = DEFAULT_BLUEPRINT
    inputs: Mapping[str, str] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        return self.model or DEFAULT_MODELS.get(self.provider, "")

    @property
    def choice(self) -> tuple[Any, ...]:
        """What makes two variants the same run, whatever their names."""
        return (
            self.provider,
            self.model_name,
            self.temperature,
            self.blueprint,
            tuple(sorted(self.inputs.items())),
        )

    def describe(self) -> str:
        temp = "" if self.temperature is None else f", t={self.temperature:g}"
        return f"{self.provider}/{self.model_name}{temp}, {self.blueprint}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "inputs": dict(self.inputs)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Variant:
        unknown = set(data) - {*VARIANT_KEYS, "inputs"}
        if unknown:
            raise ExperimentError(
                f"unknown variant key {sorted(unknown)[0]!r}; use {', '.join(VARIANT_KEYS)}"
            )
        temperature = data.get("temperature")
        if temperature in ("", None):
            temperature = None
        else:
            try:
                temperature = float(temperature)
            except (TypeError, ValueError):
                raise ExperimentError(
                    f"variant {data.get('name')!r}: temperature must be a number, got "
                    f"{temperature!r}"
                ) from None
        return cls(
            name=str(data.get("name") or "").strip(),
            provider=str(data.get("provider") or "demo").strip(),
            model=str(data.get("model") or "").strip(),
            temperature=temperature,
            blueprint=str(data.get("blueprint") or DEFAULT_BLUEPRINT).strip(),
            inputs={str(k): str(v) for k, v in dict(data.get("inputs") or {}).items()},
        )


def parse_variant(text: str) -> Variant:
    """`name=fast,model=demo-fast,temperature=0.2` (the CLI's `--variant`)."""
    data: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ExperimentError(f"variant part {part!r} is not key=value (in {text!r})")
        data[key.strip()] = value.strip()
    return Variant.from_dict(data)


@dataclass(frozen=True)
class ExperimentSpec:
    """What an experiment runs; stored as JSON with the batch, so it can be run again."""

    topics: tuple[str, ...]
    variants: tuple[Variant, ...]
    rubric: str | None = None  # judge each answer against it; None: no judge
    cache: bool = False  # answer identical model calls from the response cache
    max_concurrency: int | None = None
    crew_timeout_s: float | None = None
    rerun_of: str | None = None  # the experiment this one re-runs (all or one variant)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "variants": [v.to_dict() for v in self.variants]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentSpec:
        return cls(
            topics=tuple(data["topics"]),
            variants=tuple(Variant.from_dict(v) for v in data["variants"]),
            rubric=data.get("rubric"),
            cache=bool(data.get("cache")),
            max_concurrency=data.get("max_concurrency"),
            crew_timeout_s=data.get("crew_timeout_s"),
            rerun_of=data.get("rerun_of"),
        )

    def cell_of(self, index: int) -> tuple[str, Variant]:
        return self.topics[index // len(self.variants)], self.variants[index % len(self.variants)]


def build_spec(
    topics: str | Sequence[str],
    variants: Sequence[Variant],
    *,
    rubric: str | None = None,
    cache: bool = False,
    max_concurrency: int | None = None,
    crew_timeout_s: float | None = None,
    rerun_of: str | None = None,
) -> tuple[ExperimentSpec, tuple[str, ...]]:
    """A spec from raw input, topics cleaned as for a batch; (spec, notes about the topics)."""
    parsed = parse_topics(topics, max_topics=MAX_TOPICS)
    rubric = (rubric or "").strip() or None
    spec = ExperimentSpec(
        parsed.items,
        tuple(variants),
        rubric,
        cache,
        max_concurrency,
        crew_timeout_s,
        rerun_of,
    )
    return spec, parsed.notes


def _llm(variant: Variant, base: LLMSettings) -> LLMSettings:
    """The variant's model settings; the provider's default model when none is named, and the
    base settings' timeouts and retry budget."""
    try:
        return replace(
            base,
            provider=variant.provider,
            model=variant.model_name,
            temperature=variant.temperature,
            base_url=base.base_url if variant.provider == base.provider else None,
            api_key=base.api_key if variant.provider == base.provider else None,
        )
    except SettingsError as exc:
        raise ExperimentError(f"variant {variant.name!r}: {exc}") from None


def check_spec(
    spec: ExperimentSpec,
    base: LLMSettings,
    load: Callable[[str], BaseBlueprint] = load_blueprint,
) -> list[CrewPlan]:
    """Every check before anything starts; the crews to run, topic-major. Raises
    `ExperimentError` naming the variant at fault."""
    count = len(spec.variants)
    least = 1 if spec.rerun_of else MIN_VARIANTS
    if not least <= count <= MAX_VARIANTS:
        raise ExperimentError(
            f"an experiment compares {MIN_VARIANTS} to {MAX_VARIANTS} variants; got {count}"
        )
    if not spec.topics:
        raise ExperimentError("an experiment needs at least one topic")
    if len(spec.topics) * count > MAX_TOPICS * MAX_VARIANTS:
        raise ExperimentError("too many cells: use fewer topics or variants")
    names: set[str] = set()
    choices: dict[tuple[Any, ...], str] = {}
    check_storable(spec.rubric, "the rubric")
    for v in spec.variants:
        for what, text in (("name", v.name), ("model", v.model), ("blueprint", v.blueprint)):
            check_storable(text, f"a variant's {what}")
        check_storable_map(v.inputs, f"variant {v.name!r}: input")
        if not _NAME.match(v.name):
            raise ExperimentError(
                f"variant name {v.name!r}: use 1 to 40 letters, digits, spaces, '.', '-' or '_'"
            )
        if v.name in names:
            raise ExperimentError(f"two variants are named {v.name!r}; names must differ")
        names.add(v.name)
        if v.provider not in PROVIDERS:
            raise ExperimentError(
                f"variant {v.name!r}: unknown provider {v.provider!r}; use one of "
                f"{', '.join(PROVIDERS)}"
            )
        if v.provider == "demo" and v.model_name not in DEMO_MODELS:
            raise ExperimentError(
                f"variant {v.name!r}: the demo provider has no model {v.model_name!r}; use one "
                f"of {', '.join(DEMO_MODELS)}"
            )
        if v.provider in KEY_VARIABLES and not _llm(v, base).with_environment_key().api_key:
            keys = " or ".join(KEY_VARIABLES[v.provider])
            raise ExperimentError(f"variant {v.name!r}: {v.provider} needs an API key ({keys})")
        if v.temperature is not None and not 0.0 <= v.temperature <= 2.0:
            raise ExperimentError(f"variant {v.name!r}: temperature must be between 0 and 2")
        if v.choice in choices:
            raise ExperimentError(
                f"variants {choices[v.choice]!r} and {v.name!r} are identical "
                f"({v.describe()}); change one of them"
            )
        choices[v.choice] = v.name
    if spec.rubric is not None and len(spec.rubric) > MAX_RUBRIC_CHARS:
        raise ExperimentError(f"the rubric is longer than {MAX_RUBRIC_CHARS} characters")
    if spec.rubric is not None:
        try:
            load(JUDGE_BLUEPRINT)
        except CrewdashError as exc:
            raise ExperimentError(f"the judge blueprint cannot be used: {exc}") from None
    settings = {
        v.name: RunSettings(
            llm=_llm(v, base),
            max_concurrency=spec.max_concurrency or RunSettings().max_concurrency,
            crew_timeout_s=spec.crew_timeout_s,
            response_cache=spec.cache,
        )
        for v in spec.variants
    }
    blueprints: dict[str, BaseBlueprint] = {}
    for v in spec.variants:
        try:
            blueprints[v.name] = load(v.blueprint)
            blueprints[v.name].inputs_for(spec.topics[0], v.inputs)
        except CrewdashError as exc:
            raise ExperimentError(f"variant {v.name!r}: {exc}") from None
    return [
        CrewPlan(t, bp, settings[v.name], bp.inputs_for(t, v.inputs))
        for t in spec.topics
        for v in spec.variants
        for bp in (blueprints[v.name],)
    ]


# --- the grid ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One topic through one variant, with the figures the grid shows."""

    index: int
    topic: str
    variant: str
    run_id: str
    state: str
    latency_s: float | None
    tokens: int
    cost_usd: float | None
    score: int | None
    reason: str | None
    judge: str  # "off", "waiting", "judging", "scored" or "failed"
    judge_error: str | None
    mark: str | None
    note: str | None
    answer: str | None
    error: str | None
    cache_hits: int
    saved_usd: float | None


@dataclass(frozen=True)
class VariantSummary:
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


@dataclass(frozen=True)
class Grid:
    experiment_id: str
    created_at: float
    spec: ExperimentSpec
    cells: tuple[Cell, ...]
    variants: tuple[VariantSummary, ...]
    done: bool
    wall_s: float

    def cell(self, topic_index: int, variant_index: int) -> Cell:
        return self.cells[topic_index * len(self.spec.variants) + variant_index]

    @property
    def cache_hits(self) -> int:
        return sum(v.cache_hits for v in self.variants)

    @property
    def saved_usd(self) -> float:
        return sum(v.saved_usd or 0.0 for v in self.variants)


def _round(value: float | None, places: int) -> float | None:
    """Figures are rounded once, here, so the page, the exports, the API and the CLI agree to
    the last digit they show."""
    return None if value is None else round(value, places)


def p95(values: Sequence[float]) -> float | None:
    """The nearest-rank 95th percentile (the value 95 % of cells are at or under)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def _cell(
    index: int,
    crew: CrewSnapshot,
    variant: Variant,
    notes: CellNotes,
    judging: bool,
    judged: bool,
    live: bool,
) -> Cell:
    final = crew.state.final
    cached = TokenUsage()
    hits = 0
    for span in crew.spans:
        if span.kind == "cache":
            hits += 1
            cached = cached + span.tokens
    if not judged:
        judge = "off"
    elif notes.score is not None:
        judge = "scored"
    elif notes.judge_error is not None:
        judge = "failed"
    elif judging:
        judge = "judging"
    elif live and (not final or crew.state is CrewState.SUCCEEDED):
        judge = "waiting"
    else:
        judge = "off"  # the crew failed, or the judge ended before it (a restart)
    return Cell(
        index=index,
        topic=crew.topic,
        variant=variant.name,
        run_id=crew.run_id,
        state=crew.state.value,
        latency_s=_round(crew.duration if final else None, 3),
        tokens=crew.tokens.total,
        cost_usd=_round(cost(variant.model_name, crew.tokens), 8),
        score=notes.score,
        reason=notes.reason,
        judge=judge,
        judge_error=notes.judge_error,
        mark=notes.mark,
        note=notes.note,
        answer=crew.result,
        error=crew.error,
        cache_hits=hits,
        saved_usd=_round(cost(variant.model_name, cached), 8) if hits else 0.0,
    )


def _summary(variant: Variant, cells: Sequence[Cell]) -> VariantSummary:
    ok = [c for c in cells if c.state == CrewState.SUCCEEDED.value]
    latencies = [c.latency_s for c in ok if c.latency_s is not None]
    scores = [c.score for c in cells if c.score is not None]
    costs = [c.cost_usd for c in cells]
    saved = [c.saved_usd for c in cells]
    return VariantSummary(
        name=variant.name,
        provider=variant.provider,
        model=variant.model_name,
        blueprint=variant.blueprint,
        temperature=variant.temperature,
        cells=len(cells),
        succeeded=len(ok),
        success_rate=round(len(ok) / len(cells), 4) if cells else 0.0,
        median_latency_s=_round(statistics.median(latencies) if latencies else None, 3),
        p95_latency_s=p95(latencies),
        tokens=sum(c.tokens for c in cells),
        cost_usd=None if any(c is None for c in costs) else _round(sum(c or 0.0 for c in costs), 8),
        mean_score=_round(statistics.fmean(scores) if scores else None, 2),
        scored=len(scores),
        cache_hits=sum(c.cache_hits for c in cells),
        saved_usd=None
        if any(s is None for s in saved)
        else _round(sum(s or 0.0 for s in saved), 8),
    )


def build_grid(
    experiment_id: str,
    spec: ExperimentSpec,
    snap: BatchSnapshot,
    notes: Mapping[int, CellNotes],
    judging: frozenset[int] = frozenset(),
    *,
    live: bool = False,
) -> Grid:
    """The grid of one experiment from its batch's snapshot and its cells' notes; `live` while
    its judge may still score answers."""
    cells = tuple(
        _cell(
            crew.index,
            crew,
            spec.cell_of(crew.index)[1],
            notes.get(crew.index, CellNotes()),
            crew.index in judging,
            spec.rubric is not None,
            live,
        )
        for crew in snap.crews
    )
    summaries = tuple(_summary(v, [c for c in cells if c.variant == v.name]) for v in spec.variants)
    done = snap.done and all(c.judge not in ("waiting", "judging") for c in cells)
    return Grid(experiment_id, snap.created_at, spec, cells, summaries, done, snap.wall_s)


def parse_verdict(text: str | None) -> tuple[int | None, str | None, str | None]:
    """(score, reason, error) from a judge's answer: the first `SCORE: n` (1-10) and
    `REASON: ...` lines; no usable score is an error naming what came back."""
    text = text or ""
    reason_match = _REASON.search(text)
    reason = reason_match.group(1).strip()[:300] if reason_match else None
    match = _SCORE.search(text)
    if match is None:
        gist = " ".join(text.split())[:80] or "nothing"
        return None, reason, f"the judge gave no score (it said: {gist})"
    score = int(match.group(1))
    if not 1 <= score <= 10:
        return None, reason, f"the judge's score {score} is not between 1 and 10"
    return score, reason or "(no reason given)", None
