"""One crew's run, from building it to its ending: the part every runner backend shares.

The local backend calls `run_crew` on the runner's own loop; the Ray backend calls it inside a
Ray actor, on the actor's loop, against a one-crew `Batch` whose progress it streams back.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from crewai import Crew, Flow
from crewai.crews.crew_output import CrewOutput
from crewai.events.event_bus import (
    _registered_entity_ids_var,
    _runtime_scope_depth,
    _runtime_state_var,
)
from crewai.events.listeners.tracing.utils import _tui_mode
from pydantic import BaseModel

from crewdash.base import locks
from crewdash.base.run_context import (
    LLMFactory,
    install,
    list_files,
    output_dir,
    run_llm,
    stream_off,
)
from crewdash.blueprints.base import BaseBlueprint
from crewdash.engine.budget import gate_of, install_budget_hook, stopped_by_budget
from crewdash.engine.checkpoints import CheckpointSink, Restore, arm, restore
from crewdash.engine.events import current_run, event_router, record_governor_wait, record_retry
from crewdash.engine.streaming import stream_failure, stream_tap
from crewdash.model.batch import Batch, CrewSnapshot, CrewState, TaskResult, TokenUsage
from crewdash.providers.llm import LLMSettings, plain_error
from crewdash.providers.response_cache import CacheScope, cache_scope, record_cache_hit
from crewdash.providers.retries import RetryBudget, call_timeout, crew_budget

log = logging.getLogger(__name__)
# Every process that runs crews imports this module: CrewAI's named locks through crewdash's
# backend, and the per-crew model and output folder hooks (their imports paid here, not per crew).
locks.install()
install()

# A fresh crew, or a fresh Flow (whose steps may run crews of their own), for one topic.
CrewBuilder = Callable[[], Crew | Flow[Any]]
# Threads beyond the crew limit in a crew-running loop's default executor, for CrewAI's own
# hops (event-bus flushes, memory drains).
EXECUTOR_HEADROOM = 8
Started = Callable[[CrewSnapshot], Awaitable[None]]


def blueprint_builder(
    blueprint: BaseBlueprint, llm: LLMSettings, demo_url: str | None
) -> CrewBuilder:
    """A picklable recipe for a fresh crew (Ray ships it to the worker that runs the crew)."""
    return blueprint.recipe(llm, demo_url)


@dataclass(frozen=True)
class CrewJob:
    """Everything a backend needs to run one crew of a batch."""

    run_id: str
    topic: str
    build: CrewBuilder
    inputs: Mapping[str, str]
    llm: LLMSettings
    timeout_s: float | None
    # The run's model for agents that do not pin one (also in crews a Flow step creates).
    default_llm: LLMFactory | None = None
    # This crew's own folder for the files its tasks write.
    output_dir: str | None = None
    # Where CrewAI's checkpoints of this crew go (None: not checkpointed), and the checkpoint
    # a resumed crew continues from.
    checkpoint: CheckpointSink | None = None
    restore: Restore | None = None
    # Answer identical model calls from the response cache (when this process has one).
    cache: bool = False


def _tasks(crew: Crew) -> tuple[TaskResult, ...]:
    """Every task of a finished crew that produced an output, in the crew's order."""
    return tuple(
        TaskResult(
            key=str(task.id),
            name=task.name or task.output.name or "",
            output=task.output.raw,
            agent=" ".join(str(task.output.agent or "").split()),
        )
        for task in crew.tasks
        if task.output is not None
    )


def flow_result_text(output: Any, flow: Flow[Any]) -> str:
    """A Flow's answer as text: its last step's output, or its state when that is empty."""
    if isinstance(output, CrewOutput):
        return output.raw
    if isinstance(output, BaseModel):
        return output.model_dump_json(indent=2)
    if output is None or output == "":
        state = flow.state
        raw = state.model_dump() if isinstance(state, BaseModel) else dict(state)
        return json.dumps(raw, indent=2, default=str)
    return output if isinstance(output, str) else json.dumps(output, indent=2, default=str)


