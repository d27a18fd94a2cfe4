"""Experiments page: the same topics through 2 to 6 variants at once, as a live, scored grid."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pandas as pd
import streamlit as st

from crewdash.base.errors import CrewdashError, UnknownBatchError
from crewdash.blueprints.catalog import list_blueprints
from crewdash.demo.models import DEMO_MODELS
from crewdash.experiments.spec import MAX_VARIANTS, ExperimentSpec, Grid, build_spec, parse_variant
from crewdash.present.experiment_charts import (
    best_variants,
    cell_heatmap,
    latency_by_variant,
    score_by_variant,
)
from crewdash.present.experiment_exports import cell_text, export_grid
from ui.batch_view import REFRESH_SECONDS
from ui.people import audit, person
from ui.polling import poll_until_done
from ui.session import llm_settings, require_login, run_settings, runtime, state
from ui.text import code, plain, render_answer

require_login()

DEFAULT_VARIANTS = "name=fast,model=demo-fast\nname=thorough,model=demo-thorough"
JUDGE_LABELS = {"waiting": "judge waiting", "judging": "judging…", "failed": "judge failed"}

rt = runtime()
experiments = rt.experiments
st.title("Experiments")
st.write(
    "Run the same topics through several models or crews at once and compare them side by "
    "side: a row per topic, a column per variant, with latency, tokens, cost and a judge's "
    "score in every cell."
)


def variants_text(spec: ExperimentSpec) -> str:
    lines = []
    for v in spec.variants:
        parts = [f"name={v.name}", f"provider={v.provider}", f"model={v.model_name}"]
        if v.temperature is not None:
            parts.append(f"temperature={v.temperature:g}")
        parts.append(f"blueprint={v.blueprint}")
        lines.append(",".join(parts))
    return "\n".join(lines)


def load_into_form(spec: ExperimentSpec) -> None:
    """Prefill the form with an experiment, to change one variant and run it again."""
    st.session_state["experiments.topics"] = "\n".join(spec.topics)
    st.session_state["experiments.variants"] = variants_text(spec)
    st.session_state["experiments.rubric"] = spec.rubric or ""
    st.session_state["experiments.cache"] = True


def open_experiment(experiment_id: str) -> None:
    st.session_state["experiments.id"] = experiment_id
    st.query_params["experiment"] = experiment_id


with st.expander("Variants you can name", icon=":material/help:"):
    st.markdown(
        "One variant per line, `key=value` pairs separated by commas; keys: `name`, "
        "`provider`, `model`, `temperature`, `blueprint`. "
        f"Between 2 and {MAX_VARIANTS} variants, all different.\n\n"
        "Demo models (offline): "
        + "; ".join(f"`{m.name}` ({m.blurb})" for m in DEMO_MODELS.values())
        + ".\n\nBlueprints: "
        + ", ".join(code(b) for b in list_blueprints())
    )

with st.form("experiments.form", border=False):
    state("experiments.variants", DEFAULT_VARIANTS)
    st.text_area(
        "Topics (one per line)",
        key="experiments.topics",
        height=140,
        placeholder="EV batteries\nHeat pumps\nSolid-state storage",
    )
    st.text_area("Variants (one per line)", key="experiments.variants", height=120)
    st.text_area(
        "Judge rubric (optional: every answer is scored 1-10 against it)",
        key="experiments.rubric",
        height=80,
        placeholder="Concrete, specific and complete; no vague claims.",
    )
    st.checkbox(
        "Response cache: answer identical model calls from the stored answers",
        key="experiments.cache",
    )
    submitted = st.form_submit_button("Start experiment", type="primary", icon=":material/science:")

if submitted:
    try:
        lines = st.session_state.get("experiments.variants", "").splitlines()
        variants = [parse_variant(line) for line in lines if line.strip()]
        spec, notes = build_spec(
            st.session_state.get("experiments.topics", ""),
            variants,
            rubric=st.session_state.get("experiments.rubric"),
            cache=bool(st.session_state.get("experiments.cache")),
            max_concurrency=run_settings().max_concurrency,
        )
        experiment_id = experiments.start(spec, llm_settings(), by=person())
    except CrewdashError as exc:
        st.error(plain(exc), icon=":material/error:")
    else:
        audit("run experiment", f"experiment {experiment_id}")
        for note in notes:
            st.info(plain(note), icon=":material/info:")
        open_experiment(experiment_id)

past = experiments.list(50)
if past:
    labels = {
        i: f"{i} · {len(s.topics)} topics × {', '.join(v.name for v in s.variants)}"
        + (" · re-run" if s.rerun_of else "")
        for i, _, s in past
    }

    def picked() -> None:
        if chosen := st.session_state.get("experiments.pick"):
            open_experiment(chosen)

    st.selectbox(
        "Open an experiment",
        list(labels),
        index=None,
        format_func=cast(Callable[[Any], str], labels.get),
        placeholder="the history of experiments",
        key="experiments.pick",
        on_change=picked,
    )

experiment_id = st.session_state.get("experiments.id") or st.query_params.get("experiment") or ""
if not experiment_id:
    st.stop()

try:
    first = experiments.grid(experiment_id)
except UnknownBatchError:
    st.warning(f"Experiment {code(experiment_id)} is not in the history; start a new one above.")
    st.stop()


def grid_table(grid: Grid) -> pd.DataFrame:
    """The grid for `st.table`, whose cells are Markdown: every text escaped."""
    names = [plain(v.name) for v in grid.spec.variants]
    rows = []
    for t, topic in enumerate(grid.spec.topics):
        row = {"topic": plain(topic)}
        for v, name in enumerate(names):
            cell = grid.cell(t, v)
            text = cell_text(cell)
            if cell.judge in JUDGE_LABELS:
                text += f" · {JUDGE_LABELS[cell.judge]}"
            row[name] = plain(text)
        rows.append(row)
    return pd.DataFrame(rows).set_index("topic")


def summary_table(grid: Grid) -> pd.DataFrame:
    def n(value: float | None, places: int) -> str:
        return "—" if value is None else f"{value:.{places}f}"  # a bare "-" renders as a bullet

    return pd.DataFrame(
        [
            {
                "variant": plain(v.name),
                "model": plain(f"{v.provider}/{v.model}"),
                "success": f"{v.success_rate:.0%}",
                "median s": n(v.median_latency_s, 2),
                "p95 s": n(v.p95_latency_s, 2),
                "tokens": str(v.tokens),
                "cost $": n(v.cost_usd, 6),
                "mean score": n(v.mean_score, 2),
                "cached calls": str(v.cache_hits),
            }
            for v in grid.variants
        ]
    ).set_index("variant")


def draw(grid: Grid) -> None:
    cells = len(grid.cells)
    finished = sum(1 for c in grid.cells if c.state not in ("queued", "running"))
    scored = sum(1 for c in grid.cells if c.score is not None)
    cols = st.columns(4)
    cols[0].metric("Cells finished", f"{finished}/{cells}")
    cols[1].metric("Wall time", f"{grid.wall_s:.1f} s")
    cols[2].metric("Scored", f"{scored}" if grid.spec.rubric else "judge off")
    cols[3].metric(
        "From the cache",
        f"{grid.cache_hits} calls",
        f"${grid.saved_usd:.6f} saved" if grid.cache_hits else None,
    )
    st.markdown("**Grid** (state · latency · tokens · cost · score)")
    st.table(grid_table(grid))
    colour = st.columns(2 if grid.spec.rubric else 1)  # the grid again, each cell coloured
    colour[0].plotly_chart(cell_heatmap(grid, "latency"), key="experiments.latency_grid")
    if grid.spec.rubric:
        colour[1].plotly_chart(cell_heatmap(grid, "score"), key="experiments.score_grid")
    best = best_variants(grid)
    if best:
        st.markdown("**Best variant for each measure**" + (" (so far)" if not grid.done else ""))
        st.dataframe(  # variant names as typed: plain text
            pd.DataFrame({"measure": list(best), "best variant": list(best.values())}),
            hide_index=True,
        )
    st.markdown("**Summary by variant**")
    st.table(summary_table(grid))
    left, right = st.columns(2)
    left.plotly_chart(latency_by_variant(grid), key="experiments.latency_chart")
    if grid.spec.rubric:
        right.plotly_chart(score_by_variant(grid), key="experiments.score_chart")
    st.caption("Finished." if grid.done else "Running: cells fill in as each crew finishes.")


spec = first.spec
st.subheader(f"Experiment {code(experiment_id)}")
st.caption(
    f"{len(spec.topics)} topics × {len(spec.variants)} variants"
    + (f" · judged against: {plain(spec.rubric)}" if spec.rubric else " · no judge")
    + (" · response cache on" if spec.cache else "")
    + (f" · re-run of {code(spec.rerun_of)}" if spec.rerun_of else "")
)


def cancel_cells(experiment_id: str) -> None:
    rt.runner.request_cancel(experiment_id)
    audit("cancel", f"experiment {experiment_id}")


if not first.done and experiment_id in rt.runner.batch_ids():
    started_by = rt.runner.batch(experiment_id).snapshot()
    if person().may_act_on(started_by.created_by):
        st.button(
            "Cancel the cells still running",
            icon=":material/stop_circle:",
            key="experiments.cancel",
            on_click=cancel_cells,
            args=(experiment_id,),
        )
    else:
        who = started_by.created_by_name or started_by.created_by or "someone"
        st.caption(plain(f"Started by {who}: only they or an admin can cancel it."))
poll_until_done(first, lambda: experiments.grid(experiment_id), draw, every_s=REFRESH_SECONDS)
st.page_link(
    "pages/history.py",
    label="Timeline of every crew and model call (cached calls in green) in the History",
    icon=":material/timeline:",
    query_params={"batch": experiment_id},
)

grid = experiments.grid(experiment_id)
st.markdown("#### Compare one topic across variants")
topic_index = st.selectbox(
    "Topic",
    range(len(spec.topics)),
    format_func=lambda i: spec.topics[i],
    key=f"experiments.topic.{experiment_id}",
)
columns = st.columns(len(spec.variants))
for v, column in enumerate(columns):
    cell = grid.cell(topic_index, v)
    with column:
        st.markdown(f"**{plain(cell.variant)}**")
        st.caption(plain(cell_text(cell)))
        if cell.reason or cell.judge_error:
            st.caption(plain(f"Judge: {cell.reason or cell.judge_error}"))
        if cell.answer:
            render_answer(cell.answer)
        elif cell.error:
            st.error(plain(cell.error), icon=":material/error:")
        if cell.state in ("queued", "running"):
            continue  # marks are for answers
        with st.form(f"experiments.mark.{experiment_id}.{cell.index}", border=True):
            marks = [None, "good", "bad"]
            mark = st.radio(
                "Mark",
                marks,
                index=marks.index(cell.mark),
                format_func=lambda m: m or "none",
                horizontal=True,
                key=f"experiments.markv.{experiment_id}.{cell.index}",
            )
            note = st.text_input(
                "Note", value=cell.note or "", key=f"experiments.note.{experiment_id}.{cell.index}"
            )
            if st.form_submit_button("Save mark"):
                try:
                    experiments.mark(experiment_id, cell.index, mark, note)
                except CrewdashError as exc:
                    st.error(plain(exc), icon=":material/error:")
                else:
                    where = f"experiment {experiment_id} cell {cell.index}"
                    audit("mark", where, detail=mark or "")
                    st.rerun()

st.markdown("#### Export and run again")
downloads = st.columns(2)
downloads[0].download_button(
    "Grid as CSV",
    export_grid(grid, "csv"),
    file_name=f"experiment-{experiment_id}.csv",
    mime="text/csv",
    key="experiments.csv",
)
downloads[1].download_button(
    "Grid as Markdown",
    export_grid(grid, "md"),
    file_name=f"experiment-{experiment_id}.md",
    mime="text/markdown",
    key="experiments.md",
)
again = st.columns(3)
only = again[0].selectbox(
    "Variant", [None, *(v.name for v in spec.variants)], format_func=lambda v: v or "all variants",
    key="experiments.rerun_variant",
)  # fmt: skip
if again[1].button("Re-run (cache on)", icon=":material/replay:", disabled=not grid.done):
    try:
        new_id = experiments.rerun(experiment_id, llm_settings(), only, cache=True, by=person())
        audit("rerun", f"experiment {experiment_id}", detail=f"as {new_id}")
        open_experiment(new_id)
    except CrewdashError as exc:
        st.error(plain(exc), icon=":material/error:")
    else:
        st.rerun()
again[2].button(
    "Edit as a new experiment", icon=":material/edit:", on_click=load_into_form, args=(spec,)
)
