import pytest

from crewdash.errors import SettingsError
from crewdash.llm import LLMSettings, build_llm, default_llm_settings


def test_default_is_the_demo_model_without_a_key() -> None:
    settings = default_llm_settings({})
    assert settings.is_demo and "Simulated" in settings.label


def test_an_openai_key_makes_openai_the_default() -> None:
    settings = default_llm_settings({"OPENAI_API_KEY": "sk-test", "CREWDASH_OPENAI_MODEL": "m1"})
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


def test_check_connection_answers_with_latency(demo_server) -> None:  # type: ignore[no-untyped-def]
    from crewdash.llm import check_connection

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
    from crewdash.llm import check_connection

    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    result = check_connection(settings, timeout_s=3)
    assert not result.ok and result.error and message in result.error
    assert "SENTINEL" not in result.error


def test_unknown_model_or_path_is_a_404_message(demo_server) -> None:  # type: ignore[no-untyped-def]
    from crewdash.llm import check_connection

    wrong = demo_server.base_url.replace("/v1", "/nope")
    result = check_connection(
        LLMSettings(provider="openai_compatible", model="ghost", base_url=wrong)
    )
    assert result.error == f"Unknown model 'ghost' or wrong URL (404) at {wrong}."


def test_a_timeout_says_timeout_not_cannot_reach() -> None:
    from crewdash.demo_llm import DemoLLMServer, FailureRates, LatencyProfile
    from crewdash.llm import check_connection

    hang = FailureRates(rate_hang=1.0, hang_s=60)
    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=0), failures=hang) as server:
        settings = LLMSettings(provider="openai_compatible", model="m", base_url=server.base_url)
        result = check_connection(settings, timeout_s=1)
    # CrewAI re-raises the SDK's timeout as a ConnectionError; the server was reachable
    assert result.error == f"The model at {server.base_url} did not answer within 1 s (timeout)."


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


def test_crewai_still_has_the_client_slot_we_write_and_uses_what_we_put_there(
    demo_server,  # type: ignore[no-untyped-def]
) -> None:
    """CrewAI's private `_client` slot is the one thing crewdash writes inside CrewAI: if an
    upgrade renames it or stops reading it, this fails instead of the sharing silently ending."""
    import httpx
    from crewai import LLM
    from openai import OpenAI

    from crewdash.llm import set_sync_client, sync_client_slot

    fresh = LLM(model="openai/demo", base_url=demo_server.base_url, max_retries=0)
    fresh.api_key = "k"
    assert sync_client_slot(fresh) == (True, None), "CrewAI renamed or pre-fills its client slot"

    seen: list[str] = []
    client = OpenAI(
        api_key="k",
        base_url=demo_server.base_url,
        max_retries=0,
        http_client=httpx.Client(event_hooks={"request": [lambda r: seen.append(str(r.url))]}),
    )
    with client:
        set_sync_client(fresh, client)
        assert fresh.call("Reply with exactly: pong")
    assert seen and seen[0].startswith(demo_server.base_url), "CrewAI ignored our client"

    built = build_llm(LLMSettings(), demo_server.base_url)
    has_slot, shared = sync_client_slot(built)
    assert has_slot and shared is not None  # build_llm filled it with the shared client
