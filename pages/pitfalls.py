"""Pitfalls page: each trap that serializes or breaks "parallel" crews, measured live."""

from __future__ import annotations

import streamlit as st

from crewdash.errors import CrewdashError
from crewdash.pitfalls import DEMOS, TITLES, PitfallResult, run_pitfalls
from ui.job_view import render_live_job
from ui.session import require_login, runtime

require_login()

rt = runtime()
st.title("Pitfalls that silently serialize crews")
st.write(
    "Every figure below is measured when you press the button, on this machine, against the "
    "simulated model at a fixed latency: nothing on this page is a canned claim."
)

with st.form("pitfalls.form"):
    chosen = st.multiselect(
        "Demos", list(DEMOS), default=list(DEMOS), format_func=TITLES.get, key="pitfalls.chosen"
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
        )
    except CrewdashError as exc:
        st.error(str(exc), icon=":material/error:")


def render_result(result: PitfallResult) -> None:
    st.subheader(result.title)
    st.write(result.finding)
    if result.error:
        st.error(f"Observed: `{result.error}`", icon=":material/bug_report:")
    cols = st.columns(min(4, len(result.figures)) or 1)
    for i, (label, value) in enumerate(result.figures.items()):
        cols[i % len(cols)].metric(label, value)
    trap, fix = st.columns(2)
    trap.caption("The trap")
    trap.code(result.trap, language="python")
    fix.caption("The fix")
    fix.code(result.fix, language="python")


def render_results(results: list[PitfallResult]) -> None:
    for result in results:
        render_result(result)
        st.divider()


render_live_job(rt.jobs, st.session_state.get("pitfalls.job_id"), "demos", render_results)
