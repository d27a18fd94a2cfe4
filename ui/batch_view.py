"""Renders one batch snapshot: headline figures, status table, charts, results.

Shared by the pages that show a batch; reads only the immutable snapshot it is given.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pandas as pd
import streamlit as st

from crewdash.base.config import outputs_dir
from crewdash.base.run_context import crew_file
from crewdash.model.batch import STOPPED_STATES, BatchSnapshot, CrewSnapshot, CrewState
from crewdash.model.pricing import batch_cost
from crewdash.present.charts import (
    crew_label,
    latency_figure,
    latency_histogram,
    progress_figure,
    status_table,
    timeline_figure,
    tokens_figure,
    ttft_figure,
)
from crewdash.present.exports import FORMATS, export
from ui.governor_view import render_spend
from ui.text import code, plain, render_answer

REFRESH_SECONDS = 0.75
LARGE_BATCH = 50  # past this many crews, aggregated charts instead of one bar per crew
SLICE = 50  # crews in a large batch's timeline slice and its slowest/failed lists
RESULTS_PAGE = 20  # answers drawn at a time once more have finished


def state_words(snap: BatchSnapshot) -> str:
    """The batch's state for people: a batch stopped from outside "ended", only one whose crews
    all ran to their end "finished" (`crewdash.model.batch.batch_state` is the rule)."""
    state = snap.state
    if state == "running":
        return "running"
    return f"{'ended' if state in STOPPED_STATES else 'finished'}: {state.replace('_', ' ')}"


def render_headline(snap: BatchSnapshot, per_row: int = 6) -> None:
    """The batch's figures; `per_row` < 6 wraps them (a half-width column truncates six).
    While the batch runs, the figures that still move say "so far"."""
    so_far = "" if snap.done else " so far"
    done = sum(1 for c in snap.crews if c.state.final)  # every ending, not only success/failure
    always = (CrewState.RUNNING, CrewState.QUEUED, CrewState.FAILED)
    rest = (
        CrewState.CANCELLED,
        CrewState.TIMED_OUT,
        CrewState.INTERRUPTED,
        CrewState.BUDGET_EXCEEDED,
    )
    counts = [(state, snap.count(state)) for state in (*always, *rest)]
    cols = [c for _ in range(0, 6, per_row) for c in st.columns(per_row)]
    over = snap.state != "running"
    cols[0].metric(  # once over, what counts is how many answered; `state_words` says how
        "Crews succeeded" if over else "Crews done",
        f"{snap.count(CrewState.SUCCEEDED) if over else done} / {len(snap.crews)}",
        help=", ".join(
            f"{n} {state.value.replace('_', ' ')}" for state, n in counts if n or state in always
        ),
    )
    cols[1].metric(
        f"Batch wall time{so_far}",
        f"{snap.wall_s:.2f} s",
        help="From Run to the last crew's end.",
    )
    cols[2].metric(
        "Crew times so far" if so_far else "Sum of crew times",  # six fit at 1440 px
        f"{snap.sum_crew_s:.2f} s",
        help="What the same crews would take one after another.",
    )
    cols[3].metric(
        f"Speedup{so_far}",
        "n/a" if snap.speedup is None else f"{snap.speedup:.1f}×",
        help="Sum of crew times ÷ wall time."
        if snap.speedup is not None
        else "No crew succeeded: there is no speedup to speak of.",
    )
    cols[4].metric(f"Tokens{so_far}", f"{snap.tokens.total:,}")
    cost = batch_cost(snap)
    cols[5].metric(
        f"Cost{so_far}",
        "n/a" if cost is None else f"${cost:.4f}",
        help="From prices.yaml (extend with CREWDASH_PRICES_FILE)."
        if cost is not None
        else f"No price for {plain(snap.model or 'this model')}: add it "
        "to prices.yaml or your CREWDASH_PRICES_FILE.",
    )


def status_columns() -> dict[str, Any]:
    """The status table's columns, narrow enough that tokens, cost and TTFT show at 1440 px
    without a horizontal scroll: the step ("done" for most crews) gets a small column."""
    number = st.column_config.NumberColumn
    return {
        "#": number(width=40),
        "Topic": st.column_config.TextColumn(width="medium"),
        "State": st.column_config.TextColumn(width=90),
        "Step": st.column_config.TextColumn(width=110),
        "Start (s)": number("Start", format="%.2f", width=60, help="seconds after Run"),
        "Duration (s)": number("Dur. (s)", format="%.2f", width=70),
        "LLM calls": number("Calls", width=50),
        "Restored tasks": number("Restored", width=70),
        "Tokens": number(width=70),
        "Cost ($)": number(format="%.6f", width=80),
        "TTFT (s)": number(format="%.2f", width=70),
        "Tokens/s": number(format="%.0f", width=70),
    }


def render_batch_top(snap: BatchSnapshot) -> None:
    """The caption, budget and headline figures: what a presenter must see first."""
    state_word = state_words(snap)
    st.caption(
        f"Batch {code(snap.batch_id)} · blueprint **{plain(snap.blueprint)}** · "
        f"{plain(snap.model_label)} · "
        f"up to {snap.max_concurrency} crews at once · {state_word}"
    )
    render_spend(snap)
    render_headline(snap)


def render_batch_rest(snap: BatchSnapshot) -> None:
    """The status line and table, the charts and the finished answers."""
    st.markdown(" · ".join(f"**{snap.count(state)}** {state.value}" for state in CrewState))
    table = status_table(snap)
    if not table.empty and not table["Restored tasks"].any():
        table = table.drop(columns="Restored tasks")  # a column of zeros, except after resume
    st.dataframe(table, hide_index=True, width="stretch", column_config=status_columns())
    if len(snap.crews) > LARGE_BATCH:
        render_large_charts(snap)
    else:
        timeline, latency, first, tokens = st.tabs(
            ["Timeline", "Crew latency", "Time to first token", "Tokens & cost"]
        )
        with timeline:
            key = f"timeline-{snap.batch_id}"
            st.plotly_chart(timeline_figure(snap), width="stretch", key=key)
        with latency:
            st.plotly_chart(latency_figure(snap), width="stretch", key=f"latency-{snap.batch_id}")
        with first:
            st.plotly_chart(ttft_figure(snap), width="stretch", key=f"ttft-{snap.batch_id}")
        with tokens:
            st.plotly_chart(tokens_figure(snap), width="stretch", key=f"tokens-{snap.batch_id}")
    render_results(snap)


def render_large_charts(snap: BatchSnapshot) -> None:
    """A batch of many crews: aggregated views (crews ended over time, a latency histogram,
    the slowest and failed crews) and the per-crew timeline of a chosen slice of rows; only
    the view chosen is drawn, so a refresh costs about the same at 200 crews as at 10,000."""
    views = ["Overview", "Slowest and failed", "Timeline of a slice"]
    view = st.segmented_control(
        "Charts", views, key=f"large.view.{snap.batch_id}", default="Overview"
    )
    if view == "Slowest and failed":
        ended = [c for c in snap.crews if c.finished_at]
        slowest = sorted(ended, key=lambda c: -(c.duration or 0))[:SLICE]
        failed = [c for c in ended if c.state is not CrewState.SUCCEEDED][:SLICE]
        for title, crews in (("Slowest", slowest), ("Not succeeded", failed)):
            st.markdown(f"**{title}** ({len(crews)})")
            rows = [
                {
                    "Row": c.index + 1,
                    "Crew": crew_label(c, 60),
                    "State": c.state.value,
                    "Latency s": round(c.duration or 0, 2),
                    "Error": c.error or "",
                }
                for c in crews
            ]
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    elif view == "Timeline of a slice":
        last = max(1, len(snap.crews) - SLICE + 1)
        first = st.number_input(
            f"From row (the timeline shows {SLICE} crews)",
            min_value=1,
            max_value=last,
            key=f"large.slice.{snap.batch_id}",
        )
        crews = sorted(snap.crews, key=lambda c: c.index)[int(first) - 1 : int(first) - 1 + SLICE]
        part = replace(snap, crews=tuple(crews))
        st.plotly_chart(timeline_figure(part), width="stretch", key=f"timeline-{snap.batch_id}")
    else:
        left, right = st.columns(2)
        left.plotly_chart(progress_figure(snap), width="stretch", key=f"ended-{snap.batch_id}")
        right.plotly_chart(
            latency_histogram(snap), width="stretch", key=f"histogram-{snap.batch_id}"
        )


def render_batch(snap: BatchSnapshot) -> None:
    render_batch_top(snap)
    render_batch_rest(snap)


def render_results(snap: BatchSnapshot) -> None:
    """Every finished crew's answer; a few are open, and one toggle opens all of them."""
    st.subheader("Results")
    finished = [c for c in snap.crews if c.state.final]
    if not finished:
        st.caption("Results appear here as each crew finishes.")
        return
    few = len(snap.crews) <= 5
    paged = len(finished) > RESULTS_PAGE
    if paged:  # many: a page of them at a time
        pages = (len(finished) + RESULTS_PAGE - 1) // RESULTS_PAGE
        page = st.number_input(
            f"Page (of {pages}; {RESULTS_PAGE} answers each, in row order)",
            min_value=1,
            max_value=pages,
            key=f"results.page.{snap.batch_id}",
        )
        finished = finished[(int(page) - 1) * RESULTS_PAGE : int(page) * RESULTS_PAGE]
    shown = f"these {len(finished)}" if paged else f"all {len(finished)}"
    open_all = few or st.toggle(f"Expand {shown} answers", key=f"results.open.{snap.batch_id}")
    for crew in finished:
        icon = (
            ":material/check_circle:" if crew.state is CrewState.SUCCEEDED else ":material/cancel:"
        )
        with st.expander(
            plain(f"{crew_label(crew, 80)} · {crew.duration or 0:.2f} s"),
            icon=icon,
            expanded=open_all,
        ):
            if crew.state is CrewState.SUCCEEDED:
                render_answer(crew.result)
            else:
                st.error(plain(crew.error or "failed"))
            render_crew_details(snap, crew)


