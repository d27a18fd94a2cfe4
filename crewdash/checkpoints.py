"""Checkpoints of running crews, written by CrewAI's own checkpointing into crewdash's database.

CrewAI 1.15 writes a checkpoint (its `RuntimeState` as JSON) on the events a `CheckpointConfig`
names (`task_completed` for a crew, `method_execution_finished` for a Flow). Its two providers
write JSON files or a SQLite file on the local disk, which other replicas on PostgreSQL cannot
read; `StoreProvider` is a `JsonProvider` whose writes go to the `crew_checkpoints` table
instead: one row per crew run holding its latest checkpoint, deleted when the crew ends (kept
only when it is interrupted). API keys are blanked out of the payload before it is stored.

Resuming builds the crew afresh from its blueprint (so its tools, callbacks and the run's model
are the project's own, not deserialised copies) and hands CrewAI the checkpoint's finished work:
a crew's task outputs with its kickoff id (CrewAI then starts at the first task without output),
a Flow's completed methods, their outputs and its state (`Flow._restore_from_checkpoint`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from crewai import Crew, Flow
from crewai.state.checkpoint_config import CheckpointConfig
from crewai.state.provider.json_provider import JsonProvider
from crewai.tasks.task_output import TaskOutput
from pydantic import PrivateAttr
from sqlalchemy import Float, Integer, String, Text, create_engine, delete
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from crewdash.batch import Span, TaskResult, TokenUsage
from crewdash.blueprints import BaseBlueprint, Blueprint
from crewdash.errors import CrewdashError
from crewdash.events import current_run
from crewdash.llm import LLMSettings
from crewdash.store import Base, Store

CREW_EVENTS = ["task_completed"]
FLOW_EVENTS = ["method_execution_finished"]
SECRET_FIELDS = frozenset({"api_key", "apiKey"})


class CheckpointError(CrewdashError):
    """A checkpoint that cannot be used: unreadable, or not of this blueprint's crew."""


class ResumeBatchRow(Base):
    """What a batch needs to run again: its model settings (no key) and blueprint version."""

    __tablename__ = "resume_batches"

    batch_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    version: Mapped[str] = mapped_column(String(80))
    settings: Mapped[str] = mapped_column(Text)
    auto_resumed_at: Mapped[float | None] = mapped_column(Float)


class CheckpointRow(Base):
    """One crew run's latest checkpoint: CrewAI's payload and crewdash's view of it."""

    __tablename__ = "crew_checkpoints"

    run_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    batch_id: Mapped[str] = mapped_column(String(40), index=True)
    saved_at: Mapped[float] = mapped_column(Float)
    steps: Mapped[int] = mapped_column(Integer, default=0)
    payload: Mapped[str] = mapped_column(Text)
    tasks: Mapped[str] = mapped_column(Text, default="[]")
    spans: Mapped[str] = mapped_column(Text, default="[]")


# --- the blueprint's version and the batch's settings ----------------------------------------


def blueprint_version(blueprint: BaseBlueprint) -> str:
    """A hash of what the crew is made of: a YAML crew's agents and tasks, a project's files
    (their bytes, so a fresh checkout of the same files is the same version)."""
    from crewdash.projects import ProjectBlueprint, content_hash

    if isinstance(blueprint, ProjectBlueprint):
        return "files:" + content_hash(Path(blueprint.root))[:32]
    if isinstance(blueprint, Blueprint):
        text = json.dumps(
            {"agents": blueprint.agents, "tasks": blueprint.tasks}, sort_keys=True, default=str
        )
        return "yaml:" + hashlib.sha256(text.encode()).hexdigest()[:32]
    return f"other:{blueprint.name}"


def settings_json(llm: LLMSettings, max_concurrency: int, crew_timeout_s: float | None) -> str:
    """The run settings as stored: everything but the key (taken from the environment again)."""
    values = {k: v for k, v in asdict(llm).items() if k != "api_key"}
    return json.dumps(
        {"llm": values, "max_concurrency": max_concurrency, "crew_timeout_s": crew_timeout_s}
    )


def record_batch(
    store: Store,
    batch_id: str,
    blueprint: BaseBlueprint,
    llm: LLMSettings,
    max_concurrency: int,
    crew_timeout_s: float | None,
) -> None:
    """Keep what resuming this batch needs, beside its history row."""
    with Session(store.engine) as session, session.begin():
        session.merge(
            ResumeBatchRow(
                batch_id=batch_id,
                version=blueprint_version(blueprint),
                settings=settings_json(llm, max_concurrency, crew_timeout_s),
            )
        )


