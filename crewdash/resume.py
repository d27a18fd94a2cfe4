"""Resume, not restart: an interrupted batch's crews continue from their last checkpoint.

A crew cut off by a crash, a deploy or a SIGTERM is `interrupted`; resuming runs it again under
the same batch and run id, with the same inputs and model settings, from its last checkpoint
(`checkpoints.py`): the tasks it had finished are kept (marked restored) and not paid again. A
crew whose checkpoint is unreadable, or whose blueprint's files changed since, is never resumed
silently: it is offered a re-run from the start, with the reason, and runs so only when asked.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from crewdash.batch import Batch, BatchSnapshot, CrewSnapshot, CrewState, TokenUsage
from crewdash.blueprints import BaseBlueprint, load_blueprint
from crewdash.checkpoints import (
    CheckpointError,
    Restore,
    ResumeBatchRow,
    blueprint_version,
    load,
)
from crewdash.errors import BatchElsewhereError, BlueprintError, CrewdashError, UnknownBatchError
from crewdash.llm import LLMSettings
from crewdash.runner import RunSettings
from crewdash.store import OPEN_STATES, BatchRow, CrewRow, OwnerRow, Store

if TYPE_CHECKING:
    from crewdash.runtime import Runtime

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
                raise UnknownBatchError(f"{snap.batch_id}/{run_id}")
            if known[run_id].state is not CrewState.INTERRUPTED:
                raise ResumeError(
                    f"crew {run_id} is {known[run_id].state.value}, not interrupted: "
                    "only interrupted crews resume"
                )
        crews = [c for c in crews if c.run_id in set(run_ids)]
    with Session(store.engine) as session:
        record = session.get(ResumeBatchRow, snap.batch_id)
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
    """The batch's own run settings (its model, limits); the key comes from the environment."""
    with Session(store.engine) as session:
        record = session.get(ResumeBatchRow, batch_id)
    if record is None:
        return fallback
    data = json.loads(record.settings)
    return RunSettings(
        llm=LLMSettings(**data["llm"]),
        max_concurrency=data["max_concurrency"],
        crew_timeout_s=data["crew_timeout_s"],
        response_cache=data.get("response_cache", False),
    )


def _claim(store: Store, batch_id: str, run_ids: Sequence[str]) -> None:
    """Make this server the batch's owner and its crews queued again, in one transaction; a
    batch another live server still runs (or resumed first) is refused."""
    store.beat()  # this owner's row exists before the batch points at it
    with Session(store.engine) as session, session.begin():
        batch = session.get(BatchRow, batch_id)
        if batch is None:
            raise UnknownBatchError(batch_id)
        still_open = session.scalar(
            select(func.count())
            .select_from(CrewRow)
            .where(CrewRow.batch_id == batch_id, CrewRow.state.in_(OPEN_STATES))
        )
        if still_open:
            owner = session.get(OwnerRow, batch.owner)
            where = f"host {owner.host}, pid {owner.pid}" if owner else batch.owner
            raise BatchElsewhereError(
                f"batch {batch_id} still has crews running on a server ({where}); resume it "
                "once they have ended"
            )
        claimed = (
            session.connection()
            .execute(
                update(CrewRow)
                .where(
                    CrewRow.run_id.in_(run_ids),
                    CrewRow.state == CrewState.INTERRUPTED.value,
                )
                .values(state=CrewState.QUEUED.value, step="resuming", error=None)
            )
            .rowcount
        )
        if claimed != len(run_ids):
            raise BatchElsewhereError(f"batch {batch_id} is being resumed by another server")
        session.execute(
            update(BatchRow)
            .where(BatchRow.id == batch_id)
            .values(owner=store.owner_id, finished_at=None)
        )


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
    runtime: Runtime,
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
    plans = plan(store, snap, run_ids)
    chosen = set(from_start)
    go = [replace(p, problem=None) if p.run_id in chosen else p for p in plans]
    go, offers = [p for p in go if p.problem is None], [p for p in go if p.problem is not None]
    outcome = ResumeOutcome(batch_id, tuple(go), tuple(offers))
    if not go:
        return outcome
    blueprint: BaseBlueprint = load_blueprint(snap.blueprint)
    settings = _settings(store, batch_id, runtime.default_settings)
    _claim(store, batch_id, [p.run_id for p in go])
    again = {p.run_id: _again(snap.crews[_index(snap, p.run_id)], p.restore) for p in go}
    batch = Batch.reopen(snap, again)
    runtime.runner.resume(batch, blueprint, settings, {p.run_id: p.restore for p in go})
    log.warning("resumed %s", outcome.describe())
    return outcome


