"""Experiments: the same topics through 2 to 6 variants (provider, model, temperature, blueprint,
inputs) at once, as one batch, with a grid of figures and optional judge scores.

An experiment is one ordinary batch whose crews each carry a (topic, variant): cell `i` is topic
`i // len(variants)` through variant `i % len(variants)`. The runner runs it under the usual
admission, limits, retries, timeouts and cancellation, and the store keeps it like any batch; the
experiment's spec and each cell's score and mark sit beside it (`experiment_store`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import statistics
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

from crewdash.batch import Batch, BatchSnapshot, CrewSnapshot, CrewState, TokenUsage
from crewdash.blueprints import BaseBlueprint, load_blueprint
from crewdash.config import DEFAULT_BLUEPRINT, MAX_TOPICS
from crewdash.demo_models import DEMO_MODELS
from crewdash.errors import (
    CrewdashError,
    ExportFormatError,
    SettingsError,
    UnknownBatchError,
    describe_error,
)
from crewdash.execution import CrewJob, blueprint_builder, run_crew
from crewdash.experiment_store import CellNotes, ExperimentStore
from crewdash.exports import csv_text
from crewdash.llm import DEFAULT_MODELS, KEY_VARIABLES, PROVIDERS, LLMSettings, build_llm
from crewdash.pricing import cost
from crewdash.runner import CrewPlan, Runner, RunSettings
from crewdash.store import Store
from crewdash.topics import parse_topics

log = logging.getLogger(__name__)

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
    for v in spec.variants:
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


# --- exports -----------------------------------------------------------------------------------


def _num(value: float | None, places: int) -> str:
    return "" if value is None else f"{value:.{places}f}"


def grid_csv(grid: Grid) -> str:
    """A row per cell, then a row per variant's summary (`row` says which)."""
    header = [
        "row",
        "topic",
        "variant",
        "state",
        "latency_s",
        "tokens",
        "cost_usd",
        "score",
        "reason",
        "mark",
        "note",
        "cache_hits",
    ]
    rows: list[list[Any]] = [header]
    for c in grid.cells:
        rows.append(
            [
                "cell",
                c.topic,
                c.variant,
                c.state,
                _num(c.latency_s, 3),
                c.tokens,
                _num(c.cost_usd, 6),
                c.score,
                c.reason or c.judge_error,
                c.mark,
                c.note,
                c.cache_hits,
            ]
        )
    rows.append(
        [
            "row",
            "variant",
            "success_rate",
            "median_latency_s",
            "p95_latency_s",
            "tokens",
            "cost_usd",
            "mean_score",
            "cache_hits",
        ]
    )
    for v in grid.variants:
        rows.append(
            [
                "summary",
                v.name,
                _num(v.success_rate, 3),
                _num(v.median_latency_s, 3),
                _num(v.p95_latency_s, 3),
                v.tokens,
                _num(v.cost_usd, 6),
                _num(v.mean_score, 2),
                v.cache_hits,
            ]
        )
    return csv_text(rows)


