"""Which model the crews talk to, and how to build CrewAI's own `LLM` for it.

No provider clients are written here: every provider goes through `crewai.LLM`, including the
embedded demo model, which is an OpenAI-compatible server reached over real HTTP.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
from crewai import LLM
from crewai.llms.providers.openai.completion import OpenAICompletion
from crewai.llms.providers.openai_compatible.completion import _normalize_ollama_base_url
from openai import OpenAI
from pydantic import PrivateAttr, model_validator

from crewdash.base.config import (
    DEFAULT_OPENAI_MODEL,
    DEMO_MODEL_NAME,
)
from crewdash.base.errors import RetryBudgetSpent, SettingsError, redact
from crewdash.base.run_context import stream_off
from crewdash.base.settings import Settings, process_settings
from crewdash.providers.governor.registry import governor_for
from crewdash.providers.limits import ProviderLimits
from crewdash.providers.response_cache import CachingTransport
from crewdash.providers.retries import Limiter, ResilientTransport, shared_limiter

PROVIDERS = ("demo", "openai", "anthropic", "gemini", "ollama", "openai_compatible")
PROVIDER_LABELS = {
    "demo": "Demo (simulated, offline)",
    "openai": "OpenAI",
    "anthropic": "Anthropic",
    "gemini": "Google Gemini",
    "ollama": "Ollama",
    "openai_compatible": "OpenAI-compatible URL (vLLM, LM Studio, llama.cpp…)",
}
DEFAULT_MODELS = {
    "demo": DEMO_MODEL_NAME,
    "openai": DEFAULT_OPENAI_MODEL,
    "anthropic": "claude-3-5-haiku-latest",
    "gemini": "gemini-2.0-flash",
    "ollama": "llama3.2",
    "openai_compatible": "local-model",
}
KEY_VARIABLES = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
}
OLLAMA_URL = "http://localhost:11434"
_DEMO_KEY = "crewdash-demo-no-key-needed"
DEMO_API_KEY = _DEMO_KEY  # the key the demo model is called with (its limits are per key)


# The defaults of a new `LLMSettings`: the process's settings (installed at start-up).
def _call_timeout() -> float:
    return process_settings("CREWDASH_LLM_TIMEOUT").llm_timeout


def _retry_tries() -> int:
    return process_settings("CREWDASH_RETRY_TRIES").retry_tries


def _retry_seconds() -> float:
    return process_settings("CREWDASH_RETRY_SECONDS").retry_seconds


@dataclass(frozen=True)
class LLMSettings:
    """A provider choice. `api_key` is kept out of repr so it never lands in logs.

    `timeout_s` bounds one call (a hung call is cut and counts as one failed try); a crew run
    may spend at most `retry_tries` failed tries and `retry_seconds` on failed calls and waits
    before retries, across all its calls, however often CrewAI issues a call again.
    """

    provider: str = "demo"
    model: str = DEMO_MODEL_NAME
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    temperature: float | None = None
    max_tokens: int | None = None
    timeout_s: float = field(default_factory=_call_timeout)
    requests_per_minute: int | None = None  # shared by all crews on this endpoint
    tokens_per_minute: int | None = None  # the governor's, with requests_per_minute
    governor: bool = True  # False: only the fixed requests-per-minute pace and retries
    retry_tries: int = field(default_factory=_retry_tries)
    retry_seconds: float = field(default_factory=_retry_seconds)
    stream: bool = True  # stream answers through CrewAI (TTFT, live text); off: whole answers

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise SettingsError(
                f"unknown provider {self.provider!r}; choose one of {', '.join(PROVIDERS)}"
            )
        if not self.model.strip():
            raise SettingsError("choose a model name")
        if self.provider == "openai_compatible" and not self.base_url:
            raise SettingsError("an OpenAI-compatible provider needs a base URL")
        if not 0 < self.timeout_s <= 3600:
            raise SettingsError("the per-call timeout must be between 0 and 3600 seconds")
        if not 1 <= self.retry_tries <= 100:
            raise SettingsError("the retry budget must be between 1 and 100 tries")
        if not 0 < self.retry_seconds <= 3600:
            raise SettingsError("the retry budget must be between 0 and 3600 seconds")
        for name, value in (
            ("requests", self.requests_per_minute),
            ("tokens", self.tokens_per_minute),
        ):
            if value is not None and value < 1:
                raise SettingsError(f"the {name} per minute limit must be at least 1 (or unset)")

    def with_environment_key(self) -> LLMSettings:
        """These settings with the provider's key from this process's environment filled in,
        when none was typed: crews on other machines (Ray workers) do not share that
        environment. Error messages blank the key out either way. The server's key is never
        filled in for a base URL that is not its provider's own."""
        if self.api_key or self.provider not in KEY_VARIABLES:
            return self
        if not _own_url(self.provider, self.base_url):
            return self
        key = _provider_key(self.provider)
        return replace(self, api_key=key) if key else self

    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON-ready values, but the API key (never stored)."""
        return {k: v for k, v in asdict(self).items() if k != "api_key"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LLMSettings:
        """Settings written by `to_dict` (no key: `with_environment_key` fills in the server's)."""
        return cls(**data)

    @property
    def is_demo(self) -> bool:
        return self.provider == "demo"

    @property
    def label(self) -> str:
        """How the UI names the model; the demo is always called simulated."""
        if self.is_demo:
            return f"Simulated demo model ({self.model})"
        return f"{self.provider}/{self.model}"


def default_llm_settings(settings: Settings | None = None) -> LLMSettings:
    """The demo model, unless `OPENAI_API_KEY` is set (then OpenAI, `CREWDASH_OPENAI_MODEL`):
    from `settings` (the composition root's), else the process's (`process_settings`)."""
    if settings is None:
        settings = process_settings(
            "OPENAI_API_KEY",
            "CREWDASH_OPENAI_MODEL",
            "OPENAI_BASE_URL",
            "CREWDASH_RATE_LIMITS",
            "CREWDASH_GOVERNOR",
            "CREWDASH_LLM_TIMEOUT",
            "CREWDASH_RETRY_TRIES",
            "CREWDASH_RETRY_SECONDS",
        )
    try:
        limits = ProviderLimits.parse(settings.rate_limits)
    except SettingsError as exc:
        raise SettingsError(f"CREWDASH_RATE_LIMITS: {exc}") from None
    common: dict[str, Any] = {
        "requests_per_minute": limits.rpm,
        "tokens_per_minute": limits.tpm,
        "governor": settings.governor,
        "timeout_s": settings.llm_timeout,
        "retry_tries": settings.retry_tries,
        "retry_seconds": settings.retry_seconds,
    }
    if settings.openai_api_key:
        return LLMSettings(
            provider="openai",
            model=settings.openai_model,
            base_url=settings.openai_base_url,
            **common,
        )
    return LLMSettings(**common)


def _provider_key(provider: str) -> str | None:
    """The first of the provider's key variables that is set (`KEY_VARIABLES`), else None."""
    settings = process_settings(*KEY_VARIABLES.get(provider, ()))
    return next((k for v in KEY_VARIABLES.get(provider, ()) if (k := settings.secret(v))), None)


OPENAI_URL = "https://api.openai.com/v1"
# the variables whose values are the server's keys: never sent anywhere but their provider
_SERVER_KEY_VARIABLES = (*(v for names in KEY_VARIABLES.values() for v in names),)


def _same_url(a: str, b: str) -> bool:
    """Whether two base URLs name one endpoint (scheme, host, port and path; case of the host
    and a trailing slash aside)."""
    x, y = urlsplit(a.strip()), urlsplit(b.strip())
    return (x.scheme.lower(), x.hostname, x.port, x.path.rstrip("/")) == (
        y.scheme.lower(),
        y.hostname,
        y.port,
        y.path.rstrip("/"),
    )


def _own_url(provider: str, base_url: str | None) -> bool:
    """Whether `base_url` is the provider's own endpoint, where the server's key for it may go:
    no URL (the provider's default), OpenAI's, or the one the server set in `OPENAI_BASE_URL`."""
    if not base_url:
        return True
    if provider != "openai":
        return False  # Anthropic and Gemini are called without a base URL (it is not used)
    configured = process_settings("OPENAI_BASE_URL").openai_base_url
    return any(_same_url(base_url, own) for own in (OPENAI_URL, configured) if own)


def _server_keys() -> set[str]:
    """The keys this server holds in its environment (or secrets), for any provider."""
    settings = process_settings(*_SERVER_KEY_VARIABLES)
    return {k for v in _SERVER_KEY_VARIABLES if (k := settings.secret(v))}


def _refuse_foreign_server_key(provider: str, url: str, api_key: str) -> None:
    """A key of the server's goes only to its provider: not to a URL someone typed."""
    if api_key not in _server_keys():
        return
    if provider == "openai" and api_key == _provider_key("openai") and _own_url("openai", url):
        return
    raise SettingsError(
        f"the server's API key is only sent to its own provider, not to {url}: "
        "type the key for this URL (or none, if it needs none)"
    )


class CrewdashOpenAI(OpenAICompletion):
    """CrewAI's OpenAI provider, talking only through the client and key crewdash gives it.

    CrewAI's own class fills a missing key from `OPENAI_API_KEY` and a missing URL from
    `OPENAI_BASE_URL`, and builds a sync and an async client at construction (two TLS contexts,
    about 57 ms of CPU per LLM). Here nothing is built at construction, the sync client is
    crewdash's shared one (governor, retries, response cache; `set_sync_client`), and the async
    client, built only if CrewAI asks for it, uses the key and URL this LLM was given, never the
    environment's. This class and the two slot functions below are the only code that knows
    CrewAI's internals; tests/test_llm.py fails if they change.
    """

    _crewdash_client: OpenAI | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _init_clients(self) -> CrewdashOpenAI:
        """Replaces CrewAI's validator of the same name: no clients at construction."""
        return self

    def _get_client_params(self) -> dict[str, Any]:
        if not self.api_key or not self.base_url:
            raise SettingsError("crewdash builds every OpenAI client with a key and a base URL")
        params: dict[str, Any] = super()._get_client_params()
        params.update(api_key=self.api_key, base_url=self.base_url)
        return params

    def _build_sync_client(self) -> Any:
        if self._crewdash_client is not None:
            return self._crewdash_client
        return super()._build_sync_client()


class _SyncClients:
    """OpenAI HTTP clients shared by every crew that talks to the same endpoint.

    Each crew still gets its own `LLM` object (own token counters, own stop words), but building
    an OpenAI client costs about 40 ms of CPU (a fresh TLS context), which serialized under the
    GIL would delay the last of 50 crews by two seconds. `openai.OpenAI` is thread-safe and pools
    connections, so one per endpoint is what its authors recommend. The async client stays
    per-LLM (built lazily by CrewAI) because an async connection pool is bound to one event loop.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str, float, int, int, bool, str], OpenAI] = {}

    def get(
        self,
        base_url: str,
        api_key: str,
        timeout: float,
        rpm: int | None,
        tpm: int | None = None,
        governed: bool = False,
        provider: str = "openai",
    ) -> OpenAI:
        digest = hashlib.sha256(api_key.encode()).hexdigest()  # the key itself is not kept as a key
        key = (base_url, digest, timeout, rpm or 0, tpm or 0, governed, provider)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                # Retries live in the transport (tenacity, visible in the timeline), so the SDK's
                # own retries are off; the rate limit is shared by everything on this endpoint
                # (the governor: by everything on this endpoint and key, across processes too;
                # a cached answer never reaches it).
                limiter: Limiter | None = (
                    governor_for(base_url, api_key, rpm, tpm, _redis_url())
                    if governed
                    else shared_limiter(base_url, rpm)
                )
                transport = ResilientTransport(limiter=limiter)
                # a no-op unless the crew opted in; answers are per provider, URL and key
                cached = CachingTransport(transport, provider=provider)
                client = OpenAI(
                    api_key=api_key,
                    base_url=base_url,
                    timeout=timeout,
                    max_retries=0,
                    http_client=httpx.Client(transport=cached, timeout=timeout),
                )
                self._clients[key] = client
            return client


_shared = _SyncClients()

# CrewAI's private slot for an OpenAI-backed `LLM`'s sync client. Nothing else in crewdash names
# it: these two functions are the only readers and writers, and tests/test_llm.py fails loudly
# if a CrewAI upgrade renames the slot or stops using what we put there.
_CREWAI_CLIENT_SLOT = "_client"


def sync_client_slot(llm: LLM) -> tuple[bool, OpenAI | None]:
    """Whether `llm` has CrewAI's sync-client slot, and what is in it."""
    return hasattr(llm, _CREWAI_CLIENT_SLOT), getattr(llm, _CREWAI_CLIENT_SLOT, None)


def set_sync_client(llm: LLM, client: OpenAI) -> None:
    """Make `llm` send its sync calls through `client` (the one write into CrewAI's slot)."""
    setattr(llm, _CREWAI_CLIENT_SLOT, client)
    if isinstance(llm, CrewdashOpenAI):
        llm._crewdash_client = client  # also if CrewAI empties the slot and builds again


def _redis_url() -> str | None:
    return process_settings("REDIS_URL").redis_url


def _openai_llm(
    model: str,
    base_url: str | None,
    api_key: str | None,
    rpm: int | None = None,
    *,
    tpm: int | None = None,
    governed: bool = False,
    provider: str = "openai",
    **kwargs: Any,
) -> LLM:
    if not api_key:
        raise SettingsError("this provider needs an API key")
    url = base_url or OPENAI_URL
    _refuse_foreign_server_key(provider, url, api_key)
    # CrewAI's route for this model (native OpenAI; `custom_openai` for a model it does not
    # know at a custom URL), built as crewdash's subclass with the key and URL given here.
    route = LLM._resolve_route(f"openai/{model}", {"base_url": url})
    if route.native_class is not OpenAICompletion:
        raise SettingsError(f"CrewAI does not route openai/{model} to its OpenAI provider")
    extra: dict[str, Any] = {"custom_openai": True} if route.custom_openai else {}
    # No SDK retries on the async client CrewAI may build: they would multiply ours.
    llm = CrewdashOpenAI(
        model=route.model,
        provider=route.provider,
        base_url=url,
        api_key=api_key,
        max_retries=0,
        **extra,
        **kwargs,
    )
    timeout = float(kwargs.get("timeout") or 600)
    client = _shared.get(url, api_key, timeout, rpm, tpm, governed, provider)
    set_sync_client(cast(LLM, llm), client)
    return cast(LLM, llm)


def build_llm(settings: LLMSettings, demo_base_url: str | None = None) -> LLM:
    """A new CrewAI `LLM` for one crew (clients are not shared between crews)."""
    kwargs: dict[str, Any] = {"timeout": settings.timeout_s}
    limits: dict[str, Any] = {"tpm": settings.tokens_per_minute, "governed": settings.governor}
    if settings.stream and not stream_off.get():
        kwargs["stream"] = True
    if settings.temperature is not None:
        kwargs["temperature"] = settings.temperature
    if settings.max_tokens is not None:
        kwargs["max_tokens"] = settings.max_tokens
    if settings.is_demo:
        demo_base_url = settings.base_url or demo_base_url  # a session's own demo behaviour
        if not demo_base_url:
            raise SettingsError("the demo model is not running")
        return _openai_llm(
            settings.model,
            demo_base_url,
            _DEMO_KEY,
            settings.requests_per_minute,
            provider="demo",
            **limits,
            **kwargs,
        )
    if settings.provider in ("openai_compatible", "ollama"):
        # Ollama through its OpenAI-compatible /v1 endpoint, like any such server: crewdash's
        # transport, and never a key from the environment (CrewAI's Ollama class reads one).
        url = settings.base_url
        if settings.provider == "ollama":
            url = _normalize_ollama_base_url(settings.base_url or OLLAMA_URL)
        return _openai_llm(
            settings.model,
            url,
            settings.api_key or ("ollama" if settings.provider == "ollama" else "not-needed"),
            settings.requests_per_minute,
            provider=settings.provider,
            **limits,
            **kwargs,
        )
    if settings.provider in ("anthropic", "gemini"):
        key = settings.api_key or _provider_key(settings.provider)
        if not key:
            names = " or ".join(KEY_VARIABLES[settings.provider])
            raise SettingsError(f"{PROVIDER_LABELS[settings.provider]} needs an API key ({names})")
        return LLM(model=f"{settings.provider}/{settings.model}", api_key=key, **kwargs)
    return _openai_llm(
        settings.model,
        settings.base_url,
        settings.api_key or _provider_key("openai"),
        settings.requests_per_minute,
        **limits,
        **kwargs,
    )


@dataclass(frozen=True)
class ConnectionCheck:
    """The outcome of one tiny call: the reply and its latency, or a plain-words error."""

    ok: bool
    latency_s: float
    reply: str | None = None
    error: str | None = None


def plain_error(exc: BaseException, settings: LLMSettings) -> str:
    """What went wrong, in words a user can act on, with any API key blanked out."""
    import openai

    where = settings.base_url or (
        OLLAMA_URL if settings.provider == "ollama" else PROVIDER_LABELS[settings.provider]
    )
    causes = [exc]
    while causes[-1].__cause__ is not None and len(causes) < 8:
        causes.append(causes[-1].__cause__)
    if spent := next((c for c in causes if isinstance(c, RetryBudgetSpent)), None):
        return _clip(redact(f"{spent}.", [settings.api_key]))
    status = next(
        (getattr(c, "status_code", None) for c in causes if getattr(c, "status_code", None)), None
    )
    detail = " ".join(str(exc).split())[:300]
    if status is None and (code := re.search(r"Error code: (\d{3})", detail)):
        status = int(code.group(1))  # CrewAI re-raises some provider errors as ValueError
    # CrewAI re-raises the SDK's timeout as a ConnectionError: the server was reached, though.
    if any(
        isinstance(c, openai.APITimeoutError | TimeoutError | httpx.TimeoutException)
        for c in causes
    ):
        text = f"The model at {where} did not answer within {settings.timeout_s:g} s (timeout)."
    elif isinstance(exc, openai.APIConnectionError) or isinstance(exc, ConnectionError):
        text = f"Cannot reach {where}: check the URL and that the server is running."
    elif status == 401 or isinstance(exc, openai.AuthenticationError):
        text = "The API key was rejected (401): check the key for this provider."
    elif status == 403:
        text = "The key is not allowed to use this model (403)."
    elif status == 404:
        text = f"Unknown model {settings.model!r} or wrong URL (404) at {where}."
    elif status == 429:
        text = "Rate limited by the provider (429): wait a moment or lower the concurrency."
    elif isinstance(exc, ImportError):
        text = f"This provider needs an extra package: {detail}"
    elif isinstance(exc, SettingsError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {detail}"
    return _clip(redact(text, [settings.api_key]))


def _clip(text: str) -> str:
    return text if len(text) <= 400 else text[:399] + "…"


def check_connection(
    settings: LLMSettings, demo_base_url: str | None = None, timeout_s: float = 20.0
) -> ConnectionCheck:
    """One tiny call through CrewAI's `LLM`, for the sidebar's “Test connection”."""
    import time
    from dataclasses import replace

    # one plain call: a provider refusing streaming still answers the check
    quick = replace(
        settings, timeout_s=timeout_s, max_tokens=settings.max_tokens or 16, stream=False
    )
    started = time.perf_counter()
    try:
        llm = build_llm(quick, demo_base_url)
        _, shared = sync_client_slot(llm)
        if shared is not None:  # one try, no retries: quick feedback
            single = OpenAI(
                api_key=shared.api_key, base_url=shared.base_url, timeout=timeout_s, max_retries=0
            )
            set_sync_client(llm, single)
        reply = llm.call("Reply with exactly: pong")
    except Exception as exc:  # noqa: BLE001 - shown to the user in plain words
        return ConnectionCheck(False, time.perf_counter() - started, error=plain_error(exc, quick))
    return ConnectionCheck(True, time.perf_counter() - started, reply=str(reply)[:200])
