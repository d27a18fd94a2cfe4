"""The streaming benchmark: what streaming 100 crews costs the runner, and how true its TTFT is.

One demo model (the hosted profile unless told otherwise) and one runner, then: a batch of one
crew and a batch of N crews, streamed, each call's measured TTFT against the TTFT the demo
model was told to wait for that very response (matched by its completion id); the runner
loop's lag while the N crews stream; the same N crews without streaming, for the wall time.
Snapshots of the streamed batch are kept so the Run page's live section can be timed on them
(by `ui/live_bench.py`, outside the core).
"""

from __future__ import annotations

import json
import pickle
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crewai.events import BaseEventListener, LLMStreamChunkEvent
from crewai.events.event_bus import CrewAIEventsBus

from crewdash.bench.strategies import LoopLag
from crewdash.demo.profiles import LatencyProfile
from crewdash.demo.server import DemoLLMServer
from crewdash.engine.events import one_per_process
from crewdash.engine.execution import freeze_heap
from crewdash.engine.plans import RunSettings
from crewdash.engine.runner import Runner
from crewdash.model.batch import BatchSnapshot, CrewState
from crewdash.providers.llm import LLMSettings

Progress = Callable[[float, str], None]


class ResponseIds(BaseEventListener):
    """Which completion id answered each LLM call (the first chunk names both)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_call: dict[str, str] = {}
        super().__init__()

    def setup_listeners(self, crewai_event_bus: CrewAIEventsBus) -> None:
        @crewai_event_bus.on(LLMStreamChunkEvent)
        def _chunk(_: Any, event: LLMStreamChunkEvent) -> None:
            if event.call_id and event.response_id and event.call_id not in self.by_call:
                with self._lock:
                    self.by_call.setdefault(event.call_id, event.response_id)


def _quantile(values: list[float], q: int) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(sorted(values), n=100, method="inclusive")[q - 1]


@dataclass
class StreamBenchReport:
    n: int
    profile: str
    wall_stream_s: float = 0.0
    wall_plain_s: float = 0.0
    loop_lag_ms: dict[str, float] = field(default_factory=dict)
    loop_lag_plain_ms: dict[str, float] = field(default_factory=dict)  # the same, not streamed
    ttft_error_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    failed: int = 0
    live_refresh_ms: dict[str, float] = field(default_factory=dict)

    @property
    def wall_ratio(self) -> float:
        return self.wall_stream_s / self.wall_plain_s if self.wall_plain_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "profile": self.profile,
            "wall_stream_s": round(self.wall_stream_s, 3),
            "wall_plain_s": round(self.wall_plain_s, 3),
            "wall_ratio": round(self.wall_ratio, 3),
            "loop_lag_ms": self.loop_lag_ms,
            "loop_lag_plain_ms": self.loop_lag_plain_ms,
            "ttft_error_ms": self.ttft_error_ms,
            "failed": self.failed,
            "live_refresh_ms": self.live_refresh_ms,
        }


def ttft_errors(snap: BatchSnapshot, ids: dict[str, str], told: dict[str, float]) -> list[float]:
    """Per streamed call: |measured TTFT - the TTFT the demo model waited| in seconds."""
    errors = []
    for crew in snap.crews:
        for span in crew.streamed_calls:
            response = ids.get(span.key)
            if span.ttft is not None and response in told:
                errors.append(abs(span.ttft - told[response]))
    return errors


def _summary(errors: list[float]) -> dict[str, float]:
    return {
        "calls": float(len(errors)),
        "p50": round(_quantile(errors, 50) * 1000, 1),
        "p95": round(_quantile(errors, 95) * 1000, 1),
        "max": round(max(errors, default=0.0) * 1000, 1),
    }


def run_stream_bench(
    n: int,
    profile: LatencyProfile,
    progress: Progress | None = None,
    keep_snapshots: list[BatchSnapshot] | None = None,
) -> StreamBenchReport:
    """Measure streaming at N=1 and N=n, and the same N without streaming (see the module)."""
    say = progress or (lambda _f, _m: None)
    ids = one_per_process(ResponseIds)
    report = StreamBenchReport(n=n, profile=profile.describe())
    with DemoLLMServer(profile) as server:
        runner = Runner(max_concurrency=max(n, 1), demo_base_url=lambda: server.base_url)
        try:

            def batch(count: int, stream: bool, tag: str) -> tuple[BatchSnapshot, float]:
                settings = RunSettings(llm=LLMSettings(stream=stream), max_concurrency=count)
                started = time.perf_counter()
                topics = [f"{tag} topic {i}" for i in range(count)]
                live = runner.batch(runner.submit("research", topics, settings))
                next_keep = time.monotonic() + 0.75
                while not live.wait(0.05):
                    if keep_snapshots is not None and time.monotonic() >= next_keep:
                        keep_snapshots.append(live.snapshot())
                        next_keep += 0.75
                wall = time.perf_counter() - started
                snap = live.snapshot()
                report.failed += sum(1 for c in snap.crews if c.state is not CrewState.SUCCEEDED)
                return snap, wall

            say(0.0, "warming up")
            batch(2, True, "warm-up")
            freeze_heap()  # as the app does after its warm-up (runtime.py)
            say(0.1, "N=1 streamed")
            one, _ = batch(1, True, "single")
            report.ttft_error_ms["n1"] = _summary(ttft_errors(one, ids.by_call, server.stats.ttfts))
            say(0.3, f"N={n} streamed")
            ticker = LoopLag(runner.loop)
            many, report.wall_stream_s = batch(n, True, "many")
            report.loop_lag_ms = ticker.stop()
            report.ttft_error_ms[f"n{n}"] = _summary(
                ttft_errors(many, ids.by_call, server.stats.ttfts)
            )
            keep, keep_snapshots = keep_snapshots, None
            say(0.65, f"N={n} not streamed")
            ticker = LoopLag(runner.loop)
            _, report.wall_plain_s = batch(n, False, "many")  # same prompts: same latencies
            report.loop_lag_plain_ms = ticker.stop()
            keep_snapshots = keep
        finally:
            runner.close()
    say(1.0, "done")
    return report


def time_live_section(snapshots: list[BatchSnapshot]) -> dict[str, float]:
    """The Run page's live section timed on `snapshots` by `ui/live_bench.py`, in a process of
    its own (the core never imports Streamlit); empty if it could not run."""
    with tempfile.NamedTemporaryFile(suffix=".pickle", delete=False) as kept:
        kept.write(pickle.dumps(snapshots))
    try:
        timed = subprocess.run(
            [sys.executable, "-m", "ui.live_bench", kept.name],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
            check=False,
        )
    finally:
        Path(kept.name).unlink(missing_ok=True)
    if timed.returncode != 0:
        print(f"live section not timed: {timed.stderr.strip()[-300:]}", file=sys.stderr)
        return {}
    result: dict[str, float] = json.loads(timed.stdout.strip().splitlines()[-1])
    return result


def bench_and_report(n: int, profile: LatencyProfile, json_path: str | None) -> int:
    """`python -m crewdash bench --stream`: measure, print one line, write the JSON."""
    snapshots: list[BatchSnapshot] = []
    report = run_stream_bench(
        n,
        profile,
        progress=lambda f, m: print(f"[{f:4.0%}] {m}", file=sys.stderr),
        keep_snapshots=snapshots,
    )
    if snapshots:
        report.live_refresh_ms = time_live_section(snapshots)
    lag, errors = report.loop_lag_ms, report.ttft_error_ms
    print(
        f"N={report.n} streamed ({report.profile}): wall {report.wall_stream_s:.2f} s vs "
        f"{report.wall_plain_s:.2f} s not streamed ({report.wall_ratio:.2f}x) · loop lag p99 "
        f"{lag.get('p99', 0):.1f} ms ({report.loop_lag_plain_ms.get('p99', 0):.1f} ms not "
        f"streamed) · TTFT error p95 N=1 {errors['n1']['p95']:.1f} ms, "
        f"N={report.n} {errors[f'n{report.n}']['p95']:.1f} ms · live refresh p95 "
        f"{report.live_refresh_ms.get('p95', float('nan')):.1f} ms · failed {report.failed}"
    )
    if json_path:
        Path(json_path).write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")
    return 0 if report.failed == 0 else 1
