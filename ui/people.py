"""Who uses this browser session, whether the sign-in settings can be trusted, and the audit log.

The person comes from Streamlit's OIDC sign-in (`st.user`: e-mail and name from the identity
provider, the role from `CREWDASH_ADMINS` / `CREWDASH_MEMBERS`), else the shared password (the
one user `team`), else nobody signs in (`anonymous`, who may do everything, as before).

A sign-in that is configured but broken fails closed: an `[auth]` section missing a key, or a
secrets file that cannot be read, shows what to fix and nothing else, never an open dashboard.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from crewdash.base.errors import describe_error
from crewdash.model.people import ANONYMOUS, TEAM, Person
from ui.session import password_required, runtime

# What Streamlit's OIDC needs: at the top of `[auth]`, and for the provider (there, or in each
# named provider's own `[auth.<name>]` section).
AUTH_TOP_KEYS = ("redirect_uri", "cookie_secret")
AUTH_PROVIDER_KEYS = ("client_id", "client_secret", "server_metadata_url")


def auth_section() -> tuple[Mapping[str, Any] | None, str | None]:
    """`[auth]` of the secrets (None: no sign-in through an identity provider), or why the
    secrets cannot be trusted (a file that does not parse)."""
    try:
        auth: Any = st.secrets.get("auth")
    except FileNotFoundError:
        return None, None
    except Exception as exc:  # noqa: BLE001 - a malformed secrets.toml: fail closed, say why
        return None, f".streamlit/secrets.toml cannot be read: {describe_error(exc)}"
    if auth is None:
        return None, None
    try:
        return dict(auth), None
    except (TypeError, ValueError):
        return None, "[auth] in .streamlit/secrets.toml must be a table of settings"


def auth_problem(auth: Mapping[str, Any]) -> str | None:
    """What an `[auth]` section lacks for Streamlit to sign anyone in, or None."""
    missing = [k for k in AUTH_TOP_KEYS if not auth.get(k)]
    providers = {k: v for k, v in auth.items() if isinstance(v, Mapping)}
    if providers:  # [auth.google], [auth.okta]...: each needs its own keys
        for name, section in providers.items():
            missing += [f"{name}.{k}" for k in AUTH_PROVIDER_KEYS if not section.get(k)]
    else:
        missing += [k for k in AUTH_PROVIDER_KEYS if not auth.get(k)]
    if not missing:
        return None
    return (
        "The sign-in settings ([auth] in .streamlit/secrets.toml) lack "
        + ", ".join(missing)
        + ". Nobody can sign in until they are complete."
    )


def signed_in_person() -> Person | None:
    """The identity provider's user as a person of this team, or None: not signed in, or a
    user the settings do not let in."""
    if not st.user.get("is_logged_in"):
        return None
    email = str(st.user.get("email") or st.user.get("sub") or "")
    return runtime().team.person(email, str(st.user.get("name") or ""))


def person() -> Person:
    """Who uses this session (call after the login gate let them in)."""
    auth, _ = auth_section()
    if auth is not None:
        return signed_in_person() or Person(str(st.user.get("email") or "unknown"))
    return TEAM if password_required() else ANONYMOUS


def audit(action: str, obj: str = "", outcome: str = "ok", detail: str = "") -> None:
    """Write one action of this session's person to the audit log (none without history)."""
    store = runtime().store
    if store is not None:
        store.audit(person(), action, obj, outcome, detail)
