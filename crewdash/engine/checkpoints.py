"""Checkpoints of running crews in CrewAI's own format, kept in crewdash's database.

A checkpoint is CrewAI 1.15's `RuntimeState` serialised (what its `CheckpointConfig` writes),
taken after each finished task of a crew (`task_completed`) or step of a Flow
(`method_execution_finished`). CrewAI's own providers write JSON files or a SQLite file on the
local disk, which other replicas on PostgreSQL cannot read, and its listener serialises without
the event record's lock (see `_serialise`); so crewdash's listener takes the same snapshot and
writes it to the `crew_checkpoints` table: one row per crew run holding its latest checkpoint,
deleted when the crew ends (kept only when it is interrupted). API keys are blanked out first.

Resuming builds the crew afresh from its blueprint (so its tools, callbacks and the run's model
are the project's own, not deserialised copies) and hands CrewAI the checkpoint's finished work:
a crew's task outputs with its kickoff id (CrewAI then starts at the first task without output),
a Flow's completed methods, their outputs and its state (`Flow._restore_from_checkpoint`), as
`Crew.from_checkpoint` and `Flow.from_checkpoint` do.
"""

from __future__ import annotations

import contextvars
import gc
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from crewai import Crew, Flow
from crewai.events import crewai_event_bus
from crewai.events.base_events import BaseEvent
from crewai.events.event_bus import is_replaying
from crewai.events.types.flow_events import MethodExecutionFinishedEvent
from crewai.events.types.task_events import TaskCompletedEvent
from crewai.state.runtime import RuntimeState, _prepare_entities
from crewai.tasks.task_output import TaskOutput
from sqlalchemy import create_engine, delete, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from crewdash.base.errors import CrewdashError, describe_error
from crewdash.blueprints.base import BaseBlueprint, Blueprint
from crewdash.engine.events import current_run
from crewdash.model.batch import Span, TaskResult, TokenUsage
from crewdash.store.history import Store
from crewdash.store.tables import CheckpointRow

log = logging.getLogger(__name__)
ROOT_KEY = "crewdash_root"  # added to CrewAI's payload: the index of the run's own entity
SECRET_FIELDS = frozenset({"api_key", "apiKey"})


class CheckpointError(CrewdashError):
    """A checkpoint that cannot be used: unreadable, or not of this blueprint's crew."""


# --- the blueprint's version and the batch's settings ----------------------------------------


def blueprint_version(blueprint: BaseBlueprint) -> str:
    """A hash of what the crew is made of: a YAML crew's agents and tasks, a project's files
    (their bytes, so a fresh checkout of the same files is the same version)."""
    from crewdash.blueprints.projects.blueprint import ProjectBlueprint
    from crewdash.blueprints.projects.files import content_hash

    if isinstance(blueprint, ProjectBlueprint):
        return "files:" + content_hash(Path(blueprint.root))[:32]
    if isinstance(blueprint, Blueprint):
        text = json.dumps(
            {"agents": blueprint.agents, "tasks": blueprint.tasks}, sort_keys=True, default=str
        )
        return "yaml:" + hashlib.sha256(text.encode()).hexdigest()[:32]
    return f"other:{blueprint.name}"


def record_batch(
    store: Store, batch_id: str, blueprint: BaseBlueprint, settings: Mapping[str, Any]
) -> None:
    """Keep what resuming this batch needs, beside its history row: its blueprint's version and
    its run settings (`RunSettings.to_dict`: no key, which is taken from the environment again)."""
    store.save_resume_record(batch_id, blueprint_version(blueprint), json.dumps(dict(settings)))


def discard(store: Store, run_ids: Sequence[str]) -> None:
    """Prune crew runs' checkpoints: they ended, and only an interrupted crew is resumed."""
    with Session(store.engine) as session, session.begin():
        session.execute(delete(CheckpointRow).where(CheckpointRow.run_id.in_(run_ids)))


