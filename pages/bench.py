"""Benchmark page: every common way of running N crews, measured side by side in one run."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

import streamlit as st

from crewdash.base.errors import CrewdashError
from crewdash.bench.governor import MAX_N as GOVERNOR_MAX_N
from crewdash.bench.governor import run_limits_bench
from crewdash.bench.report import STRATEGY_INFO, BenchReport, strategy_label
from crewdash.bench.strategies import MAX_N, check_n, run_and_keep
from crewdash.demo.profiles import PROFILE_LABELS, LatencyProfile, ProfileKind
from crewdash.present.charts import (
    bench_bar_figure,
    bench_table,
    bench_timeline_figure,
    sweep_figure,
)
from crewdash.providers.limits import ProviderLimits
from crewdash.providers.llm import LLMSettings
from ui.governor_view import render_limits_report
from ui.job_view import render_live_job, render_other_jobs, shown_job
from ui.session import require_login, runtime
from ui.text import plain

require_login()

rt = runtime()
st.title("Benchmark: why async fan-out wins")
st.write(
    "Runs the same `timing` crew N times with each strategy, one strategy after another, and "
    "measures wall time. The **floor** is a lower bound on one core: max(L + c, N·c), with L "
    "one call's latency and c the framework's own CPU time per crew, measured in the same run "
    "against a zero-latency model. A crew needs its wait and its own CPU (L + c); crews' CPU "
    "overlaps other crews' waits but not each other (one GIL), so N crews need N·c."
)

with st.form("bench.form", border=True):
    left, right = st.columns(2)
    n = left.number_input("Crews per strategy (N)", 1, MAX_N, 20, key="bench.n")
    profile = left.selectbox(
        "Latency profile",
        list(PROFILE_LABELS),
        format_func=cast(Callable[[Any], str], PROFILE_LABELS.get),
        key="bench.profile",
    )
    latency = left.number_input("Fixed latency (s)", 0.0, 30.0, 1.0, 0.1, key="bench.latency")
    strategies = right.multiselect(
        "Strategies",
        list(STRATEGY_INFO),
        default=list(STRATEGY_INFO),
        format_func=lambda s: STRATEGY_INFO[s].label,
        key="bench.strategies",
    )
    sweep = right.text_input(
        "Sweep N (optional, comma-separated)", key="bench.sweep", placeholder="1, 5, 10, 20"
    )
    real = rt.default_settings.llm
    use_real = False
    if not real.is_demo:
        use_real = right.toggle(
            f"Use {plain(real.label)} instead of the demo model", key="bench.real"
        )
    confirm = (
        right.checkbox("I confirm the calls to the real provider", key="bench.confirm")
        if use_real
        else True
    )
    go = st.form_submit_button("Run benchmark", type="primary", icon=":material/speed:")

if go:
    try:
        ns = [check_n(int(x)) for x in sweep.replace(" ", "").split(",") if x] or [check_n(n)]
        if not strategies:
            raise CrewdashError("Choose at least one strategy.")
        llm = real if use_real else LLMSettings()
        calls = sum(ns) * len(strategies)
        if use_real and not confirm:
            raise CrewdashError(
                f"This benchmark makes about {calls} calls to {real.label}: "
                "tick the confirmation to run it."
            )
        lat = LatencyProfile(kind=cast(ProfileKind, profile), seconds=latency)
        title = f"benchmark N={','.join(map(str, ns))} ({len(strategies)} strategies)"
        job_id = rt.jobs.start(
            title,
            lambda p: run_and_keep(ns, strategies, lat, llm, rt.store, p, p.partial),
            kind="bench",
        )
        st.session_state["bench.job_id"] = job_id
    except CrewdashError as exc:
        st.error(plain(exc), icon=":material/error:")
    except ValueError:
        st.error("Sweep N must be whole numbers separated by commas, e.g. 1, 5, 10, 20.")


def render_reports(reports: list[BenchReport], key: str = "live") -> None:
    report = reports[-1]
    crewdash_row = report.result("crewdash")
    cols = st.columns(4)
    cols[0].metric(
        "Floor",
        f"{report.floor_s:.2f} s",
        help=f"{report.floor_rule}: L one call's latency, c the framework's CPU per crew.",
    )
    cols[1].metric("Framework CPU per crew (c)", f"{report.framework_cpu_per_crew_ms:.0f} ms")
    cols[2].metric(
        "Sequential",
        f"{report.sequential_s:.2f} s",
        help=None if report.sequential_measured else "estimated: not selected",
    )
    if crewdash_row and crewdash_row.loop_lag_ms:
        cols[3].metric("Runner loop lag p99", f"{crewdash_row.loop_lag_ms['p99']:.0f} ms")
    st.caption(plain(f"N={report.n} · {report.profile} · {report.model}"))
    st.dataframe(bench_table(report), hide_index=True, width="stretch", key=f"{key}-table")
    wall, speedup, timeline, sweep_tab = st.tabs(
        ["Wall time", "Speedup", "Timeline of one strategy", "Sweep"]
    )
    with wall:
        st.plotly_chart(bench_bar_figure(report, "wall_s"), width="stretch", key=f"{key}-wall")
    with speedup:
        st.plotly_chart(
            bench_bar_figure(report, "speedup_vs_sequential"), width="stretch", key=f"{key}-speedup"
        )
    with timeline:
        measured = [r.strategy for r in report.results if r.spans]
        if measured:
            choice = st.selectbox(
                "Strategy",
                measured,
                key=f"bench.timeline.{key}",
                format_func=strategy_label,
            )
            picked = report.result(choice)
            if picked is not None:
                st.plotly_chart(
                    bench_timeline_figure(picked), width="stretch", key=f"{key}-timeline"
                )
    with sweep_tab:
        if len(reports) > 1:
            st.plotly_chart(sweep_figure(reports), width="stretch", key=f"{key}-sweep")
        else:
            st.caption("Give several N in “Sweep N” to see wall time against N.")


render_other_jobs(rt.jobs, "bench", "limits")
job = render_live_job(
    rt.jobs,
    shown_job(rt.jobs, "bench", "bench.job_id"),
    "benchmark",
    render_reports,
    lambda reports: render_reports(reports, key="partial"),  # strategies fill in as they end
)

st.subheader("Provider rate limits: the rate governor against retries only")
st.write(
    "The same research crews twice, each time against a fresh demo model that emulates a "
    "provider's requests and tokens per minute: with the rate governor (told nothing: it learns "
    "the limits from the answers' headers), and with retries only. The bound is the larger of "
    "calls ÷ RPM and tokens ÷ TPM. `python -m crewdash bench --limits rpm=600,tpm=60000 --n 200` "
    "does the same from a terminal (figures in docs/benchmarks/governor-200.txt)."
)
with st.form("bench.limits_form", border=True):
    cols = st.columns(4)
    limits_n = cols[0].number_input("Crews (N)", 1, GOVERNOR_MAX_N, 50, key="bench.limits_n")
    limits_rpm = cols[1].number_input("RPM", 1, 1_000_000, 600, step=60, key="bench.limits_rpm")
    limits_tpm = cols[2].number_input(
        "TPM", 1, 100_000_000, 60_000, step=1000, key="bench.limits_tpm"
    )
    limits_latency = cols[3].number_input(
        "Latency (s)", 0.0, 10.0, 1.0, 0.1, key="bench.limits_latency"
    )
    limits_go = st.form_submit_button("Run rate-limit benchmark", icon=":material/speed:")
if limits_go:
    try:
        emulated = ProviderLimits(rpm=int(limits_rpm), tpm=int(limits_tpm))
        st.session_state["bench.limits_job"] = rt.jobs.start(
            f"rate limits N={limits_n} ({emulated.describe()})",
            lambda p: run_limits_bench(int(limits_n), emulated, float(limits_latency), progress=p),
            kind="limits",
        )
    except CrewdashError as exc:
        st.error(plain(exc), icon=":material/error:")
render_live_job(
    rt.jobs,
    shown_job(rt.jobs, "limits", "bench.limits_job"),
    "rate-limit benchmark",
    render_limits_report,
)

if rt.store is not None:
    saved = rt.store.list_bench()
    if saved:
        with st.expander(f"Earlier benchmarks ({len(saved)})", expanded=job is None):
            pick = st.selectbox(
                "Benchmark",
                range(len(saved)),
                key="bench.saved",
                format_func=lambda i: (
                    datetime.fromtimestamp(saved[i].created_at).strftime("%Y-%m-%d %H:%M")
                    + f" · {saved[i].title}"
                ),
            )
            render_reports(
                [BenchReport.from_json(r) for r in saved[pick].reports],
                key=f"saved-{saved[pick].bench_id}",
            )
