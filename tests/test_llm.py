import pytest

from crewdash.base.errors import SettingsError
from crewdash.base.settings import load_settings
from crewdash.providers.llm import LLMSettings, build_llm, default_llm_settings


def test_default_is_the_demo_model_without_a_key() -> None:
    settings = default_llm_settings(load_settings({}))
    assert settings.is_demo and "Simulated" in settings.label


def test_an_openai_key_makes_openai_the_default() -> None:
    settings = default_llm_settings(
        load_settings({"OPENAI_API_KEY": "sk-test", "CREWDASH_OPENAI_MODEL": "m1"})
    )
    assert settings.provider == "openai" and settings.model == "m1"
    assert settings.label == "openai/m1"


def test_api_key_never_appears_in_repr() -> None:
    settings = LLMSettings(provider="openai", model="m", api_key="sk-SENTINEL-123")
    assert "SENTINEL" not in repr(settings)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"provider": "carrier-pigeon"}, "unknown provider"),
        ({"model": "  "}, "choose a model"),
        ({"provider": "openai_compatible", "model": "m"}, "needs a base URL"),
    ],
)
def test_invalid_settings_are_refused(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        LLMSettings(**kwargs)  # type: ignore[arg-type]


def test_demo_llm_needs_a_running_demo_server() -> None:
    with pytest.raises(SettingsError, match="not running"):
        build_llm(LLMSettings(), None)


@pytest.mark.usefixtures("openai_env")
def test_crews_get_their_own_llm_but_share_one_http_client() -> None:
    settings = LLMSettings(temperature=0.2, max_tokens=50)
    one = build_llm(settings, "http://127.0.0.1:9/v1")
    two = build_llm(settings, "http://127.0.0.1:9/v1")
    other = build_llm(settings, "http://127.0.0.1:10/v1")
    assert one is not two
    assert one._get_sync_client() is two._get_sync_client()  # type: ignore[attr-defined]
    assert one._get_sync_client() is not other._get_sync_client()  # type: ignore[attr-defined]
    assert one.temperature == 0.2 and one.max_tokens == 50  # type: ignore[attr-defined]


def test_openai_without_any_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(SettingsError, match="needs an API key"):
        build_llm(LLMSettings(provider="openai", model="gpt-4o-mini"))


@pytest.mark.usefixtures("openai_env")
def test_check_connection_answers_with_latency(demo_server) -> None:  # type: ignore[no-untyped-def]
    from crewdash.providers.llm import check_connection

    result = check_connection(LLMSettings(), demo_server.base_url)
    assert result.ok and result.reply == "pong" and result.latency_s > 0


@pytest.mark.parametrize(
    "settings, message",
    [
        (
            LLMSettings(
                provider="openai_compatible",
                model="m",
                base_url="http://127.0.0.1:9/v1",
                api_key="sk-SENTINEL",
            ),
            "Cannot reach http://127.0.0.1:9/v1",
        ),
        (LLMSettings(provider="gemini", model="g"), "needs an API key"),
    ],
)
def test_check_connection_errors_are_plain_words(
    settings: LLMSettings, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crewdash.providers.llm import check_connection

    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    result = check_connection(settings, timeout_s=3)
    assert not result.ok and result.error and message in result.error
    assert "SENTINEL" not in result.error


@pytest.mark.usefixtures("openai_env")
def test_unknown_model_or_path_is_a_404_message(demo_server) -> None:  # type: ignore[no-untyped-def]
    from crewdash.providers.llm import check_connection

    wrong = demo_server.base_url.replace("/v1", "/nope")
    result = check_connection(
        LLMSettings(provider="openai_compatible", model="ghost", base_url=wrong)
    )
    assert result.error == f"Unknown model 'ghost' or wrong URL (404) at {wrong}."


@pytest.mark.usefixtures("openai_env")
def test_a_timeout_says_timeout_not_cannot_reach() -> None:
    from crewdash.demo.profiles import FailureRates, LatencyProfile
    from crewdash.demo.server import DemoLLMServer
    from crewdash.providers.llm import check_connection

    hang = FailureRates(rate_hang=1.0, hang_s=60)
    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=0), failures=hang) as server:
        settings = LLMSettings(provider="openai_compatible", model="m", base_url=server.base_url)
        result = check_connection(settings, timeout_s=1)
    # CrewAI re-raises the SDK's timeout as a ConnectionError; the server was reachable
    assert result.error == f"The model at {server.base_url} did not answer within 1 s (timeout)."


