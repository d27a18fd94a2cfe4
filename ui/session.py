"""What every page shares: the process-wide runtime, session keys, and the sidebar.

`st.session_state` holds ids and UI choices only (keys prefixed by page); all batch state lives in
the core's thread-safe objects behind `runtime()`. A key typed in the sidebar stays in this
session's memory: it is never written to disk, the database, logs or exports.
"""

from __future__ import annotations

import hmac
import math
import runpy
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

from crewdash.base.config import DEFAULT_BLUEPRINT
from crewdash.base.errors import CrewdashError, SettingsError
from crewdash.base.login_guard import LoginGuard
from crewdash.base.settings import load_settings
from crewdash.blueprints.catalog import describe_blueprints
from crewdash.blueprints.projects.files import KIND_LABELS
from crewdash.demo.profiles import PROFILE_KINDS, PROFILE_LABELS, FailureRates, LatencyProfile
from crewdash.engine.plans import RunSettings
from crewdash.providers.limits import ProviderLimits
from crewdash.providers.llm import (
    DEFAULT_MODELS,
    PROVIDER_LABELS,
    PROVIDERS,
    LLMSettings,
    check_connection,
)
from crewdash.runtime import Runtime
from ui.text import plain

ENTRY_SCRIPT = Path(__file__).resolve().parent.parent / "app.py"


@st.cache_resource(show_spinner="Starting the crew runner…")
def runtime() -> Runtime:
    """One runtime per server process, shared by every browser session."""
    rt = Runtime.from_env()
    try:
        if rt.default_settings.llm.is_demo:
            rt.warm_up()  # in the background; the page does not wait for it
    except BaseException:
        rt.close()  # nothing is cached after a failure: the next page load starts afresh
        raise
    rt.close_at_exit()  # on SIGTERM Streamlit exits: unfinished crews become interrupted
    return rt


def state(key: str, default: Any) -> Any:
    """Read a session key, setting its default the first time (keys look like `page.name`)."""
    if key not in st.session_state:
        st.session_state[key] = default
    return st.session_state[key]


def _secret(name: str) -> str | None:
    try:
        value = st.secrets.get(name)
    except (FileNotFoundError, KeyError, AttributeError):
        return None
    except Exception:  # noqa: BLE001 - a malformed secrets.toml must not break the page
        return None
    return str(value) if value else None


def _environment_password() -> str | None:
    return load_settings(only={"CREWDASH_PASSWORD"}).secret("CREWDASH_PASSWORD")


def password_required() -> bool:
    """Whether the shared password guards the dashboard (no identity provider configured)."""
    return bool(_secret("password") or _environment_password())


def locked() -> bool:
    """Whether this session still has to log in, or may not come in at all (decides whether
    the page menu shows)."""
    from ui.people import auth_problem, auth_section, signed_in_person

    auth, unreadable = auth_section()
    if unreadable:
        return True
    if auth is not None:
        return bool(auth_problem(auth)) or signed_in_person() is None
    return password_required() and not st.session_state.get("auth.ok")


def _identity_provider_gate(auth: Mapping[str, Any] | None, unreadable: str | None) -> bool:
    """Sign-in through the identity provider; True when it decided (and let them in)."""
    from ui.people import auth_problem, signed_in_person

    problem = unreadable or (auth_problem(auth) if auth is not None else None)
    if problem:  # fail closed: a half-configured sign-in must not leave the dashboard open
        st.title("crewdash")
        st.error(plain(problem), icon=":material/lock:")
        st.stop()
    if auth is None:
        return False
    if not st.user.get("is_logged_in"):
        st.title("crewdash")
        st.button("Log in", on_click=st.login, type="primary")
        st.stop()
    if signed_in_person() is None:
        st.title("crewdash")
        st.error(
            plain(
                f"You are signed in as {st.user.get('email') or st.user.get('sub')}, who may "
                "not use this crewdash. Ask an admin to add you (CREWDASH_MEMBERS)."
            ),
            icon=":material/block:",
        )
        st.button("Log out", on_click=st.logout)
        st.stop()
    st.sidebar.button("Log out", on_click=st.logout)
    return True


