"""The experiment service: starts experiments on the runner as one batch, judges each answer as
it lands (on the runner's loop, beside the crews), and reads grids live or from the store."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

from crewdash.base.errors import (
    UnknownBatchError,
    describe_error,
)
from crewdash.blueprints.base import BaseBlueprint
from crewdash.blueprints.catalog import load_blueprint
from crewdash.engine.execution import CrewJob, blueprint_builder, run_crew
from crewdash.engine.runner import Runner
from crewdash.experiments.spec import (
    JUDGE_BLUEPRINT,
    ExperimentError,
    ExperimentSpec,
    Grid,
    build_grid,
    check_spec,
    parse_verdict,
)
from crewdash.experiments.store import CellNotes, ExperimentStore
from crewdash.model.batch import Batch, CrewSnapshot, CrewState
from crewdash.model.people import Person
from crewdash.model.storable import check_storable
from crewdash.providers.llm import LLMSettings, build_llm
from crewdash.providers.preflight import PreflightError, preflight
from crewdash.store.history import Store

log = logging.getLogger(__name__)


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

    def start(
        self,
        spec: ExperimentSpec,
        base: LLMSettings,
        *,
        source: str = "page",
        idempotency_key: str | None = None,
        fingerprint: str = "",
        by: Person | None = None,
    ) -> str:
        """Check everything, then start every cell at once; the experiment's id (its batch's).
        A repeat of an `idempotency_key` starts nothing and returns the experiment it started.
        `by`: who starts it (recorded on its batch)."""
        if idempotency_key is not None:
            return self.runner.keys.once(
                f"experiment:{idempotency_key}",
                fingerprint,
                lambda: self.start(spec, base, source=source, by=by),
            )
        plans = check_spec(spec, base, self._load)
        judge = self._load(JUDGE_BLUEPRINT) if spec.rubric is not None else None
        for variant, plan in zip(spec.variants, plans, strict=False):  # the first topic's row
            try:  # a variant that cannot run starts nothing
                preflight([plan.settings.llm])
            except PreflightError as exc:
                raise ExperimentError(f"variant {variant.name!r}: {exc}") from None
        if judge is not None:
            preflight([self.judge_llm])
        names = ", ".join(v.name for v in spec.variants)
        batch_id = self.runner.submit_plans(
            plans,
            plans[0].settings,
            source=source,
            label="experiment",
            model_label=f"experiment: {names}",
            model="",  # one batch, many models: its costs are per variant, in the grid
            notes=(f"experiment of {len(spec.variants)} variants: {names}",),
            by=by,
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
        self,
        experiment_id: str,
        base: LLMSettings,
        variant: str | None = None,
        cache: bool = True,
        by: Person | None = None,
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
        return self.start(again, base, source="rerun", by=by)

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
        note = check_storable((note or "").strip()[:2000] or None, "the note")
        if self.store is None:
            raise ExperimentError("marks need the history database")
        self.store.save_cell(experiment_id, index, mark=mark, note=note)

    def judging(self, experiment_id: str) -> bool:
        """Whether this process's judge is still scoring the experiment's answers."""
        with self._lock:
            live = self._live.get(experiment_id)
            return live is not None and not live.judge_done

    def forget(self, experiment_id: str) -> None:
        """Drop a deleted experiment from memory (its rows went with its batch)."""
        with self._lock:
            self._live.pop(experiment_id, None)

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
        tasks: list[asyncio.Task[None]] = []
        try:
            batch = self.runner.batch(batch_id)
            # judges run beside the crews, at most as many at once as the batch's crews may
            room = asyncio.Semaphore(batch.snapshot().max_concurrency)
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
