"""Resume, not restart: an interrupted batch's crews continue from their last checkpoint.

A crew cut off by a crash, a deploy or a SIGTERM is `interrupted`; resuming runs it again under
the same batch and run id, with the same inputs and model settings, from its last checkpoint
(`checkpoints.py`): the tasks it had finished are kept (marked restored) and not paid again. A
crew whose checkpoint is unreadable, or whose blueprint's files changed since, is never resumed
silently: it is offered a re-run from the start, with the reason, and runs so only when asked.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from crewdash.base.errors import (
    BatchElsewhereError,
    BlueprintError,
    CrewdashError,
    UnknownBatchError,
)
from crewdash.blueprints.base import BaseBlueprint
from crewdash.blueprints.catalog import load_blueprint
from crewdash.engine.checkpoints import CheckpointError, Restore, blueprint_version, load
from crewdash.engine.plans import RunSettings
from crewdash.engine.runner import Runner
from crewdash.model.batch import Batch, BatchSnapshot, CrewSnapshot, CrewState, TokenUsage
from crewdash.store.history import Store


class Parts(Protocol):
    """What resuming needs of the composition root (a `Runtime` is one): its runner, its store
    and its default run settings, for batches whose stored settings cannot be read."""

    @property
    def runner(self) -> Runner: ...

    @property
    def store(self) -> Store | None: ...

    @property
    def default_settings(self) -> RunSettings: ...


log = logging.getLogger(__name__)
FLOW_KINDS = ("flow", "flow_yaml")


class ResumeError(CrewdashError):
    """A batch that cannot be resumed as asked (nothing interrupted, a crew not interrupted)."""


@dataclass(frozen=True)
class CrewResume:
    """How one interrupted crew would continue."""

    run_id: str
    topic: str
    restore: Restore | None = None  # None: from the start (it had finished nothing)
    problem: str | None = None  # why it cannot continue: offered a re-run from the start

    @property
    def restored_steps(self) -> int:
        return self.restore.steps if self.restore is not None else 0


@dataclass(frozen=True)
class ResumeOutcome:
    """What a resume started, and what it offers to re-run from the start instead."""

    batch_id: str
    resumed: tuple[CrewResume, ...] = ()
    offers: tuple[CrewResume, ...] = ()

    @property
    def restored_tasks(self) -> int:
        return sum(len(p.restore.tasks) for p in self.resumed if p.restore is not None)

    def describe(self) -> str:
        """One line for people: what continues, and what waits for a decision."""
        parts = []
        if self.resumed:
            parts.append(
                f"{len(self.resumed)} crews resumed, {self.restored_tasks} finished tasks kept"
            )
        if self.offers:
            parts.append(
                f"{len(self.offers)} offered a re-run from the start: "
                + "; ".join(f"{p.run_id}: {p.problem}" for p in self.offers)
            )
        return f"batch {self.batch_id}: " + (", ".join(parts) or "nothing to resume")


def interrupted(snap: BatchSnapshot) -> list[CrewSnapshot]:
    return [c for c in snap.crews if c.state is CrewState.INTERRUPTED]


def plan(
    store: Store, snap: BatchSnapshot, run_ids: Sequence[str] | None = None
) -> list[CrewResume]:
    """How each interrupted crew (of `run_ids`, or all) would continue, without starting any.
    Raises `ResumeError` for a crew named that is not interrupted."""
    crews = interrupted(snap)
    if run_ids is not None:
        known = {c.run_id: c for c in snap.crews}
        for run_id in run_ids:
            if run_id not in known:
                raise ResumeError(f"batch {snap.batch_id} has no crew {run_id!r}")
            if known[run_id].state is not CrewState.INTERRUPTED:
                raise ResumeError(
                    f"crew {run_id} is {known[run_id].state.value}, not interrupted: "
                    "only interrupted crews resume"
                )
        crews = [c for c in crews if c.run_id in set(run_ids)]
    record = store.resume_record(snap.batch_id)
    common: str | None = None
    if record is None:
        common = (
            "crewdash kept no run settings for this batch (it ran before resume existed, "
            "or is an experiment's, whose crews differ)"
        )
    else:
        try:
            current = blueprint_version(load_blueprint(snap.blueprint))
        except BlueprintError as exc:
            common = f"its blueprint cannot be loaded now: {exc}"
        else:
            if current != record.version:
                common = f"the blueprint {snap.blueprint!r} changed since this batch ran"
    plans = []
    for crew in crews:
        if common is not None:
            plans.append(CrewResume(crew.run_id, crew.topic, problem=common))
            continue
        try:
            saved = load(store, crew.run_id, snap.kind)
        except CheckpointError as exc:
            plans.append(CrewResume(crew.run_id, crew.topic, problem=str(exc)))
            continue
        # a crew that recorded finished tasks but has no checkpoint (stopped before, or while,
        # it was written); a Flow's tasks are its steps' crews', checkpointed with the step
        if saved is None and crew.tasks and snap.kind not in FLOW_KINDS:
            done = len(crew.tasks)
            problem = f"its checkpoint is missing: no checkpoint holds its {done} finished tasks"
            plans.append(CrewResume(crew.run_id, crew.topic, problem=problem))
            continue
        plans.append(CrewResume(crew.run_id, crew.topic, restore=saved))
    return plans


def _settings(store: Store, batch_id: str, fallback: RunSettings) -> RunSettings:
    """The batch's own run settings (its model, limits, budget); the key comes from the
    environment."""
    record = store.resume_record(batch_id)
    if record is None:
        return fallback
    return RunSettings.from_dict(json.loads(record.settings))


def _again(crew: CrewSnapshot, saved: Restore | None) -> CrewSnapshot:
    """An interrupted crew queued to run again, holding what its checkpoint kept."""
    return replace(
        crew,
        state=CrewState.QUEUED,
        queued_at=time.time(),
        started_at=None,
        finished_at=None,
        result=None,
        error=None,
        step="resuming" if saved else "waiting for a slot",
        spans=saved.spans if saved else (),
        tokens=saved.tokens if saved else TokenUsage(),
        tasks=saved.tasks if saved else (),
        files=(),
    )


def resume(
    runtime: Parts,
    batch_id: str,
    run_ids: Sequence[str] | None = None,
    from_start: Sequence[str] = (),
) -> ResumeOutcome:
    """Resume a batch's interrupted crews (or those of `run_ids`) from their checkpoints.

    Crews that cannot continue are offered a re-run from the start, unless named in
    `from_start`: those run from the start now. Raises `ResumeError` when nothing is
    interrupted, `BatchElsewhereError` while another server still runs the batch.
    """
    store = runtime.store
    if store is None:
        raise ResumeError("resuming needs the history database")
    try:
        live = runtime.runner.batch(batch_id)
    except UnknownBatchError:
        live = None
    if live is not None and not live.snapshot().done:
        raise ResumeError(f"batch {batch_id} is still running here")
    snap = store.load(batch_id)
    if snap is None:
        raise UnknownBatchError(batch_id)
    if not interrupted(snap):
        if not snap.done:  # its server runs it, or died less than a lease ago
            raise BatchElsewhereError(
                f"batch {batch_id} still runs on another server, or that server stopped less "
                "than its lease ago; its unfinished crews can resume once they are interrupted"
            )
        raise ResumeError(f"batch {batch_id} has no interrupted crews")
    crews = {c.run_id: c for c in snap.crews}
    for run_id in from_start:  # named to re-run from the start: a crew of this batch, stopped
        if run_id not in crews:
            raise ResumeError(f"from_start: batch {batch_id} has no crew {run_id!r}")
        if crews[run_id].state is not CrewState.INTERRUPTED:
            raise ResumeError(
                f"from_start: crew {run_id} is {crews[run_id].state.value}, not interrupted: "
                "only interrupted crews run again"
            )
    plans = plan(store, snap, run_ids)
    chosen = set(from_start)
    go = [replace(p, problem=None) if p.run_id in chosen else p for p in plans]
    go, offers = [p for p in go if p.problem is None], [p for p in go if p.problem is not None]
    outcome = ResumeOutcome(batch_id, tuple(go), tuple(offers))
    if not go:
        return outcome
    blueprint: BaseBlueprint = load_blueprint(snap.blueprint)
    settings = _settings(store, batch_id, runtime.default_settings)
    store.claim_crews(batch_id, [p.run_id for p in go])
    again = {p.run_id: _again(snap.crews[_index(snap, p.run_id)], p.restore) for p in go}
    batch = Batch.reopen(snap, again)
    runtime.runner.resume(batch, blueprint, settings, {p.run_id: p.restore for p in go})
    log.warning("resumed %s", outcome.describe())
    return outcome


def _index(snap: BatchSnapshot, run_id: str) -> int:
    return next(i for i, c in enumerate(snap.crews) if c.run_id == run_id)


def auto_resume(runtime: Parts) -> list[ResumeOutcome]:
    """`CREWDASH_AUTO_RESUME=1`: resume, once, the interrupted crews of batches whose owner is
    gone. Each batch is claimed by one conditional update, so of several servers starting
    together exactly one resumes it."""
    store = runtime.store
    if store is None:
        return []
    outcomes = []
    for batch_id in store.interrupted_batches_to_resume():
        if not store.claim_auto_resume(batch_id):
            continue
        try:
            outcome = resume(runtime, batch_id)
        except CrewdashError as exc:
            log.warning("automatic resume of batch %s: %s", batch_id, exc)
            continue
        log.warning("automatic resume on start: %s", outcome.describe())
        outcomes.append(outcome)
    return outcomes