def render_crew_details(snap: BatchSnapshot, crew: CrewSnapshot) -> None:
    """A crew's inputs, Flow steps, every task's output and the files its tasks wrote."""
    others = {k: v for k, v in crew.inputs.items() if v != crew.topic}
    if others:
        st.caption("Inputs: " + " · ".join(f"{code(k)} = {plain(v)}" for k, v in others.items()))
    steps = [s for s in crew.spans if s.kind == "step"]
    if steps:
        st.caption(
            "Flow steps: "
            + " → ".join(
                plain(s.name) + (f" ({s.duration:.2f} s)" if s.duration is not None else "")
                for s in steps
            )
        )
    # a one-task crew's only output is its answer, shown above: not again
    if len(crew.tasks) > 1 or (crew.tasks and crew.tasks[0].output != crew.result):
        tabs = st.tabs(
            [
                f"{i}. {plain(t.name)}" + (" (restored)" if t.restored else "")
                for i, t in enumerate(crew.tasks, 1)
            ]
        )
        for tab, task in zip(tabs, crew.tasks, strict=True):
            with tab:
                if task.agent:
                    st.caption(f"Agent: {plain(task.agent)}")
                render_answer(task.output, "_(empty output)_")
    if crew.files:
        folder = outputs_dir() / snap.batch_id / crew.run_id
        st.caption("Files its tasks wrote:")
        for name in crew.files:
            try:
                data = crew_file(folder, name).read_bytes()
            except FileNotFoundError:
                st.caption(f"{code(name)} (no longer on this server)")
                continue
            st.download_button(
                plain(name),
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
