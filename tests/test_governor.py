"""The rate governor: its arithmetic on a fake clock, then against the demo model's emulated
provider limits over real HTTP, and two processes sharing one key through the real Redis."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from crewdash.base.errors import SettingsError
from crewdash.demo.limits import LimitEmulator
from crewdash.demo.profiles import LatencyProfile
from crewdash.demo.server import DemoLLMServer
from crewdash.providers.governor.core import ESTIMATE_KEY, MAX_PAUSE_S, Governor
from crewdash.providers.governor.estimate import Estimate, TokenEstimator
from crewdash.providers.governor.headers import parse_duration, read_rate_headers
from crewdash.providers.governor.registry import governor_for
from crewdash.providers.governor.windows import per_minute_window
from crewdash.providers.limits import ProviderLimits
from crewdash.providers.retries import ResilientTransport

ROOT = Path(__file__).resolve().parent.parent
REDIS = ("127.0.0.1", 6379)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _request(body: dict[str, object]) -> httpx.Request:
    return httpx.Request("POST", "http://x/v1/chat/completions", json=body)


def _governor(clock: FakeClock, **kwargs: int | None) -> Governor:
    return Governor(
        "http://x/v1", "id", clock=clock, sleep=clock.sleep, rng=random.Random(1), **kwargs
    )


# -- arithmetic --------------------------------------------------------------------------------


def test_per_minute_limits_become_exact_quanta() -> None:
    assert per_minute_window(600) == (60, 6)  # a tenth per 6 s
    assert per_minute_window(60_000) == (6000, 6)
    assert per_minute_window(7) == (7, 60)  # no divisor: the whole minute
    assert per_minute_window(45) == (3, 4)  # gcd(45, 60) = 15
    for limit in (1, 7, 45, 90, 600, 12_345):
        amount, seconds = per_minute_window(limit)
        assert amount * 60 / seconds == limit


@pytest.mark.parametrize(
    "text, seconds",
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.25", 0.25)],
)
def test_openai_reset_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["soon", "-3", "1x", "", "s", "nan", "1s2"])
def test_garbled_durations_are_none(text: str) -> None:
    assert parse_duration(text) is None


def test_garbled_and_contradictory_headers_are_dropped_and_named() -> None:
    headers = read_rate_headers(
        {
            "x-ratelimit-limit-requests": "abc",
            "x-ratelimit-remaining-requests": "5",
            "x-ratelimit-limit-tokens": "1000",
            "x-ratelimit-remaining-tokens": "5000",  # more left than the limit
            "x-ratelimit-reset-tokens": "tomorrow",
            "retry-after": "later",
        }
    )
    assert headers.limit_requests is None and headers.remaining_requests == 5
    assert headers.limit_tokens == 1000 and headers.remaining_tokens is None
    assert headers.reset_tokens_s is None and headers.retry_after_s is None
    assert len(headers.problems) == 4
    assert read_rate_headers({"retry-after-ms": "1500"}).retry_after_s == pytest.approx(1.5)


def test_a_retry_after_of_hours_pauses_at_most_the_cap_and_says_so() -> None:
    clock = FakeClock()
    gov = _governor(clock)
    response = httpx.Response(429, headers={"retry-after": "7200"})
    gov.settle(_request({"messages": []}), response)
    assert gov.http_429 == 1
    paused = gov.state().paused_s
    assert MAX_PAUSE_S <= paused <= MAX_PAUSE_S + 0.1
    assert any("capped" in note for note in gov.notes)
    gov.acquire(_request({"messages": [{"role": "user", "content": "hi"}]}))
    assert sum(clock.slept) == pytest.approx(paused, abs=0.1)  # waited the pause, not 2 hours


def test_waiting_calls_are_released_with_jitter_not_as_a_herd() -> None:
    clock = FakeClock()
    gov = _governor(clock)
    delays = {round(gov.jitter(6.0), 4) for _ in range(20)}
    assert len(delays) > 15  # spread out
    assert all(0.11 <= d <= 0.22 for d in delays)  # (0.05 + 0.01 * 6) * 1..2


def test_settings_and_headers_disagree_the_lower_limit_wins() -> None:
    clock = FakeClock()
    gov = _governor(clock, rpm=600, tpm=None)
    gov.settle(
        _request({}),
        httpx.Response(
            200, headers={"x-ratelimit-limit-requests": "300", "x-ratelimit-limit-tokens": "9000"}
        ),
    )
    assert gov.limits == (300, 9000)
    assert any("below the setting" in note for note in gov.notes)


def test_with_unknown_limits_one_call_goes_first_and_the_rest_wait_for_its_answer() -> None:
    clock = FakeClock()
    gov = _governor(clock)
    assert gov._probe() == "go"
    assert gov._probe() == "wait"  # a second caller waits for the first answer
    gov.settle(_request({}), httpx.Response(200, headers={}))  # no limit headers: free
    assert gov._probe() == ""
    clock2 = FakeClock()
    lost = _governor(clock2)
    assert lost._probe() == "go"
    clock2.now += 31  # the first call never came back: the others are not held forever
    assert lost._probe() == ""


def _sse_answer(usage: dict[str, int] | None) -> httpx.Response:
    chunks = [b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n']
    if usage is not None:
        chunks.append(b'data: {"choices":[],"usage":' + json.dumps(usage).encode() + b"}\n\n")
    chunks.append(b"data: [DONE]\n\n")
    headers = {
        "content-type": "text/event-stream",
        "x-ratelimit-limit-requests": "600",
        "x-ratelimit-limit-tokens": "60000",
    }
    return httpx.Response(200, headers=headers, stream=httpx.ByteStream(b"".join(chunks)))


def test_a_streamed_first_answer_holds_the_others_until_its_usage_chunk() -> None:
    """Its headers teach the limits at once, its tokens only at its end: released before that,
    the others were charged at the blind guess (150 here for a true 110)."""
    clock = FakeClock()
    gov = _governor(clock)
    body = {"model": "unknown-model", "messages": [{"role": "user", "content": "x" * 400}]}
    first = _request(body)
    assert gov.acquire(first) == 0  # the probe goes at once
    answer = _sse_answer({"prompt_tokens": 80, "completion_tokens": 30})
    gov.settle(first, answer)
    assert gov.limits == (600, 60_000)  # learned from the headers...
    assert gov._probe() == "wait"  # ...but the others still wait for the usage
    assert b'"usage":{' in b"".join(answer.iter_bytes())  # the caller reads the stream
    assert gov._probe() == ""
    second = _request(body)
    gov.acquire(second)
    assert second.extensions[ESTIMATE_KEY].total == 110  # charged at the true size, not 150
    # a stream that ends without usage, or is never read to its end, frees them too
    for ending in ("read", "close", "never"):
        clock_b = FakeClock()
        gov_b = _governor(clock_b)
        probe = _request(body)
        gov_b.acquire(probe)
        silent = _sse_answer(None)
        gov_b.settle(probe, silent)
        assert gov_b._probe() == "wait"
        if ending == "read":
            silent.read()
        elif ending == "close":
            silent.close()
        else:
            clock_b.now += 31
        assert gov_b._probe() == "", ending


def test_estimates_learn_the_providers_counts_and_the_answer_size() -> None:
    est = TokenEstimator()
    body = {"model": "unknown-model", "messages": [{"role": "user", "content": "x" * 400}]}
    first = est.estimate(body)
    assert (first.prompt, first.output) == (100, 50)  # chars / 4; half the prompt as answer
    for _ in range(20):
        est.learn(first, {"prompt_tokens": 80, "completion_tokens": 30})
    later = est.update(first)
    assert later.prompt == pytest.approx(80, abs=2) and later.output == pytest.approx(30, abs=1)
    capped = est.estimate({**body, "max_tokens": 64})
    assert capped.output == 64 and capped.bounded_output


def test_a_request_larger_than_a_whole_window_is_charged_one_window_not_held_forever() -> None:
    gov = Governor("http://x/v1", f"big-{time.time()}", tpm=600)  # 60 tokens per 6 s
    request = _request({"messages": [{"role": "user", "content": "x" * 4000}]})
    started = time.monotonic()
    assert gov.acquire(request) < 0.5
    assert isinstance(request.extensions[ESTIMATE_KEY], Estimate)
    assert time.monotonic() - started < 3.0  # not held for the 6 s window (a busy machine: slow)


def test_bad_limit_specs_get_a_clear_message() -> None:
    assert ProviderLimits.parse("rpm=600, tpm=60000") == ProviderLimits(600, 60000)
    assert ProviderLimits.parse("") == ProviderLimits()
    for spec in ("rpm=fast", "qps=3", "rpm=0", "rpm=-5", "600"):
        with pytest.raises(SettingsError):
            ProviderLimits.parse(spec)


# -- against the emulated provider -------------------------------------------------------------


def _chat(client: httpx.Client, base_url: str, i: int) -> int:
    body = {"model": "crewdash-demo", "messages": [{"role": "user", "content": f"hello {i}"}]}
    return client.post(f"{base_url}/chat/completions", json=body).status_code


def _burst(client: httpx.Client, base_url: str, n: int) -> list[int]:
    codes: list[int] = []
    threads = [
        threading.Thread(target=lambda i=i: codes.append(_chat(client, base_url, i)))
        for i in range(n)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return codes


def test_demo_answers_carry_openais_headers_and_refuse_past_the_limit() -> None:
    limits = ProviderLimits(rpm=20)  # 2 per 6 s
    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=0.0), limits=limits) as server:
        with httpx.Client(headers={"authorization": "Bearer k1"}) as client:
            body = {"messages": [{"role": "user", "content": "hi"}]}
            url = f"{server.base_url}/chat/completions"
            first = client.post(url, json=body)
            assert first.headers["x-ratelimit-limit-requests"] == "20"
            assert first.headers["x-ratelimit-remaining-requests"] == "1"
            assert parse_duration(first.headers["x-ratelimit-reset-requests"]) is not None
            assert client.post(url, json=body).status_code == 200
            refused = client.post(url, json=body)
            assert refused.status_code == 429
            assert 0 < float(refused.headers["retry-after"]) <= 6
            other = client.post(url, json=body, headers={"authorization": "Bearer k2"})
            assert other.status_code == 200  # limits are per key
        assert isinstance(server.app_limits, LimitEmulator)
        assert (server.app_limits.admitted, server.app_limits.rejected) == (3, 1)


def test_the_governor_learns_the_limits_and_sends_nothing_into_a_429() -> None:
    """16 calls at once against 120 RPM (12 per 6 s): retries only meets 429s; the governor,
    told nothing, learns the limit from the first answer and has none."""
    limits = ProviderLimits(rpm=120)
    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=0.05), limits=limits) as server:
        emulator = server.app_limits
        assert emulator is not None
        with httpx.Client(
            transport=ResilientTransport(), headers={"authorization": "Bearer a"}
        ) as c:
            codes = _burst(c, server.base_url, 16)
        assert emulator.rejected > 0, "retries only should have met the limit"
        assert codes.count(200) == len(codes)  # retried through
    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=0.05), limits=limits) as server:
        emulator = server.app_limits
        assert emulator is not None
        gov = governor_for(server.base_url, "key-b", probe=True)
        gov.reset()  # a server of an earlier test may have had this port
        transport = ResilientTransport(limiter=gov)
        started = time.monotonic()
        with httpx.Client(transport=transport, headers={"authorization": "Bearer key-b"}) as c:
            codes = _burst(c, server.base_url, 16)
        wall = time.monotonic() - started
        assert codes == [200] * 16
        assert (emulator.admitted, emulator.rejected) == (16, 0)
        assert gov.limits == (120, None)
        assert 6.0 <= wall < 9.0  # 12 in the first quantum, the last 4 after it
        state = gov.state()
        assert state.waits >= 4 and state.http_429 == 0 and state.waiting == 0


# -- two processes, one key, one Redis ---------------------------------------------------------


def _redis_up() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=1):
            return True
    except OSError:
        return False


_WORKER = """
import json, sys, threading, httpx
from crewdash.providers.governor.registry import governor_for
from crewdash.providers.retries import ResilientTransport
base, n = sys.argv[1], int(sys.argv[2])
gov = governor_for(base, "shared-key", rpm=60, redis_url="redis://127.0.0.1:6379/0")
client = httpx.Client(transport=ResilientTransport(limiter=gov),
                      headers={"authorization": "Bearer shared-key"})
