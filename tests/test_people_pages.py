"""People on the pages (AppTest): a broken sign-in locks the dashboard, History filters by who
started a batch, the password mode records the one user `team`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from streamlit.testing.v1 import AppTest

from crewdash.model.people import TEAM, Person
from tests.apptest import APP, click, quick_demo, start
from ui.session import runtime

COMPLETE_AUTH = {
    "redirect_uri": "http://127.0.0.1:8501/oauth2callback",
    "cookie_secret": "a-cookie-secret-of-enough-bytes",
    "client_id": "crewdash",
    "client_secret": "secret",
    "server_metadata_url": "http://127.0.0.1:1/.well-known/openid-configuration",
}


@pytest.fixture(autouse=True)
def quick_demo_model() -> Iterator[None]:
    yield from quick_demo("0.2")


@pytest.mark.parametrize(
    ("drop", "named"),
    [("client_id", "client_id"), ("cookie_secret", "cookie_secret"), ("redirect_uri", "redirect")],
)
def test_an_incomplete_auth_section_locks_every_page_and_names_what_is_missing(
    drop: str, named: str
) -> None:
    for page in ("app.py", "pages/history.py"):
        at = AppTest.from_file(APP, default_timeout=30)
        at.secrets["auth"] = {k: v for k, v in COMPLETE_AUTH.items() if k != drop}
        if page != "app.py":
            at.switch_page(page)
        at.run()
        assert not at.exception
        assert [e.value for e in at.error] and named in at.error[0].value
        assert "Nobody can sign in" in at.error[0].value
        assert not [b for b in at.button if b.label in ("Run", "Log in")]
        assert not at.dataframe and not at.text_area  # nothing of the dashboard


def test_a_named_providers_missing_key_is_named_with_its_provider() -> None:
    at = AppTest.from_file(APP, default_timeout=30)
    top = {k: COMPLETE_AUTH[k] for k in ("redirect_uri", "cookie_secret")}
    at.secrets["auth"] = {**top, "okta": {"client_id": "c", "server_metadata_url": "http://x"}}
    at.run()
    assert not at.exception and "okta.client_secret" in at.error[0].value


def test_a_complete_auth_section_asks_to_log_in_and_shows_nothing_else() -> None:
    at = AppTest.from_file(APP, default_timeout=30)
    at.secrets["auth"] = COMPLETE_AUTH
    at.run()
    assert not at.exception and not at.error
    assert [b.label for b in at.button] == ["Log in"]


def test_history_filters_by_who_started_a_batch() -> None:
    runner = runtime().runner
    tag = uuid.uuid4().hex[:6]
    ann = Person("ann@example.com", "Ann Analyst")
    bob = Person("bob@example.com", "Bob Builder")
    batches = {who.id: runner.submit("timing", [f"{tag} {who.name}"], by=who) for who in (ann, bob)}
    for batch_id in batches.values():
        assert runner.batch(batch_id).wait(30)
    at = start()
    at.switch_page("pages/history.py").run()
    assert not at.exception
    whose = at.selectbox(key="history.whose")
    assert whose.options[:2] == ["everyone", "mine"]  # anonymous: no sign-in configured
    assert {"Ann Analyst", "Bob Builder"} <= set(whose.options)
    at.text_input(key="history.search").input(tag).run()
    table = at.dataframe[0].value
    assert set(table["Batch"]) == set(batches.values())
    assert set(table["Started by"]) == {"Ann Analyst", "Bob Builder"}
    whose.select("ann@example.com").run()
    assert list(at.dataframe[0].value["Batch"]) == [batches[ann.id]]
    at.selectbox(key="history.whose").select("anonymous").run()  # mine: none of these
    assert not at.dataframe and "No batches match" in at.caption[0].value


def test_with_the_shared_password_every_batch_is_the_user_team(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CREWDASH_PASSWORD", "team-pw")
    at = start()
    at.text_input(key="auth.password").input("team-pw")
    at.button(key="FormSubmitter:auth.form-Enter").click().run()
    assert not at.exception
    at.text_area(key="run.topics").input("a team topic")
    click(at, "Run")
    assert not at.exception
    snap = runtime().snapshot(at.session_state["run.batch_id"])
    assert (snap.created_by, snap.created_by_name) == ("team", "team")
    at.sidebar.button(key="auth.logout").click().run()  # Log out: the password again
    assert not at.exception
    assert [b.label for b in at.button if b.label in ("Run", "Enter")] == ["Enter"]
    assert not at.text_area


def signed_in_as_team(monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("CREWDASH_PASSWORD", "team-pw")
    at = start()
    at.text_input(key="auth.password").input("team-pw")
    at.button(key="FormSubmitter:auth.form-Enter").click().run()
    assert not at.exception
    return at


def open_batch(at: AppTest, batch_id: str) -> AppTest:
    at.switch_page("pages/run.py")
    at.query_params["batch"] = batch_id
    at.run()
    assert not at.exception
    return at


def labels(at: AppTest) -> set[str]:
    return {b.label for b in at.button}


def test_the_starter_deletes_an_ended_batch_from_its_page_and_lands_on_history(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner = runtime().runner
    held = runner.submit("timing", ["held [demo:wait=120]"], by=TEAM)
    mine = runner.submit("timing", ["mine to delete", "and its twin"], by=TEAM)
    assert runner.batch(mine).wait(30)
    at = signed_in_as_team(monkeypatch)
    assert "Delete for good" not in labels(open_batch(at, held))  # running: cancel it first
    runner.cancel(held)

    open_batch(at, mine)
    assert "Delete for good" in labels(at)
    (confirm,) = [m.value for m in at.markdown if "cannot be undone" in m.value]
    assert mine in confirm and "2 crew(s)" in confirm and "files" in confirm
    (button,) = [b for b in at.button if b.label == "Delete for good"]
    button.click().run()
    assert not at.exception
    assert at.success and f"Deleted batch `{mine}`" in at.success[0].value  # on History
    store = runtime().store
    assert store is not None and store.load(mine) is None
    assert at.dataframe and mine not in set(at.dataframe[0].value["Batch"])
    log = store.audit_log(action="delete")
    assert [(e.user_id, e.outcome) for e in log if e.object == f"batch {mine}"] == [("team", "ok")]

    open_batch(at, mine)  # the old link: a plain message, no traceback
    assert "not in the history" in at.warning[0].value


def test_someone_elses_batch_has_no_delete_button(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = runtime().runner
    anns = runner.submit("timing", ["ann's topic"], by=Person("ann@example.com", "Ann Analyst"))
    assert runner.batch(anns).wait(30)
    at = open_batch(signed_in_as_team(monkeypatch), anns)
    assert "Delete for good" not in labels(at)
    assert any("only they or an admin can delete it" in c.value for c in at.caption)
    assert runtime().snapshot(anns).done
