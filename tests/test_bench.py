"""The benchmark engine at small N against the real demo model (figures are not asserted here:
targets are checked by `python -m crewdash bench`, see README)."""

import time

import pytest

from crewdash.base.errors import SettingsError
from crewdash.bench.report import FLOOR_RULE, BenchReport, floor_seconds, peak_overlap
from crewdash.bench.strategies import (
    STRATEGIES,
    BenchContext,
    Strategy,
    check_n,
    parse_strategies,
    run_and_keep,
    run_bench,
    run_sweep,
)
from crewdash.demo.profiles import LatencyProfile
from crewdash.engine.jobs import JobRunner, JobState

FAST = LatencyProfile(kind="fixed", seconds=0.2)


def test_every_strategy_runs_and_reports() -> None:
    progress: list[tuple[float, str]] = []
    report = run_bench(3, ["all"], FAST, progress=lambda f, m: progress.append((f, m)))
    assert [r.strategy for r in report.results] == list(STRATEGIES)
    for r in report.results:
        assert r.ok, (r.strategy, r.errors)
        assert r.llm_calls == 3 and r.wall_s and r.wall_s > 0.2
        assert r.speedup_vs_sequential and r.efficiency_vs_floor
    assert report.sequential_measured
    assert report.result("sequential").peak_concurrency == 1  # type: ignore[union-attr]
    assert report.result("crewdash").peak_concurrency == 3  # type: ignore[union-attr]
    assert report.result("crewdash").loop_lag_ms is not None  # type: ignore[union-attr]
    assert report.floor_s > 0.2 and report.framework_cpu_per_crew_ms > 0
    assert progress[-1] == (1.0, "done")
    assert [f for f, _ in progress] == sorted(f for f, _ in progress)
    data = report.to_json()
    assert {"n", "floor_s", "framework_cpu_per_crew_ms", "floor_rule", "results"} <= data.keys()
    # the floor is the new lower bound, from the report's own L, N and c (c is rounded to 0.01 ms)
    c = data["framework_cpu_per_crew_ms"] / 1000
    assert data["floor_rule"] == FLOOR_RULE == "max(L + c, N·c)"
    assert data["floor_s"] == pytest.approx(max(0.2 + c, 3 * c), abs=1e-3)
    assert {
        "strategy",
        "wall_s",
        "speedup_vs_sequential",
        "efficiency_vs_floor",
        "peak_concurrency",
        "errors",
        "ok",
    } <= data["results"][0].keys()
    assert "spans" in report.to_json(with_spans=True)["results"][0]


def test_a_failing_strategy_is_reported_and_the_others_still_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def explode(ctx: BenchContext, n: int) -> None:
        raise RuntimeError("strategy broke")

    monkeypatch.setitem(STRATEGIES, "broken", Strategy("broken", "broken", "raise", explode))
    report = run_bench(2, ["broken", "gather_akickoff"], FAST)
    broken, other = report.results
    assert not broken.ok and broken.errors == ["RuntimeError: strategy broke"]
    assert broken.wall_s is None and broken.speedup_vs_sequential is None
    assert other.ok and not report.sequential_measured


def test_the_floor_is_the_larger_of_one_crew_and_all_crews_cpu() -> None:
    # many crews: their CPU, one at a time on the GIL, is the bound (the model waits overlap it)
    assert floor_seconds(100, 1.0, 0.03) == pytest.approx(3.0)
    # few crews: one crew's wait plus its own CPU is
    assert floor_seconds(20, 1.0, 0.026) == pytest.approx(1.026)
    assert floor_seconds(1, 0.0, 0.05) == pytest.approx(0.05)


def test_a_report_kept_with_the_old_floor_gets_the_new_one() -> None:
    """Reports saved before `floor_rule` had L + N·c (beaten by the runner at N=100)."""
    old = {
        "n": 100,
        "latency_s": 1.0,
        "profile": "fixed 1 s",
        "model": "demo",
        "framework_cpu_per_crew_ms": 29.46,
        "floor_s": 3.9457,
        "sequential_s": 102.9457,
        "sequential_measured": False,
        "results": [
            {"strategy": "crewdash", "n": 100, "latency_s": 1.0, "wall_s": 2.7468,
             "speedup_vs_sequential": 37.478, "efficiency_vs_floor": 1.436, "ok": True}
        ],
    }  # fmt: skip
    report = BenchReport.from_json(old)
    assert report.floor_s == pytest.approx(2.946) and report.floor_rule == FLOOR_RULE
    assert report.results[0].efficiency_vs_floor == pytest.approx(2.946 / 2.7468, abs=1e-3)
    again = BenchReport.from_json(report.to_json(with_spans=True))  # a new report: kept as it is
    assert again.to_json() == report.to_json()


def test_sweep_measures_each_n() -> None:
    reports = run_sweep([1, 2], ["crewdash"], FAST)
    assert [r.n for r in reports] == [1, 2]


@pytest.mark.parametrize("n", [0, -1, 201])
def test_n_out_of_range_is_refused(n: int) -> None:
    with pytest.raises(SettingsError, match="N must be between 1 and 200"):
        check_n(n)


def test_strategy_names_are_checked() -> None:
    assert parse_strategies("all") == list(STRATEGIES)
    assert parse_strategies("crewdash, sequential,crewdash") == ["crewdash", "sequential"]
    with pytest.raises(SettingsError, match="unknown strategy warp; choose from all"):
        parse_strategies("crewdash,warp")


def test_peak_overlap() -> None:
    assert peak_overlap([]) == 0
    assert peak_overlap([(0, 1), (1, 2)]) == 1  # touching is not overlapping
    assert peak_overlap([(0, 3), (1, 2), (1.5, 4)]) == 3


def test_reports_are_kept_in_the_history_and_come_back_whole(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from crewdash.bench.strategies import run_and_keep
    from crewdash.store.history import Store

    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    try:
        reports = run_and_keep([1, 2], ["crewdash"], FAST, None, store)
        (saved,) = store.list_bench()
    finally:
        store.close()
    assert saved.title.startswith("N=1,2 · 1 strategies · fixed 0.2 s")
    back = [BenchReport.from_json(r) for r in saved.reports]
    assert [b.to_json(with_spans=True) for b in back] == [
        r.to_json(with_spans=True) for r in reports
    ]
    assert back[1].result("crewdash").spans  # type: ignore[union-attr]


def test_a_benchmark_job_is_listed_for_everyone_and_fills_in_per_strategy() -> None:
    """Issue 20 item 7: any session finds the running benchmark in the server's job registry,
    and its results so far are published after each strategy, not only at the end."""
    jobs = JobRunner()
    strategies = ["sequential", "gather_akickoff", "crewdash"]
    job_id = jobs.start(
        "bench", lambda p: run_and_keep([2], strategies, FAST, None, None, p, p.partial), "bench"
    )
    assert [j.job_id for j in jobs.running()] == [job_id]
    latest = jobs.latest("bench")
    assert latest is not None and latest.job_id == job_id and jobs.latest("pitfalls") is None
    seen: list[list[str]] = []  # the strategies published so far, each time it changed
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = jobs.get(job_id)
        assert job is not None
        if job.partial and not job.done:
            names = [r.strategy for r in job.partial[-1].results]
            if not seen or seen[-1] != names:
                seen.append(names)
        if job.done:
            break
        time.sleep(0.01)
    assert job.state is JobState.SUCCEEDED, job.error
    assert jobs.running() == []
    assert ["sequential"] in seen and ["sequential", "gather_akickoff"] in seen
    assert [r.strategy for r in job.result[-1].results] == strategies
