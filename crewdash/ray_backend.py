"""Crews on a Ray cluster: async actors, each running many crews on its own event loop.

The runner in the dashboard process keeps admission, batches, the store and cancellation, as with
the local backend. Each admitted crew becomes one streaming call on the least busy `CrewWorker`
actor: the actor runs it with the same `run_crew` as the local backend, against a one-crew
`Batch` of its own, and yields that crew's progress (state, step, spans) as it changes; the
runner copies it into the real batch, so pages, API and store see the same live snapshots.
Cancelling the runner's task cancels the Ray call, which cancels the crew in the actor.

Ray is optional (`requirements-ray.txt`); nothing here imports it until a Ray backend starts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from crewdash.batch import Batch, CrewSnapshot, CrewState
from crewdash.config import PACKAGE_DIR, env_int
from crewdash.errors import SettingsError, redact
from crewdash.execution import EXECUTOR_HEADROOM, CrewJob, Started, freeze_heap, run_crew

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 2
PROGRESS_EVERY_S = 0.1  # how often a running crew's changes are sent back at most
LATE_SPANS_GRACE_S = 0.5  # after a crew ends, how long to wait for its last LLM events
CONNECT_TIMEOUT_S = 5.0
WORKERS_READY_TIMEOUT_S = 60.0
ACTOR_MAX_CONCURRENCY = 1000  # crews one actor may run at once; the runner's admission caps it
NAMESPACE = "crewdash"


@dataclass(frozen=True)
class RaySettings:
    """`RAY_ADDRESS` (empty: start a local Ray on demand) and `CREWDASH_RAY_WORKERS`."""

    address: str | None = None
    workers: int = DEFAULT_WORKERS

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= 256:
            raise SettingsError("CREWDASH_RAY_WORKERS must be between 1 and 256")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RaySettings:
        env = os.environ if env is None else env
        workers = env_int("CREWDASH_RAY_WORKERS", DEFAULT_WORKERS, env)
        return cls(address=env.get("RAY_ADDRESS", "").strip() or None, workers=workers)

    @property
    def label(self) -> str:
        where = self.address or "a local Ray started on demand"
        return f"Ray ({self.workers} workers on {where})"


class CrewWorker:
    """The Ray actor (wrapped with `ray.remote` at start): runs crews on its own event loop."""

    def __init__(self) -> None:
        import crewdash  # noqa: F401 - telemetry off and CrewAI's lock backend, as in the driver
        from crewdash.config import quiet_crewai_logs

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

    async def run(
        self, batch_id: str, blueprint: str, job: CrewJob
    ) -> AsyncIterator[tuple[CrewSnapshot, CrewSnapshot | None]]:
        """Yield (progress, None) while the crew runs, then (last progress, ending)."""
        self._size_executor()
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
                crew = batch.crew(job.run_id)
                if crew != sent:
                    yield crew, None
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
            yield batch.crew(job.run_id), ending
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

    async def run(self, batch: Batch, job: CrewJob, started: Started) -> CrewSnapshot:
        import ray

        slot = min(range(len(self._workers)), key=self._busy.__getitem__)
        has_started = False
        stream = None
        self._busy[slot] += 1
        try:
            stream = (
                self._workers[slot]
                .run.options(num_returns="streaming")
                .remote(batch.batch_id, batch.snapshot().blueprint, job)
            )
            async for ref in stream:
                progress: CrewSnapshot
                ending: CrewSnapshot | None
                progress, ending = await ref
                batch.adopt(progress)
                if not has_started and progress.state is CrewState.RUNNING:
                    has_started = True
                    await started(batch.crew(job.run_id))
                if ending is not None:  # numbered as in the real batch, not the worker's own
                    mine = batch.crew(job.run_id)
                    return replace(ending, index=mine.index, queued_at=mine.queued_at)
            raise RuntimeError("the Ray worker ended the crew without a result")
        except asyncio.CancelledError:
            if stream is not None:
                ray.cancel(stream)
            raise
        except ray.exceptions.RayError as exc:
            error = redact(_ray_cause(exc), [job.llm.api_key])
            return batch.ending(
                job.run_id,
                CrewState.FAILED,
                error=f"the Ray worker running this crew failed: {error}",
            )
        finally:
            self._busy[slot] -= 1

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
