"""Checks before a batch or experiment starts, so what cannot run is refused with the reason
instead of started: every crew would fail at once and land in the history.

Only what is cheap is checked: a key for a provider that needs one, a model the demo does not
serve, and a base URL that does not answer at all (one bounded GET; any HTTP answer, even a 404
for that route, means a server is there). What only a real call shows (a wrong key, an unknown
model on a real provider) is the crew's error, as before.
"""

from __future__ import annotations

from collections.abc import Iterable

import httpx

from crewdash.base.config import DEMO_MODEL_NAMES
from crewdash.base.errors import SettingsError
from crewdash.providers.llm import KEY_VARIABLES, OLLAMA_URL, PROVIDER_LABELS, LLMSettings

REACH_TIMEOUT_S = 3.0


class PreflightError(SettingsError):
    """A run that cannot work; the message says why and what to change."""


def check_model(settings: LLMSettings) -> None:
    """The checks without the network: the provider's key and the demo's model names."""
    name = PROVIDER_LABELS.get(settings.provider, settings.provider)
    if settings.is_demo and settings.model not in DEMO_MODEL_NAMES:
        raise PreflightError(
            f"the demo model has no model {settings.model!r}; "
            f"use one of {', '.join(DEMO_MODEL_NAMES)}"
        )
    if settings.provider in KEY_VARIABLES and not settings.with_environment_key().api_key:
        keys = " or ".join(KEY_VARIABLES[settings.provider])
        raise PreflightError(
            f"{name} needs an API key: type one in the sidebar, or set {keys} on the server"
        )


def endpoint(settings: LLMSettings) -> str | None:
    """The base URL a run would call that is worth checking: one a user or the environment
    chose, or a local Ollama; None for the demo and the hosted providers' own URLs."""
    if settings.is_demo:
        return None
    if settings.provider == "ollama":
        return settings.base_url or OLLAMA_URL
    return settings.base_url


def check_reachable(base_url: str, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """One GET of `{base_url}/models` within `timeout_s`: any HTTP answer passes."""
    url = base_url.rstrip("/") + "/models"
    try:
        httpx.get(url, timeout=timeout_s, follow_redirects=False)
    except httpx.InvalidURL as exc:
        raise PreflightError(f"the base URL {base_url!r} is not a usable URL: {exc}") from None
    except httpx.UnsupportedProtocol:
        raise PreflightError(
            f"the base URL {base_url!r} must start with http:// or https://"
        ) from None
    except httpx.TimeoutException:
        raise PreflightError(
            f"the model server at {base_url} did not answer within {timeout_s:g} s: "
            "check the base URL and that the server is running"
        ) from None
    except httpx.HTTPError as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise PreflightError(
            f"cannot reach the model server at {base_url} ({reason}): check the base URL and "
            "that the server is running"
        ) from None


def preflight(settings: Iterable[LLMSettings], timeout_s: float = REACH_TIMEOUT_S) -> None:
    """Every check, for every model a run would use (each base URL fetched once); raises
    `PreflightError` with the first reason."""
    todo = list(settings)
    for one in todo:
        check_model(one)
    for url in dict.fromkeys(u for u in map(endpoint, todo) if u):
        check_reachable(url, timeout_s)
