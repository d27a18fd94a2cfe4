"""Account: who you are here, what you spent today and this month against your daily cap, your
personal API tokens (create, list, revoke), and for admins everyone's spend and the audit log.
Renders and dispatches only; spend, tokens and the log live in the store."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import streamlit as st

from crewdash.base.errors import CrewdashError
from crewdash.model.spend import Spend, day_start, month_start
from crewdash.store.accounts import TokenInfo
from ui.people import audit, person
from ui.session import require_login, runtime
from ui.text import plain

require_login()

rt = runtime()
me = person()
st.title("Account")
if flash := st.session_state.pop("account.flash", None):
    st.success(plain(flash), icon=":material/block:")
st.markdown(plain(f"Signed in as {me.label}, {me.role.value}."))
store = rt.store
if store is None:
    st.info("Tokens and the audit log need the history database (DATABASE_URL).")
    st.stop()


def when(at: float | None) -> str:
    return datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M") if at else "never"


def spend_row(user: str, today: Spend, month: Spend) -> dict[str, object]:
    return {
        "Who": user or "(before accounts)",
        "Today $": round(today.usd, 4),
        "Today tokens": today.tokens,
        "Today batches": today.batches,
        "Month $": round(month.usd, 4),
        "Month tokens": month.tokens,
        "Month batches": month.batches,
    }


st.subheader("Spend")
cap = rt.spend_cap
today, month = store.spend_of(me.id, day_start()), store.spend_of(me.id, month_start())
usd_left, tokens_left = cap.left(today)
cols = st.columns(3)
cols[0].metric("Today (UTC)", f"${today.usd:,.4f}", f"{today.tokens:,} tokens", delta_color="off")
cols[1].metric("This month", f"${month.usd:,.4f}", f"{month.tokens:,} tokens", delta_color="off")
if cap.active:
    remaining = [f"${usd_left:,.4f}" if usd_left is not None else ""]
    remaining.append(f"{tokens_left:,} tokens" if tokens_left is not None else "")
    cols[2].metric(
        "Left today", " · ".join(r for r in remaining if r), f"cap {cap.describe()}", "off"
    )
    st.caption(
        "A batch counts on the day it starts, at least at its estimate until it is done; one "
        "that would pass your cap is refused before it starts."
    )
else:
    cols[2].metric("Daily cap", "none")
if me.is_admin:
    everyone_today = store.spend_by_user(day_start())
    everyone_month = store.spend_by_user(month_start())
    if everyone_month:
        with st.expander("Everyone's spend", icon=":material/groups:"):
            st.dataframe(
                pd.DataFrame(
                    [
                        spend_row(u, everyone_today.get(u, Spend()), m)
                        for u, m in sorted(everyone_month.items(), key=lambda kv: -kv[1].usd)
                    ]
                ),
                hide_index=True,
                width="stretch",
            )

EXPIRY: dict[int | None, str] = {
    30: "in 30 days",
    90: "in 90 days",
    365: "in a year",
    None: "never",
}


def state_of(token: TokenInfo) -> str:
    if token.revoked_at is not None:
        return f"revoked {when(token.revoked_at)}"
    return f"expired {when(token.expires_at)}" if token.expired else "active"


st.subheader("Personal API tokens")
if me.id in ("anonymous", "service", "team"):
    st.caption(
        "Tokens belong to a person: sign in through your identity provider to make your own, "
        "or ask for one with `python -m crewdash tokens create --user EMAIL --name NAME`."
    )
else:
    with st.form("account.new_token", clear_on_submit=True):
        name = st.text_input("What is it for?", key="account.token_name", max_chars=100)
        days = st.selectbox(
            "Expires",
            list(EXPIRY),
            index=1,
            key="account.token_expiry",
            format_func=lambda d: EXPIRY.get(d, str(d)),
        )
        made = st.form_submit_button("Create token", type="primary")
    if made:
        try:
            new = store.create_token(me, name, days)
        except CrewdashError as exc:
            st.error(plain(exc), icon=":material/error:")
        else:
            audit("create token", new.info.id, detail=new.info.name)
            st.success("Copy it now: it is shown this once.", icon=":material/key:")
            st.code(new.token, language=None)
tokens = store.tokens_of(None if me.is_admin else me.id)
if tokens:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "Id": t.id,
                    "Name": t.name,
                    "Owner": t.user_id,
                    "Created": when(t.created_at),
                    "Last used": when(t.last_used_at),
                    "Expires": when(t.expires_at),
                    "State": state_of(t),
                }
                for t in tokens
            ]
        ),
        hide_index=True,
        width="stretch",
    )
    active = {t.id: t for t in tokens if t.active}
    left, right = st.columns([3, 1])
    chosen = left.selectbox(
        "Revoke a token",
        list(active),
        index=None,
        key="account.revoke",
        format_func=lambda i: f"{active[i].name} ({i}, {active[i].user_id})" if i in active else i,
        placeholder="pick a token",
    )
    if right.button("Revoke", disabled=chosen is None, key="account.revoke_button"):
        if chosen is not None and store.revoke_token(chosen, me):
            audit("revoke token", chosen)
            st.session_state["account.flash"] = f"Revoked token {chosen}."
            st.rerun()
        else:
            st.error("That token is not yours, or is already revoked.", icon=":material/error:")
else:
    st.caption("No tokens yet.")

if me.is_admin:
    st.subheader("Audit log")
    entries = store.audit_log(limit=500)
    if entries:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "When": datetime.fromtimestamp(e.at).strftime("%Y-%m-%d %H:%M:%S"),
                        "Who": e.user_id,
                        "Action": e.action,
                        "On": e.object,
                        "Outcome": e.outcome,
                        "Detail": e.detail,
                    }
                    for e in entries
                ]
            ),
            hide_index=True,
            width="stretch",
        )
    else:
        st.caption("Nothing recorded yet.")