# --- writing: crewdash's listener, on CrewAI's event handler threads ------------------------

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _sqlite_like_the_store(dbapi_connection: Any, _: Any) -> None:
    """The store's file is in WAL mode; commit as it does (no fsync per commit: 8 ms each here)
    and wait for its writers."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _engine(url: str) -> Engine:
    """One engine per database per process (a Ray worker opens its own on first write)."""
    with _engines_lock:
        if url not in _engines:
            engine = create_engine(url, pool_pre_ping=True)
            if engine.dialect.name == "sqlite":
                event.listen(engine, "connect", _sqlite_like_the_store)
            _engines[url] = engine
        return _engines[url]


# a key field of an LLM in CrewAI's JSON (`model_dump_json` writes no spaces), value and all
_KEY_FIELD = re.compile(r'"(api_key|apiKey)":"(?:[^"\\]|\\.)*"')


def _blank_secrets(payload: str, secrets: Sequence[str]) -> str:
    """CrewAI's JSON with every key field emptied and every known secret cut out of it (on the
    text: parsing and writing it again cost ~4 ms a checkpoint)."""
    payload = _KEY_FIELD.sub(r'"\1":null', payload)
    for secret in secrets:
        payload = payload.replace(secret, "***")
    return payload


def _span(data: Mapping[str, Any]) -> Span:
    return Span(**{**data, "tokens": TokenUsage(**data.get("tokens", {}))})


@dataclass(frozen=True)
class CheckpointSink:
    """Where one crew run's checkpoints go; picklable, so a crew on a Ray worker writes too."""

    url: str
    batch_id: str
    run_id: str
    secret: str | None = field(default=None, repr=False)

    def write(self, payload: str, kind: str, root: str) -> None:
        """Store CrewAI's payload (keys blanked) with the finished tasks and spans it covers;
        `root` is the id of the run's own crew or Flow among the payload's entities."""
        text = _blank_secrets(payload, [s for s in [self.secret] if s])
        data = json.loads(text)
        data[ROOT_KEY] = index = _root_index(data, kind, root)
        text = f'{{"{ROOT_KEY}":{index},{text[1:]}'  # the same key, without writing it all again
        tasks, steps = finished_work(data, kind)
        spans: list[Span] = []
        ref = current_run.get()
        if ref is not None and ref[1] == self.run_id:
            crew = ref[0].crew(self.run_id)
            if crew.state.final:
                return  # a late event of a crew that has ended: its checkpoint is pruned
            if kind == "flow":  # a Flow's tasks belong to the crews its steps ran
                tasks = list(crew.tasks)
            done = _done_keys(data, kind, tasks)
            spans = [_restored_span(s) for s in crew.spans if _kept(s, done)]
        restored = [_as_restored(t) for t in tasks]
        with Session(_engine(self.url)) as session, session.begin():
            # replaced, not merged: a merge would read the last payload back first
            session.execute(delete(CheckpointRow).where(CheckpointRow.run_id == self.run_id))
            session.add(
                CheckpointRow(
                    run_id=self.run_id,
                    batch_id=self.batch_id,
                    saved_at=time.time(),
                    steps=steps,
                    payload=text,
                    tasks=json.dumps([asdict(t) for t in restored]),
                    spans=json.dumps([asdict(s) for s in spans]),
                )
            )


def _done_keys(data: Mapping[str, Any], kind: str, tasks: Sequence[TaskResult]) -> set[str]:
    """The span keys of the finished tasks (and a Flow's finished steps' names)."""
    keys = {f"task:{t.key}" for t in tasks}
    if kind == "flow":
        keys |= set(_entity(data, "flow").get("checkpoint_completed_methods") or [])
    return keys


def _kept(span: Span, done: set[str]) -> bool:
    """A finished model call or tool use, or the bar of a finished task or Flow step (its own
    end may not be recorded yet: that event's handlers run beside this one)."""
    if span.kind in ("task", "step"):
        return span.key in done or span.name in done
    return span.finished_at is not None and span.kind != "retry"


def _restored_span(span: Span) -> Span:
    """How a kept span shows in the resumed crew's timeline: task and step bars say restored."""
    if span.kind not in ("task", "step"):
        return span
    return replace(
        span, name=f"{span.name} (restored)", finished_at=span.finished_at or time.time()
    )


