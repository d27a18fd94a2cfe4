"""The rate governor against a provider's limits, measured: the same research crews twice in one
run, with the governor and with retries only, each against a fresh demo model emulating the
limits (`demo_limits`), so each mode starts with empty windows.

The bound is what the limits allow at best: the larger of calls ÷ RPM and tokens ÷ TPM (tokens
as the provider counted them). A governor that wastes no capacity and sends nothing into a 429
lands close to it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from crewdash.base.errors import SettingsError
from crewdash.blueprints.catalog import builtin_blueprint
from crewdash.demo.limits import LimitEmulator
from crewdash.demo.profiles import LatencyProfile
from crewdash.demo.server import DemoLLMServer
from crewdash.engine.jobs import Progress
from crewdash.engine.plans import RunSettings
from crewdash.engine.runner import Runner
from crewdash.model.batch import CrewState
from crewdash.providers.governor.registry import governor_for, governor_states
from crewdash.providers.limits import ProviderLimits
from crewdash.providers.llm import DEMO_API_KEY, LLMSettings

MAX_N = 1000
MODES = ("governor", "retries_only")


@dataclass(frozen=True)
class LimitsResult:
    mode: str
    n: int
    wall_s: float
    bound_s: float
    wall_over_bound: float
    calls: int  # requests the provider admitted
    tokens: int  # tokens the provider counted
    http_429: int
    http_429_share: float  # of all requests sent
    failed: int
    governor_waits: int
    governor_wait_s: float


@dataclass(frozen=True)
class LimitsReport:
    limits: ProviderLimits
    latency_s: float
    results: tuple[LimitsResult, ...]
    stream: bool = True  # the crews' answers streamed (the default) or whole

    def to_json(self) -> dict[str, Any]:
        return {
            "limits": {"rpm": self.limits.rpm, "tpm": self.limits.tpm},
            "latency_s": self.latency_s,
            "stream": self.stream,
            "results": [asdict(r) for r in self.results],
        }


def bound_seconds(calls: int, tokens: int, limits: ProviderLimits) -> float:
    """The least time the limits allow for this work: max(calls ÷ RPM, tokens ÷ TPM)."""
    parts = [0.0]
    if limits.rpm:
        parts.append(calls / limits.rpm * 60)
    if limits.tpm:
        parts.append(tokens / limits.tpm * 60)
    return max(parts)


def measure_mode(
    mode: str,
    n: int,
    limits: ProviderLimits,
    latency_s: float,
    timeout_s: float = 900,
    stream: bool = True,
) -> LimitsResult:
    """N research crews against a fresh emulated provider, governed or with retries only."""
    if mode not in MODES:
        raise SettingsError(f"mode must be one of {', '.join(MODES)}")
    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=latency_s), limits=limits) as server:
        emulator = server.app_limits
        assert emulator is not None
        runner = Runner(max_concurrency=n, demo_base_url=lambda: server.base_url)
        if mode == "governor":  # told nothing: it learns the limits from the first answer
            governor_for(server.base_url, DEMO_API_KEY, probe=True).reset()
        try:
            llm = LLMSettings(governor=mode == "governor", stream=stream)
            started = time.perf_counter()
            batch_id = runner.submit(
                builtin_blueprint("research"),
                [f"{mode} topic {i}" for i in range(n)],
                RunSettings(llm=llm, max_concurrency=n),
                source="bench",
            )
            if not runner.batch(batch_id).wait(timeout=timeout_s):
                raise TimeoutError(f"{mode}: {n} crews did not finish within {timeout_s:g} s")
            wall = time.perf_counter() - started
            snap = runner.snapshot(batch_id)
        finally:
            runner.close()
        state = next((g for g in governor_states() if g.name == server.base_url), None)
    return _result(mode, n, wall, emulator, limits, snap.crews, state)


def _result(
    mode: str,
    n: int,
    wall: float,
    emulator: LimitEmulator,
    limits: ProviderLimits,
    crews: Sequence[Any],
    state: Any,
) -> LimitsResult:
    bound = bound_seconds(emulator.admitted, emulator.tokens, limits)
    sent = emulator.admitted + emulator.rejected
    return LimitsResult(
        mode=mode,
        n=n,
        wall_s=round(wall, 3),
        bound_s=round(bound, 3),
        wall_over_bound=round(wall / bound, 3) if bound else 0.0,
        calls=emulator.admitted,
        tokens=emulator.tokens,
        http_429=emulator.rejected,
        http_429_share=round(emulator.rejected / sent, 4) if sent else 0.0,
        failed=sum(1 for c in crews if c.state is not CrewState.SUCCEEDED),
        governor_waits=state.waits if state else 0,
        governor_wait_s=state.wait_s if state else 0.0,
    )


def run_limits_bench(
    n: int,
    limits: ProviderLimits,
    latency_s: float = 1.0,
    modes: Sequence[str] = MODES,
    progress: Progress | None = None,
    stream: bool = True,
) -> LimitsReport:
    """Each mode in turn, in this process, with the same crews and limits."""
    if not 1 <= n <= MAX_N:
        raise SettingsError(f"N must be between 1 and {MAX_N}")
    if not limits.any:
        raise SettingsError("give limits to emulate, e.g. --limits rpm=600,tpm=60000")
    if not 0 <= latency_s <= 60:
        raise SettingsError("the latency must be between 0 and 60 seconds")
    results = []
    for i, mode in enumerate(modes):
        if progress is not None:
            progress(i / len(modes), f"{mode}: {n} crews against {limits.describe()}")
        results.append(measure_mode(mode, n, limits, latency_s, stream=stream))
    return LimitsReport(limits, latency_s, tuple(results), stream)
