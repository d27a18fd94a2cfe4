"""The Account page (AppTest, signed in through `at.user` as Streamlit's OIDC would): a person
makes, sees and revokes their own tokens; an admin also reads the audit log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.apptest import APP, click, quick_demo
from tests.test_people_pages import COMPLETE_AUTH
from ui.session import runtime


@pytest.fixture(autouse=True)
def team(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("CREWDASH_ADMINS", "boss@example.com")
    monkeypatch.setenv("CREWDASH_MEMBERS", "@example.com")
    # the demo model at a made-up $1,000 per million tokens (about $0.41 a crew estimated)
    # under a $1.00 daily cap
    prices = tmp_path / "prices.yaml"
    prices.write_text("crewdash-demo: {input: 1000, output: 1000}\n")
    monkeypatch.setenv("CREWDASH_PRICES_FILE", str(prices))
    monkeypatch.setenv("CREWDASH_DAILY_CAP_USD", "1")
    demo = quick_demo("0.2")
    next(demo)
    store = runtime().store  # this test's runtime (quick_demo's teardown closes it)
    yield
    if store is not None:
        store.forget_people()
    next(demo, None)


def account(email: str, name: str, page: str = "pages/account.py") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.secrets["auth"] = COMPLETE_AUTH
    at.user = {"is_logged_in": True, "email": email, "name": name}
    at.switch_page(page).run()
    assert not at.exception
    return at


def shown(elements: object) -> list[str]:
    """The texts of `elements` as a reader sees them (plain() escapes Markdown's `$`)."""
    return [e.value.replace("\\", "") for e in elements]  # type: ignore[attr-defined]


def metric(at: AppTest, label: str) -> str:
    (value,) = [m.value for m in at.metric if m.label == label]
    return str(value)


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


def test_a_token_can_expire_and_the_list_says_when() -> None:
    at = account("expiring@example.com", "Exp")
    at.text_input(key="account.token_name").input("for a month")
    at.selectbox(key="account.token_expiry").select(30)
    at.button(key="FormSubmitter:account.new_token-Create token").click().run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["State"]) == ["active"] and list(table["Expires"]) != ["never"]
    store = runtime().store
    assert store is not None
    (token,) = store.tokens_of("expiring@example.com")
    assert token.expires_at == pytest.approx(token.created_at + 30 * 86_400)


def test_spend_today_shows_and_a_run_past_the_daily_cap_is_refused_before_it_starts() -> None:
    rt = runtime()
    store = rt.store
    assert store is not None
    run = account("spender@example.com", "Spender", "pages/run.py")
    assert any("Your daily cap: $1.0000 of $1.00 left" in c for c in shown(run.caption))
    run.text_area(key="run.topics").input("one topic")
    click(run, "Run")
    assert not run.exception and not run.error
    (batch,) = store.list_batches(user="spender@example.com")
    assert rt.runner.batch(batch.batch_id).wait(60)

    page = account("spender@example.com", "Spender")
    today = float(metric(page, "Today (UTC)").lstrip("$"))
    assert 0 < today < 0.5
    assert metric(page, "Left today") == f"${1 - today:,.4f}"

    # ten more crews (at least $1.40, learned from the first) do not fit in what is left:
    # refused, nothing started
    again = account("spender@example.com", "Spender", "pages/run.py")
    ten = "\n".join(f"topic {i}" for i in range(10))
    again.text_area(key="run.topics").input(ten)
    click(again, "Run")
    assert not again.exception
    (refusal,) = shown(again.error)
    assert refusal.startswith("Past your daily cap: this batch is estimated at $")
    assert any("Run will be refused" in w for w in shown(again.warning))
    assert len(store.list_batches(user="spender@example.com")) == 1
    assert again.text_area(key="run.topics").value == ten  # nothing typed is lost
    refused = [e for e in store.audit_log(user_id="spender@example.com") if e.outcome == "refused"]
    assert refused and "daily cap" in refused[0].detail

    boss = account("boss@example.com", "The Boss")
    (everyone,) = [d.value for d in boss.dataframe if "Today $" in d.value.columns]
    ann_row = everyone[everyone["Who"] == "spender@example.com"]  # (the history is this worker's)
    assert list(ann_row["Today batches"]) == [1]
