"""Retries and the shared rate limit, over real HTTP against the demo model's injected failures."""

import re
import time
from collections import Counter

import httpx
import pytest

from crewdash.base.errors import RetryBudgetSpent
from crewdash.demo.profiles import FailureRates, LatencyProfile
from crewdash.demo.server import DemoLLMServer
from crewdash.engine.plans import RunSettings
from crewdash.engine.runner import Runner
from crewdash.model.batch import BatchSnapshot, CrewSnapshot, CrewState
from crewdash.providers.llm import LLMSettings
from crewdash.providers.retries import (
    RateLimiter,
    ResilientTransport,
    RetryBudget,
    RetryPolicy,
    crew_budget,
)

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


def test_a_malformed_body_is_retried_like_a_transient_failure() -> None:
    server = serve(rate_malformed=1.0)
    try:
        with client(RetryPolicy(attempts=3, initial_s=0.01)) as c:
            answer = c.post(f"{server.base_url}/chat/completions", json=BODY)
        assert answer.status_code == 200  # out of tries: the last answer goes to the caller
        assert server.stats.failures == 3  # three tries, not one
    finally:
        server.stop()


def test_one_budget_bounds_every_call_made_under_it() -> None:
    server = serve(rate_500=1.0)
    budget = RetryBudget(4, 60)
    token = crew_budget.set(budget)
    try:
        with client() as c:
            with pytest.raises(RetryBudgetSpent, match="HTTP 500 from the model; gave up after 4"):
                c.post(f"{server.base_url}/chat/completions", json=BODY)
            # CrewAI issuing the call again: refused at once, without a request
            with pytest.raises(RetryBudgetSpent, match="retry budget per crew: 4 tries, 60 s"):
                c.post(f"{server.base_url}/chat/completions", json=BODY)
        assert server.stats.failures == 4
    finally:
        crew_budget.reset(token)
        server.stop()


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


def run(llm: LLMSettings, topics: list[str], timeout_s: float | None = None) -> BatchSnapshot:
    """A batch of research crews on `llm`, waited for (generously)."""
    runner = Runner(max_concurrency=len(topics))
    try:
        settings = RunSettings(llm=llm, max_concurrency=len(topics), crew_timeout_s=timeout_s)
        batch_id = runner.submit("research", topics, settings)
        assert runner.batch(batch_id).wait(300), "batch did not finish"
        return runner.snapshot(batch_id)
    finally:
        runner.close()


def took(crew: CrewSnapshot) -> float:
    assert crew.started_at is not None and crew.finished_at is not None
    return crew.finished_at - crew.started_at


@pytest.mark.usefixtures("openai_env")
def test_a_crew_that_keeps_failing_spends_one_budget_across_crewai_reissues(
    demo_server: DemoLLMServer,
) -> None:
    # CrewAI sends a failed call again (its rate-limit loop, then its agent re-runs the task):
    # per call, 5 tries became 45 requests over 86 s. Per crew, the budget is the limit.
    before = demo_server.stats.marked
    llm = LLMSettings(base_url=demo_server.base_url, retry_tries=4, retry_seconds=60)
    (crew,) = run(llm, ["pricing [demo:fail-429]"]).crews
    assert crew.state is CrewState.FAILED
    assert demo_server.stats.marked - before == 4  # the budget's tries, no more requests
    assert took(crew) < 60  # within the budget's seconds (backoff 0.5 + 1 + 2 s here)
    assert re.fullmatch(
        r"HTTP 429 from the model; gave up after 4 failed tries in \d+ s "
        r"\(retry budget per crew: 4 tries, 60 s\)\.",
        crew.error or "",
    )
    assert sum(1 for s in crew.spans if s.kind == "retry") == 3  # each wait in the timeline


@pytest.mark.usefixtures("openai_env")
def test_a_hung_call_is_cut_at_the_per_call_timeout_and_says_timeout() -> None:
    hang = FailureRates(rate_hang=1.0, hang_s=120)
    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=0), failures=hang) as server:
        llm = LLMSettings(base_url=server.base_url, timeout_s=1.0, retry_tries=2)
        (crew,) = run(llm, ["hung"]).crews
    assert crew.state is CrewState.FAILED
    assert took(crew) < 30  # two 1 s tries and a wait, not the crew's 120 s nor three of them
    assert crew.error and crew.error.startswith("The model did not answer within 1 s (timeout)")
    assert "Cannot reach" not in crew.error


def test_with_a_crew_timeout_one_call_gets_at_most_a_third_of_it() -> None:
    hang = FailureRates(rate_hang=1.0, hang_s=120)
    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=0), failures=hang) as server:
        llm = LLMSettings(base_url=server.base_url, timeout_s=30, retry_tries=1)
        (crew,) = run(llm, ["hung"], timeout_s=6).crews
    assert crew.state is CrewState.FAILED  # cut at 2 s, before the crew's 6 s were over
    assert crew.error and crew.error.startswith("The model did not answer within 2 s (timeout)")


def test_a_batch_under_the_issues_failure_mix_ends_within_each_crews_budget() -> None:
    # The hostile mix (60 % of calls fail, 5 % hang for ever), scaled down from 100 crews. With a
    # 30 s crew timeout one call gets 10 s; a crew's retries stop after 10 s of failing, so a
    # crew ends (succeeded or failed, with the budget's message) before its timeout would cut it.
    mix = FailureRates.parse("429=0.3,500=0.2,hang=0.05,malformed=0.05")
    budget_s, call_s = 10.0, 10.0
    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=0.2), failures=mix) as server:
        llm = LLMSettings(base_url=server.base_url, retry_seconds=budget_s)
        snap = run(llm, [f"mix {i}" for i in range(20)], timeout_s=30)
        assert server.stats.failures >= 10
    assert {c.state for c in snap.crews} <= {CrewState.SUCCEEDED, CrewState.FAILED}
    # the budget's seconds, one call in flight past them, a successful call, and slack for a
    # loaded machine: never three crew-long timeouts in a row
    assert max(took(c) for c in snap.crews) < budget_s + call_s + 6
    assert snap.count(CrewState.SUCCEEDED) >= 5
    failed = [c for c in snap.crews if c.state is CrewState.FAILED]
    assert all(c.error and "retry budget per crew" in c.error for c in failed)