codes = []
def one(i):
    body = {"messages": [{"role": "user", "content": f"hi {i}"}]}
    codes.append(client.post(base + "/chat/completions", json=body).status_code)
threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
[t.start() for t in threads]; [t.join(60) for t in threads]
print(json.dumps({"codes": codes, "shared": gov.shared, "429": gov.http_429}))
"""


def test_two_processes_on_one_key_share_one_governor_through_redis(ci: bool) -> None:
    if not _redis_up():
        if ci:
            pytest.fail("Redis is not running on 127.0.0.1:6379 (CI needs it)")
        pytest.skip("no Redis on 127.0.0.1:6379")
    limits = ProviderLimits(rpm=60)  # 6 per 6 s for the key, whoever sends
    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=0.05), limits=limits) as server:
        emulator = server.app_limits
        assert emulator is not None
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        started = time.monotonic()
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _WORKER, server.base_url, "5"],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(2)
        ]
        outputs = [json.loads(p.communicate(timeout=60)[0].strip().splitlines()[-1]) for p in procs]
        wall = time.monotonic() - started
    assert all(o["shared"] for o in outputs)
    assert [c for o in outputs for c in o["codes"]] == [200] * 10
    # alone, each process would have sent its 5 at once (10 > 6): together they stayed under
    assert (emulator.admitted, emulator.rejected) == (10, 0)
    assert wall >= 6.0  # the last 4 waited for the next quantum


def test_only_remote_endpoints_hold_calls_for_a_first_answer_by_default() -> None:
    assert governor_for(f"http://127.0.0.1:1/v1#{time.time()}", "k").probe is False
    assert governor_for(f"http://localhost:1/v1#{time.time()}", "k").probe is False
    assert governor_for(f"https://api.example.com/v1#{time.time()}", "k").probe is True


def test_an_unreachable_redis_falls_back_to_governing_alone() -> None:
    gov = governor_for(
        f"http://127.0.0.1:2/v1#{time.time()}", "k", rpm=60, redis_url="redis://127.0.0.1:1/0"
    )
    assert gov.acquire(_request({"messages": [{"role": "user", "content": "hi"}]})) < 1.0
    assert not gov.shared
    assert "Redis at 127.0.0.1:1 unreachable" in (gov.state().redis_problem or "")


def test_a_governor_follows_the_processs_redis_url_of_today() -> None:
    """A later runtime of the same process (or a local server on a port an earlier one had)
    asks for the same endpoint and key under another REDIS_URL: the windows follow it, and the
    Redis problem shown is that Redis's."""
    endpoint = f"http://127.0.0.1:3/v1#{time.time()}"
    gov = governor_for(endpoint, "k", rpm=60)
    assert gov.link is None
    closed = "redis://127.0.0.1:1/0"
    assert governor_for(endpoint, "k", rpm=60, redis_url=closed) is gov
    assert gov.link is not None and gov.link.url == closed
    assert gov.acquire(_request({"messages": [{"role": "user", "content": "hi"}]})) < 1.0
    assert "Redis at 127.0.0.1:1 unreachable" in (gov.state().redis_problem or "")
    assert governor_for(endpoint, "k", rpm=60) is gov
    assert gov.link is None and gov.state().redis_problem is None


def test_a_streamed_answer_is_governed_and_its_usage_chunk_learned() -> None:
    limits = ProviderLimits(rpm=600, tpm=60_000)
    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=0.0), limits=limits) as server:
        gov = governor_for(server.base_url, "stream-key", probe=True)
        gov.reset()
        transport = ResilientTransport(limiter=gov)
        with httpx.Client(transport=transport, headers={"authorization": "Bearer s"}) as client:
            body = {
                "messages": [{"role": "user", "content": "hello"}],
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            with client.stream("POST", f"{server.base_url}/chat/completions", json=body) as r:
                assert r.status_code == 200
                assert r.headers["x-ratelimit-limit-tokens"] == "60000"
                chunks = [line for line in r.iter_lines() if line.startswith("data: ")]
        assert chunks[-1] == "data: [DONE]" and '"usage"' in chunks[-2]
        assert gov.limits == (600, 60_000) and gov.state().calls == 1
        assert gov.estimator.seen == 1  # learned from the usage in the stream's last chunk
        assert gov.estimator.output_avg is not None and gov.estimator.output_avg > 0


@pytest.mark.usefixtures("openai_env")
def test_governor_waits_are_spans_in_the_crews_timeline() -> None:
    """Two crews against 10 RPM (one call per 6 s): the second waits in the governor, and the
    wait is a span of its own in the timeline, next to its LLM call."""
    from crewdash.blueprints.catalog import builtin_blueprint
    from crewdash.engine.plans import RunSettings
    from crewdash.engine.runner import Runner
    from crewdash.present.charts import timeline_figure
    from crewdash.providers.llm import LLMSettings

    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=0.05), limits=ProviderLimits(10)) as s:
        runner = Runner(max_concurrency=4, demo_base_url=lambda: s.base_url)
        try:
            settings = RunSettings(llm=LLMSettings(requests_per_minute=10))
            batch_id = runner.submit(builtin_blueprint("research"), ["one", "two"], settings)
            assert runner.batch(batch_id).wait(30)
            snap = runner.snapshot(batch_id)
        finally:
            runner.close()
        assert s.app_limits is not None and s.app_limits.rejected == 0
    # the second crew's wait for the next quantum (a loaded machine may add a few ms' wait
    # in the governor's lock, also drawn, to the first)
    waits = [sp for c in snap.crews for sp in c.spans if sp.kind == "governor"]
    long = [sp for sp in waits if (sp.duration or 0) > 1]
    assert len(long) == 1 and 5.5 < (long[0].duration or 0) < 8, waits
    assert all(c.state.value == "succeeded" for c in snap.crews)
    names = {trace.name for trace in timeline_figure(snap).data}
    assert "rate governor wait" in names


@pytest.mark.usefixtures("openai_env")
def test_12_crews_against_a_30_rpm_model_are_governed_into_no_429() -> None:
    """Issue 20, item 13: with `OPENAI_API_KEY` set, CrewAI built its own client and 6 of 12
    crews failed at once with a 429; the governor holds with the variable set or not."""
    from crewdash.engine.plans import RunSettings
    from crewdash.engine.runner import Runner
    from crewdash.providers.llm import LLMSettings

    limits = ProviderLimits(rpm=30)
    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=0.05), limits=limits) as s:
        runner = Runner(max_concurrency=12, demo_base_url=lambda: s.base_url)
        try:
            settings = RunSettings(llm=LLMSettings(requests_per_minute=30), max_concurrency=12)
            batch_id = runner.submit("research", [f"governed {i}" for i in range(12)], settings)
            assert runner.batch(batch_id).wait(120)
            snap = runner.snapshot(batch_id)
        finally:
            runner.close()
        assert s.app_limits is not None
        # one request each; on a loaded machine a call may cross the emulator's window edge and
        # meet a 429, which is retried (without the transport: 6 admitted, 70 refused, 6 failed)
        assert s.app_limits.admitted == 12 and s.app_limits.rejected <= 2
    assert [c.state.value for c in snap.crews] == ["succeeded"] * 12, [c.error for c in snap.crews]
    assert sum(1 for c in snap.crews for sp in c.spans if sp.kind == "governor") >= 8


