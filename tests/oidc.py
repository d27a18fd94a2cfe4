"""Helpers for the sign-in tests: a real OpenID Connect provider on 127.0.0.1 and the
`[auth]` secrets that point `streamlit run app.py` at it.

The provider is PyPI's `oidc-provider-mock` in its own process (`python -m oidc_provider_mock`,
uvicorn): any client id and secret are accepted, and its authorization page is a form where the
person types the `sub` to sign in as. The claims of a `sub` are `{"email": sub}` unless a test
sets others first (`OIDCProvider.set_user`).

The dashboard gets its own secrets file through `STREAMLIT_SECRETS_FILES` (the `secrets.files`
option), so nothing is written into the checkout's `.streamlit/` and no `~/.streamlit/secrets.toml`
is read. The redirect URI keeps Streamlit's `{port}` placeholder: Streamlit fills in its own
`server.port`, so the secrets can be written before `streamlit_app` picks the port.
"""

from __future__ import annotations

import json
import secrets
import sys
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
from streamlit.web.server.starlette.starlette_app_utils import decode_signed_value

from tests.browser import free_port, serve

DISCOVERY_PATH = "/.well-known/openid-configuration"
# Streamlit replaces `{port}` with its `server.port`; the browser must open the app at this very
# origin (127.0.0.1, not localhost): the identity cookie records it and a websocket from another
# origin is refused the user.
REDIRECT_URI = "http://127.0.0.1:{port}/oauth2callback"
CLIENT_ID = "crewdash-tests"
CLIENT_SECRET = "crewdash-tests-secret"
# Everything the mock's pages load from elsewhere (its stylesheet): tests abort these requests.
PROVIDER_CDN = "https://cdn.jsdelivr.net/**"


@dataclass(frozen=True)
class OIDCProvider:
    """A running `oidc-provider-mock`: its base URL (also its `issuer`)."""

    url: str

    @property
    def metadata_url(self) -> str:
        """What Streamlit's `server_metadata_url` points to (OpenID Connect discovery)."""
        return self.url + DISCOVERY_PATH

    def set_user(self, sub: str, claims: Mapping[str, object]) -> None:
        """The claims the provider issues for `sub` from now on (`sub` is added by itself);
        `email` and `email_verified` need the `email` scope, `name` the `profile` scope, both of
        which Streamlit asks for by default."""
        response = httpx.put(f"{self.url}/users/{quote(sub, safe='')}", json=dict(claims))
        assert response.status_code == 204, response.text


@contextmanager
def oidc_provider(log_path: Path, *, users: Sequence[str] = ()) -> Iterator[OIDCProvider]:
    """`python -m oidc_provider_mock` on a free port of 127.0.0.1 until the context ends.

    `users` are offered on the authorization page as one-click buttons (each with the claims
    `{"email": sub}`); any other `sub` can still be typed in.
    """
    port = free_port()
    command = [sys.executable, "-m", "oidc_provider_mock", "--host", "127.0.0.1"]
    command += ["--port", str(port)]
    for user in users:
        command += ["--user", user]
    with serve(command, DISCOVERY_PATH, port, log_path, {"NO_COLOR": "1"}) as url:
        yield OIDCProvider(url)


def auth_secrets(
    metadata_url: str,
    *,
    client_id: str | None = CLIENT_ID,
    client_secret: str | None = CLIENT_SECRET,
    cookie_secret: str | None = None,
    redirect_uri: str | None = REDIRECT_URI,
) -> str:
    """The `[auth]` section of a secrets.toml for one default provider; a key given as None is
    left out (a broken configuration). The cookie secret is fresh and random unless given."""
    values = {
        "redirect_uri": redirect_uri,
        "cookie_secret": secrets.token_urlsafe(32) if cookie_secret is None else cookie_secret,
        "client_id": client_id,
        "client_secret": client_secret,
        "server_metadata_url": metadata_url,
    }
    lines = ["[auth]"] + [
        f'{key} = "{value}"' for key, value in values.items() if value is not None
    ]
    return "\n".join(lines) + "\n"


def write_secrets(directory: Path, text: str) -> dict[str, str]:
    """Write `text` as `directory/secrets.toml`; returns the environment that makes a
    `streamlit run` read that file and no other (give it to `streamlit_app`)."""
    path = directory / "secrets.toml"
    path.write_text(text, encoding="utf-8")
    return {"STREAMLIT_SECRETS_FILES": str(path)}


def cookie_secret_of(text: str) -> str:
    """The `cookie_secret` of a secrets.toml written by `auth_secrets`."""
    return str(tomllib.loads(text)["auth"]["cookie_secret"])


def signed_in_user(
    cookies: Sequence[Mapping[str, object]], cookie_secret: str
) -> dict[str, object]:
    """What `st.user` holds for a browser: Streamlit's signed `_streamlit_user` cookie, decoded
    and checked with the cookie secret ({} when there is none or it does not verify). Streamlit
    1.67's own decoder (a private module: an upgrade may move it)."""
    for cookie in cookies:
        if cookie.get("name") == "_streamlit_user":
            decoded = decode_signed_value(cookie_secret, "_streamlit_user", str(cookie["value"]))
            return dict(json.loads(decoded)) if decoded else {}
    return {}