def gate() -> None:
    """Access control: Streamlit's OIDC sign-in when `[auth]` is in secrets.toml (fails closed
    when it is incomplete), else a shared password (`password` in secrets.toml or
    CREWDASH_PASSWORD), else open."""
    from ui.people import auth_section

    if _identity_provider_gate(*auth_section()):
        return
    password = _secret("password") or _environment_password()
    if not password:
        return
    if st.session_state.get("auth.ok"):
        st.sidebar.button("Log out", key="auth.logout", on_click=_log_out)
        return
    st.title("crewdash")
    with st.form("auth.form"):
        typed = st.text_input("Password", type="password", key="auth.password")
        entered = st.form_submit_button("Enter", type="primary")
    if entered:
        guard, keys = login_guard(), _login_keys()
        wait = guard.wait_s(*keys)
        if wait > 0:  # not even checked: a right guess in the wait counts for nothing
            _refuse(wait, guard.locked(*keys))
        elif hmac.compare_digest(typed.encode(), password.encode()):
            guard.succeeded(*keys)
            st.session_state["auth.ok"] = True
            st.session_state.pop("auth.password", None)
            st.rerun()
        else:
            wait = guard.failed(*keys)
            if wait > 0:
                _refuse(wait, guard.locked(*keys), "Wrong password. ")
            else:
                st.error("Wrong password.", icon=":material/lock:")
    st.stop()


def _log_out() -> None:
    """The shared password's Log out: this session asks for the password again."""
    st.session_state.pop("auth.ok", None)


@st.cache_resource
def login_guard() -> LoginGuard:
    """One count of wrong passwords per server process, shared by every session."""
    return LoginGuard()


def _login_keys() -> tuple[str, str]:
    """This browser session and its client address (Streamlit gives None for localhost)."""
    session = state("auth.session", uuid.uuid4().hex)
    ip = st.context.ip_address  # None on localhost (and not a str under AppTest)
    return f"session:{session}", f"address:{ip if isinstance(ip, str) and ip else 'localhost'}"


def _refuse(wait: float, locked: bool, prefix: str = "") -> None:
    if locked:
        text = f"Too many wrong passwords: locked for {math.ceil(wait / 60)} min."
    else:
        text = f"Too many wrong passwords: try again in {math.ceil(wait)} s."
    st.error(prefix + text, icon=":material/lock_clock:")


def _login() -> None:
    gate()


def require_login() -> None:
    """The first line of every page: no page shows anything before the login.

    With a `pages/` folder beside the entry script, Streamlit serves `/<page>` through its
    folder-based page discovery until `st.navigation` has run once in the process (on a freshly
    started server; in `AppTest`, on every run), so `app.py`, its gate and its navigation are
    skipped. Such a run executes `app.py` in its place (its `st.navigation` ends that mode and
    runs this page again, gated) and stops; a widget event of the run is kept, as a rerun would
    lose it. Any other run of a locked session stops at the login form.
    """
    if PagesManager.uses_pages_directory:
        runpy.run_path(str(ENTRY_SCRIPT))
        st.stop()
    if locked():
        gate()  # shows the login form and stops


def llm_settings() -> LLMSettings:
    """This session's model choice; raises `SettingsError` with a message for the sidebar."""
    rt = runtime()
    defaults = rt.default_settings.llm
    provider = state("sidebar.provider", defaults.provider)
    model = state("sidebar.model", defaults.model) or DEFAULT_MODELS[provider]
    max_tokens = int(state("sidebar.max_tokens", 0)) or None
    temperature = float(state("sidebar.temperature", 0.7))
    rpm = int(state("sidebar.rpm", defaults.requests_per_minute or 0)) or None
    tpm = int(state("sidebar.tpm", defaults.tokens_per_minute or 0)) or None
    governor = bool(state("sidebar.governor", defaults.governor))
    if provider == "demo":
        demo = _demo_settings(rt, temperature, max_tokens)
        return replace(demo, requests_per_minute=rpm, tokens_per_minute=tpm, governor=governor)
    key = state("sidebar.api_key", "") or _secret(f"{provider.upper()}_API_KEY") or None
    return LLMSettings(
        provider=provider,
        model=model,
        base_url=state("sidebar.base_url", "") or None,
        api_key=key,
        temperature=temperature,
        max_tokens=max_tokens,
        requests_per_minute=rpm,
        tokens_per_minute=tpm,
        governor=governor,
    )