@contextmanager
def own_event_record() -> Iterator[None]:
    """The crew gets a CrewAI run state (entities and event record) of its own, whatever the
    caller's context holds.

    CrewAI keeps that state in context variables and makes a new one at a kickoff's outermost
    scope only when none is set. A crew's task inherits its submitter's context: a thread that
    had once emitted an event outside a kickoff (listing a CrewAI project does) held a state,
    and every crew submitted from it then shared that one record. It grew for the life of the
    process, each checkpoint serialised all of it under the record's lock, and the runner's loop
    waited seconds on that lock for each task it started (seen late in a full test run: runners
    that could not stop their crews within 5 s)."""
    tokens = (
        _runtime_state_var.set(None),
        _registered_entity_ids_var.set(None),
        _runtime_scope_depth.set(0),
    )
    try:
        yield
    finally:
        _runtime_scope_depth.reset(tokens[2])
        _registered_entity_ids_var.reset(tokens[1])
        _runtime_state_var.reset(tokens[0])


async def run_crew(batch: Batch, job: CrewJob, started: Started | None = None) -> CrewSnapshot:
    """Build and run one crew on the current loop (with a CrewAI run state of its own): see
    `_run_crew`."""
    with own_event_record():
        return await _run_crew(batch, job, started)


async def _run_crew(batch: Batch, job: CrewJob, started: Started | None = None) -> CrewSnapshot:
    """Build and run one crew on the current loop; return its ending, not yet applied to `batch`
    (callers persist it first). Events of this crew land on `batch` through `current_run`; all
    its model calls share one retry budget through `crew_budget`.

    A failing crew becomes a `failed` ending; cancellation propagates to the caller.
    """
    install()
    install_budget_hook()
    router = event_router()
    agent_ids: list[str] = []
    folder = Path(job.output_dir) if job.output_dir else None
    token = current_run.set((batch, job.run_id))
    llm_token = run_llm.set(job.default_llm)
    folder_token = output_dir.set(folder)
    # CrewAI prints a panel per Flow step on stdout unless a TUI owns the screen; crews here
    # are not on a terminal (their progress is in the batch), so this context says so.
    quiet_token = _tui_mode.set(True)
    # a run again without streaming (below) keeps the crew's budget: one budget per crew run
    spent_so_far = crew_budget.get() if stream_off.get() else None
    budget_token = crew_budget.set(spent_so_far or crew_retry_budget(batch, job))
    hits = partial(record_cache_hit, batch, job.run_id)
    cache_token = cache_scope.set(CacheScope(on_hit=hits) if job.cache else None)
    target: Crew | Flow[Any] | None = None
    try:
        target = job.build()
        restored = restore(target, job.restore) if job.restore is not None else set()
        if job.checkpoint is not None:
            arm(target, job.checkpoint)
        if isinstance(target, Crew):
            agent_ids = [str(agent.id) for agent in target.agents]
            router.track_agents((batch, job.run_id), agent_ids)
        if batch.crew(job.run_id).state is not CrewState.RUNNING:  # not on a streaming fallback
            batch.mark_running(job.run_id, agent_ids)
        if started is not None:
            await started(batch.crew(job.run_id))
        try:
            async with asyncio.timeout(job.timeout_s) as limit:
                if isinstance(target, Crew):
                    output: Any = await target.akickoff(inputs=dict(job.inputs))
                else:
                    output = await target.kickoff_async(inputs=dict(job.inputs))
        except TimeoutError:
            if not limit.expired():
                raise  # a timeout inside the crew (a provider's): a failure, not ours
            return batch.ending(  # the crew is cancelled; its spans so far are kept
                job.run_id,
                CrewState.TIMED_OUT,
                error=f"timed out after {job.timeout_s:g} s",
                files=list_files(folder),
            )
        if isinstance(target, Flow):
            return batch.ending(
                job.run_id,
                CrewState.SUCCEEDED,
                result=flow_result_text(output, target),
                files=list_files(folder),
            )
        if not isinstance(output, CrewOutput):
            raise TypeError(f"crew returned {type(output).__name__}")
        usage = output.token_usage.model_dump() if output.token_usage else None
        earlier = job.restore.tasks if job.restore is not None else ()
        paid = job.restore.tokens if job.restore is not None else TokenUsage()
        return batch.ending(
            job.run_id,
            CrewState.SUCCEEDED,
            result=output.raw,
            # the restored tasks' calls were paid before the interruption: counted once
            tokens=TokenUsage.from_mapping(usage) + paid,
            tasks=(*earlier, *(t for t in _tasks(target) if t.key not in restored)),
            files=list_files(folder),
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - one crew's failure never touches another
        if (ended := _budget_ending(batch, job, target, exc, folder)) is not None:
            return ended
        why = stream_failure(exc) if job.llm.stream and not stream_off.get() else None
        if why is not None:  # once more without streaming; its partial text is dropped
            log.info("crew %s: %s; running it again without streaming", job.run_id, why)
            stream_tap().forget(batch, job.run_id, drop_text=True)
            batch.note_step(job.run_id, f"{why}: running again without streaming")
            off = stream_off.set(True)
            try:
                return await run_crew(batch, job)
            finally:
                stream_off.reset(off)
        error = plain_error(exc, job.llm)
        log.info("crew %s failed: %s", job.run_id, error)
        return batch.ending(job.run_id, CrewState.FAILED, error=error, files=list_files(folder))
    finally:
        stream_tap().forget(batch, job.run_id)  # its last text lands before its ending
        router.forget_agents(agent_ids)
        cache_scope.reset(cache_token)
        crew_budget.reset(budget_token)
        _tui_mode.reset(quiet_token)
        output_dir.reset(folder_token)
        run_llm.reset(llm_token)
        current_run.reset(token)


def _budget_ending(
    batch: Batch, job: CrewJob, target: Crew | Flow[Any] | None, exc: Exception, folder: Path | None
) -> CrewSnapshot | None:
    """The ending of a crew whose model call the batch's budget refused: `budget_exceeded`,
    with the tasks it finished and the calls it paid for."""
    stop = stopped_by_budget(exc)
    gate = gate_of(batch.batch_id)
    if stop is None and (gate is None or not gate.refused(job.run_id)):
        return None
    crew = batch.crew(job.run_id)
    spent = sum((s.tokens for s in crew.spans if s.kind == "llm"), TokenUsage())
    paid = job.restore.tokens if job.restore is not None else TokenUsage()
    tasks = _tasks(target) if isinstance(target, Crew) else ()
    earlier = job.restore.tasks if job.restore is not None else ()
    done = len(earlier) + len(tasks) or len(crew.tasks)
    of = f" of {len(target.tasks)}" if isinstance(target, Crew) else ""
    why = str(stop) if stop is not None else (gate.stopped if gate else None) or "budget exceeded"
    log.info("crew %s: %s", job.run_id, why)
    return batch.ending(
        job.run_id,
        CrewState.BUDGET_EXCEEDED,
        error=f"{why} ({done}{of} task(s) finished and kept)",
        tokens=spent + paid,
        tasks=(*earlier, *tasks),
        files=list_files(folder),
    )


def crew_retry_budget(batch: Batch, job: CrewJob) -> RetryBudget:
    """The retry budget of one crew run; its retries show as spans on `batch`."""
    return RetryBudget(
        job.llm.retry_tries,
        job.llm.retry_seconds,
        call_timeout_s=call_timeout(job.llm.timeout_s, job.timeout_s),
        on_retry=partial(record_retry, batch, job.run_id),
        on_wait=partial(record_governor_wait, batch, job.run_id),
    )


def freeze_heap() -> None:
    """Move everything alive now out of the garbage collector's reach.

    After start-up the heap holds hundreds of thousands of long-lived objects (CrewAI, pydantic
    schemas); a full collection scanning them stopped every thread for ~190 ms in the middle of
    a 100-crew batch. Frozen objects are never scanned again, and that pause drops to ~25 ms.
    """
    gc.collect()
    gc.freeze()


class Backend(Protocol):
    """Where crews run. The runner keeps admission, batches, the store and cancellation; a
    backend only runs one admitted crew and reports its progress on `batch`."""

    name: str
    label: str  # where crews run, for people: shown in the sidebar and /healthz
    processes: int  # how many processes run crews (for warming each one up)

    async def run(self, batch: Batch, job: CrewJob, started: Started) -> CrewSnapshot:
        """Run the crew to its ending; cancelling this coroutine stops the crew."""
        ...

    def close(self) -> None:
        """Release what the backend holds (workers, a cluster it started)."""
        ...


class LocalBackend:
    """Crews on the runner's own event loop, in this process."""

    name = "local"
    label = "this process (local backend)"
    processes = 1

    async def run(self, batch: Batch, job: CrewJob, started: Started) -> CrewSnapshot:
        return await run_crew(batch, job, started)

    def close(self) -> None:
        pass
