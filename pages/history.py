"""History page: every batch the team ran, searchable; open one, compare two, re-run failures."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import cast

import pandas as pd
import streamlit as st

from crewdash.base.errors import CrewdashError, UnknownBatchError
from crewdash.blueprints.projects.files import KIND_LABELS
from crewdash.model.batch import BATCH_STATES, BatchSnapshot, BatchState, CrewSnapshot, CrewState
from crewdash.model.summary import BatchSummary
from crewdash.present.charts import latency_figure
from ui.batch_view import (
    REFRESH_SECONDS,
    render_batch,
    render_downloads,
    render_headline,
    state_words,
)
from ui.people import audit, person
from ui.polling import poll_until_done
from ui.resume_view import render_resume
from ui.session import require_login, run_settings, runtime
from ui.text import code, plain

require_login()

STATES = ["all", *BATCH_STATES]  # every state `crewdash.model.batch.batch_state` can give
RERUN_STATES = {
    CrewState.FAILED,
    CrewState.CANCELLED,
    CrewState.TIMED_OUT,
    CrewState.INTERRUPTED,
    CrewState.BUDGET_EXCEEDED,
}

rt = runtime()
st.title("History")
if deleted := st.session_state.pop("history.deleted", None):  # from a batch's page
    st.success(f"Deleted batch {code(deleted)} and everything of it.", icon=":material/delete:")
if rt.store is None:
    st.info("History is off: no database is configured.")
    st.stop()

me = person()
left, middle, right = st.columns([3, 1, 1])
search = left.text_input("Search topics, blueprint, model or batch id", key="history.search")
names = dict(rt.store.batch_users())
whose = middle.selectbox(
    "Started by",
    ["everyone", me.id, *(u for u in names if u != me.id)],
    key="history.whose",
    format_func=lambda u: "mine" if u == me.id else u if u == "everyone" else names.get(u) or u,
)
state_filter = right.selectbox(
    "State", STATES, key="history.state", format_func=lambda s: s.replace("_", " ")
)
summaries = rt.store.list_batches(  # a state is looked for in the whole history
    search=search.strip() or None,
    state=None if state_filter == "all" else cast(BatchState, state_filter),
    user=None if whose == "everyone" else whose,
)


def table(rows: list[BatchSummary]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "When": datetime.fromtimestamp(s.created_at).strftime("%Y-%m-%d %H:%M:%S"),
                "Batch": s.batch_id,
                "Blueprint": s.blueprint,
                "Kind": KIND_LABELS.get(s.kind, s.kind),
                "Topics": s.topics_preview,
                "State": s.state,
                "Crews": s.crews,
                "Wall (s)": s.wall_s,
                "Speedup": s.speedup,
                "Tokens": s.tokens,
                "Model": s.model_label,
                "Started by": s.created_by_name or s.created_by,
                "From": s.source,
            }
            for s in rows
        ]
    )


if not summaries:
    st.caption(
        "No batches match."
        if search or state_filter != "all" or whose != "everyone"
        else "No batches yet: run some on the Run page or through the API."
    )
    st.stop()

st.caption("Select one batch to open it, or two to compare them side by side.")
picked = st.dataframe(
    table(summaries),
    hide_index=True,
    width="stretch",
    on_select="rerun",
    selection_mode="multi-row",
    key="history.table",
    column_config={
        "Wall (s)": st.column_config.NumberColumn(format="%.2f"),
        "Speedup": st.column_config.NumberColumn(format="%.1f×"),
    },
)
rows = list(picked.selection.rows) if picked and picked.selection else []
chosen = [summaries[i].batch_id for i in rows if i < len(summaries)]
if not chosen and st.query_params.get("compare"):  # shareable: ?compare=id1,id2
    chosen = [b for b in st.query_params["compare"].split(",") if b][:3]
elif not chosen and st.query_params.get("batch"):
    chosen = [st.query_params["batch"]]


def rerun_words(crews: list[CrewSnapshot]) -> str:
    """What a re-run re-runs, by the crews' states: "8 cancelled", "3 failed and 2 timed out"."""
    counts = Counter(c.state.value.replace("_", " ") for c in crews)
    if len(counts) == 1:
        return f"{len(crews)} {next(iter(counts))}"
    return f"{len(crews)}: " + " and ".join(f"{n} {state}" for state, n in counts.items())


