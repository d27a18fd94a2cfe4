"""Retries and the shared rate limit, over real HTTP against the demo model's injected failures."""

import time
from collections import Counter

import httpx
import pytest

from crewdash.batch import CrewState
from crewdash.demo_llm import DemoLLMServer, FailureRates, LatencyProfile
from crewdash.llm import LLMSettings
from crewdash.retries import RateLimiter, ResilientTransport, RetryPolicy
from crewdash.runner import Runner, RunSettings

BODY = {"messages": [{"role": "user", "content": "Reply with exactly: ok"}]}


def client(policy: RetryPolicy | None = None) -> httpx.Client:
    return httpx.Client(
        transport=ResilientTransport(policy or RetryPolicy(initial_s=0.05)), timeout=5
    )


def serve(**rates: float) -> DemoLLMServer:
    failures = FailureRates(**rates, retry_after_s=0.3, hang_s=30)  # type: ignore[arg-type]
    return DemoLLMServer(LatencyProfile(kind="fixed", seconds=0), failures=failures).start()


def test_transient_failures_are_retried_until_they_pass() -> None:
    server = serve(rate_500=0.5)
    try:
        with client() as c:
            answers = [c.post(f"{server.base_url}/chat/completions", json=BODY) for _ in range(20)]
        assert all(a.status_code == 200 for a in answers)
        assert server.stats.failures > 0  # failed attempts, answered before being served
        assert server.stats.requests == 20  # every call was finally served once
    finally:
        server.stop()


def test_429_waits_for_retry_after() -> None:
    server = serve(rate_429=1.0)
    try:
        started = time.perf_counter()
        with client(RetryPolicy(attempts=3)) as c:
            answer = c.post(f"{server.base_url}/chat/completions", json=BODY)
        assert answer.status_code == 429  # out of tries: the last answer goes to the caller
        assert server.stats.failures == 3
        assert time.perf_counter() - started >= 2 * 0.3  # two waits of Retry-After
    finally:
        server.stop()


def test_permanent_failures_are_not_retried(demo_server: DemoLLMServer) -> None:
    before = demo_server.stats.requests
    with client() as c:
        answer = c.post(
            f"{demo_server.base_url}/chat/completions",
            json={"messages": [{"role": "user", "content": "x [demo:fail-401]"}]},
        )
    assert answer.status_code == 401
    assert demo_server.stats.requests == before  # the marker answers before counting
    with client() as c:
        bad = c.post(f"{demo_server.base_url}/chat/completions", json={"messages": []})
    assert bad.status_code == 400


def test_connection_errors_are_retried_then_raised() -> None:
    with client(RetryPolicy(attempts=2, initial_s=0.01)) as c:
        with pytest.raises(httpx.ConnectError):
            c.post("http://127.0.0.1:9/v1/chat/completions", json=BODY)


def test_rate_limiter_spaces_requests() -> None:
    limiter = RateLimiter(per_minute=600)  # one every 0.1 s
    waited = sum(limiter.acquire() for _ in range(6))
    assert waited >= 0.45
    with pytest.raises(ValueError):
        RateLimiter(0)


@pytest.mark.long
def test_200_crews_with_20_percent_transient_failures() -> None:
    rates = FailureRates(rate_429=0.1, rate_500=0.1, retry_after_s=0.2)
    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=0.2), failures=rates) as server:
        runner = Runner(max_concurrency=100)
        try:
            settings = RunSettings(llm=LLMSettings(base_url=server.base_url), max_concurrency=100)
            topics = [f"crew-{i}" for i in range(200)]
            batch_id = runner.submit("timing", topics, settings)
            assert runner.batch(batch_id).wait(300)
            snap = runner.snapshot(batch_id)
        finally:
            runner.close()
        assert server.stats.failures >= 20
    states = Counter(c.state for c in snap.crews)
    assert all(c.state.final for c in snap.crews)
    assert states[CrewState.SUCCEEDED] >= 198  # at least 99%
    assert sorted(c.topic for c in snap.crews) == sorted(topics)  # none lost or duplicated
    succeeded = [c for c in snap.crews if c.state is CrewState.SUCCEEDED]
    assert all(c.result == f"{c.topic} done" for c in succeeded)
    assert sum(1 for c in snap.crews for s in c.spans if s.kind == "retry") >= 20
