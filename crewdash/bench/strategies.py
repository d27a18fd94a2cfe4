"""The benchmark engine: every common way of running N crews, measured side by side.

Each strategy gets fresh crews built from the `timing` blueprint and runs on its own thread with
its own plain event loop, exactly as a user's script would (so Python's default executor of
min(32, cpu + 4) threads applies to it). The floor is a lower bound on the wall time on one core:
max(L + c, N·c), with L one call's latency and c the framework's own CPU time per crew (measured
in the same run: N crews against a zero-latency demo model, divided by N). A crew cannot finish
before its wait and its own CPU work (L + c); and crews' CPU work overlaps other crews' waits but
not each other (one GIL), so N crews need N·c at least.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from crewai import Crew
from crewai.events import (
    BaseEventListener,
    LLMCallCompletedEvent,
    LLMCallFailedEvent,
    LLMCallStartedEvent,
    crewai_event_bus,
)
from crewai.events.event_bus import CrewAIEventsBus

from crewdash.base.errors import SettingsError, describe_error
from crewdash.bench.report import (
    STRATEGY_INFO,
    BenchReport,
    CallSpan,
    StrategyResult,
    floor_seconds,
    peak_overlap,
)
from crewdash.blueprints.base import Blueprint
from crewdash.blueprints.catalog import builtin_blueprint
from crewdash.demo.profiles import LatencyProfile
from crewdash.demo.server import DemoLLMServer
from crewdash.engine.events import one_per_process
from crewdash.engine.execution import freeze_heap
from crewdash.engine.jobs import Progress
from crewdash.engine.plans import RunSettings
from crewdash.engine.runner import Runner
from crewdash.model.batch import CrewState
from crewdash.providers.llm import LLMSettings, build_llm
from crewdash.store.history import Store

MAX_N = 200


@dataclass(frozen=True)
class Strategy:
    name: str
    label: str
    code: str
    run: Callable[[BenchContext, int], float | None]  # may return its own wall time


class CallRecorder(BaseEventListener):
    """Records every LLM call on the bus while a strategy is being measured."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, list[float | bool | None]] | None = None
        super().__init__()

    def start(self) -> None:
        with self._lock:
            self._calls = {}

    def stop(self, origin: float) -> list[CallSpan]:
        crewai_event_bus.flush(timeout=10)
        with self._lock:
            calls, self._calls = self._calls or {}, None
        spans = [
            CallSpan(start=float(s) - origin, end=float(e) - origin, error=bool(err))
            for s, e, err in calls.values()
            if s is not None and e is not None
        ]
        return sorted(spans, key=lambda s: s.start)

    def _mark(self, call_id: str, index: int, value: float | bool) -> None:
        with self._lock:
            if self._calls is not None:
                self._calls.setdefault(call_id, [None, None, False])[index] = value

    def setup_listeners(self, crewai_event_bus: CrewAIEventsBus) -> None:
        @crewai_event_bus.on(LLMCallStartedEvent)
        def _started(_: Any, event: LLMCallStartedEvent) -> None:
            self._mark(event.call_id, 0, event.timestamp.timestamp())

        @crewai_event_bus.on(LLMCallCompletedEvent)
        def _completed(_: Any, event: LLMCallCompletedEvent) -> None:
            self._mark(event.call_id, 1, event.timestamp.timestamp())

        @crewai_event_bus.on(LLMCallFailedEvent)
        def _failed(_: Any, event: LLMCallFailedEvent) -> None:
            self._mark(event.call_id, 1, event.timestamp.timestamp())
            self._mark(event.call_id, 2, True)


def call_recorder() -> CallRecorder:
    """The process's one recorder (listeners on the bus are never removed, so one is kept)."""
    return one_per_process(CallRecorder)


@dataclass
class BenchContext:
    """What a strategy needs: fresh crews talking to the chosen model."""

    blueprint: Blueprint
    llm: LLMSettings
    base_url: str | None

    def crew(self) -> Crew:
        return self.blueprint.build(build_llm(self.llm, self.base_url))

    def inputs(self, n: int) -> list[dict[str, str]]:
        return [self.blueprint.inputs_for(f"crew-{i}") for i in range(n)]