def discard(store: Store, run_id: str) -> None:
    """Prune a crew run's checkpoint: it ended, and only an interrupted crew is resumed."""
    with Session(store.engine) as session, session.begin():
        session.execute(delete(CheckpointRow).where(CheckpointRow.run_id == run_id))


# --- writing: CrewAI's checkpoint listener calls the provider on its handler threads --------

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _engine(url: str) -> Engine:
    """One engine per database per process (a Ray worker opens its own on first write)."""
    with _engines_lock:
        if url not in _engines:
            # SQLite: the store has put the file in WAL mode; wait for its writers, as it does
            wait = {"timeout": 10} if url.startswith("sqlite") else {}
            _engines[url] = create_engine(url, pool_pre_ping=True, connect_args=wait)
        return _engines[url]


def _blank_secrets(value: Any, secrets: Sequence[str]) -> Any:
    """`value` with every key field emptied and every known secret cut out of its text."""
    if isinstance(value, dict):
        return {
            k: (None if k in SECRET_FIELDS and v else _blank_secrets(v, secrets))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_blank_secrets(v, secrets) for v in value]
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "***")
    return value


def _span_dict(span: Span) -> dict[str, Any]:
    return asdict(span)


def _span(data: Mapping[str, Any]) -> Span:
    return Span(**{**data, "tokens": TokenUsage(**data.get("tokens", {}))})


@dataclass(frozen=True)
class CheckpointSink:
    """Where one crew run's checkpoints go; picklable, so a crew on a Ray worker writes too."""

    url: str
    batch_id: str
    run_id: str
    secret: str | None = field(default=None, repr=False)

    def write(self, payload: str, kind: str) -> str:
        """Store CrewAI's payload (keys blanked) with the finished tasks and spans it covers."""
        data = _blank_secrets(json.loads(payload), [s for s in [self.secret] if s])
        tasks, steps = finished_work(data, kind)
        spans: list[Span] = []
        ref = current_run.get()
        if ref is not None and ref[1] == self.run_id:
            crew = ref[0].crew(self.run_id)
            if kind == "flow":  # a Flow's tasks belong to the crews its steps ran
                tasks = list(crew.tasks)
            done = _done_keys(data, kind, tasks)
            spans = [_restored_span(s) for s in crew.spans if _kept(s, done)]
        restored = [replace_restored(t) for t in tasks]
        with Session(_engine(self.url)) as session, session.begin():
            session.merge(
                CheckpointRow(
                    run_id=self.run_id,
                    batch_id=self.batch_id,
                    saved_at=time.time(),
                    steps=steps,
                    payload=json.dumps(data),
                    tasks=json.dumps([asdict(t) for t in restored]),
                    spans=json.dumps([_span_dict(s) for s in spans]),
                )
            )
        return f"crewdash:{self.run_id}/{steps}"


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


def replace_restored(task: TaskResult) -> TaskResult:
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


def _entity(data: Mapping[str, Any], kind: str) -> dict[str, Any]:
    for entity in data.get("entities") or []:
        if isinstance(entity, dict) and entity.get("entity_type") == kind:
            return entity
    raise CheckpointError(f"it holds no {kind}")


class StoreProvider(JsonProvider):
    """CrewAI's JSON provider, writing into crewdash's database rather than a local folder."""

    _sink: CheckpointSink | None = PrivateAttr(default=None)
    _kind: str = PrivateAttr(default="crew")

    def checkpoint(
        self, data: str, location: str, *, parent_id: str | None = None, branch: str = "main"
    ) -> str:
        if self._sink is None:
            raise CheckpointError("no database to write the checkpoint to")
        return self._sink.write(data, self._kind)

    async def acheckpoint(
        self, data: str, location: str, *, parent_id: str | None = None, branch: str = "main"
    ) -> str:
        return await asyncio.to_thread(
            self.checkpoint, data, location, parent_id=parent_id, branch=branch
        )

    def prune(self, location: str, max_keep: int, *, branch: str = "main") -> int:
        return 0  # one row per crew run: every write replaces the one before

    def extract_id(self, location: str) -> str:
        return location.rsplit(":", 1)[-1]


def arm(target: Crew | Flow[Any], sink: CheckpointSink) -> None:
    """Have CrewAI checkpoint this crew after each finished task (a Flow after each step)."""
    provider = StoreProvider()
    provider._sink = sink
    is_flow = isinstance(target, Flow)
    provider._kind = "flow" if is_flow else "crew"
    target.checkpoint = CheckpointConfig(
        location=f"crewdash:{sink.run_id}",
        on_events=list(FLOW_EVENTS if is_flow else CREW_EVENTS),  # type: ignore[arg-type]
        provider=provider,
    )


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
