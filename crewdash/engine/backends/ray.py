"""Crews on a Ray cluster: async actors, each running many crews on its own event loop.

The runner in the dashboard process keeps admission, batches, the store and cancellation, as with
the local backend. Each admitted crew becomes one streaming call on the least busy `CrewWorker`
actor: the actor runs it with the same `run_crew` as the local backend, against a one-crew
`Batch` of its own, and yields that crew's progress (state, step, spans) as it changes; the
runner copies it into the real batch, so pages, API and store see the same live snapshots.
Cancelling the runner's task cancels the Ray call, which cancels the crew in the actor.

A CrewAI project travels with its crews: its recipe carries the project's files (see
`projects.blueprint.ProjectBuild`), put in Ray's object store once per version of the project;
each actor unpacks and imports a version once. A crew's tasks write their files into a scratch
folder on the worker, which sends them back with the crew's ending (up to `MAX_RETURNED_BYTES`);
the runner writes them into the crew's output folder here, where the dashboard and API serve
them.

Ray is optional (`requirements-ray.txt`); nothing here imports it until a Ray backend starts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import tempfile
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from crewdash.base.config import PACKAGE_DIR
from crewdash.base.errors import SettingsError, redact
from crewdash.base.run_context import contained, list_files
from crewdash.base.settings import Settings, default_of
from crewdash.engine.execution import EXECUTOR_HEADROOM, CrewJob, Started, freeze_heap, run_crew
from crewdash.model.batch import Batch, CrewSnapshot, CrewState

log = logging.getLogger(__name__)

DEFAULT_WORKERS: int = default_of("CREWDASH_RAY_WORKERS")
PROGRESS_EVERY_S = 0.1  # how often a running crew's changes are sent back at most
LATE_SPANS_GRACE_S = 0.5  # after a crew ends, how long to wait for its last LLM events
CONNECT_TIMEOUT_S = 5.0
WORKERS_READY_TIMEOUT_S = 60.0
ACTOR_MAX_CONCURRENCY = 1000  # crews one actor may run at once; the runner's admission caps it
NAMESPACE = "crewdash"
MAX_RETURNED_BYTES = 32 * 1024**2  # files one crew's tasks wrote, sent back to the runner
RECIPES_KEPT = 32  # project versions kept in the object store for the next crews
RESTART_WAIT_S = 60.0  # how long a crew waits for a restarting worker before it fails
RESTART_POLL_S = 0.5

# What a crew's stream yields: (progress, None, {}) while it runs, then (last progress, ending,
# the files its tasks wrote by path in its folder).
Progress = tuple[CrewSnapshot, CrewSnapshot | None, dict[str, bytes]]


def _sent_apart() -> NoReturn:
    """Stands for a project's recipe in a job: the recipe goes to the actor as its own argument."""
    raise RuntimeError("a project's recipe travels apart from its job")


