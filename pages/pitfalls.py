"""Pitfalls page: each trap that serializes or breaks "parallel" crews, measured live."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pandas as pd
import streamlit as st

from crewdash.base.errors import CrewdashError
from crewdash.bench.pitfalls import DEMOS, TITLES, PitfallResult, run_pitfalls
from ui.job_view import render_live_job, render_other_jobs, shown_job
from ui.session import require_login, runtime
from ui.text import code, plain

require_login()

rt = runtime()
st.title("Pitfalls that silently serialize crews")
st.write(
    "Every figure below is measured when you press the button, on this machine, against the "
    "simulated model at a fixed latency: nothing on this page is a canned claim."
)

with st.form("pitfalls.form"):
    chosen = st.multiselect(
        "Demos",
        list(DEMOS),
        default=list(DEMOS),
        format_func=cast(Callable[[Any], str], TITLES.get),
        key="pitfalls.chosen",
    )
    latency = st.number_input("Model latency (s)", 0.1, 5.0, 1.0, 0.1, key="pitfalls.latency")
    go = st.form_submit_button("Measure", type="primary", icon=":material/science:")

if go:
    try:
        if not chosen:
            raise CrewdashError("Choose at least one demo.")
        st.session_state["pitfalls.job_id"] = rt.jobs.start(
            f"pitfall demos ({len(chosen)})",
            lambda p: run_pitfalls(list(chosen), float(latency), p),
            kind="pitfalls",
        )
    except CrewdashError as exc:
        st.error(plain(exc), icon=":material/error:")


def render_result(result: PitfallResult) -> None:
    st.subheader(result.title)
    st.write(result.finding)
    if result.error:
        st.error(f"Observed: {code(result.error)}", icon=":material/bug_report:")
    if result.figures:  # a table: metric cards cut long labels such as "shared: prompts…"
        figures = pd.DataFrame({"measured": list(result.figures), "value": result.figures.values()})
        st.table(figures.set_index("measured"))
    trap, fix = st.columns(2)
    trap.caption("The trap")
    trap.code(result.trap, language="python", wrap_lines=True)  # no line cut at the edge
    fix.caption("The fix")
    fix.code(result.fix, language="python", wrap_lines=True)


def render_results(results: list[PitfallResult]) -> None:
    for result in results:
        render_result(result)
        st.divider()


render_other_jobs(rt.jobs, "pitfalls")
render_live_job(rt.jobs, shown_job(rt.jobs, "pitfalls", "pitfalls.job_id"), "demos", render_results)
