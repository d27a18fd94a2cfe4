"""Sign-in through a real OpenID Connect provider (issue 22): `streamlit run app.py` with an
`[auth]` section pointing at `oidc-provider-mock` on 127.0.0.1, in headless Chromium.

Signed in, a reload or a typed URL keeps the session (Streamlit's identity cookie); Log out ends
it, at the provider too (its end-session page); two browser contexts are two people.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.browser import streamlit_app
from tests.oidc import (
    PROVIDER_CDN,
    OIDCProvider,
    auth_secrets,
    cookie_secret_of,
    oidc_provider,
    signed_in_user,
    write_secrets,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]
LOAD = 30_000  # ms: a cold page on a loaded two-core machine


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OIDCProvider]:
    with oidc_provider(tmp_path_factory.mktemp("oidc") / "provider.log") as p:
        yield p


@pytest.fixture(scope="module")
def app(
    provider: OIDCProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, Path]]:
    """The dashboard signing in through `provider`: its URL, cookie secret and log."""
    directory = tmp_path_factory.mktemp("streamlit")
    text = auth_secrets(provider.metadata_url)
    log = directory / "server.log"
    with streamlit_app(log, write_secrets(directory, text)) as url:
        yield url, cookie_secret_of(text), log


def new_context(browser: Browser) -> BrowserContext:
    context = browser.new_context()
    context.route(PROVIDER_CDN, lambda route: route.abort())  # offline: the mock's stylesheet
    return context


def log_in_button(page: Page) -> None:
    expect(page.get_by_role("button", name="Log in")).to_be_visible(timeout=LOAD)
    expect(page.get_by_role("button", name="Log out")).to_have_count(0)
    assert page.locator("[data-testid='stSidebarNav']").count() == 0  # no page menu either


def signed_in(page: Page, heading: str) -> None:
    expect(page.get_by_role("heading", name=heading)).to_be_visible(timeout=LOAD)
    expect(page.get_by_role("button", name="Log out")).to_be_visible(timeout=LOAD)
    expect(page.get_by_role("button", name="Log in")).to_have_count(0)


def sign_in(page: Page, url: str, provider: OIDCProvider, sub: str) -> None:
    """From the login page through the provider's form back to the dashboard's Run page."""
    page.goto(url)
    log_in_button(page)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{provider.url}/oauth2/authorize?**", timeout=LOAD)
    page.get_by_placeholder("sub").fill(sub)
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(f"{url}/**", timeout=LOAD)  # /oauth2callback, then / and /run
    signed_in(page, "Run crews concurrently")
    assert page.url.startswith(f"{url}/run")


def test_sign_in_reload_typed_url_and_log_out(
    browser: Browser, app: tuple[str, str, Path], provider: OIDCProvider
) -> None:
    url, cookie_secret, log = app
    provider.set_user(
        "alice@example.com",
        {"email": "alice@example.com", "email_verified": True, "name": "Alice Example"},
    )
    alice = new_context(browser)
    page = alice.new_page()
    sign_in(page, url, provider, "alice@example.com")
    user = signed_in_user(alice.cookies(url), cookie_secret)
    assert user["email"] == "alice@example.com"
    assert user["name"] == "Alice Example"
    assert user["sub"] == "alice@example.com"
    assert user["is_logged_in"] is True
    assert user["iss"] == provider.url
    assert user["origin"] == url

    page.reload()
    signed_in(page, "Run crews concurrently")
    page.goto(f"{url}/history")  # a typed URL: a new page load, a new Streamlit session
    signed_in(page, "History")

    # Bob, in a browser of his own, signs in as himself; Alice stays Alice.
    bob = new_context(browser)
    bob_page = bob.new_page()
    sign_in(bob_page, url, provider, "bob@example.com")
    assert signed_in_user(bob.cookies(url), cookie_secret)["email"] == "bob@example.com"
    assert signed_in_user(alice.cookies(url), cookie_secret)["email"] == "alice@example.com"
    page.reload()
    signed_in(page, "History")

    page.get_by_role("button", name="Log out").click()
    # The provider advertises an end_session_endpoint: Streamlit sends the browser there, with
    # its redirect URI (/oauth2callback) as post_logout_redirect_uri.
    page.wait_for_url(f"{provider.url}/oauth2/end_session?**", timeout=LOAD)
    assert signed_in_user(alice.cookies(url), cookie_secret) == {}  # cleared on the way out
    page.get_by_role("button", name="End session").click()
    page.wait_for_url(f"{url}/**", timeout=LOAD)
    log_in_button(page)
    page.goto(f"{url}/history")
    log_in_button(page)
    expect(page.get_by_role("heading", name="History")).to_have_count(0)

    bob_page.reload()  # Alice's log-out is not Bob's
    signed_in(bob_page, "Run crews concurrently")
    alice.close()
    bob.close()
    assert "Traceback" not in log.read_text()


def test_provider_down(browser: Browser, tmp_path: Path) -> None:
    """Signed in, the session lives in the identity cookie: the provider going down changes
    nothing until the next sign-in. Log out still ends the session (only not at the provider),
    and Log in then ends on Streamlit's bare "Authentication error" page: nobody gets in."""
    with ExitStack() as running, ExitStack() as provider_running:
        provider = provider_running.enter_context(oidc_provider(tmp_path / "provider.log"))
        text = auth_secrets(provider.metadata_url)
        log = tmp_path / "server.log"
        url = running.enter_context(streamlit_app(log, write_secrets(tmp_path, text)))
        context = new_context(browser)
        page = context.new_page()
        sign_in(page, url, provider, "alice@example.com")

        provider_running.close()  # the provider's process ends: its port refuses connections
        page.reload()
        signed_in(page, "Run crews concurrently")
        page.get_by_role("button", name="Log out").click()
        log_in_button(page)  # no end-session page: straight back to the app, signed out
        assert signed_in_user(context.cookies(url), cookie_secret_of(text)) == {}
        assert "Failed to get provider logout URL" in log.read_text()

        page.get_by_role("button", name="Log in").click()
        expect(page.locator("body")).to_have_text("Authentication error", timeout=LOAD)
        page.goto(url)
        log_in_button(page)
        assert signed_in_user(context.cookies(url), cookie_secret_of(text)) == {}
        server_log = log.read_text()
        assert "Error during OAuth authorization redirect." in server_log
        assert "ConnectError: All connection attempts failed" in server_log
        context.close()