def _as_restored(task: TaskResult) -> TaskResult:
    return TaskResult(task.key, task.name, task.output, task.agent, restored=True)


def finished_work(data: Mapping[str, Any], kind: str) -> tuple[list[TaskResult], int]:
    """The finished tasks (a crew's) and how many steps a checkpoint holds; raises
    `CheckpointError` when it holds no entity of that kind."""
    entity = _entity(data, kind)
    if kind == "flow":
        return [], len(entity.get("checkpoint_completed_methods") or [])
    tasks = [
        TaskResult(
            key=str(t.get("id", "")),
            name=str(t.get("name") or t["output"].get("name") or ""),
            output=str(t["output"].get("raw", "")),
            agent=" ".join(str(t["output"].get("agent") or "").split()),
        )
        for t in entity.get("tasks") or []
        if isinstance(t, dict) and isinstance(t.get("output"), dict)
    ]
    return tasks, len(tasks)


def _root_index(data: Mapping[str, Any], kind: str, root: str) -> int:
    """Which entity is the run's own: a payload also holds the crews a Flow's steps ran and
    the Flows CrewAI runs agents with."""
    for index, entity in enumerate(data.get("entities") or []):
        if not isinstance(entity, dict) or entity.get("entity_type") != kind:
            continue
        if kind == "flow" and (entity.get("checkpoint_state") or {}).get("id") == root:
            return index
        if kind == "crew" and entity.get("id") == root:
            return index
    raise CheckpointError(f"it holds no {kind} with id {root}")


