"""The demo model over real HTTP, through the same OpenAI client CrewAI uses."""

import concurrent.futures
import statistics
import time

import httpx
import pytest
from openai import OpenAI

from crewdash.demo.answers import compose_answer, count_tokens
from crewdash.demo.profiles import LatencyProfile
from crewdash.demo.server import DemoLLMServer


def client(server: DemoLLMServer) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key="anything", max_retries=0)


def test_chat_completion_is_topic_aware_with_real_usage(demo_server: DemoLLMServer) -> None:
    prompt = "Research quantum networking.\n\nTopic: quantum networking"
    reply = client(demo_server).chat.completions.create(
        model="crewdash-demo", messages=[{"role": "user", "content": prompt}]
    )
    text = reply.choices[0].message.content or ""
    bullets = text.splitlines()
    assert len(bullets) == 3 and all(b.startswith("- ") for b in bullets)
    assert all("quantum networking" in b for b in bullets)
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == count_tokens(prompt)
    assert reply.usage.completion_tokens == count_tokens(text)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.choices[0].finish_reason == "stop"


def test_answers_are_deterministic(demo_server: DemoLLMServer) -> None:
    messages = [{"role": "user", "content": "Topic: edge AI"}]
    answers = {
        client(demo_server)
        .chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
        .choices[0]
        .message.content
        for _ in range(2)
    }
    assert len(answers) == 1
    other = compose_answer([{"role": "user", "content": "Topic: something else"}])
    assert other not in answers


def test_reply_with_exactly_is_echoed() -> None:
    assert (
        compose_answer([{"role": "user", "content": "Reply with exactly: crew-3 done"}])
        == "crew-3 done"
    )


def test_untagged_prompt_gets_a_short_simulated_answer() -> None:
    answer = compose_answer(
        [{"role": "system", "content": "s"}, {"role": "user", "content": "hello   there"}]
    )
    assert answer == "Simulated answer (demo model) about: hello there"


def test_models_endpoint(demo_server: DemoLLMServer) -> None:
    ids = [m.id for m in client(demo_server).models.list()]
    assert ids == ["crewdash-demo", "demo-fast", "demo-thorough"]


def test_streaming_delivers_the_same_text_and_usage(demo_server: DemoLLMServer) -> None:
    messages = [{"role": "user", "content": "Topic: streaming"}]
    stream = client(demo_server).chat.completions.create(
        model="m",
        messages=messages,
        stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    )
    parts, usage = [], None
    for chunk in stream:
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
        if chunk.usage:
            usage = chunk.usage
    assert "".join(parts) == compose_answer(messages)
    assert usage is not None and usage.completion_tokens == count_tokens("".join(parts))


@pytest.mark.parametrize(
    "body",
    [b"not json", b"{}", b'{"messages": []}', b'{"messages": "hi"}'],
)
def test_bad_requests_get_a_400_with_a_message(demo_server: DemoLLMServer, body: bytes) -> None:
    response = httpx.post(
        f"{demo_server.base_url}/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("invalid request")


def test_concurrent_calls_overlap_and_are_counted() -> None:
    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=0.5)) as server:
        c = client(server)
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(
                pool.map(
                    lambda i: c.chat.completions.create(
                        model="m", messages=[{"role": "user", "content": f"Topic: t{i}"}]
                    ),
                    range(16),
                )
            )
        elapsed = time.perf_counter() - started
        assert server.stats.requests == 16
        assert server.stats.peak_in_flight == 16
        assert server.stats.in_flight == 0
        assert elapsed < 16 * 0.5 / 2  # overlapped, not one after another


def test_latency_profiles() -> None:
    fixed = LatencyProfile(kind="fixed", seconds=0.25)
    assert fixed.delay_for("a") == fixed.delay_for("b") == 0.25
    assert fixed.delay_for("a", tokens=100) == 0.25  # no rate: the answer comes at once
    paced = LatencyProfile(kind="fixed", seconds=0.25, tokens_per_s=50)
    assert paced.ttft_for("a") == 0.25 and paced.delay_for("a", tokens=100) == 2.25
    hosted = LatencyProfile(kind="hosted", seed=1)
    answer = 50  # tokens of a three-bullet answer
    delays = [hosted.delay_for(f"prompt {i}", answer) for i in range(400)]
    assert delays == [
        LatencyProfile(kind="hosted", seed=1).delay_for(f"prompt {i}", answer) for i in range(400)
    ]
    assert delays != [
        LatencyProfile(kind="hosted", seed=2).delay_for(f"prompt {i}", answer) for i in range(400)
    ]
    share_1_to_3 = sum(1.0 <= d <= 3.0 for d in delays) / len(delays)
    assert share_1_to_3 > 0.7 and max(delays) > 3.0  # mostly 1-3 s, with a tail
    ttfts = [hosted.ttft_for(f"prompt {i}") for i in range(400)]
    rates = [hosted.rate_for(f"prompt {i}") or 0 for i in range(400)]
    assert 0.4 < statistics.median(ttfts) < 0.8 and 30 < statistics.median(rates) < 50
    slow = LatencyProfile(kind="slow")
    assert 0.8 <= slow.ttft_for("x") <= 10.0 and 5 <= (slow.rate_for("x") or 0) <= 30
    with pytest.raises(ValueError):
        LatencyProfile(kind="warp")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LatencyProfile(kind="fixed", seconds=-1)


def test_server_binds_loopback_on_a_free_port_and_stops() -> None:
    server = DemoLLMServer(LatencyProfile(kind="fixed", seconds=0)).start()
    try:
        assert server.base_url.startswith("http://127.0.0.1:")
        assert httpx.get(server.base_url.replace("/v1", "/healthz")).json() == {"status": "ok"}
    finally:
        server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.base_url.replace("/v1", "/healthz"), timeout=1)


