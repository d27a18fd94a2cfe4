"""The same runner on each backend (local, Ray), measured in one run.

For each backend: N crews of the timing blueprint against a zero-latency demo model (the
framework's own CPU cost decides the wall time: throughput), then N crews at a given latency.
The bound for the second is one call's latency plus the first's wall time: a backend that
overlaps the waiting with the CPU work lands close to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from crewdash.base.errors import SettingsError
from crewdash.base.settings import RUNNERS
from crewdash.blueprints.catalog import builtin_blueprint
from crewdash.demo.profiles import LatencyProfile
from crewdash.demo.server import DemoLLMServer
from crewdash.engine.execution import Backend
from crewdash.engine.jobs import Progress
from crewdash.engine.plans import RunSettings
from crewdash.engine.runner import Runner
from crewdash.model.batch import CrewState
from crewdash.providers.llm import LLMSettings
from crewdash.runtime import warm_up

MAX_N = 1000
BACKENDS = RUNNERS


@dataclass(frozen=True)
class BackendResult:
    backend: str
    processes: int
    n: int
    zero_latency_wall_s: float
    crews_per_s: float
    latency_s: float
    wall_s: float
    bound_s: float  # latency_s + zero_latency_wall_s
    wall_over_bound: float
    failed: int
    # CPU seconds of the zero-latency batch: this process (runner, demo model) and, on Ray,
    # the worker processes; against the wall time they show where the cores went
    driver_cpu_s: float
    worker_cpu_s: float | None


@dataclass(frozen=True)
class BackendReport:
    n: int
    latency_s: float
    results: tuple[BackendResult, ...]

    def result(self, backend: str) -> BackendResult | None:
        return next((r for r in self.results if r.backend == backend), None)

    @property
    def throughput_ratio(self) -> float | None:
        """Ray's zero-latency throughput over the local backend's."""
        local, ray = self.result("local"), self.result("ray")
        if local is None or ray is None or not local.crews_per_s:
            return None
        return ray.crews_per_s / local.crews_per_s

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "latency_s": self.latency_s,
            "ray_over_local_throughput": None
            if self.throughput_ratio is None
            else round(self.throughput_ratio, 3),
            "results": [asdict(r) for r in self.results],
        }


def parse_backends(spec: str) -> list[str]:
    names = [b.strip().lower() for b in spec.split(",") if b.strip()]
    unknown = [b for b in names if b not in BACKENDS]
    if unknown or not names:
        raise SettingsError(f"backends must be some of {', '.join(BACKENDS)}, got {spec!r}")
    return list(dict.fromkeys(names))


def _batch_wall(runner: Runner, n: int, label: str) -> tuple[float, int]:
    """Submit N timing crews and wait: (wall seconds from submit to the last end, failures)."""
    settings = RunSettings(llm=LLMSettings(), max_concurrency=n)
    started = time.perf_counter()
    batch_id = runner.submit(
        builtin_blueprint("timing"), [f"{label}-{i}" for i in range(n)], settings
    )
    if not runner.batch(batch_id).wait(timeout=900):
        raise TimeoutError(f"{label}: {n} crews did not finish within 900 s")
    wall = time.perf_counter() - started
    snap = runner.snapshot(batch_id)
    return wall, sum(1 for c in snap.crews if c.state is not CrewState.SUCCEEDED)


def _cpu(backend: Backend) -> tuple[float, float | None]:
    """(this process's CPU seconds, the backend's worker processes' CPU seconds if it has any)."""
    workers = getattr(backend, "worker_cpu_s", None)
    return time.process_time(), workers() if callable(workers) else None


def measure_backend(
    name: str, backend: Backend, n: int, latency_s: float, progress: Progress | None = None
) -> BackendResult:
    """Run the two batches on one backend; the backend is closed afterwards."""
    say = progress or (lambda _f, _m: None)
    with (
        DemoLLMServer(LatencyProfile(kind="fixed", seconds=0.0)) as instant,
        DemoLLMServer(LatencyProfile(kind="fixed", seconds=latency_s)) as slow,
    ):
        url = {"now": instant.base_url}
        runner = Runner(max_concurrency=n, demo_base_url=lambda: url["now"], backend=backend)
        try:
            say(0.0, f"{name}: warming up {backend.processes} process(es)")
            warm_up(runner, instant.base_url).result(120)
            say(0.1, f"{name}: {n} crews at zero latency")
            cpu = _cpu(backend)
            zero_wall, zero_failed = _batch_wall(runner, n, f"{name}-zero")
            driver_cpu, worker_cpu = (
                b - a if a is not None and b is not None else None
                for a, b in zip(cpu, _cpu(backend), strict=True)
            )
            url["now"] = slow.base_url
            say(0.5, f"{name}: {n} crews at {latency_s:g} s")
            wall, failed = _batch_wall(runner, n, f"{name}-latency")
        finally:
            runner.close()
    bound = latency_s + zero_wall
    return BackendResult(
        backend=name,
        processes=backend.processes,
        n=n,
        zero_latency_wall_s=round(zero_wall, 3),
        crews_per_s=round(n / zero_wall, 2),
        latency_s=latency_s,
        wall_s=round(wall, 3),
        bound_s=round(bound, 3),
        wall_over_bound=round(wall / bound, 3),
        failed=zero_failed + failed,
        driver_cpu_s=round(driver_cpu or 0.0, 2),
        worker_cpu_s=None if worker_cpu is None else round(worker_cpu, 2),
    )


def compare_backends(
    n: int,
    latency_s: float,
    backends: Sequence[str],
    make_backend: Callable[[str], Backend],
    progress: Progress | None = None,
) -> BackendReport:
    """Each backend in turn, in this process, with the same N and latency."""
    if not 1 <= n <= MAX_N:
        raise SettingsError(f"N must be between 1 and {MAX_N}")
    if not 0 <= latency_s <= 60:
        raise SettingsError("the latency must be between 0 and 60 seconds")
    builtin_blueprint("timing")  # a broken blueprint fails before any backend starts
    results = []
    for i, name in enumerate(backends):

        def part(fraction: float, message: str, i: int = i) -> None:
            if progress is not None:
                progress((i + fraction) / len(backends), message)

        results.append(measure_backend(name, make_backend(name), n, latency_s, part))
    return BackendReport(n, latency_s, tuple(results))