def _demo_settings(rt: Runtime, temperature: float, max_tokens: int | None) -> LLMSettings:
    try:
        profile = LatencyProfile(
            kind=state("sidebar.demo_profile", rt.demo_profile.kind),
            seconds=float(state("sidebar.demo_latency", rt.demo_profile.seconds)),
            seed=rt.demo_profile.seed,
            tokens_per_s=rt.demo_profile.tokens_per_s,
        )
        failures = FailureRates(
            rate_429=state("sidebar.fail_429", rt.demo_failures.rate_429 * 100) / 100,
            rate_500=state("sidebar.fail_500", rt.demo_failures.rate_500 * 100) / 100,
            rate_hang=state("sidebar.fail_hang", rt.demo_failures.rate_hang * 100) / 100,
            rate_malformed=state("sidebar.fail_malformed", rt.demo_failures.rate_malformed * 100)
            / 100,
            seed=rt.demo_failures.seed,
        )
        limits = ProviderLimits(
            rpm=int(state("sidebar.demo_rpm", rt.demo_limits.rpm or 0)) or None,
            tpm=int(state("sidebar.demo_tpm", rt.demo_limits.tpm or 0)) or None,
        )
    except ValueError as exc:
        raise SettingsError(f"Demo model settings: {exc}") from None
    return LLMSettings(
        base_url=rt.demo_base_url(profile, failures, limits),
        temperature=temperature,
        max_tokens=max_tokens,
    )


def run_settings() -> RunSettings:
    """This session's choices on top of the process defaults."""
    limit = int(state("sidebar.max_concurrency", runtime().default_settings.max_concurrency))
    timeout = float(state("sidebar.crew_timeout", 0.0)) or None
    cache = bool(state("sidebar.response_cache", False))
    llm = replace(llm_settings(), stream=bool(state("sidebar.stream", True)))
    return RunSettings(llm=llm, max_concurrency=limit, crew_timeout_s=timeout, response_cache=cache)


def _on_provider_change() -> None:
    st.session_state["sidebar.model"] = DEFAULT_MODELS[st.session_state["sidebar.provider"]]
    st.session_state["sidebar.check"] = None


