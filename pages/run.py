"""Run page: topics in, one crew per topic on the background runner, live results out."""

from __future__ import annotations

import uuid
from dataclasses import replace

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from crewdash.base.errors import BlueprintError, CrewdashError, TopicError, UnknownBatchError
from crewdash.blueprints.base import BaseBlueprint, missing_tool_keys
from crewdash.blueprints.catalog import load_blueprint
from crewdash.blueprints.projects.files import KIND_LABELS
from crewdash.model.batch import BatchSnapshot, CrewState
from crewdash.model.spend import SpendCapExceeded
from crewdash.model.topics import parse_topics
from crewdash.present.charts import crew_label
from crewdash.providers.preflight import preflight
from ui.batch_view import REFRESH_SECONDS, render_batch_rest, render_batch_top, render_downloads
from ui.governor_view import (
    budget_choice,
    render_budget_inputs,
    render_estimate,
    render_gauges,
)
from ui.people import audit, person
from ui.polling import poll_until_done
from ui.resume_view import render_resume
from ui.session import llm_settings, require_login, run_settings, runtime, state
from ui.sheet_view import render_sheet_setup, sheet_downloads
from ui.stream_view import render_live_answers
from ui.text import code, plain

require_login()

st.title("Run crews concurrently")
# While a batch is shown, the form folds away so the live section is in view at once.
showing = st.session_state.get("run.batch_id") or st.query_params.get("batch")
if showing:  # keyed by the batch: a new batch folds it again
    setup: DeltaGenerator = st.expander(
        "New batch: topics and settings", icon=":material/edit_note:", key=f"run.setup.{showing}"
    )
else:
    st.write(
        "Paste topics, one per line. Each topic gets its own crew; all of them start at once on "
        "a background runner, and results stream in as each crew finishes."
    )
    setup = st.container()

runner = runtime().runner
for line in runtime().auto_resumed:  # CREWDASH_AUTO_RESUME=1 resumed these at start
    st.info(
        plain(f"Resumed automatically when this server started: {line}"),
        icon=":material/restart_alt:",
    )
blueprint_name = state("sidebar.blueprint", "research")
blueprint: BaseBlueprint | None = None
try:
    blueprint = load_blueprint(blueprint_name)
except BlueprintError as exc:
    st.error(
        f"Blueprint {code(blueprint_name)} cannot be used: {plain(exc)}", icon=":material/error:"
    )

if blueprint is not None:
    setup.caption(
        f"Blueprint **{plain(blueprint.name)}** · "
        + plain(KIND_LABELS.get(blueprint.kind, blueprint.kind))
    )
    for tool, key in missing_tool_keys(blueprint.tool_names):
        setup.info(
            f"Web search is off for this crew ({code(tool)} needs {code(key)}): it will answer "
            "from the model alone.",
            icon=":material/travel_explore:",
        )
    if blueprint.pinned_agents:
        pins = "\n".join(
            f"- **{plain(p.role)}**"
            + (f" (in {plain(p.where)})" if p.where else "")
            + f": {code(p.model)}"
            for p in blueprint.pinned_agents
        )
        setup.info(
            "These agents pin their own model and keep it; every other agent uses the "
            f"model chosen in the sidebar:\n{pins}",
            icon=":material/push_pin:",
        )
    if st.session_state.get("run.inputs_of") != blueprint.name:
        # a newly picked blueprint: its inputs start from its own defaults
        for name, default in blueprint.inputs.items():
            st.session_state[f"run.input.{name}"] = default
        st.session_state["run.fan_out"] = blueprint.fan_out
        st.session_state["run.inputs_of"] = blueprint.name

SOURCES = {"topics": "Typed topics", "sheet": "A sheet (CSV, TSV, Excel)"}
source = setup.segmented_control(
    "Crews from",
    list(SOURCES),
    key="run.source",
    default="topics",
    format_func=SOURCES.__getitem__,
)
submitted = False
names: list[str] = []
fan_out = "topic"
if source == "sheet":
    if blueprint is not None:
        with setup:
            render_sheet_setup(blueprint)
