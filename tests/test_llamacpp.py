"""Crews against a real local llama.cpp server (OpenAI-compatible), end to end and offline.

The model is a 270M base model whose words mean nothing; what is tested is the path: CrewAI's
OpenAI-compatible provider, real HTTP, real token usage coming back into the runner's spans.
Without the model or the server this module skips, except under CI=true, where it fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from openai import OpenAI

from crewdash.engine.plans import RunSettings
from crewdash.engine.runner import Runner
from crewdash.model.batch import CrewState
from crewdash.providers.llm import LLMSettings
from tests.llamacpp import LlamaCppServer, assemble_model

MAX_TOKENS = 24


@pytest.fixture(scope="module")
def llama() -> Iterator[LlamaCppServer]:
    try:
        server = LlamaCppServer(assemble_model(), n_parallel=4, n_predict=32)
    except Exception as exc:  # noqa: BLE001 - any failure to set up is reported the same way
        reason = f"no local llama.cpp server: {type(exc).__name__}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield server
    finally:
        server.close()


def test_openai_client_gets_a_completion_with_usage(llama: LlamaCppServer) -> None:
    client = OpenAI(base_url=llama.base_url, api_key="x", max_retries=0, timeout=60)
    try:
        reply = client.chat.completions.create(
            model=llama.model_id,
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=8,
        )
    finally:
        client.close()
    assert reply.choices
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 0
    assert 0 < reply.usage.completion_tokens <= 8
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_runner_runs_crews_through_the_openai_compatible_provider(llama: LlamaCppServer) -> None:
    settings = RunSettings(
        llm=LLMSettings(
            provider="openai_compatible",
            model=llama.model_id,
            base_url=llama.base_url,
            max_tokens=MAX_TOKENS,
        ),
        max_concurrency=4,
    )
    runner = Runner()
    try:
        batch_id = runner.submit("timing", ["alpha", "beta"], settings)
        assert runner.batch(batch_id).wait(300), "batch did not finish"
        snap = runner.snapshot(batch_id)
    finally:
        runner.close()

    assert [c.topic for c in snap.crews] == ["alpha", "beta"]
    for crew in snap.crews:
        assert crew.state is CrewState.SUCCEEDED, crew.error
        assert isinstance(crew.result, str) and crew.result.strip()
        llm_spans = [s for s in crew.spans if s.kind == "llm"]
        assert llm_spans, "no LLM call was recorded for this crew"
        assert any(s.tokens.total > 0 for s in llm_spans)
        # streamed (the default): the text arrived in chunks, with a time to first token
        assert crew.ttft_s is not None and 0 < crew.ttft_s < 60
        assert crew.live_text.strip() and llm_spans[0].first_token_at is not None
        assert crew.tokens.total > 0