def render_sidebar() -> None:
    rt = runtime()
    defaults = rt.default_settings
    with st.sidebar:
        st.subheader("Model")
        state("sidebar.provider", defaults.llm.provider)
        provider = st.selectbox(
            "Provider",
            PROVIDERS,
            format_func=cast(Callable[[Any], str], PROVIDER_LABELS.get),
            key="sidebar.provider",
            on_change=_on_provider_change,
        )
        if provider == "demo":
            st.info(
                "**Simulated model**: answers are generated locally by crewdash's demo "
                "server, not by a real LLM.",
                icon=":material/science:",
            )
            state("sidebar.demo_profile", rt.demo_profile.kind)
            kind = st.selectbox(
                "Latency",
                PROFILE_KINDS,
                format_func=cast(Callable[[Any], str], PROFILE_LABELS.get),
                key="sidebar.demo_profile",
            )
            if kind == "fixed":
                state("sidebar.demo_latency", rt.demo_profile.seconds)
                st.number_input("Seconds per call", 0.0, 60.0, step=0.1, key="sidebar.demo_latency")
            with st.expander("Failure injection (%)"):
                for name, label, default in (
                    ("429", "429 rate limit", rt.demo_failures.rate_429),
                    ("500", "500 server error", rt.demo_failures.rate_500),
                    ("hang", "hung request", rt.demo_failures.rate_hang),
                    ("malformed", "malformed body", rt.demo_failures.rate_malformed),
                ):
                    state(f"sidebar.fail_{name}", default * 100)
                    st.number_input(label, 0.0, 100.0, step=1.0, key=f"sidebar.fail_{name}")
            with st.expander("Provider limits (emulated, 0 = off)"):
                state("sidebar.demo_rpm", rt.demo_limits.rpm or 0)
                st.number_input(
                    "Requests per minute", 0, 1_000_000, step=60, key="sidebar.demo_rpm"
                )
                state("sidebar.demo_tpm", rt.demo_limits.tpm or 0)
                st.number_input(
                    "Tokens per minute", 0, 100_000_000, step=1000, key="sidebar.demo_tpm"
                )
        else:
            state(
                "sidebar.model",
                defaults.llm.model
                if provider == defaults.llm.provider
                else DEFAULT_MODELS[provider],
            )
            st.text_input("Model", key="sidebar.model")
            if provider in ("openai", "ollama", "openai_compatible"):
                state("sidebar.base_url", "")
                st.text_input(
                    "Base URL",
                    key="sidebar.base_url",
                    placeholder="http://localhost:8000/v1"
                    if provider != "openai"
                    else "https://api.openai.com/v1 (default)",
                )
            if provider != "ollama":
                state("sidebar.api_key", "")
                st.text_input(
                    "API key",
                    type="password",
                    key="sidebar.api_key",
                    help="Kept in this browser session's memory only; leave empty to "
                    "use the server's environment or secrets.toml.",
                )
        state("sidebar.stream", defaults.llm.stream)
        st.toggle(
            "Stream answers",
            key="sidebar.stream",
            help="Each crew's answer appears as the model writes it, with its time to first "
            "token (TTFT). Off: answers arrive whole when a call ends.",
        )
        state("sidebar.temperature", 0.7)
        st.slider("Temperature", 0.0, 2.0, step=0.1, key="sidebar.temperature")
        state("sidebar.max_tokens", 0)
        st.number_input(
            "Max tokens (0 = provider default)", 0, 200_000, step=64, key="sidebar.max_tokens"
        )
        state("sidebar.rpm", 0)
        st.number_input(
            "Requests per minute (0 = no limit)",
            0,
            100_000,
            step=10,
            key="sidebar.rpm",
            help="Shared by every crew and batch on the same endpoint and key (OpenAI-compatible "
            "providers and the demo); with the governor on, 0 means learned from the "
            "provider's x-ratelimit headers.",
        )
        state("sidebar.tpm", defaults.llm.tokens_per_minute or 0)
        st.number_input(
            "Tokens per minute (0 = learn or none)",
            0,
            100_000_000,
            step=1000,
            key="sidebar.tpm",
            help="The rate governor's tokens limit for this endpoint and key.",
        )
        state("sidebar.governor", defaults.llm.governor)
        st.checkbox(
            "Rate governor",
            key="sidebar.governor",
            help="Send each call when the provider's requests and tokens windows have room "
            "(estimated before sending) instead of into a 429. Off: a fixed pace and retries.",
        )
        if st.button("Test connection", icon=":material/network_check:", key="sidebar.test"):
            try:
                settings = llm_settings()
                result = check_connection(settings, rt.demo_base_url())
                st.session_state["sidebar.check"] = (
                    result.ok,
                    result.latency_s,
                    result.reply,
                    result.error,
                )
            except CrewdashError as exc:
                st.session_state["sidebar.check"] = (False, 0.0, None, str(exc))
        check = state("sidebar.check", None)
        if check:
            ok, latency, reply, error = check
            if ok:
                st.success(
                    f"Answered in {latency:.2f} s: “{plain(reply)}”", icon=":material/check:"
                )
            else:
                st.error(plain(error), icon=":material/error:")

        st.subheader("Crews")
        infos = {i.name: i for i in describe_blueprints()}  # a broken one is listed, marked
        blueprints = list(infos) or [DEFAULT_BLUEPRINT]
        state(
            "sidebar.blueprint",
            DEFAULT_BLUEPRINT if DEFAULT_BLUEPRINT in blueprints else blueprints[0],
        )

        def blueprint_label(name: str) -> str:
            info = infos.get(name)
            if info is None:
                return name
            kind = KIND_LABELS.get(info.kind, info.kind)
            return f"⚠ {name} · {kind} · broken" if info.error else f"{name} · {kind}"

        st.selectbox(
            "Crew blueprint",
            blueprints,
            key="sidebar.blueprint",
            format_func=blueprint_label,
            help="YAML crews and CrewAI projects (crews and Flows) found in crews/ and "
            "CREWDASH_CREWS_DIR. A broken one says why on the Run page.",
        )
        chosen = infos.get(st.session_state["sidebar.blueprint"])
        if chosen is not None and chosen.error:
            st.error(plain(chosen.error), icon=":material/error:")
        state("sidebar.max_concurrency", defaults.max_concurrency)
        st.number_input(
            "Max concurrent crews",
            min_value=1,
            max_value=rt.runner.max_concurrency,
            step=1,
            key="sidebar.max_concurrency",
            help="Crews beyond this wait in the queue until a slot frees up.",
        )
        st.caption(plain(f"Crews run on {rt.runner.backend.label}."))
        state("sidebar.crew_timeout", 0.0)
        st.number_input(
            "Per-crew timeout (s, 0 = none)",
            0.0,
            86_400.0,
            step=10.0,
            key="sidebar.crew_timeout",
            help="A crew still running after this ends as timed out; the others go on.",
        )
        state("sidebar.response_cache", False)
        st.checkbox(
            "Response cache",
            key="sidebar.response_cache",
            help="Answer model calls identical to earlier ones from the stored answers "
            "(no model call, no cost); cached calls are green in the timeline.",
        )
