"""Renders one batch snapshot: headline figures, status table, charts, results.

Shared by the pages that show a batch; reads only the immutable snapshot it is given.
"""

from __future__ import annotations

import streamlit as st

from crewdash.batch import BatchSnapshot, CrewSnapshot, CrewState
from crewdash.charts import (
    crew_label,
    latency_figure,
    status_table,
    timeline_figure,
    tokens_figure,
    ttft_figure,
)
from crewdash.config import outputs_dir
from crewdash.exports import FORMATS, export
from crewdash.pricing import batch_cost
from crewdash.run_context import crew_file
from ui.governor_view import render_spend

REFRESH_SECONDS = 0.75


def render_headline(snap: BatchSnapshot) -> None:
    done = sum(1 for c in snap.crews if c.state.final)  # every ending, not only success/failure
    always = (CrewState.RUNNING, CrewState.QUEUED, CrewState.FAILED)
    rest = (
        CrewState.CANCELLED,
        CrewState.TIMED_OUT,
        CrewState.INTERRUPTED,
        CrewState.BUDGET_EXCEEDED,
    )
    counts = [(state, snap.count(state)) for state in (*always, *rest)]
    cols = st.columns(6)
    cols[0].metric(
        "Crews finished",
        f"{done} / {len(snap.crews)}",
        help=", ".join(
            f"{n} {state.value.replace('_', ' ')}" for state, n in counts if n or state in always
        ),
    )
    cols[1].metric(
        "Batch wall time", f"{snap.wall_s:.2f} s", help="From Run to the last crew's finish."
    )
    cols[2].metric(
        "Sum of crew times",
        f"{snap.sum_crew_s:.2f} s",
        help="What the same crews would take one after another.",
    )
    cols[3].metric("Speedup", f"{snap.speedup:.1f}×", help="Sum of crew times ÷ wall time.")
    cols[4].metric("Tokens", f"{snap.tokens.total:,}")
    cost = batch_cost(snap)
    cols[5].metric(
        "Cost",
        "n/a" if cost is None else f"${cost:.4f}",
        help="From prices.yaml (extend with CREWDASH_PRICES_FILE)."
        if cost is not None
        else f"No price for {snap.model or 'this model'}: add it "
        "to prices.yaml or your CREWDASH_PRICES_FILE.",
    )


def render_batch(snap: BatchSnapshot) -> None:
    state_word = "finished" if snap.done else "running"
    st.caption(
        f"Batch `{snap.batch_id}` · blueprint **{snap.blueprint}** · {snap.model_label} · "
        f"up to {snap.max_concurrency} crews at once · {state_word}"
    )
    render_spend(snap)
    render_headline(snap)
    st.markdown(" · ".join(f"**{snap.count(state)}** {state.value}" for state in CrewState))
    st.dataframe(
        status_table(snap),
        hide_index=True,
        width="stretch",
        column_config={
            "Start (s)": st.column_config.NumberColumn(format="%.2f"),
            "Duration (s)": st.column_config.NumberColumn(format="%.2f"),
            "Cost ($)": st.column_config.NumberColumn(format="%.6f"),
            "TTFT (s)": st.column_config.NumberColumn(format="%.2f"),
            "Tokens/s": st.column_config.NumberColumn(format="%.0f"),
            "Topic": st.column_config.TextColumn(width="medium"),
            "Step": st.column_config.TextColumn(width="large"),
        },
    )
    timeline, latency, first, tokens = st.tabs(
        ["Timeline", "Crew latency", "Time to first token", "Tokens & cost"]
    )
    with timeline:
        st.plotly_chart(timeline_figure(snap), width="stretch", key=f"timeline-{snap.batch_id}")
    with latency:
        st.plotly_chart(latency_figure(snap), width="stretch", key=f"latency-{snap.batch_id}")
    with first:
        st.plotly_chart(ttft_figure(snap), width="stretch", key=f"ttft-{snap.batch_id}")
    with tokens:
        st.plotly_chart(tokens_figure(snap), width="stretch", key=f"tokens-{snap.batch_id}")
    st.subheader("Results")
    finished = [c for c in snap.crews if c.state.final]
    if not finished:
        st.caption("Results appear here as each crew finishes.")
    for crew in finished:
        icon = (
            ":material/check_circle:" if crew.state is CrewState.SUCCEEDED else ":material/cancel:"
        )
        with st.expander(
            f"{crew_label(crew, 80)} · {crew.duration or 0:.2f} s",
            icon=icon,
            expanded=len(snap.crews) <= 5,
        ):
            if crew.state is CrewState.SUCCEEDED:
                st.markdown(crew.result or "_(empty answer)_")
            else:
                st.error(crew.error or "failed")
            render_crew_details(snap, crew)


def render_crew_details(snap: BatchSnapshot, crew: CrewSnapshot) -> None:
    """A crew's inputs, Flow steps, every task's output and the files its tasks wrote."""
    others = {k: v for k, v in crew.inputs.items() if v != crew.topic}
    if others:
        st.caption("Inputs: " + " · ".join(f"`{k}` = {v}" for k, v in others.items()))
    steps = [s for s in crew.spans if s.kind == "step"]
    if steps:
        st.caption(
            "Flow steps: "
            + " → ".join(
                f"{s.name}" + (f" ({s.duration:.2f} s)" if s.duration is not None else "")
                for s in steps
            )
        )
    # a one-task crew's only output is its answer, shown above: not again
    if len(crew.tasks) > 1 or (crew.tasks and crew.tasks[0].output != crew.result):
        tabs = st.tabs(
            [
                f"{i}. {t.name}" + (" (restored)" if t.restored else "")
                for i, t in enumerate(crew.tasks, 1)
            ]
        )
        for tab, task in zip(tabs, crew.tasks, strict=True):
            with tab:
                if task.agent:
                    st.caption(f"Agent: {task.agent}")
                st.markdown(task.output or "_(empty output)_")
    if crew.files:
        folder = outputs_dir() / snap.batch_id / crew.run_id
        st.caption("Files its tasks wrote:")
        for name in crew.files:
            try:
                data = crew_file(folder, name).read_bytes()
            except FileNotFoundError:
                st.caption(f"`{name}` (no longer on this server)")
                continue
            st.download_button(
                name,
                data,
                file_name=name.rsplit("/", 1)[-1],
                key=f"file.{crew.run_id}.{name}",
                icon=":material/description:",
            )


def render_downloads(snap: BatchSnapshot, where: str) -> list[st.delta_generator.DeltaGenerator]:
    """CSV, JSON and Markdown download buttons; returns one spare column for the caller."""
    cols = st.columns(len(FORMATS) + 1)
    for col, (fmt, (mime, ext)) in zip(cols, FORMATS.items(), strict=False):
        col.download_button(
            f"Download {fmt.upper()}",
            export(snap, fmt),
            file_name=f"crewdash-{snap.batch_id}.{ext}",
            mime=mime,
            key=f"{where}.dl.{snap.batch_id}.{fmt}",
            icon=":material/download:",
        )
    return cols[len(FORMATS) :]
