"""The benchmark's report types, its floor and its strategies' names: what charts, pages, the
CLI and the history read, without importing the engine (runner, demo model, store) that makes them.

The floor is a lower bound on the wall time on one core: max(L + c, N·c), see
`crewdash.bench.strategies`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

FLOOR_RULE = "max(L + c, N·c)"


@dataclass(frozen=True)
class StrategyInfo:
    """How a strategy is named and what code it stands for (its runner lives in the engine)."""

    name: str
    label: str
    code: str


STRATEGY_INFO: dict[str, StrategyInfo] = {
    s.name: s
    for s in (
        StrategyInfo("sequential", "sequential kickoff", "for c in crews: c.kickoff()"),
        StrategyInfo(
            "kickoff_for_each", "kickoff_for_each (sync)", "crew.kickoff_for_each(inputs)"
        ),
        StrategyInfo(
            "gather_kickoff_async",
            "gather(kickoff_async)",
            "await asyncio.gather(*(c.kickoff_async() for c in crews))",
        ),
        StrategyInfo(
            "kickoff_for_each_async",
            "kickoff_for_each_async",
            "await crew.kickoff_for_each_async(inputs)",
        ),
        StrategyInfo(
            "gather_akickoff",
            "gather(akickoff)",
            "await asyncio.gather(*(c.akickoff() for c in crews))",
        ),
        StrategyInfo(
            "akickoff_for_each", "akickoff_for_each", "await crew.akickoff_for_each(inputs)"
        ),
        StrategyInfo(
            "crewdash",
            "crewdash runner",
            "runner.submit(blueprint, topics)  # executor sized to the limit",
        ),
    )
}


def floor_seconds(n: int, latency_s: float, cpu_per_crew_s: float) -> float:
    """The lower bound on N crews' wall time on one core, see `FLOOR_RULE` and the module doc."""
    return max(latency_s + cpu_per_crew_s, n * cpu_per_crew_s)


def strategy_label(name: str) -> str:
    """How pages and charts name a strategy (a name from an old saved run stays as it is)."""
    return STRATEGY_INFO[name].label if name in STRATEGY_INFO else name


def strategy_code(name: str) -> str:
    """The code a strategy stands for ("" for a name from an old saved run)."""
    return STRATEGY_INFO[name].code if name in STRATEGY_INFO else ""


@dataclass(frozen=True)
class CallSpan:
    """One LLM call seen on the event bus, in seconds from the strategy's start."""

    start: float
    end: float
    error: bool = False


@dataclass
class StrategyResult:
    strategy: str
    n: int
    latency_s: float
    wall_s: float | None = None
    speedup_vs_sequential: float | None = None
    efficiency_vs_floor: float | None = None
    peak_concurrency: int = 0
    llm_calls: int = 0
    errors: list[str] = field(default_factory=list)
    spans: list[CallSpan] = field(default_factory=list)
    loop_lag_ms: dict[str, float] | None = None

    @property
    def ok(self) -> bool:
        return not self.errors and self.wall_s is not None

    def to_json(self, with_spans: bool = False) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        if not with_spans:
            data.pop("spans")
        return data


@dataclass
class BenchReport:
    n: int
    latency_s: float
    profile: str
    model: str
    framework_cpu_per_crew_ms: float
    floor_s: float
    sequential_s: float
    sequential_measured: bool
    results: list[StrategyResult]
    floor_rule: str = FLOOR_RULE

    def result(self, strategy: str) -> StrategyResult | None:
        return next((r for r in self.results if r.strategy == strategy), None)

    def to_json(self, with_spans: bool = False) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "results"}
        data["results"] = [r.to_json(with_spans) for r in self.results]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BenchReport:
        """The inverse of `to_json(with_spans=True)` (as kept in the history). A report saved
        before `floor_rule` existed had the floor L + N·c, which runs could beat: its floor is
        worked out again from its own L, N and c."""
        results = []
        for raw in data["results"]:
            fields = {k: v for k, v in raw.items() if k not in ("ok", "spans")}
            spans = [CallSpan(**s) for s in raw.get("spans", [])]
            results.append(StrategyResult(**fields, spans=spans))
        head = {k: v for k, v in data.items() if k != "results"}
        report = cls(**head, results=results)
        if "floor_rule" not in data:
            report.floor_s = round(
                floor_seconds(report.n, report.latency_s, report.framework_cpu_per_crew_ms / 1000),
                4,
            )
            for r in report.results:
                if r.wall_s:
                    r.efficiency_vs_floor = round(report.floor_s / r.wall_s, 3)
        return report


def peak_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end and a start at the same time don't meet)."""
    edges = sorted((t, step) for start, end in intervals for t, step in ((start, 1), (end, -1)))
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak
