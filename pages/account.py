"""Account: who you are here, your personal API tokens (create, list, revoke), and for admins
the audit log. Renders and dispatches only; tokens and the log live in the store."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import streamlit as st

from crewdash.base.errors import CrewdashError
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


st.subheader("Personal API tokens")
if me.id in ("anonymous", "service", "team"):
    st.caption(
        "Tokens belong to a person: sign in through your identity provider to make your own, "
        "or ask for one with `python -m crewdash tokens create --user EMAIL --name NAME`."
    )
else:
    with st.form("account.new_token", clear_on_submit=True):
        name = st.text_input("What is it for?", key="account.token_name", max_chars=100)
        made = st.form_submit_button("Create token", type="primary")
    if made:
        try:
            new = store.create_token(me, name)
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
                    "State": "active" if t.active else f"revoked {when(t.revoked_at)}",
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