def test_the_bench_command_compares_the_governor_with_retries_only(tmp_path: Path) -> None:
    out = tmp_path / "limits.json"
    command = ["bench", "--limits", "rpm=600,tpm=60000", "--n", "3", "--latency", "0.1"]
    result = subprocess.run(
        [sys.executable, "-m", "crewdash", *command, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["limits"] == {"rpm": 600, "tpm": 60000} and data["stream"] is True
    modes = {r["mode"]: r for r in data["results"]}
    assert set(modes) == {"governor", "retries_only"}
    for r in modes.values():
        assert r["calls"] == 3 and r["failed"] == 0 and r["bound_s"] > 0
        assert set(r) >= {"wall_s", "bound_s", "calls", "http_429", "failed"}
    bad = subprocess.run(
        [sys.executable, "-m", "crewdash", "bench", "--limits", "rpm=lots"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert bad.returncode != 0 and "rpm must be a whole number" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_bad_limit_settings_name_their_variable() -> None:
    from crewdash.base.settings import load_settings
    from crewdash.providers.llm import default_llm_settings
    from crewdash.runtime import Runtime

    with pytest.raises(SettingsError, match="CREWDASH_DEMO_LIMITS: rpm must be a whole number"):
        Runtime.from_env({"CREWDASH_DEMO_LIMITS": "rpm=x"})
    with pytest.raises(SettingsError, match="CREWDASH_RATE_LIMITS: limits look like"):
        default_llm_settings(load_settings({"CREWDASH_RATE_LIMITS": "fast"}))
    llm = default_llm_settings(load_settings({"CREWDASH_RATE_LIMITS": "rpm=500,tpm=200000"}))
    assert (llm.requests_per_minute, llm.tokens_per_minute, llm.governor) == (500, 200_000, True)
    assert default_llm_settings(load_settings({"CREWDASH_GOVERNOR": "false"})).governor is False


def test_each_429_makes_the_governor_more_careful_and_answers_relax_it() -> None:
    clock = FakeClock()
    gov = _governor(clock, tpm=60_000)
    estimate = Estimate(100, 50, 100, False, False)
    tokens = gov._tokens
    assert tokens is not None
    before = gov._charge(estimate, tokens)
    assert before == 153  # 150 tokens + 2%
    for _ in range(3):
        gov.settle(_request({}), httpx.Response(429, headers={"retry-after": "0.5"}))
    assert gov.safety == pytest.approx(1.05**3)
    assert gov._charge(estimate, tokens) > before * 1.15
    for _ in range(1000):
        gov.settle(_request({}), httpx.Response(200))
    assert gov.safety == 1.0 and gov._charge(estimate, tokens) == before