def downloads(snap: BatchSnapshot) -> None:
    (spare,) = render_downloads(snap, "history")
    failed = [c for c in snap.crews if c.state in RERUN_STATES]
    again = [c.topic for c in failed]
    what = rerun_words(failed)
    # the same inputs as the first run: every crew of a batch shares all but the fan-out one
    first = dict(failed[0].inputs) if failed else {}
    fan_out = next((k for k, v in first.items() if v == failed[0].topic), None) if failed else None
    if again and snap.done and spare.button(f"Re-run {what}", key=f"history.rerun.{snap.batch_id}"):
        try:
            batch_id = rt.runner.submit(
                snap.blueprint,
                again,
                run_settings(),
                notes=[f"Re-run of the {what.split(' ', 1)[1]} topics of {snap.batch_id}."],
                inputs={k: v for k, v in first.items() if k != fan_out},
                fan_out=fan_out,
                by=person(),
            )
        except CrewdashError as exc:
            st.error(plain(exc), icon=":material/error:")
        else:
            audit("re-run", f"batch {snap.batch_id}", detail=f"as {batch_id}")
            st.session_state["run.batch_id"] = batch_id
            st.switch_page("pages/run.py", query_params={"batch": batch_id})


def load(batch_id: str) -> BatchSnapshot | None:
    try:
        return rt.snapshot(batch_id)
    except UnknownBatchError:
        st.warning(f"Batch {code(batch_id)} is not in the history.")
        return None


if len(chosen) == 1:
    batch_id = chosen[0]
    first = load(batch_id)
    if first is not None and first.blueprint == "experiment":
        st.page_link(
            "pages/experiments.py",
            label="This batch is an experiment: open it as its grid",
            icon=":material/science:",
            query_params={"experiment": batch_id},
        )
    if first is not None:

        def draw(snap: BatchSnapshot) -> None:
            render_batch(snap)
            downloads(snap)
            if render_resume(snap, "history"):  # resumed: watch it on the Run page
                st.session_state["run.batch_id"] = snap.batch_id
                st.switch_page("pages/run.py", query_params={"batch": snap.batch_id})

        poll_until_done(first, lambda: rt.snapshot(batch_id), draw, every_s=REFRESH_SECONDS)
elif len(chosen) == 2:
    snaps = [load(b) for b in chosen]
    if all(snaps):
        a, b = (s for s in snaps if s is not None)
        for col, snap in zip(st.columns(2), (a, b), strict=True):
            with col:
                st.subheader(code(snap.batch_id))
                st.caption(
                    plain(f"{snap.blueprint} · {snap.model_label}") + f" · {state_words(snap)}"
                )
                render_headline(snap, per_row=3)  # six in half the page were cut to "9.…"
                st.plotly_chart(
                    latency_figure(snap), width="stretch", key=f"history.cmp.{snap.batch_id}"
                )
        durations = pd.DataFrame(
            {
                "Topic": sorted({c.topic for c in a.crews} | {c.topic for c in b.crews}),
            }
        )
        for snap in (a, b):
            by_topic = {c.topic: c.duration for c in snap.crews}
            durations[f"{snap.batch_id} (s)"] = durations["Topic"].map(by_topic)
        st.dataframe(
            durations,
            hide_index=True,
            width="stretch",
            column_config={
                name: st.column_config.NumberColumn(format="%.2f")
                for name in durations.columns
                if name != "Topic"
            },
        )
elif len(chosen) > 2:
    st.info("Select one batch to open it, or two to compare.")