def _check(outputs: Sequence[Any], n: int) -> None:
    if len(outputs) != n:
        raise RuntimeError(f"expected {n} results, got {len(outputs)}")


def _sequential(ctx: BenchContext, n: int) -> None:
    crews = [ctx.crew() for _ in range(n)]
    _check([c.kickoff(inputs=i) for c, i in zip(crews, ctx.inputs(n), strict=True)], n)


def _kickoff_for_each(ctx: BenchContext, n: int) -> None:
    _check(ctx.crew().kickoff_for_each(inputs=ctx.inputs(n)), n)


def _gather(ctx: BenchContext, n: int, native: bool) -> None:
    crews = [ctx.crew() for _ in range(n)]

    async def main() -> list[Any]:
        pairs = zip(crews, ctx.inputs(n), strict=True)
        if native:
            return await asyncio.gather(*(c.akickoff(inputs=i) for c, i in pairs))
        return await asyncio.gather(*(c.kickoff_async(inputs=i) for c, i in pairs))

    _check(asyncio.run(main()), n)


def _for_each_async(ctx: BenchContext, n: int, native: bool) -> None:
    crew = ctx.crew()

    async def main() -> Any:
        if native:
            return await crew.akickoff_for_each(inputs=ctx.inputs(n))
        return await crew.kickoff_for_each_async(inputs=ctx.inputs(n))

    _check(asyncio.run(main()), n)


class _LoopLag:
    """A 100 ms ticker on a loop: how late each wake-up is, i.e. how blocked the loop was."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float = 0.1) -> None:
        self.interval = interval
        self.lags: list[float] = []
        self._future = asyncio.run_coroutine_threadsafe(self._tick(), loop)

    async def _tick(self) -> None:
        expected = time.perf_counter() + self.interval
        while True:
            await asyncio.sleep(max(0.0, expected - time.perf_counter()))
            now = time.perf_counter()
            self.lags.append(max(0.0, now - expected))
            expected = max(expected + self.interval, now + self.interval / 10)

    def stop(self) -> dict[str, float]:
        self._future.cancel()
        lags = sorted(self.lags) or [0.0]
        p99 = statistics.quantiles(lags, n=100, method="inclusive")[98] if len(lags) > 1 else 0
        return {
            "samples": float(len(self.lags)),
            "p50": round(statistics.median(lags) * 1000, 1),
            "p99": round(p99 * 1000, 1),
            "max": round(lags[-1] * 1000, 1),
        }


LoopLag = _LoopLag  # the streaming benchmark's ticker too


def _crewdash(ctx: BenchContext, n: int, lag: dict[str, Any] | None = None) -> float:
    """Timed from submit to the last crew's end: in the product the runner is already up."""
    runner = Runner(max_concurrency=n, demo_base_url=lambda: ctx.base_url or "")
    ticker = _LoopLag(runner.loop) if lag is not None else None
    try:
        started = time.perf_counter()
        batch_id = runner.submit(
            ctx.blueprint,
            [f"crew-{i}" for i in range(n)],
            RunSettings(llm=ctx.llm, max_concurrency=n),
        )
        if not runner.batch(batch_id).wait(timeout=600):
            raise TimeoutError("crewdash runner did not finish within 600 s")
        wall = time.perf_counter() - started
        snap = runner.snapshot(batch_id)
        if ticker is not None and lag is not None:
            lag.update(ticker.stop())
            ticker = None
        failed = [c.error for c in snap.crews if c.state is not CrewState.SUCCEEDED]
        if failed:
            raise RuntimeError(f"{len(failed)} crews failed, first: {failed[0]}")
        return wall
    finally:
        if ticker is not None:
            ticker.stop()
        runner.close()


