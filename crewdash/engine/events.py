"""Live progress from CrewAI's process-wide event bus, routed back to our crew runs.

Many crews share one bus. The runner sets `current_run` in each crew's asyncio task; CrewAI copies
the context into the threads that run sync handlers, so every event knows its run. Agent ids are a
second route for events emitted from threads that did not inherit the context.
"""

from __future__ import annotations

import contextvars
import threading
import time
import uuid
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar, cast

from crewai.events import (
    AgentExecutionStartedEvent,
    BaseEventListener,
    LLMCallCompletedEvent,
    LLMCallFailedEvent,
    LLMCallStartedEvent,
    LLMStreamChunkEvent,
    MethodExecutionFailedEvent,
    MethodExecutionFinishedEvent,
    MethodExecutionStartedEvent,
    TaskCompletedEvent,
    TaskFailedEvent,
    TaskStartedEvent,
    ToolUsageErrorEvent,
    ToolUsageFinishedEvent,
    ToolUsageStartedEvent,
)
from crewai.events.event_bus import CrewAIEventsBus

from crewdash.engine.streaming import stream_tap
from crewdash.model.batch import Batch, TaskResult, TokenUsage

RunRef = tuple[Batch, str]
current_run: contextvars.ContextVar[RunRef | None] = contextvars.ContextVar(
    "crewdash_current_run", default=None
)


def _ts(when: datetime) -> float:
    return when.timestamp()


def _short(text: str | None, limit: int = 60) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _task_name(event: Any) -> str:
    task = getattr(event, "task", None)
    name = getattr(task, "name", None) or getattr(event, "task_name", None) or "task"
    return " ".join(str(name).split())


class RunEventRouter(BaseEventListener):
    """Turns CrewAI events into span and step updates on the right `Batch`."""

    def __init__(self) -> None:
        self._by_agent: dict[str, RunRef] = {}
        self._lock = threading.Lock()
        super().__init__()

    def track_agents(self, ref: RunRef, agent_ids: list[str]) -> None:
        with self._lock:
            for agent_id in agent_ids:
                self._by_agent[agent_id] = ref

    def forget_agents(self, agent_ids: list[str]) -> None:
        with self._lock:
            for agent_id in agent_ids:
                self._by_agent.pop(agent_id, None)

    def resolve(self, event: Any) -> RunRef | None:
        ref = current_run.get()
        if ref is None and getattr(event, "agent_id", None):
            with self._lock:
                ref = self._by_agent.get(str(event.agent_id))
        return ref

    def setup_listeners(self, crewai_event_bus: CrewAIEventsBus) -> None:
        @crewai_event_bus.on(LLMCallStartedEvent)
        def _llm_started(_: Any, event: LLMCallStartedEvent) -> None:
            if ref := self.resolve(event):
                batch, run_id = ref
                at = _ts(event.timestamp)
                batch.record_span(
                    run_id,
                    event.call_id,
                    lambda s: replace(s, kind="llm", name=event.model or s.name, started_at=at),
                )
                batch.note_step(run_id, f"waiting for {event.model or 'the model'}")

        @crewai_event_bus.on(LLMStreamChunkEvent)
        def _llm_chunk(_: Any, event: LLMStreamChunkEvent) -> None:
            # Runs on the thread reading the stream, once per chunk: only a list append here.
            if event.chunk and event.tool_call is None and (ref := self.resolve(event)):
                at = _ts(event.timestamp)
                stream_tap().chunk(ref[0], ref[1], event.call_id, event.chunk, at)

        @crewai_event_bus.on(LLMCallCompletedEvent)
        def _llm_completed(_: Any, event: LLMCallCompletedEvent) -> None:
            if ref := self.resolve(event):
                batch, run_id = ref
                stream_tap().flush(batch, run_id)
                at = _ts(event.timestamp)
                tokens = TokenUsage.from_mapping(event.usage)
                batch.record_span(
                    run_id,
                    event.call_id,
                    lambda s: replace(
                        s,
                        kind="llm",
                        name=s.name or event.model or "",
                        finished_at=at,
                        tokens=tokens,
                    ),
                )
                batch.note_step(run_id, "model answered")

        @crewai_event_bus.on(LLMCallFailedEvent)
        def _llm_failed(_: Any, event: LLMCallFailedEvent) -> None:
            if ref := self.resolve(event):
                batch, run_id = ref
                at = _ts(event.timestamp)
                batch.record_span(
                    run_id,
                    event.call_id,
                    lambda s: replace(
                        s,
                        kind="llm",
                        name=s.name or event.model or "",
                        finished_at=at,
                        error=_short(event.error, 300),
                    ),
                )
                batch.note_step(run_id, "model call failed")

        @crewai_event_bus.on(TaskStartedEvent)
        def _task_started(_: Any, event: TaskStartedEvent) -> None:
            if ref := self.resolve(event):
                name = _task_name(event)
                _open_span(ref, f"task:{event.task_id}", "task", name, event.timestamp)
                ref[0].note_step(ref[1], f"task: {_short(name)}")

        @crewai_event_bus.on(TaskCompletedEvent)
        def _task_completed(_: Any, event: TaskCompletedEvent) -> None:
            if ref := self.resolve(event):
                name = _task_name(event)
                _close_span(ref, f"task:{event.task_id}", "task", name, event.timestamp, None)
                ref[0].record_task(
                    ref[1],
                    TaskResult(
                        key=str(event.task_id),
                        name=name,
                        output=event.output.raw,
                        agent=" ".join(str(event.output.agent or "").split()),
                    ),
                )

        @crewai_event_bus.on(TaskFailedEvent)
        def _task_failed(_: Any, event: TaskFailedEvent) -> None:
            if ref := self.resolve(event):
                error = _short(event.error, 300)
                key = f"task:{event.task_id}"
                _close_span(ref, key, "task", _task_name(event), event.timestamp, error)

        @crewai_event_bus.on(MethodExecutionStartedEvent)
        def _step_started(_: Any, event: MethodExecutionStartedEvent) -> None:
            if ref := self.resolve(event):
                key = f"step:{event.event_id}"
                _open_span(ref, key, "step", event.method_name, event.timestamp)
                ref[0].note_step(ref[1], f"step: {_short(event.method_name)}")

        def _step_ended(
            event: MethodExecutionFinishedEvent | MethodExecutionFailedEvent, error: str | None
        ) -> None:
            if (ref := self.resolve(event)) and event.started_event_id:
                key = f"step:{event.started_event_id}"
                _close_span(ref, key, "step", event.method_name, event.timestamp, error)

        @crewai_event_bus.on(MethodExecutionFinishedEvent)
        def _step_finished(_: Any, event: MethodExecutionFinishedEvent) -> None:
            _step_ended(event, None)

        @crewai_event_bus.on(MethodExecutionFailedEvent)
        def _step_failed(_: Any, event: MethodExecutionFailedEvent) -> None:
            _step_ended(event, _short(str(event.error), 300))

        @crewai_event_bus.on(AgentExecutionStartedEvent)
        def _agent_started(_: Any, event: AgentExecutionStartedEvent) -> None:
            if ref := self.resolve(event):
                role = getattr(event.agent, "role", None) or event.agent_role
                ref[0].note_step(ref[1], f"agent: {_short(role, 40)}")

        @crewai_event_bus.on(ToolUsageStartedEvent)
        def _tool_started(_: Any, event: ToolUsageStartedEvent) -> None:
            if ref := self.resolve(event):
                _open_span(ref, event.event_id, "tool", event.tool_name, event.timestamp)
                ref[0].note_step(ref[1], f"tool: {event.tool_name}")

        def _tool_ended(
            event: ToolUsageFinishedEvent | ToolUsageErrorEvent, error: str | None
        ) -> None:
            if (ref := self.resolve(event)) and event.started_event_id:
                key = event.started_event_id
                _close_span(ref, key, "tool", event.tool_name, event.timestamp, error)

        @crewai_event_bus.on(ToolUsageFinishedEvent)
        def _tool_finished(_: Any, event: ToolUsageFinishedEvent) -> None:
            _tool_ended(event, None)

        @crewai_event_bus.on(ToolUsageErrorEvent)
        def _tool_error(_: Any, event: ToolUsageErrorEvent) -> None:
            _tool_ended(event, _short(str(event.error), 300))