@pytest.mark.usefixtures("openai_env")
def test_one_call_has_a_30_s_timeout_and_no_sdk_retries_of_its_own() -> None:
    llm = build_llm(LLMSettings(), "http://127.0.0.1:9/v1")
    assert llm._get_sync_client().timeout == 30  # type: ignore[attr-defined]
    assert llm._get_sync_client().max_retries == 0  # type: ignore[attr-defined]
    # the async client CrewAI builds itself must not multiply the retries either
    assert llm._get_async_client().max_retries == 0  # type: ignore[attr-defined]


def test_call_timeout_and_retry_budget_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = LLMSettings()
    assert (defaults.timeout_s, defaults.retry_tries, defaults.retry_seconds) == (30, 8, 90)
    monkeypatch.setenv("CREWDASH_LLM_TIMEOUT", "12")
    monkeypatch.setenv("CREWDASH_RETRY_TRIES", "3")
    monkeypatch.setenv("CREWDASH_RETRY_SECONDS", "40")
    configured = LLMSettings()
    assert (configured.timeout_s, configured.retry_tries, configured.retry_seconds) == (12, 3, 40)
    monkeypatch.setenv("CREWDASH_RETRY_TRIES", "many")
    with pytest.raises(SettingsError, match="CREWDASH_RETRY_TRIES must be a whole number"):
        LLMSettings()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"timeout_s": 0}, "per-call timeout"),
        ({"retry_tries": 0}, "between 1 and 100 tries"),
        ({"retry_seconds": -1}, "between 0 and 3600 seconds"),
    ],
)
def test_unusable_timeouts_and_budgets_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        LLMSettings(**kwargs)  # type: ignore[arg-type]


@pytest.mark.usefixtures("openai_env")
def test_crewai_still_has_the_internals_crewdash_relies_on(demo_server) -> None:  # type: ignore[no-untyped-def]
    """`CrewdashOpenAI` (crewdash/providers/llm.py) is the one place that knows CrewAI's internals:
    the route to its OpenAI class, the validator that builds clients at construction (replaced), the
    client slots and builders. If an upgrade changes any of them, this fails instead of the
    transport silently ending or a key leaking."""
    import httpx
    from crewai import LLM
    from crewai.llms.providers.openai.completion import OpenAICompletion
    from openai import OpenAI

    from crewdash.providers.llm import CrewdashOpenAI, set_sync_client, sync_client_slot

    route = LLM._resolve_route("openai/crewdash-demo", {"base_url": demo_server.base_url})
    assert route.native_class is OpenAICompletion and route.custom_openai
    validators = OpenAICompletion.__pydantic_decorators__.model_validators
    assert {"_normalize_openai_fields", "_init_clients"} <= set(validators)
    assert validators["_init_clients"].info.mode == "after"
    for name in ("_get_client_params", "_build_sync_client", "_build_async_client"):
        assert callable(getattr(OpenAICompletion, name)), name
    for name in ("_get_sync_client", "_get_async_client"):
        assert callable(getattr(OpenAICompletion, name)), name
    assert {"_client", "_async_client"} <= set(OpenAICompletion.__private_attributes__)

    fresh = CrewdashOpenAI(
        model="crewdash-demo", base_url=demo_server.base_url, api_key="k", max_retries=0
    )
    assert sync_client_slot(fresh) == (True, None), "clients were built at construction"  # type: ignore[arg-type]
    assert fresh._async_client is None
    seen: list[str] = []
    client = OpenAI(
        api_key="k",
        base_url=demo_server.base_url,
        max_retries=0,
        http_client=httpx.Client(event_hooks={"request": [lambda r: seen.append(str(r.url))]}),
    )
    with client:
        set_sync_client(fresh, client)  # type: ignore[arg-type]
        assert fresh.call("Reply with exactly: pong")
        fresh._client = None  # CrewAI emptying its slot gets crewdash's client back
        assert fresh._get_sync_client() is client
    assert seen and seen[0].startswith(demo_server.base_url), "CrewAI ignored our client"

    built = build_llm(LLMSettings(), demo_server.base_url)
    has_slot, shared = sync_client_slot(built)
    assert isinstance(built, CrewdashOpenAI) and has_slot and shared is not None
    assert built._async_client is None  # type: ignore[attr-defined]
