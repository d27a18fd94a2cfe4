"""The background runner: one asyncio loop on a daemon thread, one asyncio task per crew.

Callers on any thread `submit` and get a batch id at once, then read snapshots; nothing ever
blocks on the loop. The loop's default executor is sized to the concurrency limit, because CrewAI
hops to that executor internally and Python's default (min(32, cpu + 4) = 6 threads on a 2-core
machine) would silently cap concurrent crews at 6.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import shutil
import sys
import threading
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from dataclasses import replace
from functools import partial
from typing import Any

from crewai.events import crewai_event_bus

from crewdash.base.config import DEFAULT_MAX_CONCURRENCY, outputs_dir
from crewdash.base.errors import (
    BatchRunningError,
    SettingsError,
    ShuttingDownError,
    UnknownBatchError,
    describe_error,
)
from crewdash.blueprints.base import BaseBlueprint
from crewdash.blueprints.catalog import load_blueprint
from crewdash.engine.admission import Admission, Ticket
from crewdash.engine.budget import (
    BatchEstimate,
    BudgetGate,
    BudgetTooSmall,
    PastCrew,
    admits_none,
    close_gate,
    estimate_batch,
    gate_of,
    open_gate,
    over_budget,
)
from crewdash.engine.checkpoints import CheckpointSink, Restore, discard, record_batch
from crewdash.engine.execution import (
    EXECUTOR_HEADROOM,
    Backend,
    CrewBuilder,
    CrewJob,
    LocalBackend,
    blueprint_builder,
)
from crewdash.engine.idempotency import IdempotencyKeys
from crewdash.engine.plans import CrewFactory, CrewPlan, RunSettings
from crewdash.model.batch import BATCH_ID, Batch, BatchSnapshot, CrewSnapshot, CrewState
from crewdash.model.people import Person
from crewdash.model.spend import SpendCap
from crewdash.providers.llm import build_llm
from crewdash.store.history import Store
from crewdash.store.spending import Reservation

log = logging.getLogger(__name__)

MAX_BATCHES_KEPT = 500
CANCEL_WAIT_S = 30.0  # how long a cancel waits for the crews it stopped to be recorded
END_WAIT_S = 30.0  # how long a delete waits for an ended batch's last writes (late spans)


def _unstarted(task: asyncio.Task[None]) -> bool:
    """A task that has not run its first step: cancelled now, its body never runs at all."""
    coro = task.get_coro()
    return inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED


def _leave(admission: Admission, ticket: Ticket, _: object) -> None:
    admission.leave(ticket)


class Runner:
    """Runs batches of crews concurrently on its own event loop thread."""

    def __init__(
        self,
        crew_factory: CrewFactory | None = None,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        demo_base_url: Callable[[], str] | None = None,
        load: Callable[[str], BaseBlueprint] = load_blueprint,
        store: Store | None = None,
        backend: Backend | None = None,
        spend_cap: SpendCap | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise SettingsError("max concurrency must be at least 1")
        self.max_concurrency = max_concurrency
        self._demo_base_url = demo_base_url
        self._custom_factory = crew_factory
        self.backend: Backend = backend or LocalBackend()
        self._load = load
        self.store = store
        self.spend_cap = spend_cap or SpendCap()  # per person and day; kept with a store only
        self._tasks: dict[str, list[asyncio.Task[None]]] = {}
        self._cancelled: set[str] = set()  # touched on the loop thread only
        # per batch with a budget: its estimate and the crews the budget let start (loop only)
        self._budgets: dict[str, tuple[BatchEstimate, set[str]]] = {}
        self._over_budget: dict[str, str] = {}  # batch id -> why its crews stopped starting
        self._shutting_down = False
        self._batches: OrderedDict[str, Batch] = OrderedDict()
        self._futures: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        self.executor = ThreadPoolExecutor(
            max_workers=max_concurrency + EXECUTOR_HEADROOM, thread_name_prefix="crewdash-crew"
        )
        self._loop = asyncio.new_event_loop()
        self._loop.set_default_executor(self.executor)
        self._admission = Admission(max_concurrency)  # used on the loop thread only
        self._batch_numbers = itertools.count()
        self._restores: dict[str, Restore] = {}  # run id -> the checkpoint it resumes from
        self._resumable: set[str] = set()  # batches whose crews are checkpointed
        self.keys = IdempotencyKeys()  # one batch per submission (a page's form, Idempotency-Key)
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="crewdash-runner", daemon=True
        )
        self._thread.start()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def submit(
        self,
        blueprint: str | BaseBlueprint,
        topics: Sequence[str],
        settings: RunSettings | None = None,
        *,
        notes: Sequence[str] = (),
        source: str = "page",
        inputs: Mapping[str, str] | None = None,
        fan_out: str | None = None,
        idempotency_key: str | None = None,
        fingerprint: str = "",
        by: Person | None = None,
    ) -> str:
        """Start one crew per topic and return the batch id at once.

        The blueprint and every crew's inputs are checked first, so a bad blueprint starts nothing.
        `inputs` fill the blueprint's other inputs (the same for every crew); `fan_out` names the
        input each topic fills (by default `topic`, else the blueprint's only input). A repeat of
        an `idempotency_key` starts nothing and returns the batch the key started (`fingerprint`:
        what the request was, so a key reused for another one is refused).
        """
        if idempotency_key is not None:
            return self.keys.once(
                f"batch:{idempotency_key}",
                fingerprint,
                lambda: self.submit(
                    blueprint,
                    topics,
                    settings,
                    notes=notes,
                    source=source,
                    inputs=inputs,
                    fan_out=fan_out,
                    by=by,
                ),
            )
        settings = settings or RunSettings()
        if not topics:
            raise SettingsError("a batch needs at least one topic")
        bp = self._load(blueprint) if isinstance(blueprint, str) else blueprint
        crew_inputs = [bp.inputs_for(topic, inputs, fan_out) for topic in topics]
        plans = [CrewPlan(t, bp, settings, i) for t, i in zip(topics, crew_inputs, strict=True)]
        return self.submit_plans(
            plans,
            settings,
            notes=notes,
            source=source,
            label=bp.name,
            kind=bp.kind,
            resumable=bp,
            by=by,
        )

    def submit_plans(
        self,
        plans: Sequence[CrewPlan],
        settings: RunSettings,
        *,
        notes: Sequence[str] = (),
        source: str = "page",
        label: str,
        kind: str = "yaml",
        model_label: str | None = None,
        model: str | None = None,
        resumable: BaseBlueprint | None = None,
        by: Person | None = None,
    ) -> str:
        """Start one crew per plan (each with its own blueprint and model) as one batch, under
        the batch's `settings.max_concurrency`; returns the batch id at once."""
        if not plans:
            raise SettingsError("a batch needs at least one topic")
        estimate = None
        if settings.budget is not None:  # a USD budget without a price is refused here
            settings.budget.check_price(settings.llm.model if model is None else model)
            estimate = self.estimate_plans(plans, settings, model)
            if why := admits_none(settings.budget, estimate, self._model(settings, model)):
                raise BudgetTooSmall(why)
        reserve = None
        if self.spend_cap.active and self.store is not None:  # checked as the batch is stored
            estimate = estimate or self.estimate_plans(plans, settings, model)
            reserve = Reservation(
                by.id if by else "",
                self.spend_cap,
                self._model(settings, model),
                estimate.cost_usd,
                estimate.tokens,
            )
        if self._shutting_down or self._loop.is_closed() or not self._thread.is_alive():
            raise ShuttingDownError("the server is shutting down; try again in a moment")
        batch_id = uuid.uuid4().hex[:12]
        batch = Batch(
            batch_id,
            label,
            [p.topic for p in plans],
            model_label=settings.llm.label if model_label is None else model_label,
            max_concurrency=min(settings.max_concurrency, self.max_concurrency),
            notes=notes,
            model=settings.llm.model if model is None else model,
            inputs=[p.inputs for p in plans],
            kind=kind,
            budget_usd=settings.budget.usd if settings.budget else None,
            budget_tokens=settings.budget.tokens if settings.budget else None,
            created_by=by.id if by else "",
            created_by_name=by.name if by else "",
        )
        if self.store is not None:
            self.store.create_batch(batch.snapshot(), source, reserve)  # before any crew ends
            if resumable is not None:  # one blueprint and one model: what a resume needs
                self._resumable.add(batch_id)
                recorded = replace(settings, max_concurrency=batch.snapshot().max_concurrency)
                record_batch(self.store, batch_id, resumable, recorded.to_dict())
        with self._lock:
            self._batches[batch_id] = batch
            while len(self._batches) > MAX_BATCHES_KEPT:
                old_id, old = self._batches.popitem(last=False)
                if not old.snapshot().done:  # never forget a live batch
                    self._batches[old_id] = old
                    self._batches.move_to_end(old_id, last=False)
                    break
                self._futures.pop(old_id, None)
            self._futures[batch_id] = asyncio.run_coroutine_threadsafe(
                self._run_batch(
                    batch, next(self._batch_numbers), list(plans), settings, estimate=estimate
                ),
                self._loop,
            )
        return batch_id

    @staticmethod
    def _model(settings: RunSettings, model: str | None) -> str:
        return settings.llm.model if model is None else model

    def past_usage(self, blueprint: str, model: str) -> list[PastCrew]:
        """Finished crews of earlier batches of `blueprint` on `model`, from the store."""
        if self.store is None:
            return []
        try:
            rows = self.store.past_usage(blueprint, model)
        except Exception as exc:  # noqa: BLE001 - an estimate without history is still one
            log.warning("could not read past usage: %s", describe_error(exc))
            return []
        return [PastCrew(inputs, tokens) for inputs, tokens in rows]

    def estimate_plans(
        self, plans: Sequence[CrewPlan], settings: RunSettings, model: str | None = None
    ) -> BatchEstimate:
        """What the plans are expected to spend, learned from the store's earlier batches of
        the same blueprint and model."""
        if not plans:
            raise SettingsError("a batch needs at least one topic")
        blueprint, name = plans[0].blueprint, self._model(settings, model)
        return estimate_batch(
            blueprint,
            [p.topic for p in plans],
            name,
            settings.llm.max_tokens,
            inputs=[p.inputs for p in plans],
            past=self.past_usage(blueprint.name, name),
        )

    def estimate(
        self,
        blueprint: BaseBlueprint,
        topics: Sequence[str],
        settings: RunSettings,
        *,
        inputs: Mapping[str, str] | None = None,
        fan_out: str | None = None,
    ) -> BatchEstimate:
        """The estimate `submit` checks a budget against, for showing before Run."""
        plans = [
            CrewPlan(t, blueprint, settings, blueprint.inputs_for(t, inputs, fan_out))
            for t in topics
        ]
        return self.estimate_plans(plans, settings)

    def resume(
        self,
        batch: Batch,
        blueprint: BaseBlueprint,
        settings: RunSettings,
        restores: Mapping[str, Restore | None],
    ) -> None:
        """Run a stored batch's crews of `restores` again under their own ids (`batch` holds
        them queued, the others as they ended), each from its checkpoint if it has one."""
        if self._shutting_down or self._loop.is_closed() or not self._thread.is_alive():
            raise ShuttingDownError("the server is shutting down; try again in a moment")
        snap = batch.snapshot()
        with self._lock:
            self._restores.update({r: saved for r, saved in restores.items() if saved})
            self._resumable.add(batch.batch_id)
            self._batches[batch.batch_id] = batch
            plans = [CrewPlan(c.topic, blueprint, settings, dict(c.inputs)) for c in snap.crews]
            self._futures[batch.batch_id] = asyncio.run_coroutine_threadsafe(
                self._run_batch(
                    batch, next(self._batch_numbers), plans, settings, only=set(restores)
                ),
                self._loop,
            )

    def batch(self, batch_id: str) -> Batch:
        with self._lock:
            try:
                return self._batches[batch_id]
            except KeyError:
                raise UnknownBatchError(batch_id) from None

    def batch_ids(self) -> list[str]:
        with self._lock:
            return list(self._batches)

    def snapshot(self, batch_id: str) -> BatchSnapshot:
        """The batch's current immutable snapshot."""
        return self.batch(batch_id).snapshot()

    async def _run_batch(
        self,
        batch: Batch,
        number: int,
        plans: list[CrewPlan],
        settings: RunSettings,
        only: set[str] | None = None,
        estimate: BatchEstimate | None = None,
    ) -> None:
        tasks: list[asyncio.Task[None]] = []
        limit = min(settings.max_concurrency, self.max_concurrency)
        if settings.budget is not None:
            model = batch.snapshot().model
            if estimate is None:  # a resume: the same estimate, from the blueprint alone
                estimate = estimate_batch(
                    plans[0].blueprint,
                    [p.topic for p in plans],
                    model,
                    settings.llm.max_tokens,
                    inputs=[p.inputs for p in plans],
                )
            self._budgets[batch.batch_id] = (estimate, set())
            # every model call of the batch's crews asks the budget first (crewdash.engine.budget)
            open_gate(batch.batch_id, BudgetGate(settings.budget, estimate, model))
        runs = [
            (run_id, plan)
            for run_id, plan in zip(batch.run_ids, plans, strict=True)
            if only is None or run_id in only  # a resume runs its chosen crews only
        ]
        # every crew takes its place in the queue now, before any later batch's crew can
        tickets = [
            self._admission.enqueue((number, index), batch.batch_id, limit)
            for index in range(len(runs))
        ]
        try:
            crews = ((*run, ticket) for run, ticket in zip(runs, tickets, strict=True))
            for run_id, plan, ticket in crews:
                if batch.batch_id in self._cancelled or run_id in self._cancelled:
                    self._admission.leave(ticket)
                    await self._finish(
                        batch, batch.ending(run_id, CrewState.CANCELLED, error="cancelled")
                    )
                    continue
                crew_run = self._run_crew(
                    batch, run_id, plan.blueprint, plan.topic, plan.inputs, plan.settings, ticket
                )
                task = asyncio.create_task(crew_run, name=run_id)
                # a task cancelled before its first step never enters its slot: free it anyway
                task.add_done_callback(partial(_leave, self._admission, ticket))
                tasks.append(task)
                self._tasks[batch.batch_id] = tasks
                # A crew's first step (building it, CrewAI's synchronous kickoff preparation)
                # holds the loop for ~30 ms; yielding here starts one crew per loop iteration, so
                # timers and I/O are served between starts instead of after all N of them.
                await asyncio.sleep(0)
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:  # also when close() cancels this batch midway: nothing stays queued forever
            for ticket in tickets:
                self._admission.leave(ticket)
            for crew in batch.snapshot().crews:  # crews cancelled or never started
                if not crew.state.final:
                    await asyncio.shield(self._finish(batch, self._stopped(batch, crew.run_id)))
            self._tasks.pop(batch.batch_id, None)
            self._budgets.pop(batch.batch_id, None)
            self._over_budget.pop(batch.batch_id, None)
            close_gate(batch.batch_id)
            self._resumable.discard(batch.batch_id)
            self._cancelled.difference_update({batch.batch_id, *batch.run_ids})
            # here, not after: when close() cancels this task its crews end, so the batch does
            await asyncio.shield(self._save_end(batch))

    async def _save_end(self, batch: Batch) -> None:
        """Write the batch's end, late spans included (on shutdown close() has its deadline)."""
        if self.store is not None:
            await asyncio.to_thread(crewai_event_bus.flush, 1 if self._shutting_down else 10)
            snap = batch.snapshot()
            await self._persist(self.store.finish_batch, snap)
            # again after the flush: a late checkpoint of a crew that ended is pruned too
            ended = [c.run_id for c in snap.crews if c.state is not CrewState.INTERRUPTED]
            await self._persist(discard, self.store, ended)

    async def _persist(self, write: Callable[..., None], *args: Any) -> None:
        """A store write off the loop; a failing database is logged, the run goes on."""
        try:
            await asyncio.to_thread(write, *args)
        except Exception as exc:  # noqa: BLE001 - results stay in memory and in the page
            log.error("could not save to the history database: %s", describe_error(exc))

    def cancel(self, batch_id: str) -> int:
        """Cancel a batch's unfinished crews; returns how many this call stopped.

        Waits (briefly) for the crews to end, so a second cancel, or a crew that finished at that
        instant and keeps its result, counts 0. Never call it from the runner's own loop.
        """
        return self._cancel(self.batch(batch_id), None)

    def delete(self, batch_id: str) -> int:
        """Delete an ended batch: its rows in the store (`Store.delete_batch`), the files its
        crews wrote, and this runner's memory of it. Returns how many crews it had.

        `BatchRunningError` while a crew is queued or running (cancel it first),
        `UnknownBatchError` for no such batch. Waits for the batch's last writes (its end,
        late spans, pruned checkpoints): written after the delete, they would bring rows
        back. Never call it from the runner's own loop.
        """
        with self._lock:
            batch, future = self._batches.get(batch_id), self._futures.get(batch_id)
        if batch is not None:
            if not batch.snapshot().done:
                raise BatchRunningError(batch_id)
            if future is not None:
                wait_for_futures([future], END_WAIT_S)
        crews = len(batch.run_ids) if batch is not None else 0
        try:
            if self.store is not None:
                crews = self.store.delete_batch(batch_id)
            elif batch is None:
                raise UnknownBatchError(batch_id)
        except UnknownBatchError:
            if batch is None:
                raise  # (a batch the database never got, for it was down: memory only)
        with self._lock:
            if self._batches.get(batch_id) is batch:
                self._batches.pop(batch_id, None)
                self._futures.pop(batch_id, None)
        self.keys.forget(batch_id)
        if BATCH_ID.fullmatch(batch_id):  # only a folder the runner named: never a path
            shutil.rmtree(outputs_dir() / batch_id, ignore_errors=True)
        return crews

    def request_cancel(self, batch_id: str, run_ids: set[str] | None = None) -> None:
        """Cancel a batch's unfinished crews (or those of `run_ids`) without waiting for their
        endings: for the dashboard, which shows them as they come and needs no count."""
        self._schedule_cancel(self.batch(batch_id), run_ids)

    def admission(self, batch_id: str) -> tuple[int, int]:
        """(crews of earlier batches still queued ahead of this one, crews running now in the
        whole process), for showing a batch's place in the process-wide queue."""
        with self._lock:
            ids = list(self._batches)
            snaps = [b.snapshot() for b in self._batches.values()]
        if batch_id not in ids:
            raise UnknownBatchError(batch_id)
        ahead = sum(s.count(CrewState.QUEUED) for s in snaps[: ids.index(batch_id)])
        return ahead, sum(s.count(CrewState.RUNNING) for s in snaps)

    def cancel_crew(self, batch_id: str, run_id: str) -> bool:
        """Cancel one crew of a batch; True only if this call stopped it (False if it had
        already ended, finished first, or another cancel got there first)."""
        batch = self.batch(batch_id)
        if run_id not in batch.run_ids:
            raise UnknownBatchError(f"{batch_id}/{run_id}")
        return self._cancel(batch, {run_id}) == 1

    def _cancel(self, batch: Batch, only: set[str] | None) -> int:
        future = self._schedule_cancel(batch, only)
        return 0 if future is None else future.result(CANCEL_WAIT_S + 5)

    def _schedule_cancel(self, batch: Batch, only: set[str] | None) -> Future[int] | None:
        """Start a cancel on the loop; None when there is nothing left to cancel."""
        if batch.snapshot().done or self._loop.is_closed():
            return None
        return asyncio.run_coroutine_threadsafe(self._cancel_on_loop(batch, only), self._loop)

    async def _cancel_on_loop(self, batch: Batch, only: set[str] | None) -> int:
        """Claim the unfinished crews no other cancel has claimed, stop them, and count those
        that ended `cancelled`. On the loop thread, so claims and task states cannot race."""
        claimed = {
            c.run_id
            for c in batch.snapshot().crews
            if not c.state.final
            and c.run_id not in self._cancelled
            and (only is None or c.run_id in only)
        }
        if not claimed:
            return 0
        self._cancelled.update(claimed)  # crews not started yet end as cancelled in _run_batch
        tasks = [t for t in self._tasks.get(batch.batch_id, []) if t.get_name() in claimed]
        unstarted = [t for t in tasks if _unstarted(t)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in unstarted:  # cancelled before its first step, its own ending never ran
            await self._finish(batch, self._stopped(batch, task.get_name()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CANCEL_WAIT_S):
                while not all(batch.crew(r).state.final for r in claimed):
                    await asyncio.sleep(0.01)  # endings being written to the store
        return sum(1 for r in claimed if batch.crew(r).state is CrewState.CANCELLED)

    def _job(
        self,
        batch_id: str,
        run_id: str,
        blueprint: BaseBlueprint,
        topic: str,
        inputs: dict[str, str],
        s: RunSettings,
    ) -> CrewJob:
        llm = s.llm.with_environment_key()
        demo_url = self._demo_base_url() if llm.is_demo and self._demo_base_url else None
        if self._custom_factory is not None:
            build: CrewBuilder = partial(self._custom_factory, blueprint, topic, s)
        else:
            build = blueprint_builder(blueprint, llm, demo_url)
        return CrewJob(
            run_id,
            topic,
            build,
            inputs,
            llm,
            s.crew_timeout_s,
            default_llm=partial(build_llm, llm, demo_url),
            output_dir=str(outputs_dir() / batch_id / run_id),
            cache=s.response_cache,
            checkpoint=(
                CheckpointSink(self.store.url, batch_id, run_id, llm.api_key)
                if self.store is not None and batch_id in self._resumable
                else None
            ),
            restore=self._restores.pop(run_id, None),
        )

    async def _run_crew(
        self,
        batch: Batch,
        run_id: str,
        blueprint: BaseBlueprint,
        topic: str,
        inputs: dict[str, str],
        settings: RunSettings,
        ticket: Ticket,
    ) -> None:
        async def started(running: CrewSnapshot) -> None:
            if self.store is not None:
                await self._persist(self.store.save_crew, batch.batch_id, running)

        try:
            async with self._admission.slot(ticket):
                try:
                    if (stop := self._budget_stop(batch, run_id, settings)) is not None:
                        ended = batch.ending(run_id, CrewState.BUDGET_EXCEEDED, error=stop)
                    else:
                        job = self._job(batch.batch_id, run_id, blueprint, topic, inputs, settings)
                        ended = await self.backend.run(batch, job, started)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - e.g. a backend that lost its worker
                    error = describe_error(exc, [settings.llm.with_environment_key().api_key])
                    log.warning("crew %s could not run: %s", run_id, error)
                    ended = batch.ending(run_id, CrewState.FAILED, error=error)
        except asyncio.CancelledError:
            ended = self._stopped(batch, run_id)
            await asyncio.shield(self._finish(batch, ended))
            raise
        # shielded: a cancel arriving during the store write must not turn this ending into
        # "cancelled" (the result is already decided) nor race a second write of the crew
        await asyncio.shield(self._finish(batch, ended))

    def _budget_stop(self, batch: Batch, run_id: str, settings: RunSettings) -> str | None:
        """Why this crew may not start under the batch's budget (once one may not, none after
        it may: spend only grows), or None; a crew let through is counted as running."""
        held = self._budgets.get(batch.batch_id)
        if settings.budget is None or held is None:
            return None
        if batch.batch_id in self._over_budget:
            return self._over_budget[batch.batch_id]
        estimate, admitted = held
        gate = gate_of(batch.batch_id)
        if gate is not None and gate.stopped is not None:  # model calls are refused already
            why: str | None = gate.stopped.replace("before its next model call", "(not started)")
        else:
            why = over_budget(settings.budget, batch.snapshot(), estimate, admitted)
        if why is None:
            admitted.add(run_id)
        else:
            self._over_budget[batch.batch_id] = why
        return why

    def _stopped(self, batch: Batch, run_id: str) -> CrewSnapshot:
        """The ending of a crew stopped from outside: cancelled, or interrupted by shutdown."""
        if self._shutting_down:
            return batch.ending(
                run_id,
                CrewState.INTERRUPTED,
                error="interrupted: the server stopped before this crew finished",
            )
        return batch.ending(run_id, CrewState.CANCELLED, error="cancelled")

    async def _finish(self, batch: Batch, ended: CrewSnapshot) -> None:
        """Commit the crew's end to the store first, then show it: durable before visible."""
        if self.store is not None:
            await self._persist(self.store.save_crew, batch.batch_id, ended)
            if ended.state is not CrewState.INTERRUPTED:  # only an interrupted crew resumes
                await self._persist(discard, self.store, [ended.run_id])
        batch.end(ended)

    def close(self, timeout: float = 5.0) -> None:
        """Stop admitting, end what is still running as interrupted (saved to the store), then
        stop the loop and its thread. Used on shutdown (SIGTERM) and by tests."""
        if self._loop.is_closed():
            return
        self._shutting_down = True

        async def _cancel_all() -> None:
            current = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks() if t is not current]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(_cancel_all(), self._loop).result(timeout)
            except Exception:  # noqa: BLE001 - best effort on shutdown
                log.warning(
                    "some crews did not stop within %.1f s; where each thread is:\n%s",
                    timeout,
                    _thread_stacks(),
                )
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        if not self._loop.is_running():
            self._loop.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.backend.close()


def _thread_stacks() -> str:
    """Every thread's stack, for the log when shutdown cannot stop the crews: what holds them."""
    names = {t.ident: t.name for t in threading.enumerate()}
    return "\n".join(
        f"--- {names.get(ident, ident)}\n" + "".join(traceback.format_stack(frame))
        for ident, frame in sys._current_frames().items()
    )