def _entity(data: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The run's own crew or Flow in a stored checkpoint."""
    entities = data.get("entities") or []
    index = data.get(ROOT_KEY)
    if isinstance(index, int) and 0 <= index < len(entities):
        entity = entities[index]
        if isinstance(entity, dict) and entity.get("entity_type") == kind:
            return entity
    raise CheckpointError(f"it holds no {kind}")


_armed: contextvars.ContextVar[tuple[CheckpointSink, str, str] | None] = contextvars.ContextVar(
    "crewdash_checkpoint", default=None
)
_listening = False
_listening_lock = threading.Lock()


_gc_guard = threading.Lock()
_gc_holds = 0
_gc_was_enabled = False


@contextmanager
def _no_collection() -> Iterator[None]:
    """No cyclic garbage collection in this process while held (by any thread).

    A collection runs finalisers on whichever thread allocates: an abandoned crew's coroutine
    (a cancelled crew's `aexecute_task`) closes there and emits an event, which takes the event
    record's write lock. On the thread that holds the record's read lock to checkpoint, that
    wait never ends, and every crew of the process then waits behind it (seen in a full test
    run: 21 threads on the record's lock, every later crew stuck). Collections wait instead."""
    global _gc_holds, _gc_was_enabled
    with _gc_guard:
        if _gc_holds == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_holds += 1
    try:
        yield
    finally:
        with _gc_guard:
            _gc_holds -= 1
            if _gc_holds == 0 and _gc_was_enabled:
                gc.enable()


def _serialise(state: RuntimeState) -> str:
    """CrewAI's checkpoint of a runtime state, taken while no event is being recorded.

    CrewAI's own listener (`CheckpointConfig`) serialises the event record while the crew's
    thread keeps adding to it; under a Flow that failed every time here, with pydantic-core's
    "dictionary changed size during iteration" (a PanicException its handler does not catch).
    The record's own lock keeps writers out while it is read; entities still change beside
    it, so a failed read is tried again.
    """
    for _ in range(3):
        try:
            with _no_collection(), state.event_record._lock.r_locked():
                _prepare_entities(state.root)
                return state.model_dump_json()
        except BaseException as exc:  # only pyo3's PanicException is tried again
            if type(exc).__name__ != "PanicException":
                raise
    raise CheckpointError("the crew changed during every try to checkpoint it")


def _on_finished(_: Any, event: BaseEvent, state: RuntimeState | None) -> None:
    """After a crew's task (a Flow's step) finished: checkpoint the run, if it is armed."""
    armed = _armed.get()
    if armed is None or state is None or is_replaying():
        return
    sink, kind, root = armed
    if (kind == "flow") != isinstance(event, MethodExecutionFinishedEvent):
        return  # a Flow checkpoints per step, not per task of the crews its steps run
    try:
        sink.write(_serialise(state), kind, root)
    except Exception as exc:  # noqa: BLE001 - a failed checkpoint never stops the crew
        log.warning("checkpoint of %s failed: %s", sink.run_id, describe_error(exc))


def arm(target: Crew | Flow[Any], sink: CheckpointSink) -> None:
    """Checkpoint this crew after each finished task (a Flow after each step).

    The mark lives in the current context, i.e. the crew's own asyncio task, which CrewAI's
    event handlers run in a copy of; nothing outlives the crew.
    """
    global _listening
    with _listening_lock:
        if not _listening:
            crewai_event_bus.register_handler(TaskCompletedEvent, _on_finished)
            crewai_event_bus.register_handler(MethodExecutionFinishedEvent, _on_finished)
            _listening = True
    if isinstance(target, Flow):
        _armed.set((sink, "flow", target.flow_id))
    else:
        _armed.set((sink, "crew", str(target.id)))


# --- reading and restoring -----------------------------------------------------------------


@dataclass(frozen=True)
class Restore:
    """A crew run's last checkpoint, ready to hand to a fresh crew; picklable for Ray."""

    payload: str
    steps: int
    tasks: tuple[TaskResult, ...] = ()
    spans: tuple[Span, ...] = ()

    @property
    def tokens(self) -> TokenUsage:
        """What the finished work already cost (its model calls' tokens)."""
        total = TokenUsage()
        for span in self.spans:
            total = total + span.tokens
        return total


def load(store: Store, run_id: str, kind: str) -> Restore | None:
    """A crew run's checkpoint, checked; None if it has none. Raises `CheckpointError` when it
    is unreadable."""
    with Session(store.engine) as session:
        row = session.get(CheckpointRow, run_id)
        if row is None:
            return None
        try:
            data = json.loads(row.payload)
            finished_work(data, "flow" if kind in ("flow", "flow_yaml") else "crew")
            tasks = tuple(TaskResult(**t) for t in json.loads(row.tasks or "[]"))
            spans = tuple(_span(s) for s in json.loads(row.spans or "[]"))
        except CheckpointError as exc:
            raise CheckpointError(f"its checkpoint is unusable: {exc}") from None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CheckpointError(
                f"its checkpoint is unreadable ({type(exc).__name__}: {str(exc)[:120]})"
            ) from None
        return Restore(row.payload, row.steps, tasks, spans)


def restore(target: Crew | Flow[Any], saved: Restore) -> set[str]:
    """Give a fresh crew (or Flow) the work its checkpoint finished; returns the ids of the
    crew's tasks that were restored. Raises `CheckpointError` if it does not fit."""
    data = json.loads(saved.payload)
    if isinstance(target, Flow):
        flow = _entity(data, "flow")
        target.checkpoint_completed_methods = set(flow.get("checkpoint_completed_methods") or [])
        target.checkpoint_method_outputs = flow.get("checkpoint_method_outputs")
        target.checkpoint_method_counts = flow.get("checkpoint_method_counts")
        target.checkpoint_state = flow.get("checkpoint_state")
        target._restore_from_checkpoint()
        return set()
    crew = _entity(data, "crew")
    saved_tasks = [t for t in crew.get("tasks") or [] if isinstance(t, dict)]
    names = [t.get("name") for t in saved_tasks]
    if names != [t.name for t in target.tasks]:
        raise CheckpointError("its tasks are not this blueprint's tasks")
    restored: set[str] = set()
    for task, old in zip(target.tasks, saved_tasks, strict=True):
        if isinstance(old.get("output"), dict):
            task.output = TaskOutput.model_validate(old["output"])
            restored.add(str(task.id))
    # CrewAI starts a crew with a kickoff id at its first task without an output
    target.checkpoint_kickoff_event_id = crew.get("checkpoint_kickoff_event_id") or "restored"
    return restored