else:
    with setup.form("run.form", border=False):
        st.text_area(
            "Topics (one per line)",
            key="run.topics",
            height=180,
            placeholder="CrewAI async kickoff\nLangGraph vs CrewAI\nAutoGen new features",
        )
        names = list(blueprint.inputs) if blueprint else []
        fan_out = blueprint.fan_out if blueprint else "topic"
        if len(names) > 1:
            state("run.fan_out", fan_out)
            fan_out = st.selectbox(
                "Each line fills", names, key="run.fan_out", format_func=lambda n: "{" + n + "}"
            )
            for name in names:
                if name != fan_out:
                    state(f"run.input.{name}", "")
                    needed = blueprint is not None and name in blueprint.required
                    st.text_input(
                        f"{{{plain(name)}}} (the same for every crew)",
                        key=f"run.input.{name}",
                        help="Required." if needed else "Optional: prefilled with the default.",
                    )
        render_budget_inputs()
        submitted = st.form_submit_button("Run", type="primary", icon=":material/play_arrow:")
        # the form sends the topics only when submitted: this button sends them without a Run
        st.form_submit_button("Estimate cost", icon=":material/calculate:")

    if blueprint is not None:
        try:
            with setup:
                try:
                    typed = parse_topics(st.session_state.get("run.topics", "")).items
                except TopicError:
                    typed = ()  # none yet (the daily cap still shows), or reported at Run
                render_estimate(
                    blueprint,
                    typed,
                    llm_settings(),
                    {n: st.session_state.get(f"run.input.{n}", "") for n in names if n != fan_out},
                    fan_out,
                )
        except CrewdashError:
            pass  # the topics or the model are reported when Run is pressed


def submission_key(content: str) -> str:
    """This form's idempotency key: Ctrl+Enter then a click on Run (or a double click) send
    the same form twice, and the runner starts one batch for both. A new key once the form
    holds something else or the batch of its key has ended (running it again is a choice)."""
    key, seen, batch = st.session_state.get("run.submission", (None, None, None))
    try:
        ended = batch is not None and runtime().snapshot(batch).done
    except UnknownBatchError:
        ended = True
    if key is None or seen != content or ended:
        key, batch = uuid.uuid4().hex, None
    st.session_state["run.submission"] = (key, content, batch)
    return str(key)


if submitted and blueprint is not None:
    try:
        topics = parse_topics(st.session_state.get("run.topics", ""))
        extra = {n: st.session_state.get(f"run.input.{n}", "") for n in names if n != fan_out}
        empty = [n for n, v in extra.items() if not v.strip() and n in blueprint.required]
        if empty:
            raise BlueprintError("Fill in " + ", ".join("{" + n + "}" for n in empty) + ".")
        settings = replace(run_settings(), budget=budget_choice())
        preflight([settings.llm])  # a missing key or a dead URL: refused here, not started
        batch_id = runner.submit(
            blueprint,
            topics.items,
            settings,
            notes=topics.notes,
            inputs=extra,
            fan_out=fan_out,
            idempotency_key=submission_key(repr((blueprint.name, topics, extra, settings))),
            by=person(),
        )
    except SpendCapExceeded as exc:
        audit("run", "a new batch", "refused", str(exc))
        st.error(plain(f"Past your daily cap: {exc}."), icon=":material/savings:")
    except CrewdashError as exc:
        st.error(plain(exc), icon=":material/error:")
    else:
        audit("run", f"batch {batch_id}", detail=f"{len(topics.items)} crews")
        st.session_state["run.batch_id"] = batch_id
        st.session_state["run.submission"] = (*st.session_state["run.submission"][:2], batch_id)
        st.query_params["batch"] = batch_id
        st.rerun()  # fold the form away: the live section comes into view


def render_queue(snap: BatchSnapshot) -> None:
    """Where this batch's waiting crews stand in the process-wide queue."""
    queued = snap.count(CrewState.QUEUED)
    if not queued:
        return
    try:
        ahead, running = runner.admission(snap.batch_id)
    except UnknownBatchError:
        return  # a batch of another process, read from the history
    st.info(
        f"{queued} crew(s) of this batch are waiting for a slot: {running} crews are running "
        f"(limit {runner.max_concurrency} for the whole server, {snap.max_concurrency} for this "
        f"batch) and {ahead} crew(s) of earlier batches are queued ahead.",
        icon=":material/hourglass_top:",
    )


