"""The traps that silently serialize or break "parallel" crews, each measured live with its fix.

Every figure a demo returns is measured in that run against the demo model; nothing here is a
canned claim. The demos run on their own threads and plain event loops, as user code would.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from crewai import Agent, Crew, Process, Task
from crewai.events import LLMCallStartedEvent, crewai_event_bus

from crewdash.base import locks
from crewdash.base.errors import describe_error
from crewdash.bench.report import CallSpan, peak_overlap
from crewdash.bench.strategies import BenchContext, call_recorder
from crewdash.blueprints.catalog import builtin_blueprint
from crewdash.demo.profiles import LatencyProfile
from crewdash.demo.server import DemoLLMServer
from crewdash.engine.jobs import Progress
from crewdash.engine.plans import RunSettings
from crewdash.engine.runner import Runner
from crewdash.model.batch import CrewState
from crewdash.providers.llm import LLMSettings, build_llm

TITLES = {
    "shared_agent": "One Agent shared by concurrent crews",
    "asyncio_run": "asyncio.run() inside a running event loop",
    "sync_for_each": "kickoff_for_each (sync) instead of the async fan-out",
    "default_executor": "The default executor caps concurrency at min(32, cpu + 4) threads",
    "for_each_failure": "kickoff_for_each_async loses the whole batch to one failing input",
    "file_lock": "Found here: CrewAI's file lock polls every 0.25 s",
}


@dataclass(frozen=True)
class PitfallResult:
    key: str
    title: str
    trap: str
    fix: str
    figures: dict[str, str]
    finding: str
    error: str | None = None


@dataclass
class _Timed:
    wall: float
    spans: list[CallSpan]
    value: Any = None
    error: BaseException | None = None

    @property
    def peak(self) -> int:
        return peak_overlap((s.start, s.end) for s in self.spans)

    @property
    def start_spread(self) -> float:
        """Seconds between the first and the last LLM call starting."""
        starts = [s.start for s in self.spans]
        return max(starts) - min(starts) if starts else 0.0


def _timed(work: Callable[[], Any]) -> _Timed:
    """Run `work` on a fresh thread (so it gets its own loop and default executor), timed."""
    recorder = call_recorder()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - the error is what some demos measure
            box["error"] = exc

    recorder.start()
    origin, started = time.time(), time.perf_counter()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join()
    wall = time.perf_counter() - started
    return _Timed(wall, recorder.stop(origin), box.get("value"), box.get("error"))


@dataclass
class _Lab:
    """Demo model servers and crew builders shared by the demos of one run."""

    latency: float
    server: DemoLLMServer = field(init=False)

    def __post_init__(self) -> None:
        self.server = DemoLLMServer(LatencyProfile(kind="fixed", seconds=self.latency)).start()
        self.ctx = BenchContext(builtin_blueprint("timing"), LLMSettings(), self.server.base_url)

    def llm(self) -> Any:
        return build_llm(LLMSettings(), self.server.base_url)

    def close(self) -> None:
        self.server.stop()


def shared_agent(lab: _Lab, n: int = 4) -> PitfallResult:
    topics = [f"topic {i}" for i in range(n)]
    prompts: dict[str, str] = {}
    lock = threading.Lock()

    def research_crews(shared: bool) -> list[tuple[str, Task, Crew]]:
        def agent() -> Agent:
            return Agent(
                role="Research Analyst",
                goal="Find the latest developments on {topic}",
                backstory="You specialize in concise research.",
                llm=lab.llm(),
            )

        one = agent()
        built = []
        for topic in topics:
            a = one if shared else agent()
            task = Task(
                description="Research {topic}.\n\nTopic: {topic}",
                expected_output="3 bullet points",
                agent=a,
            )
            built.append((topic, task, Crew(agents=[a], tasks=[task], process=Process.sequential)))
        return built

    def run(shared: bool) -> tuple[_Timed, int, int]:
        crews = research_crews(shared)
        by_task = {str(task.id): topic for topic, task, _ in crews}
        prompts.clear()

        def on_call(_: Any, event: LLMCallStartedEvent) -> None:
            if event.task_id in by_task and isinstance(event.messages, list) and event.messages:
                with lock:
                    prompts[event.call_id] = f"{event.task_id}\n{event.messages[0].get('content')}"

        # on/off, not scoped_handlers(): that would unhook every other listener meanwhile.
        crewai_event_bus.on(LLMCallStartedEvent)(on_call)
        try:

            async def main() -> list[Any]:
                return await asyncio.gather(
                    *(c.akickoff(inputs={"topic": t}) for t, _, c in crews),
                    return_exceptions=True,
                )

            timed = _timed(lambda: asyncio.run(main()))
            crewai_event_bus.flush(timeout=10)
        finally:
            crewai_event_bus.off(LLMCallStartedEvent, on_call)
        results = timed.value or []
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            timed.error = failed[0]
        wrong = 0
        for text in prompts.values():
            task_id, _, system = text.partition("\n")
            if f"developments on {by_task[task_id]}" not in system:
                wrong += 1
        return timed, n - len(failed), wrong

    trap, trap_ok, trap_wrong = run(shared=True)
    _, fix_ok, fix_wrong = run(shared=False)
    return PitfallResult(
        key="shared_agent",
        title=TITLES["shared_agent"],
        trap="agent = Agent(...)\ncrews = [Crew(agents=[agent], tasks=[Task(..., agent=agent)]) "
        "for t in topics]\nawait asyncio.gather(*(c.akickoff(inputs={'topic': t}) ...))",
        fix="crews = [Crew(agents=[Agent(...)], ...) for t in topics]  # fresh agent per crew",
        figures={
            "shared: crews that succeeded": f"{trap_ok} of {n}",
            "shared: prompts naming another crew's topic": f"{trap_wrong} of {len(topics)}",
            "fresh: crews that succeeded": f"{fix_ok} of {n}",
            "fresh: prompts naming another crew's topic": str(fix_wrong),
        },
        finding=(
            f"With one shared Agent, {n - trap_ok} of {n} crews failed outright and "
            f"{trap_wrong} prompt(s) carried another crew's topic in the agent's goal (the agent "
            f"is re-interpolated by every kickoff). Fresh agents: {fix_ok} of {n} succeeded, "
            f"{fix_wrong} wrong prompts."
        ),
        error=describe_error(trap.error) if trap.error else None,
    )


def asyncio_run_inside_loop(lab: _Lab) -> PitfallResult:
    crew = lab.ctx.crew()
    captured: dict[str, str] = {}

    async def inside_a_server() -> None:
        coro = crew.kickoff_async(inputs={"topic": "crew-0"})
        try:
            asyncio.run(coro)
        except RuntimeError as exc:
            captured["error"] = f"RuntimeError: {exc}"
            coro.close()

    async def fixed() -> Any:
        return await crew.kickoff_async(inputs={"topic": "crew-0"})

    _timed(lambda: asyncio.run(inside_a_server()))
    fix = _timed(lambda: asyncio.run(fixed()))
    answer = getattr(fix.value, "raw", None)
    return PitfallResult(
        key="asyncio_run",
        title=TITLES["asyncio_run"],
        trap="async def endpoint():\n    asyncio.run(crew.kickoff_async())  # FastAPI, Jupyter",
        fix="async def endpoint():\n    result = await crew.kickoff_async()",
        figures={"fix: wall time": f"{fix.wall:.2f} s", "fix: answer": str(answer)},
        finding="asyncio.run() refuses to start while a loop is running, so the crew never runs; "
        f"awaiting it instead returned “{answer}” in {fix.wall:.2f} s.",
        error=captured.get("error"),
    )


def sync_for_each(lab: _Lab, n: int = 4) -> PitfallResult:
    inputs = lab.ctx.inputs(n)
    trap = _timed(lambda: lab.ctx.crew().kickoff_for_each(inputs=inputs))
    fix = _timed(lambda: asyncio.run(lab.ctx.crew().akickoff_for_each(inputs=inputs)))
    return PitfallResult(
        key="sync_for_each",
        title=TITLES["sync_for_each"],
        trap="results = crew.kickoff_for_each(inputs=inputs_list)",
        fix="results = await crew.akickoff_for_each(inputs=inputs_list)",
        figures={
            "sync: wall": f"{trap.wall:.2f} s",
            "sync: peak concurrent calls": str(trap.peak),
            "async: wall": f"{fix.wall:.2f} s",
            "async: peak concurrent calls": str(fix.peak),
        },
        finding=f"{n} crews at {lab.latency:g} s per call: the sync version ran one call at a "
        f"time ({trap.wall:.2f} s), the async one overlapped them ({fix.wall:.2f} s, "
        f"{trap.wall / fix.wall:.1f}× faster).",
    )


def default_executor(lab: _Lab, n: int = 12) -> PitfallResult:
    def crews() -> list[Crew]:
        return [lab.ctx.crew() for _ in range(n)]

    inputs = lab.ctx.inputs(n)

    async def gather(sized: bool) -> list[Any]:
        if sized:
            asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(n + 8))
        batch = crews()
        return await asyncio.gather(
            *(c.akickoff(inputs=i) for c, i in zip(batch, inputs, strict=True))
        )

    trap = _timed(lambda: asyncio.run(gather(sized=False)))
    fix = _timed(lambda: asyncio.run(gather(sized=True)))
    cap = min(32, (os.cpu_count() or 1) + 4)
    return PitfallResult(
        key="default_executor",
        title=TITLES["default_executor"],
        trap="asyncio.run(main())  # default executor: min(32, cpu + 4) threads",
        fix="loop.set_default_executor(ThreadPoolExecutor(max_crews + 8))",
        figures={
            "default executor threads here": str(cap),
            "default: wall": f"{trap.wall:.2f} s",
            "default: peak concurrent calls": str(trap.peak),
            "sized: wall": f"{fix.wall:.2f} s",
            "sized: peak concurrent calls": str(fix.peak),
        },
        finding=f"{n} crews with gather(akickoff): CrewAI hops to the loop's default executor, so "
        f"only {trap.peak} calls ran at once ({trap.wall:.2f} s). Sized to the crew count: "
        f"{fix.peak} at once, {fix.wall:.2f} s.",
    )


def for_each_async_failure(lab: _Lab, n: int = 4) -> PitfallResult:
    topics = [f"crew-{i}" for i in range(n)]
    topics[1] = "crew-1 [demo:fail-400]"  # a permanent failure: no retry delays the demo
    inputs = [{"topic": t} for t in topics]
    trap = _timed(lambda: asyncio.run(lab.ctx.crew().kickoff_for_each_async(inputs=inputs)))
    runner = Runner(max_concurrency=n, demo_base_url=lambda: lab.server.base_url)
    try:
        batch_id = runner.submit(
            builtin_blueprint("timing"), topics, RunSettings(max_concurrency=n)
        )
        runner.batch(batch_id).wait(120)
        snap = runner.snapshot(batch_id)
    finally:
        runner.close()
    kept = snap.count(CrewState.SUCCEEDED)
    returned = len(trap.value) if isinstance(trap.value, list) else 0
    return PitfallResult(
        key="for_each_failure",
        title=TITLES["for_each_failure"],
        trap="results = await crew.kickoff_for_each_async(inputs)  # one input's call fails",
        fix="one task per crew, failures recorded per crew (crewdash's runner)",
        figures={
            "kickoff_for_each_async: results returned": f"{returned} of {n}",
            "crewdash runner: results kept": f"{kept} of {n}",
            "crewdash runner: failed crews": str(snap.count(CrewState.FAILED)),
        },
        finding=f"One input's LLM call failing made kickoff_for_each_async raise: {returned} of "
        f"{n} results came back, although {n - 1} crews had finished. The runner kept {kept}.",
        error=describe_error(trap.error) if trap.error else None,
    )


def file_lock_polling(lab: _Lab, n: int = 4) -> PitfallResult:
    inputs = lab.ctx.inputs(n)

    async def gather() -> list[Any]:
        crews = [lab.ctx.crew() for _ in range(n)]
        return await asyncio.gather(
            *(c.kickoff_async(inputs=i) for c, i in zip(crews, inputs, strict=True))
        )

    locks.uninstall()
    try:
        trap = _timed(lambda: asyncio.run(gather()))
    finally:
        locks.install()
    fix = _timed(lambda: asyncio.run(gather()))
    return PitfallResult(
        key="file_lock",
        title=TITLES["file_lock"],
        trap="# every kickoff stores its task outputs under a portalocker file lock;\n"
        "# contended, it sleeps 0.25 s between tries\n"
        "await asyncio.gather(*(c.kickoff_async() ...))",
        fix="from crewai_core.lock_store import set_lock_backend\n"
        "set_lock_backend(named_lock)  # crewdash.locks: thread lock, then a 5 ms file-lock poll",
        figures={
            "default lock: first-to-last call start": f"{trap.start_spread:.2f} s",
            "default lock: wall": f"{trap.wall:.2f} s",
            "crewdash lock: first-to-last call start": f"{fix.start_spread:.2f} s",
            "crewdash lock: wall": f"{fix.wall:.2f} s",
        },
        finding=f"With CrewAI's default lock, {n} threaded kickoffs started their calls over "
        f"{trap.start_spread:.2f} s ({trap.wall:.2f} s in all); with crewdash's lock backend "
        f"over {fix.start_spread:.2f} s ({fix.wall:.2f} s).",
    )


DEMOS: dict[str, Callable[[_Lab], PitfallResult]] = {
    "shared_agent": shared_agent,
    "asyncio_run": asyncio_run_inside_loop,
    "sync_for_each": sync_for_each,
    "default_executor": default_executor,
    "for_each_failure": for_each_async_failure,
    "file_lock": file_lock_polling,
}


def run_pitfalls(
    keys: list[str] | None = None, latency: float = 1.0, progress: Progress | None = None
) -> list[PitfallResult]:
    """Run the chosen demos (all by default) one after another against a fixed-latency model."""
    chosen = keys or list(DEMOS)
    unknown = [k for k in chosen if k not in DEMOS]
    if unknown:
        raise KeyError(f"unknown pitfall {', '.join(unknown)}")
    lab = _Lab(latency)
    try:
        results = []
        for i, key in enumerate(chosen):
            if progress:
                progress(i / len(chosen), f"measuring: {key.replace('_', ' ')}")
            results.append(DEMOS[key](lab))
        if progress:
            progress(1.0, "done")
        return results
    finally:
        lab.close()
