"""A key goes only to the provider it belongs to (issue 20, items 12, 13 and 15).

The server holds every provider's key in its environment, as documented; a header-logging
OpenAI-compatible server of the test's own (tests/keyspy.py, in front of the demo model) records
the credentials of each request. Test connection, runs, experiments with their judge and resume
must send it the key typed for it (or none), never one of the server's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crewdash.demo.profiles import LatencyProfile
from crewdash.demo.server import DemoLLMServer
from crewdash.engine.plans import RunSettings
from crewdash.engine.resume import resume
from crewdash.experiments.spec import build_spec, parse_variant
from crewdash.experiments.store import StoredResponses
from crewdash.model.batch import CrewState
from crewdash.providers.llm import DEMO_API_KEY, LLMSettings, build_llm, check_connection
from crewdash.providers.response_cache import (
    CacheScope,
    CachingTransport,
    cache_scope,
    endpoint,
    install_store,
    request_key,
)
from crewdash.runtime import Liveness, Runtime
from crewdash.store.history import Store
from crewdash.store.tables import CacheRow
from tests.keyspy import END_EARLY, KeySpy

SERVER_KEYS = {
    "OPENAI_API_KEY": "sk-SERVER-openai",
    "ANTHROPIC_API_KEY": "sk-SERVER-anthropic",
    "GEMINI_API_KEY": "sk-SERVER-gemini",
    "GOOGLE_API_KEY": "sk-SERVER-google",
    "OLLAMA_API_KEY": "sk-SERVER-ollama",
}


@pytest.fixture(autouse=True)
def server_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SERVER_KEYS.items():
        monkeypatch.setenv(name, value)
    # and a server-wide OpenAI URL elsewhere: a typed URL wins over it
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoLLMServer]:
    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=0.05)) as server:
        yield server


@pytest.fixture
def spy(demo: DemoLLMServer) -> Iterator[KeySpy]:
    with KeySpy(demo.base_url) as server:
        yield server


def no_server_key(spy: KeySpy) -> None:
    leaked = {v for v in spy.credentials() if any(k in v for k in SERVER_KEYS.values())}
    assert not leaked, f"the server's key reached a typed URL: {leaked}"


def compatible(spy: KeySpy, key: str | None, model: str = "crewdash-demo") -> LLMSettings:
    return LLMSettings(
        provider="openai_compatible", model=model, base_url=spy.base_url, api_key=key
    )


@pytest.mark.parametrize(
    ("provider", "key", "sent"),
    [
        ("openai_compatible", "sk-typed", "Bearer sk-typed"),
        ("openai_compatible", None, "Bearer not-needed"),
        ("openai", "sk-typed", "Bearer sk-typed"),
        ("ollama", None, "Bearer ollama"),
        ("demo", None, f"Bearer {DEMO_API_KEY}"),
    ],
)
def test_test_connection_sends_the_typed_key_to_the_typed_url(
    spy: KeySpy, provider: str, key: str | None, sent: str
) -> None:
    url = spy.base_url.removesuffix("/v1") if provider == "ollama" else spy.base_url
    if provider == "demo":
        settings = LLMSettings(base_url=url)
    else:
        settings = LLMSettings(provider=provider, model="crewdash-demo", base_url=url, api_key=key)
    result = check_connection(settings, timeout_s=10)
    assert result.ok, result.error
    assert spy.authorizations() == {sent}
    no_server_key(spy)


def test_the_servers_openai_key_is_refused_for_a_typed_url(spy: KeySpy) -> None:
    settings = LLMSettings(provider="openai", model="crewdash-demo", base_url=spy.base_url)
    assert settings.with_environment_key().api_key is None  # not filled in for that URL
    result = check_connection(settings, timeout_s=10)
    assert not result.ok and result.error
    assert "only sent to its own provider" in result.error and "SERVER" not in result.error
    assert spy.seen == []
    # a typed key equal to the server's is refused the same way: it is the server's key
    same = LLMSettings(
        provider="openai_compatible",
        model="m",
        base_url=spy.base_url,
        api_key=SERVER_KEYS["OPENAI_API_KEY"],
    )
    assert "only sent to its own provider" in (check_connection(same, timeout_s=10).error or "")
    assert spy.seen == []


def test_the_servers_openai_key_still_goes_to_openai_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL")
    for url in (None, "https://api.openai.com/v1", "https://API.openai.com/v1/"):
        llm = build_llm(LLMSettings(provider="openai", model="gpt-4o-mini", base_url=url))
        client = llm._get_sync_client()  # type: ignore[attr-defined]
        assert client.api_key == SERVER_KEYS["OPENAI_API_KEY"]
        assert str(client.base_url).startswith("https://api.openai.com/v1")
    # and to the OpenAI URL the server itself configured
    monkeypatch.setenv("OPENAI_BASE_URL", "https://proxy.example/v1")
    llm = build_llm(
        LLMSettings(provider="openai", model="gpt-4o-mini", base_url="https://proxy.example/v1")
    )
    assert llm._get_sync_client().api_key == SERVER_KEYS["OPENAI_API_KEY"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("provider", ["anthropic", "gemini"])
@pytest.mark.parametrize("key", ["sk-typed", None])
def test_anthropic_and_gemini_keys_never_reach_a_typed_url(
    spy: KeySpy, provider: str, key: str | None
) -> None:
    settings = LLMSettings(provider=provider, model="m", base_url=spy.base_url, api_key=key)
    result = check_connection(settings, timeout_s=3)
    assert not result.ok  # no network, or no SDK installed here: either way not the spy
    assert spy.seen == []


def test_the_llm_uses_the_given_key_and_url_for_both_clients(spy: KeySpy) -> None:
    """With every key variable set, neither the sync nor the async client CrewAI may use
    carries the server's key or URL (CrewAI's own class would build both from the variables)."""
    llm = build_llm(compatible(spy, "sk-typed"))
    sync, unused = llm._client, llm._async_client  # type: ignore[attr-defined]
    assert unused is None  # not built at construction (no TLS context per LLM)
    assert (sync.api_key, str(sync.base_url)) == ("sk-typed", spy.base_url + "/")
    built = llm._get_async_client()  # type: ignore[attr-defined]
    assert (built.api_key, str(built.base_url)) == ("sk-typed", spy.base_url + "/")
    assert built.max_retries == 0


def cache_rows(store: Store) -> int:
    with Session(store.engine) as session:
        return int(session.scalar(select(func.count()).select_from(CacheRow)) or 0)


@pytest.fixture
def rt(tmp_path: Path, spy: KeySpy) -> Iterator[Runtime]:
    settings = RunSettings(llm=compatible(spy, "sk-runtime"), max_concurrency=4)
    runtime = Runtime(settings, LatencyProfile("fixed", 0.05), Store(f"sqlite:///{tmp_path}/h.db"))
    yield runtime
    runtime.close()


def test_a_run_sends_the_typed_key_and_its_answers_are_cached(rt: Runtime, spy: KeySpy) -> None:
    settings = RunSettings(llm=compatible(spy, "sk-typed"), response_cache=True)
    first = rt.runner.submit("research", ["keyed solar", "keyed wind"], settings)
    assert rt.runner.batch(first).wait(60)
    crews = rt.runner.snapshot(first).crews
    assert [c.state for c in crews] == [CrewState.SUCCEEDED] * 2, [c.error for c in crews]
    assert spy.authorizations() == {"Bearer sk-typed"}
    no_server_key(spy)
    assert rt.store is not None and cache_rows(rt.store) == 2  # the transport is crewdash's
    before = len(spy.seen)
    again = rt.runner.submit("research", ["keyed solar", "keyed wind"], settings)
    assert rt.runner.batch(again).wait(60)
    assert len(spy.seen) == before  # answered from the cache


def test_an_experiment_and_its_judge_send_their_own_typed_keys(rt: Runtime, spy: KeySpy) -> None:
    variants = [
        parse_variant("name=fast,provider=openai_compatible,model=demo-fast"),
        parse_variant("name=slow,provider=openai_compatible,model=demo-thorough"),
    ]
    spec, _ = build_spec(["keyed judged topic"], variants, rubric="Clear")
    experiment_id = rt.experiments.start(spec, compatible(spy, "sk-experiment"))
    grid = rt.experiments.wait(experiment_id, 90)
    assert grid.done and {c.state for c in grid.cells} == {"succeeded"}
    assert all(c.score is not None for c in grid.cells), [c.judge_error for c in grid.cells]
    # the crews with the experiment's key, the judge with the runtime's (its own settings)
    assert spy.authorizations() == {"Bearer sk-experiment", "Bearer sk-runtime"}
    no_server_key(spy)


def test_a_resumed_batch_never_sends_the_servers_key(
    tmp_path: Path, spy: KeySpy, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_resume import CREWS, checkpointed

    monkeypatch.setenv("CREWDASH_CREWS_DIR", str(CREWS))
    url = f"sqlite:///{tmp_path / 'resume.db'}"

    def runtime() -> Runtime:
        settings = RunSettings(llm=compatible(spy, "sk-typed"), max_concurrency=4)
        return Runtime(
            settings,
            LatencyProfile("fixed", 0.05),
            Store(url),
            liveness=Liveness(heartbeat_s=0.2, lease_s=1.0),
        )

    first = runtime()
    assert first.store is not None
    # slow answers (the spy's upstream is fast): stop while every crew is between steps
    batch_id = first.runner.submit("three_step", ["resumed keys"], first.default_settings)
    deadline = time.time() + 30
    while not checkpointed(first.store, batch_id):
        assert time.time() < deadline, "no checkpoint"
        time.sleep(0.01)
    first.close()
    sent_before = len(spy.seen)
    second = runtime()
    try:
        outcome = resume(second, batch_id)
        assert not outcome.offers
        assert second.runner.batch(batch_id).wait(60)
        assert second.runner.snapshot(batch_id).crews[0].state is CrewState.SUCCEEDED
    finally:
        second.close()
    assert len(spy.seen) > sent_before  # the resumed crew called the typed URL
    # the typed key is not stored with the batch: the resumed calls carry none of the server's
    assert spy.authorizations() <= {"Bearer sk-typed", "Bearer not-needed"}
    no_server_key(spy)


# --- item 15: what the response cache stores, and under which key ---------------------------


def cached_bodies(store: Store) -> list[tuple[str, str]]:
    with Session(store.engine) as session:
        return [(r.content_type, r.body) for r in session.scalars(select(CacheRow))]


def cached_client(tmp_path: Path, spy: KeySpy) -> tuple[Store, openai.OpenAI]:
    """An OpenAI client to the spy through the response cache, stored in a fresh database."""
    store = Store(f"sqlite:///{tmp_path}/cache.db")
    install_store(StoredResponses(store))
    client = openai.OpenAI(
        api_key="sk-typed",
        base_url=spy.base_url,
        max_retries=0,
        http_client=httpx.Client(transport=CachingTransport(httpx.HTTPTransport())),
    )
    return store, client


@pytest.mark.parametrize("marker", ["[demo:stream=cut]", "[demo:stream=malformed]", END_EARLY])
def test_a_broken_stream_is_never_stored(tmp_path: Path, spy: KeySpy, marker: str) -> None:
    """At the transport: the demo's cut and malformed streams, and a stream that ends cleanly
    without its finish reason and [DONE], leave no row (and are not answered from one)."""
    store, client = cached_client(tmp_path, spy)
    token = cache_scope.set(CacheScope())
    try:
        for _ in range(2):
            with contextlib.suppress(openai.APIError, ValueError, httpx.HTTPError):
                stream = client.chat.completions.create(
                    model="crewdash-demo",
                    messages=[{"role": "user", "content": f"Topic: broken {marker}"}],
                    stream=True,
                )
                for _chunk in stream:
                    pass
        assert cache_rows(store) == 0
        assert len(spy.seen) == 2  # the second call reached the server again
    finally:
        cache_scope.reset(token)
        install_store(None)
        client.close()
        store.close()


def test_a_crew_on_a_broken_stream_caches_only_its_complete_answer(
    rt: Runtime, spy: KeySpy
) -> None:
    """A crew whose stream broke runs again without streaming; only that whole JSON answer may
    be stored, never the broken stream."""
    from crewdash.providers.response_cache import complete_answer

    assert rt.store is not None
    settings = RunSettings(llm=compatible(spy, "sk-typed"), response_cache=True)
    topics = ["[demo:stream=cut] cut", "[demo:stream=malformed] bad", f"{END_EARLY} short"]
    batch_id = rt.runner.submit("research", topics, settings)
    assert rt.runner.batch(batch_id).wait(90)
    stored = cached_bodies(rt.store)
    assert all("event-stream" not in kind for kind, _ in stored), stored
    assert all(complete_answer(body.encode(), kind) for kind, body in stored)


def test_the_cache_key_covers_provider_url_with_port_key_and_body() -> None:
    a = endpoint(httpx.URL("http://127.0.0.1:40001/v1/chat/completions"))
    b = endpoint(httpx.URL("http://127.0.0.1:40002/v1/chat/completions"))
    assert a != b  # two local servers are two models
    assert endpoint(httpx.URL("https://api.openai.com/v1/chat/completions")) == (
        "https://api.openai.com:443/v1/chat/completions"
    )
    body = b'{"model": "m", "n": 1}'
    assert request_key(a, body, "openai", "k") == request_key(
        a, b'{"n":1,"model":"m"}', "openai", "k"
    )
    assert request_key(a, body, "openai", "k") != request_key(a, body, "openai", "k2")
    assert request_key(a, body, "openai", "k") != request_key(a, body, "ollama", "k")
    assert request_key(a, body, "openai", "k") != request_key(b, body, "openai", "k")
    assert request_key(a, body, "openai", "k") != request_key(
        a, b'{"model": "n", "n": 1}', "openai", "k"
    )


def test_two_local_servers_and_two_keys_do_not_share_answers(
    rt: Runtime, spy: KeySpy, demo: DemoLLMServer
) -> None:
    assert rt.store is not None
    with KeySpy(demo.base_url) as other:
        runs = [(spy, "sk-one"), (other, "sk-one"), (spy, "sk-two"), (spy, "sk-one")]
        for server, key in runs:
            settings = RunSettings(llm=compatible(server, key), response_cache=True)
            batch_id = rt.runner.submit("research", ["shared topic"], settings)
            assert rt.runner.batch(batch_id).wait(60)
        # each of the first three reached its server; the fourth repeats the first: cached
        assert len(spy.seen) == 2 and len(other.seen) == 1
        assert cache_rows(rt.store) == 3


def test_a_broken_answer_already_in_the_cache_is_not_replayed(tmp_path: Path, spy: KeySpy) -> None:
    """A row stored before this check (a cut stream) is passed over: the model answers."""
    from sqlalchemy import update

    store, client = cached_client(tmp_path, spy)
    token = cache_scope.set(CacheScope())

    def ask() -> str:
        stream = client.chat.completions.create(
            model="crewdash-demo",
            messages=[{"role": "user", "content": "Topic: replayed"}],
            stream=True,
        )
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    try:
        whole = ask()
        assert cache_rows(store) == 1 and len(spy.seen) == 1
        assert ask() == whole and len(spy.seen) == 1  # a hit
        ((_kind, body),) = cached_bodies(store)
        cut = body[: body.index('"finish_reason": "')]
        cut = cut[: cut.rindex("\n\n") + 2]  # the events before the finish reason
        with Session(store.engine) as session, session.begin():
            session.execute(update(CacheRow).values(body=cut))
        assert ask() == whole and len(spy.seen) == 2  # not replayed: the model answered
    finally:
        cache_scope.reset(token)
        install_store(None)
        client.close()
        store.close()