def render_cancel(snap: BatchSnapshot) -> None:
    """Cancel the whole batch or chosen crews; finished results stay. Only who started it, or
    an admin, may."""
    if not person().may_act_on(snap.created_by):
        st.caption(
            plain(
                f"Started by {snap.created_by_name or snap.created_by or 'someone'}: only they "
                "or an admin can cancel it."
            )
        )
        return
    live = {c.run_id: c for c in snap.crews if not c.state.final}
    left, right = st.columns([1, 3])
    if left.button(
        "Cancel batch", icon=":material/stop_circle:", key=f"run.cancel.{snap.batch_id}"
    ):
        runner.request_cancel(snap.batch_id)
        audit("cancel", f"batch {snap.batch_id}")
    chosen = right.multiselect(
        "Cancel crews",
        list(live),
        key=f"run.cancel_crews.{snap.batch_id}",
        format_func=lambda r: crew_label(live[r]) if r in live else r,
        placeholder="pick running or queued crews to cancel",
    )
    for run_id in chosen:
        if run_id in live:
            runner.request_cancel(snap.batch_id, {run_id})
            audit("cancel", f"crew {run_id}")


def render_delete(snap: BatchSnapshot, where: DeltaGenerator) -> None:
    """Delete an ended batch after a confirmation that names what goes with it, then land on
    History. Only who started it, or an admin, may."""
    if not person().may_act_on(snap.created_by):
        where.caption(
            plain(
                f"Started by {snap.created_by_name or snap.created_by or 'someone'}: only they "
                "or an admin can delete it."
            )
        )
        return
    what = f"its {len(snap.crews)} crew(s): their answers, timings, checkpoints and files"
    if snap.blueprint == "experiment":
        what += ", and the experiment's scores and marks"
    with where.popover("Delete batch", icon=":material/delete:"):
        st.markdown(
            f"Delete batch {code(snap.batch_id)} ({plain(snap.blueprint)}) and {what}? "
            "This cannot be undone."
        )
        if not st.button("Delete for good", type="primary", key=f"run.delete.{snap.batch_id}"):
            return
    target = f"batch {snap.batch_id}"
    try:
        crews = runtime().delete_batch(snap.batch_id)
    except UnknownBatchError:
        st.warning(f"Batch {code(snap.batch_id)} is already gone.")
        return
    except CrewdashError as exc:
        audit("delete", target, "refused", str(exc))
        st.error(plain(exc), icon=":material/error:")
        return
    audit("delete", target, detail=f"{crews} crews")
    st.session_state.pop("run.batch_id", None)
    st.session_state["history.deleted"] = snap.batch_id
    st.switch_page("pages/history.py")


batch_id = st.session_state.get("run.batch_id") or st.query_params.get("batch") or ""

if batch_id:
    try:
        first = runtime().snapshot(batch_id)
    except UnknownBatchError:
        st.warning(f"Batch {code(batch_id)} is not in the history; start a new one above.")
        st.stop()
    for note in first.notes:
        st.info(plain(note), icon=":material/info:")
    if resumed := st.session_state.pop("run.resumed", None):
        st.success(plain(f"Resumed: {resumed}"), icon=":material/restart_alt:")

    def draw(snap: BatchSnapshot) -> None:
        # the headline first, so it stays in view while the answer cards grow below it
        render_batch_top(snap)
        if not snap.done:
            render_cancel(snap)
            render_queue(snap)
            render_live_answers(snap)
            render_gauges()
        render_batch_rest(snap)
        sheet_downloads(snap, "run")  # while it runs too: rows not done yet say so
        if snap.done:
            (spare,) = render_downloads(snap, "run")
            render_delete(snap, spare)
            if render_resume(snap, "run"):
                st.rerun()  # the batch runs again: draw it live

    def fetch() -> BatchSnapshot | None:
        try:
            return runtime().snapshot(batch_id)
        except UnknownBatchError:  # deleted since the page opened it
            st.warning(f"Batch {code(batch_id)} is not in the history; start a new one above.")
            return None

    poll_until_done(first, fetch, draw, every_s=REFRESH_SECONDS)