def _index(snap: BatchSnapshot, run_id: str) -> int:
    return next(i for i, c in enumerate(snap.crews) if c.run_id == run_id)


def auto_resume(runtime: Runtime) -> list[ResumeOutcome]:
    """`CREWDASH_AUTO_RESUME=1`: resume, once, the interrupted crews of batches whose owner is
    gone. Each batch is claimed by one conditional update, so of several servers starting
    together exactly one resumes it."""
    store = runtime.store
    if store is None:
        return []
    with Session(store.engine) as session:
        candidates = session.scalars(
            select(ResumeBatchRow.batch_id)
            .join(BatchRow, BatchRow.id == ResumeBatchRow.batch_id)
            .where(
                ResumeBatchRow.auto_resumed_at.is_(None),
                BatchRow.finished_at.is_not(None),
                select(CrewRow.run_id)
                .where(
                    CrewRow.batch_id == BatchRow.id,
                    CrewRow.state == CrewState.INTERRUPTED.value,
                )
                .exists(),
            )
            .order_by(BatchRow.created_at)
        ).all()
    outcomes = []
    for batch_id in candidates:
        with Session(store.engine) as session, session.begin():
            won = (
                session.connection()
                .execute(
                    update(ResumeBatchRow)
                    .where(
                        ResumeBatchRow.batch_id == batch_id,
                        ResumeBatchRow.auto_resumed_at.is_(None),
                    )
                    .values(auto_resumed_at=time.time())
                )
                .rowcount
            )
        if not won:
            continue
        try:
            outcome = resume(runtime, batch_id)
        except CrewdashError as exc:
            log.warning("automatic resume of batch %s: %s", batch_id, exc)
            continue
        log.warning("automatic resume on start: %s", outcome.describe())
        outcomes.append(outcome)
    return outcomes


def cmd_resume(args: argparse.Namespace) -> int:
    """`crewdash resume BATCH_ID`: resume here, wait for the crews, report. Exit 0 when every
    crew resumed succeeded and none waits for a re-run decision, 1 otherwise."""
    from crewdash.runtime import Runtime

    runtime = Runtime.from_env()
    try:
        outcome = resume(runtime, args.batch_id, args.run_id or None, args.from_start or ())
        print(outcome.describe(), flush=True)
        for offer in outcome.offers:
            print(f"  re-run from the start? {offer.run_id} ({offer.topic}): {offer.problem}")
        if outcome.offers:
            ids = " ".join(f"--from-start {o.run_id}" for o in outcome.offers)
            print(f"  to re-run them: crewdash resume {args.batch_id} {ids}")
        if not outcome.resumed:
            return 1
        batch = runtime.runner.batch(args.batch_id)
        batch.wait()
        chosen = {p.run_id for p in outcome.resumed}
        crews = [c for c in batch.snapshot().crews if c.run_id in chosen]
        for crew in crews:
            kept = sum(1 for t in crew.tasks if t.restored)
            print(f"  {crew.run_id} {crew.state.value}: {crew.topic} ({kept} tasks restored)")
        ok = all(c.state is CrewState.SUCCEEDED for c in crews)
        return 0 if ok and not outcome.offers else 1
    finally:
        runtime.close()


def add_command(sub: Any) -> None:
    """The `resume` subcommand, for `cli.build_parser`."""
    parser = sub.add_parser(
        "resume", help="resume a batch's interrupted crews from their last checkpoints"
    )
    parser.add_argument("batch_id")
    parser.add_argument(
        "--run-id", action="append", help="only this crew (repeatable; default: every one)"
    )
    parser.add_argument(
        "--from-start",
        action="append",
        help="re-run this crew from the start (one offered a re-run; repeatable)",
    )
    parser.set_defaults(func=cmd_resume)
