"""A team on one dashboard (issue 22), in headless Chromium through a real OpenID Connect
provider: each person's batch is recorded as theirs, a member cannot cancel another's batch
from the page, an admin can, a person the settings do not let in sees a plain refusal, and the
audit log holds every action with the right person."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from crewdash.store.history import Store
from tests.browser import streamlit_app
from tests.oidc import OIDCProvider, auth_secrets, oidc_provider, write_secrets
from tests.test_oidc_browser import LOAD, new_context, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]
TEAM = {
    "CREWDASH_ADMINS": "boss@example.com",
    "CREWDASH_MEMBERS": "@example.com",
}


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OIDCProvider]:
    with oidc_provider(tmp_path_factory.mktemp("oidc") / "provider.log") as p:
        yield p


@pytest.fixture(scope="module")
def app(provider: OIDCProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The dashboard's folder (its log and history.db); its URL in `app.url`."""
    directory = tmp_path_factory.mktemp("team")
    env = {**TEAM, **write_secrets(directory, auth_secrets(provider.metadata_url))}
    with streamlit_app(directory / "server.log", env) as url:
        (directory / "url").write_text(url)
        yield directory


def run_batch(page: Page, topic: str) -> str:
    """Type a topic on the Run page and run it: the batch id from the address bar."""
    page.get_by_label("Topics (one per line)").fill(topic)
    page.get_by_role("button", name="Run").click()
    page.wait_for_url(re.compile(r".*[?&]batch=[0-9a-f]{12}"), timeout=LOAD)
    return re.findall(r"batch=([0-9a-f]{12})", page.url)[0]


def batches_listed(page: Page, expected: set[str]) -> set[str]:
    """The batch ids in the History table (its grid's accessible cells), once they are
    `expected` or after a generous wait."""
    cells = page.locator("[data-testid='stDataFrame'] [role='gridcell']")
    deadline = time.monotonic() + 30
    while True:
        texts = (t.strip() for t in cells.all_inner_texts())
        seen = {t for t in texts if re.fullmatch(r"[0-9a-f]{12}", t)}
        if seen == expected or time.monotonic() > deadline:
            return seen
        time.sleep(0.2)


def test_a_team_each_with_their_own_batches_and_an_admin(
    browser: Browser, app: Path, provider: OIDCProvider
) -> None:
    url = (app / "url").read_text()
    for who, name in (("ann", "Ann Analyst"), ("bob", "Bob Builder"), ("boss", "The Boss")):
        email = f"{who}@example.com"
        provider.set_user(email, {"email": email, "email_verified": True, "name": name})
    ann, bob, boss = (new_context(browser) for _ in range(3))
    pages = {}
    for context, who in ((ann, "ann"), (bob, "bob"), (boss, "boss")):
        pages[who] = context.new_page()
        pages[who].set_viewport_size({"width": 1440, "height": 900})
        sign_in(pages[who], url, provider, f"{who}@example.com")
    # held by the demo model until cancelled, however slow the machine (CI ran past a 30-s crew)
    ann_batch = run_batch(pages["ann"], "ann's topic [demo:wait=600]")
    bob_batch = run_batch(pages["bob"], "bob's topic [demo:wait=600]")

    # Bob opens Ann's running batch: no Cancel, and why
    pages["bob"].goto(f"{url}/run?batch={ann_batch}")
    expect(pages["bob"].get_by_text("only they or an admin can cancel it")).to_be_visible(
        timeout=LOAD
    )
    expect(pages["bob"].get_by_text("Started by Ann Analyst")).to_be_visible()
    expect(pages["bob"].get_by_role("button", name="Cancel batch")).to_have_count(0)
    # his own he can cancel; the admin cancels Ann's
    pages["bob"].goto(f"{url}/run?batch={bob_batch}")
    expect(pages["bob"].get_by_role("button", name="Cancel batch")).to_be_visible(timeout=LOAD)
    pages["boss"].goto(f"{url}/run?batch={ann_batch}")
    cancel = pages["boss"].get_by_role("button", name="Cancel batch")
    expect(cancel).to_be_visible(timeout=LOAD)
    cancel.click(force=True, timeout=LOAD)  # the live section redraws under the pointer
    expect(pages["boss"].get_by_text(re.compile(r"\d cancelled"))).to_be_visible(timeout=60_000)
    bob_cancel = pages["bob"].get_by_role("button", name="Cancel batch")
    bob_cancel.click(force=True, timeout=LOAD)
    expect(pages["bob"].get_by_text(re.compile(r"\d cancelled"))).to_be_visible(timeout=60_000)

    # History: "mine" is Ann's batch alone, "everyone" both
    history = pages["ann"]
    history.goto(f"{url}/history")
    expect(history.get_by_role("heading", name="History")).to_be_visible(timeout=LOAD)
    assert batches_listed(history, {ann_batch, bob_batch}) == {ann_batch, bob_batch}
    history.get_by_label("Started by").click()
    history.get_by_role("option", name="mine").click()
    assert batches_listed(history, {ann_batch}) == {ann_batch}

    # someone the settings do not let in
    eve = new_context(browser)
    eve_page = eve.new_page()
    provider.set_user("eve@evil.com", {"email": "eve@evil.com", "name": "Eve"})
    eve_page.goto(url)
    eve_page.get_by_role("button", name="Log in").click()
    eve_page.get_by_placeholder("sub").fill("eve@evil.com")
    eve_page.get_by_role("button", name="Authorize").click()
    expect(eve_page.get_by_text("who may not use this crewdash")).to_be_visible(timeout=LOAD)
    assert eve_page.locator("[data-testid='stSidebarNav']").count() == 0
    eve_page.goto(f"{url}/history")
    expect(eve_page.get_by_text("who may not use this crewdash")).to_be_visible(timeout=LOAD)
    expect(eve_page.get_by_role("heading", name="History")).to_have_count(0)

    store = Store(f"sqlite:///{app / 'history.db'}")
    try:
        by = {b: store.load(b) for b in (ann_batch, bob_batch)}
        assert {b: (s.created_by, s.created_by_name) for b, s in by.items() if s} == {
            ann_batch: ("ann@example.com", "Ann Analyst"),
            bob_batch: ("bob@example.com", "Bob Builder"),
        }
        mine = [s.batch_id for s in store.list_batches(user="ann@example.com")]
        assert mine == [ann_batch]
        log = [(e.user_id, e.action, e.object) for e in store.audit_log()]
        assert ("ann@example.com", "run", f"batch {ann_batch}") in log
        assert ("bob@example.com", "run", f"batch {bob_batch}") in log
        assert ("boss@example.com", "cancel", f"batch {ann_batch}") in log
        assert ("bob@example.com", "cancel", f"batch {bob_batch}") in log
        assert not any(
            user == "bob@example.com" and obj == f"batch {ann_batch}" for user, _, obj in log
        )
    finally:
        store.close()
    for context in (ann, bob, boss, eve):
        context.close()
    assert "Traceback" not in (app / "server.log").read_text()
