"""A streamed answer of the demo model: OpenAI's `chat.completion.chunk` SSE events, sent on
the latency profile's clock, and the broken streams a client must survive."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from crewdash.demo.stats import ServerStats

# A prompt containing this marker breaks a *streamed* answer (non-streamed calls are unaffected):
# `reject` refuses stream=true with a 400, `cut` drops the connection mid-answer, `malformed`
# sends a chunk that is not JSON. The bad inputs a streaming client must survive.
STREAM_MARKER = re.compile(r"\[demo:stream=(reject|cut|malformed)\]")
# Seconds between two SSE events of one stream: tokens due meanwhile travel together, as hosted
# APIs batch them under load; one event per token would cost 100 streams ~5000 events a second.
STREAM_TICK_S = 0.08


@dataclass(frozen=True)
class Pace:
    """How one stream is sent: its time to first token, tokens per second, and a fault."""

    ttft: float
    rate: float | None
    fault: str | None = None  # "cut" or "malformed": break the stream half-way


class StreamCut(Exception):
    """Raised inside a stream to drop the connection mid-answer (uvicorn closes it)."""


Chunk = tuple[str, str]  # ("event", an SSE event) or ("text", one token of the answer)


async def paced(
    stats: ServerStats, pace: Pace, chunks: list[Chunk], render: Callable[[str], str]
) -> AsyncIterator[str]:
    """The SSE events on the profile's clock: the role at once, the first token after the TTFT,
    then each token when the rate says it is due; tokens that fall due within one tick travel in
    one chunk, as hosted APIs batch them under load (one event per token would cost 100 streams
    several thousand events a second of this process's CPU)."""
    stats.enter(pace.ttft)
    try:
        loop = asyncio.get_running_loop()
        yield chunks[0][1]
        await asyncio.sleep(pace.ttft)
        start = loop.time()
        sent = 0  # tokens sent so far
        out: list[str] = []
        text: list[str] = []
        half = len(chunks) // 2
        for i, (kind, value) in enumerate(chunks[1:], start=1):
            if pace.fault and i == half:
                if pace.fault == "cut":
                    raise StreamCut("demo: stream cut off mid-answer")
                out.append('data: {"id": "chatcmpl-broken", "choices": [{"delta": \n\n')
            due = start + (sent / pace.rate if pace.rate and kind == "text" else 0.0)
            wait = due - loop.time()
            if wait > 0 and (out or text):
                yield "".join(out) + (render("".join(text)) if text else "")
                out, text = [], []
                await asyncio.sleep(max(wait, STREAM_TICK_S))
            if kind == "text":
                text.append(value)
                sent += 1
            else:
                if text:
                    out.append(render("".join(text)))
                    text = []
                out.append(value)
        if out or text:
            yield "".join(out) + (render("".join(text)) if text else "")
    finally:
        stats.leave()


def sse_chunks(
    completion_id: str,
    created: int,
    model: str,
    answer: str,
    tool_call: dict[str, Any] | None,
    usage: dict[str, int],
    include_usage: bool,
) -> tuple[list[Chunk], Callable[[str], str]]:
    """OpenAI's chat.completion.chunk events for one answer, and how to render a content delta:
    the role, the answer's tokens (or the tool call's name, then its arguments in pieces), the
    finish reason, and the usage in the final chunk when the client asked for it."""

    def event(delta: dict[str, Any], finish: str | None, **extra: Any) -> str:
        payload = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(payload)}\n\n"

    parts: list[Chunk] = [("event", event({"role": "assistant", "content": ""}, None))]
    if tool_call is not None:
        function = tool_call["function"]
        head = {"index": 0, "id": tool_call["id"], "type": "function"}
        named = {**head, "function": {"name": function["name"], "arguments": ""}}
        parts.append(("event", event({"tool_calls": [named]}, None)))
        arguments = function["arguments"]
        for piece in (arguments[i : i + 16] for i in range(0, len(arguments), 16)):
            delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
            parts.append(("event", event(delta, None)))
        parts.append(("event", event({}, "tool_calls")))
    else:
        # Each token with the whitespace before it, so the pieces add up to the answer exactly.
        pieces = re.findall(r"\s*(?:\w+|[^\w\s])", answer) or [answer]
        tail = answer[len("".join(pieces)) :]
        if tail:
            pieces[-1] += tail
        parts += [("text", p) for p in pieces]
        parts.append(("event", event({}, "stop")))
    if include_usage:
        usage_event = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage,
        }
        parts.append(("event", f"data: {json.dumps(usage_event)}\n\n"))
    parts.append(("event", "data: [DONE]\n\n"))
    return parts, lambda text: event({"content": text}, None)