def _collect(folder: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    """The files a crew wrote, in order, up to `MAX_RETURNED_BYTES` in all."""
    kept: dict[str, bytes] = {}
    total = 0
    for name in names:
        path = folder / name
        size = path.stat().st_size if path.is_file() else 0
        if size and total + size <= MAX_RETURNED_BYTES:
            kept[name] = path.read_bytes()
            total += size
    return kept


def _write_files(folder: Path, files: dict[str, bytes]) -> tuple[str, ...]:
    """Write the files a worker sent back into the crew's own folder; what it holds then."""
    for name, data in files.items():
        contained(folder, name).write_bytes(data)  # never outside the folder
    return list_files(folder)


@dataclass(frozen=True)
class RaySettings:
    """`RAY_ADDRESS` (empty: start a local Ray on demand) and `CREWDASH_RAY_WORKERS`."""

    address: str | None = None
    workers: int = DEFAULT_WORKERS

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= 256:
            raise SettingsError("CREWDASH_RAY_WORKERS must be between 1 and 256")

    @classmethod
    def from_settings(cls, settings: Settings) -> RaySettings:
        """`RAY_ADDRESS` and `CREWDASH_RAY_WORKERS` of the settings the composition root read."""
        return cls(address=settings.ray_address, workers=settings.ray_workers)

    @property
    def label(self) -> str:
        where = self.address or "a local Ray started on demand"
        return f"Ray ({self.workers} workers on {where})"


class _WorkerRestarting(Exception):
    """The chosen worker was restarting when the crew was sent to it; nothing of it ran."""


class CrewWorker:
    """The Ray actor (wrapped with `ray.remote` at start): runs crews on its own event loop."""

    def __init__(self) -> None:
        import crewdash  # noqa: F401 - telemetry off and CrewAI's lock backend, as in the driver
        from crewdash.base.config import quiet_crewai_logs

        quiet_crewai_logs()
        self._sized = False
        self._frozen = False
        self._crews: set[asyncio.Task[CrewSnapshot]] = set()

    def _size_executor(self) -> None:
        """CrewAI hops to the loop's default executor; Python's default of min(32, cpu + 4)
        threads would cap this actor's concurrent crews (the same pitfall as in the runner)."""
        if not self._sized:
            executor = ThreadPoolExecutor(
                ACTOR_MAX_CONCURRENCY + EXECUTOR_HEADROOM, "crewdash-ray-crew"
            )
            asyncio.get_running_loop().set_default_executor(executor)
            self._sized = True

    async def where(self) -> dict[str, Any]:
        import ray

        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}

    async def running(self) -> int:
        """Crews running in this actor now."""
        return len(self._crews)

    async def cpu_seconds(self) -> float:
        """CPU time this worker process has used (for the backend benchmark)."""
        return time.process_time()

    async def projects(self) -> dict[str, int]:
        """The projects this actor received (their folder here) and how often each was imported."""
        from crewdash.blueprints.projects.blueprint import received_projects

        return received_projects()

    async def run(
        self, batch_id: str, blueprint: str, job: CrewJob, recipe: Any = None
    ) -> AsyncIterator[Progress]:
        """Yield (progress, None, {}) while the crew runs, then (last progress, ending, files).

        `recipe`, when given, builds the crew (a project's, sent apart from the job). The crew's
        tasks write into a scratch folder of this worker, removed once its files are sent."""
        self._size_executor()
        scratch = Path(tempfile.mkdtemp(prefix="crewdash-crew-")) if job.output_dir else None
        job = replace(job, output_dir=str(scratch) if scratch else None)
        if recipe is not None:
            job = replace(job, build=recipe)
        try:
            async for item in self._run(batch_id, blueprint, job, scratch):
                yield item
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)

    async def _run(
        self, batch_id: str, blueprint: str, job: CrewJob, scratch: Path | None
    ) -> AsyncIterator[Progress]:
        batch = Batch(
            batch_id,
            blueprint,
            [job.topic],
            model_label=job.llm.label,
            max_concurrency=1,
            run_ids=[job.run_id],
        )
        began = asyncio.Event()

        async def started(_: CrewSnapshot) -> None:
            began.set()

        task = asyncio.create_task(run_crew(batch, job, started))
        self._crews.add(task)
        task.add_done_callback(self._crews.discard)
        try:
            waiter = asyncio.create_task(began.wait())
            try:
                await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            sent: CrewSnapshot | None = None
            while not task.done():
                # streamed text stays on the worker (the page shows Ray crews' answers at the
                # end, as before); only real progress crosses, TTFT on its spans included
                crew = replace(batch.crew(job.run_id), live_text="")
                if crew != sent:
                    yield crew, None, {}
                    sent = crew
                await asyncio.wait({task}, timeout=PROGRESS_EVERY_S)
            ending = task.result()
            if not self._frozen:  # as in the driver: a gen-2 collection here is a long pause
                self._frozen = True
                freeze_heap()
            deadline = time.monotonic() + LATE_SPANS_GRACE_S
            while time.monotonic() < deadline and any(
                s.finished_at is None for s in batch.crew(job.run_id).spans
            ):
                await asyncio.sleep(0.02)
            files: dict[str, bytes] = {}
            if scratch is not None and ending.files:
                files = await asyncio.to_thread(_collect, scratch, ending.files)
            yield batch.crew(job.run_id), ending, files
        finally:
            if not task.done():  # the call was cancelled: stop the crew too
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


