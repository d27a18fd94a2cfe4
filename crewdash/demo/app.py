"""The demo model's OpenAI-compatible ASGI app: `/v1/chat/completions` (plain or streamed, with
injected failures and emulated provider limits), `/v1/models` and `/healthz`."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from crewdash.base.config import DEMO_MODEL_NAME
from crewdash.demo.answers import compose_answer, compose_tool_call, count_tokens, message_text
from crewdash.demo.limits import LimitEmulator
from crewdash.demo.models import DEMO_MODELS, demo_model
from crewdash.demo.profiles import FailureRates, LatencyProfile
from crewdash.demo.stats import ServerStats
from crewdash.demo.streaming import STREAM_MARKER, Pace, paced, sse_chunks
from crewdash.providers.limits import ProviderLimits

# A prompt containing this marker gets that HTTP error: a deterministic failing input for demos.
FAIL_MARKER = re.compile(r"\[demo:fail-([45]\d\d)\]")
# `[demo:wait=N]` in a prompt: N more seconds before the first token (at most 600), so a test or
# a demo holds a crew running as long as it needs, whatever the latency profile
WAIT_MARKER = re.compile(r"\[demo:wait=(\d{1,3}(?:\.\d{1,3})?)\]")


class ChatRequest(BaseModel):
    """The part of OpenAI's chat request the demo model reads; other fields are accepted."""

    model_config = ConfigDict(extra="allow")

    model: str = DEMO_MODEL_NAME
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind}})


def create_app(
    profile: LatencyProfile,
    stats: ServerStats | None = None,
    failures: FailureRates | None = None,
    limits: ProviderLimits | None = None,
) -> FastAPI:
    """The ASGI app: `/v1/chat/completions`, `/v1/models` and `/healthz`."""
    app = FastAPI(title="crewdash demo model", docs_url=None, redoc_url=None)
    emulator = LimitEmulator(limits) if limits is not None and limits.any else None
    app.state.limits = emulator
    counters = stats or ServerStats()
    app.state.stats = counters
    inject = failures or FailureRates()
    sequence = iter(range(1 << 62))
    sequence_lock = threading.Lock()

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(400, f"invalid request: {where or 'body'}: {first.get('msg', 'malformed')}")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        entries = [
            {"id": name, "object": "model", "created": 0, "owned_by": "crewdash"}
            for name in DEMO_MODELS
        ]
        return {"object": "list", "data": entries}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest, request: Request) -> Response:
        prompt = "\n".join(message_text(m) for m in body.messages)
        if marker := FAIL_MARKER.search(prompt):
            counters.mark()
            status = int(marker.group(1))
            return _error(
                status,
                f"simulated failure {status} (demo marker in the prompt)",
                "server_error" if status >= 500 else "invalid_request_error",
            )
        tool_call = compose_tool_call(body.messages, body.tools)
        answer = "" if tool_call else compose_answer(body.messages, body.model)
        usage = {
            "prompt_tokens": count_tokens(prompt),
            "completion_tokens": count_tokens(answer),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        key = LimitEmulator.key_of(request.headers.get("authorization"))
        if emulator is not None and (refused := emulator.refusal(key, usage, _max_tokens(body))):
            return refused
        speed = demo_model(body.model).speed  # a slower named model waits and writes slower
        ttft, rate = profile.ttft_for(prompt) * speed, profile.rate_for(prompt)
        if wait := WAIT_MARKER.search(prompt):
            ttft += min(600.0, float(wait.group(1)))
        rate = rate / speed if rate and speed > 0 else rate
        written = usage["completion_tokens"] or count_tokens(json.dumps(tool_call or ""))
        delay = ttft + (written / rate if rate else 0.0)
        broken = STREAM_MARKER.search(prompt) if body.stream else None
        if broken is not None and broken.group(1) == "reject":
            counters.mark()
            return _error(400, "stream=true is not supported for this model (demo marker)")
        with sequence_lock:
            failure = inject.pick(next(sequence))
        if failure == "429":
            counters.failures += 1
            return JSONResponse(
                status_code=429,
                headers={"retry-after": f"{inject.retry_after_s:g}"},
                content={
                    "error": {
                        "message": "simulated rate limit (demo failure injection)",
                        "type": "rate_limit_error",
                    }
                },
            )
        if failure == "500":
            counters.failures += 1
            return _error(500, "simulated server error (demo failure injection)", "server_error")
        if failure == "hang":
            counters.failures += 1
            await asyncio.sleep(inject.hang_s)
        if failure == "malformed":
            counters.failures += 1
            await asyncio.sleep(delay)
            return Response(
                '{"id": "chatcmpl-broken", "choices": [',
                status_code=200,
                media_type="application/json",
            )
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            chunks, render = sse_chunks(
                completion_id, created, body.model, answer, tool_call, usage, include_usage
            )
            pace = Pace(ttft=ttft, rate=rate, fault=broken.group(1) if broken else None)
            counters.record_ttft(completion_id, ttft)
            return StreamingResponse(
                paced(counters, pace, chunks, render),
                media_type="text/event-stream",
                headers=emulator.headers(key) if emulator else None,
            )
        counters.enter(delay)
        try:
            await asyncio.sleep(delay)
        finally:
            counters.leave()
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": body.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer}
                        if tool_call is None
                        else {"role": "assistant", "content": None, "tool_calls": [tool_call]},
                        "finish_reason": "stop" if tool_call is None else "tool_calls",
                    }
                ],
                "usage": usage,
            },
            headers=emulator.headers(key) if emulator else None,
        )

    return app


def _max_tokens(body: ChatRequest) -> int | None:
    extra = body.model_extra or {}
    value = extra.get("max_completion_tokens") or extra.get("max_tokens")
    return value if isinstance(value, int) else None
