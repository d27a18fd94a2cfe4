"""The Run page's rate and budget views: the batch estimate before Run, the live spend against
the budget, and a gauge per provider governor (requests and tokens left, calls waiting)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import streamlit as st

from crewdash.base.errors import CrewdashError, SettingsError
from crewdash.bench.governor import LimitsReport
from crewdash.blueprints.base import BaseBlueprint
from crewdash.engine.budget import (
    BatchEstimate,
    Budget,
    admits_none,
    budget_status,
    estimate_batch,
)
from crewdash.engine.plans import RunSettings
from crewdash.model.batch import BatchSnapshot
from crewdash.providers.governor.registry import governor_states, redis_problem
from crewdash.providers.llm import LLMSettings
from ui.people import person
from ui.session import runtime
from ui.text import plain


def budget_choice() -> Budget | None:
    """The budget typed in the Run form (None: no budget); a bad one raises `SettingsError`."""
    kind = st.session_state.get("run.budget_kind", "none")
    amount = st.session_state.get("run.budget_amount", 0.0)
    if kind == "none":
        return None
    if kind == "USD":
        return Budget(usd=float(amount))
    return Budget(tokens=int(amount))


def render_budget_inputs() -> None:
    left, right = st.columns([1, 2])
    left.selectbox("Budget", ["none", "USD", "tokens"], key="run.budget_kind")
    right.number_input(
        "Budget amount (USD or tokens)",
        min_value=0.0,
        step=1.0,
        key="run.budget_amount",
        help="When the next crew would pass it, no more crews start; the rest end "
        "budget_exceeded and running crews finish.",
    )


def render_estimate(
    blueprint: BaseBlueprint,
    topics: Sequence[str],
    llm: LLMSettings,
    inputs: Mapping[str, str] | None = None,
    fan_out: str | None = None,
) -> None:
    """Calls, tokens and cost of the batch before Run (per task, from the inputs, learned from
    the history), what that assumed, and a warning when the budget typed admits no crew."""
    if not topics:
        render_daily_cap(llm.model)
        return
    try:  # the runner's estimate: the one Run checks the budget against
        est = runtime().runner.estimate(
            blueprint, topics, RunSettings(llm=llm), inputs=inputs, fan_out=fan_out
        )
    except CrewdashError:  # an input left empty: the blueprint's defaults
        est = estimate_batch(blueprint, topics, llm.model, llm.max_tokens)
    cost = "no price for this model" if est.cost_usd is None else f"${est.cost_usd:,.4f}"
    st.caption(
        f"Estimate for {est.crews} crew(s): {'about' if est.steps_known else 'at least'} "
        f"**{est.calls:,} calls**, **{est.tokens:,} tokens** ({est.per_crew.total:,} per "
        f"crew), **{cost}**. Assumed: {est.basis}."
    )
    try:
        budget = budget_choice()
    except SettingsError:
        return  # reported when Run is pressed
    if budget is not None and (why := admits_none(budget, est, llm.model)):
        st.warning(plain(f"Run will be refused: {why}."), icon=":material/savings:")
    render_daily_cap(llm.model, est)


def render_daily_cap(model: str, est: BatchEstimate | None = None) -> None:
    """This person's daily cap and what is left of it today, and a warning when the batch's
    estimate would take them past it (Run is then refused)."""
    rt = runtime()
    cap = rt.spend_cap
    if not cap.active or rt.store is None:
        return
    who = person()
    spent = rt.spend_today(who.id)
    usd_left, tokens_left = cap.left(spent)
    parts = []
    if usd_left is not None:
        parts.append(f"${usd_left:,.4f} of ${cap.usd:,.2f}")
    if tokens_left is not None:
        parts.append(f"{tokens_left:,} of {cap.tokens:,} tokens on unpriced models")
    st.caption(plain(f"Your daily cap: {' and '.join(parts)} left today (UTC)."))
    if est is not None and (why := cap.refusal(spent, model, est.cost_usd, est.tokens)):
        st.warning(plain(f"Run will be refused: {why}."), icon=":material/savings:")


def render_spend(snap: BatchSnapshot) -> None:
    """The spend so far against the batch's budget, if it has one."""
    if snap.budget_usd is None and snap.budget_tokens is None:
        return
    try:
        budget = Budget(usd=snap.budget_usd, tokens=snap.budget_tokens)
    except SettingsError:
        return
    status = budget_status(budget, snap)
    st.progress(min(1.0, status.share), text=plain(f"Budget: {status.describe()} spent"))


def render_gauges() -> None:
    """One line per provider governor of this server, and one warning while Redis is down."""
    every = governor_states()  # first: reading the windows may start a probe of Redis
    if (problem := redis_problem()) is not None:
        st.warning(plain(f"Rate governor: {problem} until Redis answers again."))
    states = [s for s in every if s.rpm or s.tpm or s.waiting]
    if not states:
        return
    with st.expander("Provider rate limits (rate governor)", expanded=True):
        for s in states:
            cols = st.columns(4)
            cols[0].metric(
                "Requests left",
                "-" if s.requests_left is None else f"{s.requests_left:,}",
                help=f"In the current window of {s.window_s or 0:g} s; {s.rpm or '-'} per minute",
            )
            cols[1].metric(
                "Tokens left",
                "-" if s.tokens_left is None else f"{s.tokens_left:,}",
                help=f"{s.tpm or '-'} tokens per minute",
            )
            cols[2].metric("Calls waiting", s.waiting, help=f"{s.waits} waits, {s.wait_s:.0f} s")
            cols[3].metric("429s", s.http_429, help="Answered 429 despite the governor")
            shared = " · shared through Redis" if s.shared else ""
            st.caption(plain(f"{s.name}{shared}" + "".join(f" · {n}" for n in s.notes[-2:])))


def render_limits_report(report: LimitsReport) -> None:
    """The governor-vs-retries benchmark: one row per mode, wall time against the bound."""
    st.caption(f"{report.limits.describe()} · one call {report.latency_s:g} s")
    rows = [
        {
            "Mode": r.mode.replace("_", " "),
            "Wall (s)": r.wall_s,
            "Bound (s)": r.bound_s,
            "Wall / bound": r.wall_over_bound,
            "Calls": r.calls,
            "Tokens": r.tokens,
            "429s": r.http_429,
            "429 share": f"{r.http_429_share:.1%}",
            "Failed crews": r.failed,
            "Governor waits": r.governor_waits,
        }
        for r in report.results
    ]
    st.dataframe(rows, hide_index=True, width="stretch")