def _reachable(address: str) -> None:
    """Fail fast, naming the setting, when RAY_ADDRESS points nowhere: `ray.init` would retry
    for a minute and then raise an error that does not say which setting was wrong."""
    if address == "auto":
        return
    if address.startswith("ray://"):
        raise SettingsError(
            f"RAY_ADDRESS={address}: Ray Client (ray://) cannot stream results, which crewdash "
            "needs for live progress; use the cluster's GCS address (host:6379) from a machine "
            "or pod on the cluster's network"
        )
    parts = urlsplit(address if "://" in address else f"gcs://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise SettingsError(
            f"RAY_ADDRESS={address!r} is not an address: use host:port (a cluster's GCS, "
            "e.g. 10.0.0.5:6379), or leave it empty to start a local Ray"
        )
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SettingsError(
            f"RAY_ADDRESS={address} is unreachable ({reason}). Check the cluster is up and the "
            "address is right, or set CREWDASH_RUNNER=local; crewdash does not fall back to the "
            "local backend by itself."
        ) from None


def _ray_cause(exc: BaseException) -> str:
    """The first line of what went wrong inside Ray, without Ray's own headers."""
    cause = getattr(exc, "cause", None) or exc
    lines = [ln for ln in str(cause).strip().splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("ray::", "Traceback", "  "))]
    return (useful or lines or [type(cause).__name__])[0][:300]


def _cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 0))  # type: ignore[no-untyped-call]


