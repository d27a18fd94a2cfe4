"""The Account page (AppTest, signed in through `at.user` as Streamlit's OIDC would): a person
makes, sees and revokes their own tokens; an admin also reads the audit log."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from streamlit.testing.v1 import AppTest

from tests.apptest import APP, quick_demo
from tests.test_people_pages import COMPLETE_AUTH
from ui.session import runtime


@pytest.fixture(autouse=True)
def team(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("CREWDASH_ADMINS", "boss@example.com")
    monkeypatch.setenv("CREWDASH_MEMBERS", "@example.com")
    demo = quick_demo("0.2")
    next(demo)
    store = runtime().store  # this test's runtime (quick_demo's teardown closes it)
    yield
    if store is not None:
        store.forget_people()
    next(demo, None)


def account(email: str, name: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.secrets["auth"] = COMPLETE_AUTH
    at.user = {"is_logged_in": True, "email": email, "name": name}
    at.switch_page("pages/account.py").run()
    assert not at.exception
    return at


def test_a_member_makes_sees_and_revokes_their_own_token() -> None:
    at = account("ann@example.com", "Ann Analyst")
    # plain(): a word joiner keeps the address from becoming a mailto: link
    assert "Ann Analyst (ann@example.com), member" in at.markdown[0].value.replace("\u2060", "")
    assert not [s for s in at.subheader if s.value == "Audit log"]
    at.text_input(key="account.token_name").input("nightly **report**")
    at.button(key="FormSubmitter:account.new_token-Create token").click().run()
    assert not at.exception
    (shown,) = [c.value for c in at.code]
    store = runtime().store
    assert store is not None
    owner, why = store.token_owner(shown)
    assert owner is not None and owner.user_id == "ann@example.com" and why == ""
    table = at.dataframe[0].value
    assert list(table["Name"]) == ["nightly **report**"] and list(table["State"]) == ["active"]
    at.selectbox(key="account.revoke").select(owner.id).run()
    at.button(key="account.revoke_button").click().run()
    assert not at.exception
    assert any("Revoked token" in s.value for s in at.success)
    assert store.token_owner(shown) == (None, "this token was revoked")
    assert not at.code  # shown once: not again on the next run
    bob = account("bob@example.com", "Bob")
    assert not bob.dataframe  # Ann's tokens are hers
    log = [(e.user_id, e.action) for e in store.audit_log()]
    assert ("ann@example.com", "create token") in log and ("ann@example.com", "revoke token") in log


def test_an_admin_sees_every_token_and_the_audit_log() -> None:
    store = runtime().store
    assert store is not None
    ann = account("ann@example.com", "Ann")
    ann.text_input(key="account.token_name").input("ann's")
    ann.button(key="FormSubmitter:account.new_token-Create token").click().run()
    at = account("boss@example.com", "The Boss")
    assert "admin" in at.markdown[0].value
    headings = [s.value for s in at.subheader]  # (the sidebar has its own)
    assert "Personal API tokens" in headings and "Audit log" in headings
    tables = [d.value for d in at.dataframe]
    assert any("Owner" in t.columns and "ann@example.com" in set(t["Owner"]) for t in tables)
    (log,) = [t for t in tables if "Action" in t.columns]
    assert ("ann@example.com", "create token") in set(zip(log["Who"], log["Action"], strict=True))


def test_without_sign_in_there_is_no_personal_token_to_make() -> None:
    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page("pages/account.py").run()
    assert not at.exception
    assert "anonymous" in at.markdown[0].value
    assert not at.text_input and any("Tokens belong to a person" in c.value for c in at.caption)