def _md(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def cell_text(c: Cell) -> str:
    """One cell in a line, as the grid shows it."""
    parts = [c.state]
    if c.latency_s is not None:
        parts.append(f"{c.latency_s:.2f} s")
    parts.append(f"{c.tokens} tok")
    if c.cost_usd is not None:
        parts.append(f"${c.cost_usd:.6f}")
    if c.score is not None:
        parts.append(f"score {c.score}")
    elif c.judge == "failed":
        parts.append("judge failed")
    if c.cache_hits:
        parts.append(f"{c.cache_hits} cached")
    if c.mark:
        parts.append(c.mark)
    return " · ".join(parts)


def grid_markdown(grid: Grid) -> str:
    spec = grid.spec
    lines = [
        f"# Experiment {grid.experiment_id}",
        "",
        f"{len(spec.topics)} topics × {len(spec.variants)} variants"
        + (f"; judged against: {_md(spec.rubric)}" if spec.rubric else "")
        + ("; response cache on" if spec.cache else ""),
        "",
        "| topic | " + " | ".join(_md(v.name) for v in spec.variants) + " |",
        "| --- |" + " --- |" * len(spec.variants),
    ]
    for t, topic in enumerate(spec.topics):
        row = [cell_text(grid.cell(t, v)) for v in range(len(spec.variants))]
        lines.append(f"| {_md(topic)} | " + " | ".join(row) + " |")
    lines += [
        "",
        "## Summary",
        "",
        "| variant | model | success | median s | p95 s | tokens | cost $ | mean score |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for v in grid.variants:
        lines.append(
            f"| {_md(v.name)} | {_md(v.provider + '/' + v.model)} | {v.success_rate:.0%} | "
            f"{_num(v.median_latency_s, 2)} | {_num(v.p95_latency_s, 2)} | {v.tokens} | "
            f"{_num(v.cost_usd, 6)} | {_num(v.mean_score, 2)} |"
        )
    lines += ["", "## Answers", ""]
    for c in grid.cells:
        lines += [f"### {_md(c.topic)} — {_md(c.variant)}", "", c.answer or c.error or "", ""]
    return "\n".join(lines)


def export_grid(grid: Grid, fmt: str) -> str:
    if fmt == "csv":
        return grid_csv(grid)
    if fmt in ("md", "markdown"):
        return grid_markdown(grid)
    raise ExportFormatError(f"unknown export format {fmt!r}; use csv or md")


# --- the service -------------------------------------------------------------------------------


@dataclass
class _Live:
    """An experiment this process runs: its judge's progress, guarded by the service's lock."""

    spec: ExperimentSpec
    notes: dict[int, CellNotes] = field(default_factory=dict)
    judging: set[int] = field(default_factory=set)
    judged: set[int] = field(default_factory=set)
    judge_done: bool = False


class Experiments:
    """Starts experiments on the runner, judges their answers, and reads their grids (live
    from this process, else from the history database). Thread-safe."""

    def __init__(
        self,
        runner: Runner,
        store: Store | None,
        judge_llm: LLMSettings,
        demo_base_url: Callable[[], str] | None = None,
        load: Callable[[str], BaseBlueprint] = load_blueprint,
    ) -> None:
        self.runner = runner
        self.store = ExperimentStore(store) if store is not None else None
        self._batches = store
        self.judge_llm = judge_llm
        self._demo_base_url = demo_base_url
        self._load = load
        self._lock = threading.Lock()
        self._live: dict[str, _Live] = {}

    def start(self, spec: ExperimentSpec, base: LLMSettings, *, source: str = "page") -> str:
        """Check everything, then start every cell at once; the experiment's id (its batch's)."""
        plans = check_spec(spec, base, self._load)
        judge = self._load(JUDGE_BLUEPRINT) if spec.rubric is not None else None
        names = ", ".join(v.name for v in spec.variants)
        batch_id = self.runner.submit_plans(
            plans,
            plans[0].settings,
            source=source,
            label="experiment",
            model_label=f"experiment: {names}",
            notes=(f"experiment of {len(spec.variants)} variants: {names}",),
        )
        live = _Live(spec)
        with self._lock:
            self._live[batch_id] = live
            known = set(self.runner.batch_ids())  # forget what the runner forgot (the store has it)
            for old in [i for i in self._live if i not in known]:
                del self._live[old]
        if self.store is not None:
            snap = self.runner.snapshot(batch_id)
            try:
                self.store.save_spec(batch_id, snap.created_at, spec.to_dict())
            except Exception as exc:  # noqa: BLE001 - the run goes on; the grid is live here
                log.error("could not save the experiment's spec: %s", describe_error(exc))
        if judge is not None:
            judging = self._judge_all(batch_id, live, judge)
            asyncio.run_coroutine_threadsafe(judging, self.runner.loop)
        else:
            live.judge_done = True
        return batch_id

    def rerun(
        self, experiment_id: str, base: LLMSettings, variant: str | None = None, cache: bool = True
    ) -> str:
        """Run an experiment again (all variants, or the one named), by default with the cache
        on, so only what changed reaches the model."""
        spec = self.spec(experiment_id)
        variants = spec.variants
        if variant is not None:
            variants = tuple(v for v in spec.variants if v.name == variant)
            if not variants:
                raise ExperimentError(f"experiment {experiment_id} has no variant {variant!r}")
        again = replace(spec, variants=variants, cache=cache, rerun_of=experiment_id)
        return self.start(again, base, source="rerun")

    def spec(self, experiment_id: str) -> ExperimentSpec:
        with self._lock:
            live = self._live.get(experiment_id)
        if live is not None:
            return live.spec
        saved = self.store.spec(experiment_id) if self.store is not None else None
        if saved is None:
            raise UnknownBatchError(experiment_id)
        return ExperimentSpec.from_dict(saved)

    def grid(self, experiment_id: str) -> Grid:
        """The experiment's grid now (live while this process runs it)."""
        with self._lock:
            live = self._live.get(experiment_id)
            notes = dict(live.notes) if live else None
            judging = frozenset(live.judging) if live else frozenset()
        if live is not None:
            snap = self.runner.snapshot(experiment_id)
            saved = self._saved_notes(experiment_id)  # the analyst's marks
            merged = {
                i: replace(
                    (notes or {}).get(i, CellNotes()),
                    mark=saved.get(i, CellNotes()).mark,
                    note=saved.get(i, CellNotes()).note,
                )
                for i in {*(notes or {}), *saved}
            }
            return build_grid(
                experiment_id, live.spec, snap, merged, judging, live=not live.judge_done
            )
        spec = self.spec(experiment_id)
        saved_snap = self._batches.load(experiment_id) if self._batches is not None else None
        if saved_snap is None:
            raise UnknownBatchError(experiment_id)
        return build_grid(experiment_id, spec, saved_snap, self._saved_notes(experiment_id))

    def _saved_notes(self, experiment_id: str) -> dict[int, CellNotes]:
        if self.store is None:
            return {}
        try:
            return self.store.cells(experiment_id)
        except Exception as exc:  # noqa: BLE001 - the grid shows without them
            log.warning("could not read the experiment's notes: %s", describe_error(exc))
            return {}

    def mark(self, experiment_id: str, index: int, mark: str | None, note: str | None) -> None:
        """The analyst's verdict on one cell: good, bad or none, and a note (stored)."""
        spec = self.spec(experiment_id)
        if not 0 <= index < len(spec.topics) * len(spec.variants):
            raise ExperimentError(f"experiment {experiment_id} has no cell {index}")
        if mark not in (None, "good", "bad"):
            raise ExperimentError("a mark is 'good', 'bad' or empty")
        note = (note or "").strip()[:2000] or None
        if self.store is None:
            raise ExperimentError("marks need the history database")
        self.store.save_cell(experiment_id, index, mark=mark, note=note)

    def list(self, limit: int = 200) -> list[tuple[str, float, ExperimentSpec]]:
        if self.store is None:
            return []
        return [(i, at, ExperimentSpec.from_dict(s)) for i, at, s in self.store.list_ids(limit)]

    def wait(self, experiment_id: str, timeout: float = 600.0) -> Grid:
        """Block until every cell and every judge is done (CLI and tests, never pages)."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            grid = self.grid(experiment_id)
            if grid.done or time.monotonic() > deadline:
                return grid
            time.sleep(0.1)

    # --- the judge, on the runner's loop ------------------------------------------------------

    async def _judge_all(self, batch_id: str, live: _Live, judge: BaseBlueprint) -> None:
        """Judge each answer as soon as it exists, concurrently with the crews still running."""
        batch = self.runner.batch(batch_id)
        tasks: list[asyncio.Task[None]] = []
        # judges run beside the crews, at most as many at once as the batch's crews may
        room = asyncio.Semaphore(batch.snapshot().max_concurrency)
        try:
            while True:
                snap = batch.snapshot()
                for crew in snap.crews:
                    if crew.state is CrewState.SUCCEEDED and crew.index not in live.judged:
                        with self._lock:
                            live.judged.add(crew.index)
                            live.judging.add(crew.index)
                        judging = self._judge_one(batch_id, live, judge, crew, room)
                        task = asyncio.create_task(judging)
                        tasks.append(task)
                if snap.done:
                    break
                await asyncio.sleep(0.1)
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for task in tasks:
                task.cancel()
            live.judge_done = True

    async def _judge_one(
        self,
        batch_id: str,
        live: _Live,
        judge: BaseBlueprint,
        crew: CrewSnapshot,
        room: asyncio.Semaphore,
    ) -> None:
        spec = live.spec
        try:
            async with room:
                score, reason, error = await self._verdict(spec, judge, crew)
        except asyncio.CancelledError:
            score, reason, error = None, None, "the judge was stopped"
            raise
        except Exception as exc:  # noqa: BLE001 - this cell alone is marked
            score, reason, error = None, None, f"the judge failed: {describe_error(exc)}"
        finally:
            notes = CellNotes(score=score, reason=reason, judge_error=error)
            if self.store is not None:
                try:
                    await asyncio.to_thread(
                        self.store.save_cell,
                        batch_id,
                        crew.index,
                        score=score,
                        reason=reason,
                        judge_error=error,
                    )
                except Exception as exc:  # noqa: BLE001 - kept in memory
                    log.error("could not save a judge's score: %s", describe_error(exc))
            with self._lock:
                live.notes[crew.index] = notes
                live.judging.discard(crew.index)

    async def _verdict(
        self, spec: ExperimentSpec, judge: BaseBlueprint, crew: CrewSnapshot
    ) -> tuple[int | None, str | None, str | None]:
        llm = self.judge_llm.with_environment_key()
        demo_url = self._demo_base_url() if llm.is_demo and self._demo_base_url else None
        values = {"rubric": spec.rubric or "", "answer": crew.result or "", "topic": crew.topic}
        inputs = judge.inputs_for(crew.topic, values, "topic")
        batch = Batch(
            f"judge-{crew.run_id}", JUDGE_BLUEPRINT, [crew.topic], model_label="", max_concurrency=1
        )
        job = CrewJob(
            batch.run_ids[0],
            crew.topic,
            blueprint_builder(judge, llm, demo_url),
            inputs,
            llm,
            spec.crew_timeout_s,
            default_llm=partial(build_llm, llm, demo_url),
            cache=spec.cache,
        )
        ended = await run_crew(batch, job)
        if ended.state is not CrewState.SUCCEEDED:
            return None, None, f"the judge failed: {ended.error or ended.state.value}"
        return parse_verdict(ended.result)