class RayBackend:
    """Crews on Ray actors spread over the cluster's nodes."""

    name = "ray"

    def __init__(self, settings: RaySettings) -> None:
        try:
            import ray
        except ImportError:
            raise SettingsError(
                "CREWDASH_RUNNER=ray needs Ray, which is not installed here: "
                "pip install -r requirements-ray.txt (or set CREWDASH_RUNNER=local)"
            ) from None
        self.settings = settings
        if settings.address:
            _reachable(settings.address)
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            init: dict[str, Any] = {
                "namespace": NAMESPACE,
                "include_dashboard": False,
                "log_to_driver": False,
                "logging_level": logging.WARNING,
                # crewdash's own code goes to the workers; their Python must have the
                # dependencies (the same image, or the same virtualenv on one machine)
                "runtime_env": {"py_modules": [str(PACKAGE_DIR)]},
            }
            if settings.address:
                init["address"] = settings.address
            else:  # "local": a new Ray of our own, even if `ray start` runs on this machine
                init["address"] = "local"
                init["num_cpus"] = max(settings.workers, os.cpu_count() or 1)
                init["object_store_memory"] = 256 * 1024**2
            try:
                ray.init(**init)
            except Exception as exc:  # noqa: BLE001 - a start-up error the user must read
                where = f"RAY_ADDRESS={settings.address}" if settings.address else "a local Ray"
                raise SettingsError(f"could not connect to {where}: {exc}") from None
        self._workers: list[Any] = []
        self._recipes: OrderedDict[str, Any] = OrderedDict()  # project digest -> ObjectRef
        try:
            self._start_workers(settings)
        except BaseException:
            self.close()  # never leave a local Ray or half the actors behind
            raise

    def _start_workers(self, settings: RaySettings) -> None:
        import ray

        actor = ray.remote(CrewWorker).options(
            max_concurrency=ACTOR_MAX_CONCURRENCY,
            num_cpus=1,
            scheduling_strategy="SPREAD",
            max_restarts=-1,  # a worker that dies (out of memory, node lost) comes back
        )
        self._workers = [actor.remote() for _ in range(settings.workers)]
        self._busy = [0] * len(self._workers)
        ready = [w.where.remote() for w in self._workers]
        done, pending = ray.wait(ready, num_returns=len(ready), timeout=WORKERS_READY_TIMEOUT_S)
        if pending:
            raise SettingsError(
                f"only {len(done)} of CREWDASH_RAY_WORKERS={settings.workers} Ray workers "
                f"started within {WORKERS_READY_TIMEOUT_S:g} s; each needs 1 CPU "
                f"(the cluster has {_cluster_cpus():g})"
            )
        try:
            self.placement = ray.get(done)
        except ray.exceptions.RayError as exc:  # e.g. the workers' Python lacks crewai
            raise SettingsError(
                f"the Ray workers could not start crewdash: {_ray_cause(exc)}. Their Python "
                "needs the packages of requirements-ray.txt."
            ) from None
        self.processes = len(self._workers)
        nodes = len({w["node"] for w in self.placement})
        self.label = f"{settings.label}, {nodes} node{'s' if nodes > 1 else ''}"

    async def _ship(self, job: CrewJob) -> tuple[CrewJob, Any]:
        """The job, and its project's recipe (with the project's files) as an object in Ray's
        store, put there once per version of the project; other recipes stay in the job."""
        import ray

        portable = getattr(job.build, "portable", None)
        if portable is None:
            return job, None
        digest = portable()  # BlueprintError: a project too large to send
        ref = self._recipes.get(digest)
        if ref is None:
            ref = await asyncio.to_thread(ray.put, job.build)
            self._recipes[digest] = ref
            while len(self._recipes) > RECIPES_KEPT:
                self._recipes.popitem(last=False)
        self._recipes.move_to_end(digest)
        return replace(job, build=_sent_apart), ref

    async def run(self, batch: Batch, job: CrewJob, started: Started) -> CrewSnapshot:
        deadline = time.monotonic() + RESTART_WAIT_S
        while True:
            slot = min(range(len(self._workers)), key=self._busy.__getitem__)
            self._busy[slot] += 1
            try:
                return await self._run_on(slot, batch, job, started)
            except _WorkerRestarting:
                # The worker holding the least load is being restarted (it died, e.g. out of
                # memory): Ray refuses calls to it until it is back, which takes seconds while it
                # imports CrewAI again. The crew had not started: place it again, on any worker.
                if time.monotonic() > deadline:
                    return batch.ending(
                        job.run_id,
                        CrewState.FAILED,
                        error="the Ray worker running this crew failed: no worker came back "
                        f"within {RESTART_WAIT_S:g} s",
                    )
                await asyncio.sleep(RESTART_POLL_S)
            finally:
                self._busy[slot] -= 1

    async def _run_on(
        self, slot: int, batch: Batch, job: CrewJob, started: Started
    ) -> CrewSnapshot:
        import ray

        has_started = False
        received = False
        stream = None
        try:
            sent, recipe = await self._ship(job)
            stream = (
                self._workers[slot]
                .run.options(num_returns="streaming")
                .remote(batch.batch_id, batch.snapshot().blueprint, sent, recipe)
            )
            async for ref in stream:
                progress: CrewSnapshot
                ending: CrewSnapshot | None
                progress, ending, files = await ref
                received = True
                batch.adopt(progress)
                if not has_started and progress.state is CrewState.RUNNING:
                    has_started = True
                    await started(batch.crew(job.run_id))
                if ending is not None:  # numbered as in the real batch, not the worker's own
                    mine = batch.crew(job.run_id)
                    written: tuple[str, ...] = ()
                    if job.output_dir and files:
                        folder = Path(job.output_dir)
                        written = await asyncio.to_thread(_write_files, folder, files)
                    left = [name for name in ending.files if name not in files]
                    if left:
                        cap = f"{MAX_RETURNED_BYTES / 1024**2:g} MB"
                        log.warning(
                            "crew %s: files past %s not sent back: %s", job.run_id, cap, left
                        )
                    return replace(
                        ending,
                        index=mine.index,
                        queued_at=mine.queued_at,
                        inputs=mine.inputs,
                        files=written,
                    )
            raise RuntimeError("the Ray worker ended the crew without a result")
        except asyncio.CancelledError:
            if stream is not None:
                ray.cancel(stream)
            raise
        except ray.exceptions.RayError as exc:
            if isinstance(exc, ray.exceptions.ActorUnavailableError) and not received:
                raise _WorkerRestarting from None
            error = redact(_ray_cause(exc), [job.llm.api_key])
            return batch.ending(
                job.run_id,
                CrewState.FAILED,
                error=f"the Ray worker running this crew failed: {error}",
            )

    def running(self) -> int:
        """Crews running on the cluster's workers now (for tests and health checks)."""
        import ray

        return sum(ray.get([w.running.remote() for w in self._workers], timeout=30))

    def worker_cpu_s(self) -> float:
        """CPU seconds used by all worker processes so far."""
        import ray

        return float(sum(ray.get([w.cpu_seconds.remote() for w in self._workers], timeout=30)))

    def close(self) -> None:
        try:
            import ray
        except ImportError:
            return
        if not ray.is_initialized():
            return
        for worker in getattr(self, "_workers", []):
            ray.kill(worker)
        self._workers = []
        if self._owns_ray:
            ray.shutdown()