_RUNS: dict[str, Callable[[BenchContext, int], float | None]] = {
    "sequential": _sequential,
    "kickoff_for_each": _kickoff_for_each,
    "gather_kickoff_async": lambda ctx, n: _gather(ctx, n, native=False),
    "kickoff_for_each_async": lambda ctx, n: _for_each_async(ctx, n, native=False),
    "gather_akickoff": lambda ctx, n: _gather(ctx, n, native=True),
    "akickoff_for_each": lambda ctx, n: _for_each_async(ctx, n, native=True),
    "crewdash": _crewdash,
}
STRATEGIES: dict[str, Strategy] = {
    name: Strategy(info.name, info.label, info.code, _RUNS[name])
    for name, info in STRATEGY_INFO.items()
}


def parse_strategies(spec: str | Sequence[str]) -> list[str]:
    """`all` or names (comma-separated or a list), checked against `STRATEGIES`."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [s for s in names if s]
    if names == ["all"] or not names:
        return list(STRATEGIES)
    unknown = [s for s in names if s not in STRATEGIES]
    if unknown:
        raise SettingsError(
            f"unknown strategy {', '.join(unknown)}; choose from all, {', '.join(STRATEGIES)}"
        )
    return list(dict.fromkeys(names))


def check_n(n: int) -> int:
    if not 1 <= n <= MAX_N:
        raise SettingsError(f"N must be between 1 and {MAX_N}, got {n}")
    return n


def _measure(strategy: Strategy, ctx: BenchContext, n: int, latency: float) -> StrategyResult:
    recorder = call_recorder()
    result = StrategyResult(strategy=strategy.name, n=n, latency_s=latency)
    lag: dict[str, Any] | None = {} if strategy.name == "crewdash" else None
    outcome: list[BaseException] = []
    own_wall: list[float] = []

    def target() -> None:
        try:
            wall = _crewdash(ctx, n, lag) if lag is not None else strategy.run(ctx, n)
            if wall is not None:
                own_wall.append(wall)
        except BaseException as exc:  # noqa: BLE001 - reported in the table, never raised
            outcome.append(exc)

    gc.collect()  # the previous strategy's garbage is not this one's pause
    recorder.start()
    origin = time.time()
    started = time.perf_counter()
    worker = threading.Thread(target=target, name=f"bench-{strategy.name}", daemon=True)
    worker.start()
    worker.join()
    result.wall_s = round(own_wall[0] if own_wall else time.perf_counter() - started, 4)
    result.spans = recorder.stop(origin)
    result.llm_calls = len(result.spans)
    result.peak_concurrency = peak_overlap((s.start, s.end) for s in result.spans)
    if lag:
        result.loop_lag_ms = lag
    if outcome:
        result.errors.append(describe_error(outcome[0]))
        result.wall_s = None
    return result


def run_bench(
    n: int,
    strategies: Sequence[str],
    profile: LatencyProfile,
    llm: LLMSettings | None = None,
    progress: Progress | None = None,
    partial: Callable[[BenchReport], None] | None = None,
) -> BenchReport:
    """Measure the given strategies at N crews, plus the floor's c, in one run; `partial` gets
    the report so far after each strategy, so a page can fill in results as they come."""
    check_n(n)
    names = parse_strategies(strategies)
    llm = llm or LLMSettings()
    blueprint = builtin_blueprint("timing")
    say = progress or (lambda _f, _m: None)
    steps = len(names) + 1
    with (
        DemoLLMServer(profile) as server,
        DemoLLMServer(LatencyProfile(kind="fixed", seconds=0.0)) as zero,
    ):
        say(0.0, "warming up")
        warm = BenchContext(blueprint, LLMSettings(), zero.base_url)
        _measure(STRATEGIES["crewdash"], warm, 1, 0.0)
        freeze_heap()
        say(0.5 / steps, f"measuring the CPU per crew: {n} crews against a zero-latency model")
        floor_run = _measure(STRATEGIES["crewdash"], warm, n, 0.0)
        cpu_total = floor_run.wall_s or 0.0
        ctx = BenchContext(blueprint, llm, server.base_url if llm.is_demo else None)
        results: list[StrategyResult] = []
        for i, name in enumerate(names, start=1):
            say(i / steps, f"running {STRATEGIES[name].label} with {n} crews")
            server.stats.reset_peak()
            results.append(_measure(STRATEGIES[name], ctx, n, profile.seconds))
            if partial is not None and i < len(names):
                so_far = copy.deepcopy(results)  # the page reads it while the next one runs
                latency = _call_latency(profile, server, so_far)
                partial(_report(n, latency, profile, llm, cpu_total, so_far))
        say(1.0, "done")
        latency = _call_latency(profile, server, results)
    return _report(n, latency, profile, llm, cpu_total, results)


def _report(
    n: int,
    latency: float,
    profile: LatencyProfile,
    llm: LLMSettings,
    cpu_total: float,
    results: list[StrategyResult],
) -> BenchReport:
    """The floor, the sequential time (measured, else estimated) and each result's ratios."""
    floor = floor_seconds(n, latency, cpu_total / n)
    seq = next((r for r in results if r.strategy == "sequential" and r.ok), None)
    sequential_s = seq.wall_s if seq and seq.wall_s else n * (latency + cpu_total / n)
    for r in results:
        r.latency_s = round(latency, 4)
        if r.wall_s:
            r.speedup_vs_sequential = round(sequential_s / r.wall_s, 3)
            r.efficiency_vs_floor = round(floor / r.wall_s, 3)
    return BenchReport(
        n=n,
        latency_s=round(latency, 4),
        profile=profile.describe(),
        model=llm.label,
        framework_cpu_per_crew_ms=round(cpu_total / n * 1000, 2),
        floor_s=round(floor, 4),
        sequential_s=round(sequential_s, 4),
        sequential_measured=seq is not None,
        results=results,
    )


