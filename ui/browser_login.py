"""The shared password's login kept in the browser, so that a reload or a typed URL stays in.

Read with Streamlit's own `st.context.cookies`: the cookies of the request that opened this
session, there on its first run with no round trip to the browser (and unchanged until the next
page load). Written and deleted by extra-streamlit-components' `CookieManager`, a component whose
hidden frame sets `document.cookie` when the browser draws it, after the script run. So a write
is drawn on each run until its frame answers that it is done, never only right before a
`st.rerun()` that could drop the frame unloaded; and not after: a frame still drawn may run
again (the browser test caught a deletion repeated after the test set a new cookie), which
would bring back a cookie another tab logged out of, or delete one it logged in with. The
value is signed and checked by `crewdash.base.login_cookie`; it holds only the user `team` and
the time of the login.
"""

from __future__ import annotations

from contextlib import suppress
from datetime import UTC, datetime

import extra_streamlit_components as stx
import streamlit as st

from crewdash.base.login_cookie import COOKIE_NAME, CookieState, LoginCookie
from crewdash.model.people import TEAM


def cookie_state(login: LoginCookie) -> CookieState:
    """What the cookie this page load came with says (missing, valid, expired or invalid)."""
    return login.check(st.context.cookies.get(COOKIE_NAME), TEAM.id)


def write(login: LoginCookie, logged_in_at: float) -> bool:
    """Draw the hidden frame that sets the cookie of a login at `logged_in_at` (SameSite=Strict,
    path /, expiring with its maximum age; the same arguments on every run) until it answers;
    True once it did (nothing is drawn then, so the frame goes)."""
    if st.session_state.get("auth.cookie_set") is True:
        return True
    manager = stx.CookieManager(key="auth.cookies")
    manager.set(
        COOKIE_NAME,
        login.issue(TEAM.id, logged_in_at),
        key="auth.cookie_set",
        path="/",
        expires_at=datetime.fromtimestamp(logged_in_at + login.max_age_s, UTC),
        same_site="strict",
    )
    return False


def delete() -> bool:
    """Draw the hidden frame that deletes the cookie until it answers; True once it did."""
    if st.session_state.get("auth.cookie_deleted") is True:
        return True
    manager = stx.CookieManager(key="auth.cookies")
    # CookieManager.delete drops the name from its copy of the browser's cookies after drawing
    # the frame, a KeyError when that copy has not arrived yet (the first run): the frame is
    # drawn all the same.
    with suppress(KeyError):
        manager.delete(COOKIE_NAME, key="auth.cookie_deleted")
    return False
