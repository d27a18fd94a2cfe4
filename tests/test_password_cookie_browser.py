"""The shared password's login survives a reload (the "team" issue): `streamlit run app.py`
with CREWDASH_PASSWORD, in headless Chromium.

Logged in, a reload or a typed URL stays in (the signed cookie the page wrote); Log out deletes
it, and a reload stays out. A cookie tampered with, signed for another password, or expired
shows the password form; one the test signs with the server's password and secret lets in.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from crewdash.base.login_cookie import COOKIE_NAME, CookieState, LoginCookie
from tests.browser import streamlit_app

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]
LOAD = 30_000  # ms: a cold page on a loaded two-core machine
PASSWORD = "cookie-pw-21"
SECRET = "cookie-secret-for-the-test"
DAYS = 7
# extra-streamlit-components' hidden frames that write and delete the cookie
FRAMES = "iframe[title*='CookieManager']"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    env = {"CREWDASH_PASSWORD": PASSWORD, "CREWDASH_COOKIE_SECRET": SECRET}
    with streamlit_app(log, env) as url:
        yield url, log


def password_form(page: Page) -> None:
    expect(page.get_by_role("button", name="Enter")).to_be_visible(timeout=LOAD)
    expect(page.get_by_role("button", name="Log out")).to_have_count(0)
    assert page.locator("[data-testid='stSidebarNav']").count() == 0  # no page menu either


def logged_in(page: Page, heading: str) -> None:
    expect(page.get_by_role("heading", name=heading)).to_be_visible(timeout=LOAD)
    expect(page.get_by_role("button", name="Log out")).to_be_visible(timeout=LOAD)
    expect(page.get_by_role("button", name="Enter")).to_have_count(0)


def login_cookie(context: BrowserContext, url: str) -> dict[str, object] | None:
    found = [c for c in context.cookies(url) if c["name"] == COOKIE_NAME]
    return dict(found[0]) if found else None


def wait_for_cookie(page: Page, url: str, present: bool) -> dict[str, object] | None:
    """The page writes and deletes the cookie from a component's frame, after the script run;
    once it is done the frame goes (a frame left would write again when the page redraws it)."""
    context = page.context
    deadline = time.monotonic() + LOAD / 1000
    while (login_cookie(context, url) is not None) != present:
        assert time.monotonic() < deadline, f"the login cookie is {'not ' * present}there"
        time.sleep(0.1)
    expect(page.locator(FRAMES)).to_have_count(0, timeout=LOAD)
    return login_cookie(context, url)


def log_in(page: Page, url: str) -> None:
    page.goto(url)
    password_form(page)
    page.get_by_role("textbox", name="Password").fill(PASSWORD)
    page.get_by_role("button", name="Enter").click()
    logged_in(page, "Run crews concurrently")


def test_the_login_survives_a_reload_and_a_typed_url_until_log_out(
    browser: Browser, app: tuple[str, Path]
) -> None:
    url, log = app
    context = browser.new_context()
    page = context.new_page()
    log_in(page, url)
    cookie = wait_for_cookie(page, url, present=True)
    assert cookie is not None
    assert cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    lasts = float(str(cookie["expires"])) - time.time()
    assert DAYS * 86_400 - 120 < lasts <= DAYS * 86_400 + 5
    check = LoginCookie(PASSWORD, SECRET).check(str(cookie["value"]), "team")
    assert check is CookieState.VALID

    page.reload()
    logged_in(page, "Run crews concurrently")
    page.goto(f"{url}/history")  # a typed URL: a new page load, a new Streamlit session
    logged_in(page, "History")
    other = context.new_page()  # another tab of the same browser
    other.goto(f"{url}/history")
    logged_in(other, "History")
    other.close()

    page.get_by_role("button", name="Log out").click()
    password_form(page)
    wait_for_cookie(page, url, present=False)
    page.reload()
    password_form(page)
    page.goto(f"{url}/history")
    password_form(page)
    expect(page.get_by_role("heading", name="History")).to_have_count(0)

    log_in(page, url)  # and in again: a new cookie
    wait_for_cookie(page, url, present=True)
    page.reload()
    logged_in(page, "Run crews concurrently")
    context.close()
    assert "Traceback" not in log.read_text()


def test_a_cookie_tampered_with_expired_or_foreign_shows_the_password_form(
    browser: Browser, app: tuple[str, Path]
) -> None:
    url, log = app
    context = browser.new_context()
    page = context.new_page()
    log_in(page, url)
    cookie = wait_for_cookie(page, url, present=True)
    assert cookie is not None
    value = str(cookie["value"])
    user, stamp, signature = value.split(".")
    week_ago = time.time() - (DAYS + 1) * 86_400
    stale = {
        "no longer valid": [
            f"{user}.{stamp}.{signature[:-2]}{'AB' if signature[-2:] != 'AB' else 'CD'}",
            f"admin.{stamp}.{signature}",
            LoginCookie("another password", SECRET).issue("team"),
            LoginCookie(PASSWORD, "another secret").issue("team"),
            "%E9%00%FF!#$&'()*+-./:<=>?@[]^_`{|}~",  # odd bytes a cookie may carry
        ],
        "expired": [LoginCookie(PASSWORD, SECRET).issue("team", week_ago)],
    }
    context.close()
    for caption, values in stale.items():
        for bad in values:  # a browser that arrives with the bad cookie (its own context)
            visitor = browser.new_context()
            visitor.add_cookies([{"name": COOKIE_NAME, "value": bad, "url": url}])
            page = visitor.new_page()
            page.goto(f"{url}/history")
            password_form(page)
            expect(page.get_by_text(caption)).to_be_visible(timeout=LOAD)
            expect(page.get_by_role("heading", name="History")).to_have_count(0)
            wait_for_cookie(page, url, present=False)  # the page deletes a stale cookie
            visitor.close()

    # one signed with the server's password and secret, by the test: in
    forged_right = LoginCookie(PASSWORD, SECRET).issue("team")
    context = browser.new_context()
    context.add_cookies([{"name": COOKIE_NAME, "value": forged_right, "url": url}])
    page = context.new_page()
    page.goto(f"{url}/history")
    logged_in(page, "History")
    context.close()
    assert "Traceback" not in log.read_text()


def test_the_login_outlives_a_server_restart(browser: Browser, tmp_path: Path) -> None:
    """The key comes from the password and the secret, not the process: after a restart the
    cookie still lets in, also when a page's URL is the fresh server's first request (served
    through `require_login`, before `app.py` ran once)."""
    env = {"CREWDASH_PASSWORD": PASSWORD, "CREWDASH_COOKIE_SECRET": SECRET}
    context = browser.new_context()
    with streamlit_app(tmp_path / "first.log", env) as url:
        page = context.new_page()
        log_in(page, url)
        wait_for_cookie(page, url, present=True)
        page.close()
    with streamlit_app(tmp_path / "second.log", env) as url:
        # a new port: the cookie goes along (cookies are per host, not per port)
        page = context.new_page()
        page.goto(f"{url}/history")
        logged_in(page, "History")
    context.close()
    assert "Traceback" not in (tmp_path / "second.log").read_text()