def _call_latency(
    profile: LatencyProfile, server: DemoLLMServer, results: Sequence[StrategyResult]
) -> float:
    """One call's latency: the fixed value, else the slowest delay the demo model applied, else
    (a real provider) the median observed call."""
    if profile.kind == "fixed":
        return profile.seconds
    if server.stats.max_delay:
        return server.stats.max_delay
    durations = [s.end - s.start for r in results for s in r.spans]
    return statistics.median(durations) if durations else 0.0


def run_sweep(
    ns: Sequence[int],
    strategies: Sequence[str],
    profile: LatencyProfile,
    llm: LLMSettings | None = None,
    progress: Progress | None = None,
    partial: Callable[[list[BenchReport]], None] | None = None,
) -> list[BenchReport]:
    """The same benchmark at several N: wall time against N for each strategy; `partial` gets
    the reports so far (the last one partial) after each strategy."""
    for n in ns:
        check_n(n)
    reports: list[BenchReport] = []
    for i, n in enumerate(ns):

        def part(fraction: float, message: str, i: int = i, n: int = n) -> None:
            if progress:
                progress((i + fraction) / len(ns), f"N={n}: {message}")

        def publish(report: BenchReport) -> None:
            if partial is not None:
                partial([*reports, report])

        reports.append(run_bench(n, strategies, profile, llm, part, publish))
        if partial is not None:
            partial(list(reports))
    return reports


def run_and_keep(
    ns: Sequence[int],
    strategies: Sequence[str],
    profile: LatencyProfile,
    llm: LLMSettings | None,
    store: Store | None,
    progress: Progress | None = None,
    partial: Callable[[list[BenchReport]], None] | None = None,
) -> list[BenchReport]:
    """`run_sweep`, then the reports (spans included) go into the history, if there is one."""
    reports = run_sweep(ns, strategies, profile, llm, progress, partial)
    if store is not None:
        title = (
            f"N={','.join(map(str, ns))} · {len(parse_strategies(strategies))} strategies · "
            f"{profile.describe()} · {(llm or LLMSettings()).label}"
        )
        store.save_bench(title, [r.to_json(with_spans=True) for r in reports])
    return reports