def test_server_can_serve_other_machines() -> None:
    """`demo-llm --host 0.0.0.0`: the URL handed to Ray workers names this machine."""
    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=0.0), host="0.0.0.0") as server:
        assert "127.0.0.1" not in server.base_url
        answered = httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
        assert answered.json() == {"status": "ok"}


def test_fail_marker_gives_that_http_error(demo_server: DemoLLMServer) -> None:
    response = httpx.post(
        f"{demo_server.base_url}/chat/completions",
        json={"messages": [{"role": "user", "content": "Topic: x [demo:fail-503]"}]},
    )
    assert response.status_code == 503
    assert "simulated failure 503" in response.json()["error"]["message"]


def test_a_wait_marker_holds_the_answer_that_long() -> None:
    """`[demo:wait=N]`: a test holds a crew running as long as it needs, at any latency."""
    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=0.0)) as server:
        url = f"{server.base_url}/chat/completions"

        def timed(content: str) -> float:
            started = time.perf_counter()
            body = {"messages": [{"role": "user", "content": content}]}
            assert httpx.post(url, json=body, timeout=30).status_code == 200
            return time.perf_counter() - started

        held, plain = timed("Topic: x [demo:wait=1.5]"), timed("Topic: x")
    assert held >= 1.5 and held > plain + 1.0


def test_failure_rates_parse_and_validate() -> None:
    from crewdash.demo.profiles import FailureRates

    rates = FailureRates.parse("429=0.1, 500=0.05,hang=0.01,malformed=0.02")
    assert (rates.rate_429, rates.rate_500, rates.rate_hang, rates.rate_malformed) == (
        0.1,
        0.05,
        0.01,
        0.02,
    )
    assert rates.describe() == "429 10%, 500 5%, hang 1%, malformed 2%"
    assert not FailureRates.parse("").any
    with pytest.raises(ValueError, match="unknown failure"):
        FailureRates.parse("teapot=0.1")
    with pytest.raises(ValueError, match="add up to at most 1"):
        FailureRates(rate_429=0.7, rate_500=0.6)
    picks = [FailureRates(rate_500=0.2, seed=3).pick(i) for i in range(2000)]
    assert 0.15 < picks.count("500") / 2000 < 0.25
    assert picks == [FailureRates(rate_500=0.2, seed=3).pick(i) for i in range(2000)]


@pytest.mark.parametrize("kind", ["429", "500", "malformed"])
def test_injected_failures_over_http(kind: str) -> None:
    from crewdash.demo.profiles import FailureRates

    rates = FailureRates(**{f"rate_{kind}": 1.0}, retry_after_s=2)  # type: ignore[arg-type]
    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=0), failures=rates) as server:
        response = httpx.post(
            f"{server.base_url}/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}]},
        )
        assert server.stats.failures == 1
    if kind == "429":
        assert response.status_code == 429 and response.headers["retry-after"] == "2"
    elif kind == "500":
        assert response.status_code == 500
    else:
        assert response.status_code == 200
        with pytest.raises(ValueError):
            response.json()


def test_hung_request_times_the_client_out() -> None:
    from crewdash.demo.profiles import FailureRates

    rates = FailureRates(rate_hang=1.0, hang_s=30)
    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=0), failures=rates) as server:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{server.base_url}/chat/completions",
                timeout=0.5,
                json={"messages": [{"role": "user", "content": "hi"}]},
            )


def test_tool_marker_gets_one_call_of_that_tool_then_an_answer(demo_server: DemoLLMServer) -> None:
    """`[demo:tool=name]` with that tool offered: a tool call first, the answer after it."""
    tools = [
        {
            "type": "function",
            "function": {
                "name": "word_counter",
                "description": "Counts words",
                "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
            },
        }
    ]
    messages: list = [{"role": "user", "content": "Count [demo:tool=word_counter]\nTopic: Rust"}]
    first = client(demo_server).chat.completions.create(model="m", messages=messages, tools=tools)
    call = (first.choices[0].message.tool_calls or [None])[0]
    assert first.choices[0].finish_reason == "tool_calls" and call is not None
    assert call.function.name == "word_counter" and '"text": "Rust"' in call.function.arguments
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "1 words"},
    ]
    second = client(demo_server).chat.completions.create(model="m", messages=messages, tools=tools)
    assert second.choices[0].message.content == "The tool answered: 1 words"
    unmarked = client(demo_server).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Topic: Rust"}], tools=tools
    )
    assert unmarked.choices[0].message.tool_calls is None  # no marker: no tool call


def test_named_demo_models_differ_in_speed_and_style() -> None:
    """`demo-fast` is quick and terse, `demo-thorough` slow and long; the default is unchanged."""
    from crewdash.demo.models import demo_model, judge_reply

    ask = [{"role": "user", "content": "Topic: named models"}]
    base, fast, thorough = (
        compose_answer(ask, m) for m in ("crewdash-demo", "demo-fast", "demo-thorough")
    )
    assert base.count("\n- ") == 2 and fast.count("\n- ") == 1 and thorough.count("\n- ") == 4
    assert len(fast) < len(base) < len(thorough) and "Summary:" in thorough
    assert base.splitlines()[0] == thorough.splitlines()[0]  # the same pool, a longer answer
    assert demo_model("demo-fast").speed < 1 < demo_model("demo-thorough").speed
    verdict = f"Rubric: clear\nAnswer under review:\n{thorough}\nEnd of answer."
    assert judge_reply(verdict) == judge_reply(verdict)  # deterministic
    assert (judge_reply(verdict) or "").startswith("SCORE: ")
    assert judge_reply("no judge here") is None