def _open_span(ref: tuple[Batch, str], key: str, kind: str, name: str, when: datetime) -> None:
    """A task, Flow-step or tool span of a crew begins (its end may have arrived first)."""
    at = _ts(when)
    ref[0].record_span(ref[1], key, lambda s: replace(s, kind=kind, name=name, started_at=at))


def _close_span(
    ref: tuple[Batch, str], key: str, kind: str, name: str, when: datetime, error: str | None
) -> None:
    """A task, Flow-step or tool span of a crew ends, failed when `error` is given; a name the
    start already set is kept."""
    at = _ts(when)
    ref[0].record_span(
        ref[1],
        key,
        lambda s: replace(s, kind=kind, name=s.name or name, finished_at=at, error=error),
    )


def record_retry(batch: Batch, run_id: str, why: str, wait_s: float) -> None:
    """A retry of one of this crew's model calls: a span over the wait, so it shows in the
    timeline, and the crew's current step."""
    now = time.time()
    batch.record_span(
        run_id,
        f"retry-{uuid.uuid4().hex[:8]}",
        lambda s: replace(
            s, kind="retry", name=f"retry after {why}", started_at=now, finished_at=now + wait_s
        ),
    )
    batch.note_step(run_id, f"retrying after {why} (in {wait_s:.1f} s)")


def record_governor_wait(batch: Batch, run_id: str, waited_s: float) -> None:
    """A call of this crew held by the rate governor: a span over the wait, drawn like a retry
    wait (it just ended)."""
    now = time.time()
    batch.record_span(
        run_id,
        f"governor-{uuid.uuid4().hex[:8]}",
        lambda s: replace(
            s,
            kind="governor",
            name="waiting for the provider's rate limit",
            started_at=now - waited_s,
            finished_at=now,
        ),
    )


L = TypeVar("L", bound=BaseEventListener)
_listeners: dict[type, BaseEventListener] = {}
_listeners_lock = threading.Lock()


def one_per_process(cls: type[L]) -> L:
    """The single instance of a listener class: the bus is process-wide, and a second instance
    would register its handlers twice."""
    with _listeners_lock:
        if cls not in _listeners:
            _listeners[cls] = cls()
        return cast(L, _listeners[cls])


def event_router() -> RunEventRouter:
    """The one router of this process."""
    return one_per_process(RunEventRouter)
