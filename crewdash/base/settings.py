"""Every environment variable crewdash reads, in one typed, validated `Settings` object.

`load_settings()` is the only place that reads `os.environ` for a setting (a test over the
sources checks that); callers that take an `env` mapping (tests, the CLI) pass it through. A bad
value is a `SettingsError` with one line naming the variable, e.g.
"CREWDASH_MAX_CONCURRENCY must be a whole number, got 'abc'". A blank value means the default.

Read once: only the composition root (`crewdash.runtime`), the CLI's and the API's start-up and
the page's composition (`ui/session.py`) call `load_settings` (tests/test_settings.py checks
that). The root hands typed parts down as arguments, and installs what it read here
(`install_settings`) for the calls that cannot take an argument (a model call's timeout, the
price table, the outputs folder, the crews search path, a provider's key...): those ask
`process_settings`. Where nothing is installed (a Ray worker's own process, a command that builds
no runtime from the environment, a test calling one function), `process_settings` reads just the
variables asked for from this process's environment at that call, as before: a test can
monkeypatch the environment, and a bad unrelated variable does not break a call that never uses
it.

Secrets (API keys, the API token, the dashboard password) are `SecretStr`: never shown by repr
or in logs; `Settings.secret` gives the plain value to the code that must send it.

Not here: variables other libraries read themselves. CrewAI and OpenTelemetry read `CREWAI_*`
and `OTEL_*` (crewdash writes those, in `config.silence_telemetry`); provider SDKs and CrewAI's
tools read their keys again (e.g. `SERPER_API_KEY`); Ray reads its own `RAY_*`. `RAY_ADDRESS` is
ours too: crewdash reads it to connect to the cluster it was told to use.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Collection, Mapping
from typing import Any, Literal

import annotated_types
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from crewdash.base.errors import SettingsError

# The choices of two variables, named once: the backends and the demo model's latency profiles.
RunnerName = Literal["local", "ray"]
RUNNERS: tuple[RunnerName, ...] = typing.get_args(RunnerName)
DemoProfile = Literal["fixed", "hosted", "slow"]


class Settings(BaseSettings):
    """One field per environment variable: its default, type, bounds and meaning."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=False)

    # Storage and access
    database_url: str | None = Field(
        None,
        repr=False,  # may hold a password
        alias="DATABASE_URL",
        description="the history database (PostgreSQL: postgresql://…)",
        json_schema_extra={"readme_default": "sqlite:///data/crewdash.db"},
    )
    redis_url: str | None = Field(
        None,
        repr=False,
        alias="REDIS_URL",
        description="Redis for the shared rate governor windows",
        json_schema_extra={"readme_default": "unset"},
    )
    redis_timeout: float = Field(
        1.5,
        gt=0,
        le=60,
        alias="CREWDASH_REDIS_TIMEOUT",
        description="seconds a Redis connect or answer may take before governing alone",
    )
    password: SecretStr | None = Field(
        None,
        alias="CREWDASH_PASSWORD",
        description="a shared password for the dashboard",
        json_schema_extra={"readme_default": "unset"},
    )
    api_token: SecretStr | None = Field(
        None,
        alias="CREWDASH_API_TOKEN",
        description="the bearer token the REST API requires",
        json_schema_extra={"readme_default": "unset"},
    )
    admins: str = Field(
        "",
        alias="CREWDASH_ADMINS",
        description="admins: e-mail addresses or @domains, comma-separated",
        json_schema_extra={"readme_default": "nobody"},
    )
    members: str = Field(
        "",
        alias="CREWDASH_MEMBERS",
        description="who may sign in: e-mail addresses or @domains (empty: anyone signed in)",
        json_schema_extra={"readme_default": "anyone signed in"},
    )
    daily_cap_usd: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        alias="CREWDASH_DAILY_CAP_USD",
        description="the most one person may spend a UTC day on priced models, in US dollars",
        json_schema_extra={"readme_default": "no cap"},
    )
    daily_cap_tokens: int | None = Field(
        None,
        gt=0,
        alias="CREWDASH_DAILY_CAP_TOKENS",
        description="the most tokens one person may spend a UTC day on models without a price",
        json_schema_extra={"readme_default": "no cap"},
    )
    outputs_dir: str | None = Field(
        None,
        alias="CREWDASH_OUTPUTS_DIR",
        description="where the files tasks write go",
        json_schema_extra={"readme_default": "data/outputs"},
    )
    crews_dir: str | None = Field(
        None,
        alias="CREWDASH_CREWS_DIR",
        description="more blueprint folders (os.pathsep)",
        json_schema_extra={"readme_default": "none"},
    )
    prices_file: str | None = Field(
        None,
        alias="CREWDASH_PRICES_FILE",
        description="your own prices, merged over prices.yaml",
        json_schema_extra={"readme_default": "none"},
    )

    # Models
    openai_api_key: SecretStr | None = Field(
        None,
        alias="OPENAI_API_KEY",
        description="when set, the default provider is OpenAI",
        json_schema_extra={"readme_default": "unset"},
    )
    openai_model: str = Field(
        "gpt-4o-mini",
        alias="CREWDASH_OPENAI_MODEL",
        description="the OpenAI model used then",
    )
    openai_base_url: str | None = Field(
        None,
        alias="OPENAI_BASE_URL",
        description="another OpenAI-compatible endpoint",
        json_schema_extra={"readme_default": "OpenAI's"},
    )
    anthropic_api_key: SecretStr | None = Field(
        None,
        alias="ANTHROPIC_API_KEY",
        description="the Anthropic key",
        json_schema_extra={"readme_default": "unset"},
    )
    gemini_api_key: SecretStr | None = Field(
        None,
        alias="GEMINI_API_KEY",
        description="the Google Gemini key",
        json_schema_extra={"readme_default": "unset"},
    )
    google_api_key: SecretStr | None = Field(
        None,
        alias="GOOGLE_API_KEY",
        description="the Google Gemini key (another name)",
        json_schema_extra={"readme_default": "unset"},
    )
    serper_api_key: SecretStr | None = Field(
        None,
        alias="SERPER_API_KEY",
        description="web search for the research crew",
        json_schema_extra={"readme_default": "unset"},
    )
    llm_timeout: float = Field(
        30.0,
        gt=0,
        le=3600,
        alias="CREWDASH_LLM_TIMEOUT",
        description="seconds one model call may take",
    )
    retry_tries: int = Field(
        8,
        ge=1,
        le=100,
        alias="CREWDASH_RETRY_TRIES",
        description="failed tries a crew run may spend",
    )
    retry_seconds: float = Field(
        90.0,
        gt=0,
        le=3600,
        alias="CREWDASH_RETRY_SECONDS",
        description="seconds a crew run may spend failing and waiting",
    )

    rate_limits: str = Field(
        "",
        alias="CREWDASH_RATE_LIMITS",
        description="the governor's limits for the default provider, e.g. rpm=500,tpm=200000",
        json_schema_extra={"readme_default": "learned from the provider's headers"},
    )
    governor: bool = Field(
        True,
        alias="CREWDASH_GOVERNOR",
        description="pace calls per endpoint and key under the provider's limits",
        json_schema_extra={"readme_default": "on"},
    )

    # Runner
    max_concurrency: int = Field(
        32,
        ge=1,
        le=1000,
        alias="CREWDASH_MAX_CONCURRENCY",
        description="process-wide cap on running crews",
    )
    owner_heartbeat_s: float = Field(
        5.0,
        alias="CREWDASH_OWNER_HEARTBEAT_S",
        description="seconds between heartbeats (bounds: Liveness)",
    )
    owner_lease_s: float = Field(
        30.0,
        alias="CREWDASH_OWNER_LEASE_S",
        description="a silent server's lease (at least twice the heartbeat)",
    )
    auto_resume: bool = Field(
        False,
        alias="CREWDASH_AUTO_RESUME",
        description="resume, once, interrupted crews of stopped servers on start",
        json_schema_extra={"readme_default": "0"},
    )
    runner: RunnerName = Field(
        "local",
        alias="CREWDASH_RUNNER",
        description="where crews run: local or a Ray cluster",
    )
    ray_address: str | None = Field(
        None,
        alias="RAY_ADDRESS",
        description="the Ray cluster (empty: a local Ray on demand)",
        json_schema_extra={"readme_default": "empty"},
    )
    ray_workers: int = Field(
        2,
        ge=1,
        le=256,
        alias="CREWDASH_RAY_WORKERS",
        description="how many Ray worker actors",
    )

    # The demo model
    demo_profile: DemoProfile | None = Field(
        None,
        alias="CREWDASH_DEMO_PROFILE",
        description="demo latency (default hosted)",
        json_schema_extra={"readme_default": "hosted"},
    )
    demo_latency: float | None = Field(
        None,
        alias="CREWDASH_DEMO_LATENCY",
        description="seconds per call for fixed",
        json_schema_extra={"readme_default": "1.0"},
    )
    demo_seed: int = Field(7, alias="CREWDASH_DEMO_SEED", description="seed of the demo latency")
    demo_tokens_per_s: float | None = Field(
        None,
        alias="CREWDASH_DEMO_TOKENS_PER_S",
        gt=0,
        description="writing speed for fixed (tokens per second)",
        json_schema_extra={"readme_default": "all at once"},
    )
    demo_failures: str = Field(
        "",
        alias="CREWDASH_DEMO_FAILURES",
        description="injected demo failures, e.g. 429=0.05",
        json_schema_extra={"readme_default": "none"},
    )
    demo_limits: str = Field(
        "",
        alias="CREWDASH_DEMO_LIMITS",
        description="the demo's emulated provider limits, e.g. rpm=600,tpm=60000",
        json_schema_extra={"readme_default": "off"},
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only what `load_settings` passes: it reads the given mapping (tests and the CLI pass
        one), treats a blank value as unset, and no `.env` file is read behind the user's back."""
        return (init_settings,)

    def secret(self, variable: str) -> str | None:
        """The plain value of a secret variable (e.g. `OPENAI_API_KEY`), None when unset."""
        value = getattr(self, VARIABLES[variable])
        return value.get_secret_value() if isinstance(value, SecretStr) else value


VARIABLES: dict[str, str] = {
    str(info.alias): name for name, info in Settings.model_fields.items() if info.alias
}


def default_of(variable: str) -> Any:
    """The default of one variable's field (`config` names the few the code uses directly)."""
    return Settings.model_fields[VARIABLES[variable]].default


def load_settings(
    env: Mapping[str, str] | None = None, *, only: Collection[str] | None = None
) -> Settings:
    """The settings from `env` (default: this process's environment). With `only`, just those
    variables are read and validated; every other field keeps its default."""
    env = os.environ if env is None else env
    names = VARIABLES if only is None else only
    values: dict[str, str] = {}
    for variable in names:
        if variable not in VARIABLES:
            raise KeyError(f"{variable} is not a crewdash setting")
        raw = env.get(variable)
        if raw is None or not raw.strip():
            continue  # blank: the default
        secret = Settings.model_fields[VARIABLES[variable]].annotation == SecretStr | None
        # a secret keeps its spaces, but not the line end a file or `echo` left on it: a token
        # of `$(cat token)` plus "\n" would silently refuse every request
        values[variable] = raw.strip("\r\n") if secret else raw.strip()
    if "CREWDASH_RUNNER" in values:
        values["CREWDASH_RUNNER"] = values["CREWDASH_RUNNER"].lower()
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        raise SettingsError(_one_line(exc)) from None


def _bounds(field: str) -> tuple[str, str]:
    low = high = ""
    for rule in Settings.model_fields[field].metadata:
        if isinstance(rule, annotated_types.Ge):
            low = f"{rule.ge:g}"
        elif isinstance(rule, annotated_types.Gt):
            low = f"{rule.gt:g}"
        elif isinstance(rule, annotated_types.Le):
            high = f"{rule.le:g}"
    return low, high


def _one_line(exc: ValidationError) -> str:
    """The first problem, in words, naming the variable (never echoing a secret)."""
    error = exc.errors()[0]
    variable = str(error["loc"][0]) if error["loc"] else "a setting"
    field = VARIABLES.get(variable, "")
    raw = error.get("input")
    kind = error["type"]
    if kind.startswith("int_"):
        return f"{variable} must be a whole number, got {raw!r}"
    if kind.startswith("float_"):
        return f"{variable} must be a number, got {raw!r}"
    if kind in ("greater_than", "greater_than_equal", "less_than_equal", "finite_number"):
        low, high = _bounds(field)
        return f"{variable} must be between {low} and {high}, got {raw!r}"
    if kind == "literal_error":
        annotation = Settings.model_fields[field].annotation
        choices = [a for arg in typing.get_args(annotation) for a in typing.get_args(arg) or [arg]]
        allowed = ", ".join(str(c) for c in choices if c is not type(None))
        return f"{variable} must be one of {allowed}, got {raw!r}"
    return f"{variable}: {error['msg']}"


# The settings the composition root read at start-up (`install_settings`), for the calls that
# cannot take them as an argument. One reference, swapped whole: reading it needs no lock.
_installed: Settings | None = None


def install_settings(settings: Settings | None) -> None:
    """Make `settings` this process's settings (the composition root, once, with what it read at
    start-up); None takes them back (the runtime that installed them closed)."""
    global _installed
    _installed = settings


def installed_settings() -> Settings | None:
    """The settings installed at start-up, if any."""
    return _installed


def process_settings(*variables: str) -> Settings:
    """This process's settings: those installed at start-up, else (nothing installed) just
    `variables` read from the environment now, every other field at its default."""
    installed = _installed
    return installed if installed is not None else load_settings(only=variables)
