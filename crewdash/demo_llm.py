"""The embedded demo model: a real OpenAI-compatible HTTP server with simulated latency.

CrewAI reaches it through its ordinary OpenAI provider, so the product's real path (HTTP, JSON,
token usage) runs unchanged with no API key and no network. Answers are deterministic and
topic-aware; latency is seeded and shaped like a hosted API so concurrency is visible.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, get_args

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from crewdash.config import DEMO_MODEL_NAME
from crewdash.demo_limits import LimitEmulator, ProviderLimits
from crewdash.demo_models import DEMO_MODELS, demo_model, judge_reply, shape_answer
from crewdash.settings import DemoProfile

ProfileKind = DemoProfile
PROFILE_KINDS: tuple[ProfileKind, ...] = get_args(DemoProfile)
PROFILE_LABELS: dict[str, str] = {
    "fixed": "Fixed latency",
    "hosted": "Hosted-API-like (1–3 s, long tail)",
    "slow": "Slow (~6 s)",
}

_TOKEN = re.compile(r"\w+|[^\w\s]")
_REPLY_EXACTLY = re.compile(r"Reply with exactly:\s*(.+)")
_TOPIC_LINE = re.compile(r"^Topic:\s*(.+)$", re.MULTILINE)
# A prompt containing this marker gets that HTTP error: a deterministic failing input for demos.
FAIL_MARKER = re.compile(r"\[demo:fail-([45]\d\d)\]")
# A prompt containing this marker, sent with that tool offered, gets a call of the tool first
# (once per conversation): a deterministic way to exercise a crew's custom tools.
TOOL_MARKER = re.compile(r"\[demo:tool=([A-Za-z0-9_\-]+)\]")
# A prompt containing this marker breaks a *streamed* answer (non-streamed calls are unaffected):
# `reject` refuses stream=true with a 400, `cut` drops the connection mid-answer, `malformed`
# sends a chunk that is not JSON. The bad inputs a streaming client must survive.
STREAM_MARKER = re.compile(r"\[demo:stream=(reject|cut|malformed)\]")
# Seconds between two SSE events of one stream: tokens due meanwhile travel together, as hosted
# APIs batch them under load; one event per token would cost 100 streams ~5000 events a second.
STREAM_TICK_S = 0.08

_BULLETS = (
    "{t} is drawing steady attention, with teams reporting faster iteration after adopting it.",
    "Recent write-ups on {t} focus on cost, reliability and fit with existing stacks.",
    "Practitioners say the hardest part of {t} is evaluation, not the initial setup.",
    "Open-source activity around {t} rose this quarter, led by tooling and integrations.",
    "Critics of {t} point to unclear benchmarks and vendor claims that are hard to verify.",
    "Analysts expect {t} to consolidate around a few well-supported options within a year.",
    "Early adopters of {t} recommend small pilots with clear success metrics before scaling.",
    "Documentation and community support for {t} improved noticeably in recent releases.",
)


@dataclass(frozen=True)
class LatencyProfile:
    """How long the demo model 'thinks' before its first token, and how fast it then writes.

    A call takes its time to first token (TTFT) plus its answer's tokens at a tokens-per-second
    rate, streamed or not. `fixed` waits `seconds` and writes at `tokens_per_s` (None: the whole
    answer at once, as the benchmarks want); `hosted` draws a TTFT log-normal around 0.6 s and a
    rate around 40 tokens/s per request, so a three-bullet answer takes mostly 1-3 s with a long
    tail like a hosted API; `slow` is the same shape around 2 s and 12 tokens/s.
    """

    kind: ProfileKind = "hosted"
    seconds: float = 1.0
    seed: int = 7
    tokens_per_s: float | None = None  # `fixed` only; the others draw their own rate

    def __post_init__(self) -> None:
        if self.kind not in PROFILE_KINDS:
            raise ValueError(f"unknown latency profile {self.kind!r}; use one of {PROFILE_KINDS}")
        if not (0.0 <= self.seconds <= 600.0):
            raise ValueError("demo latency must be between 0 and 600 seconds")
        if self.tokens_per_s is not None and not 0.1 <= self.tokens_per_s <= 100_000:
            raise ValueError("demo tokens per second must be between 0.1 and 100000")

    def ttft_for(self, key: str) -> float:
        """Seconds to the first token of one request, a pure function of the seed and the text."""
        if self.kind == "fixed":
            return self.seconds
        median, lo, hi = (0.6, 0.2, 4.0) if self.kind == "hosted" else (2.0, 0.8, 10.0)
        rng = random.Random(f"{self.seed}:{key}")
        return min(hi, max(lo, rng.lognormvariate(math.log(median), 0.45)))

    def rate_for(self, key: str) -> float | None:
        """Tokens per second while writing one answer (None: all at once)."""
        if self.kind == "fixed":
            return self.tokens_per_s
        median, lo, hi = (40.0, 15.0, 120.0) if self.kind == "hosted" else (12.0, 5.0, 30.0)
        rng = random.Random(f"{self.seed}:rate:{key}")
        return min(hi, max(lo, rng.lognormvariate(math.log(median), 0.3)))

    def delay_for(self, key: str, tokens: int = 0) -> float:
        """The whole call: TTFT plus writing `tokens` tokens (what a non-streamed call waits)."""
        rate = self.rate_for(key)
        return self.ttft_for(key) + (tokens / rate if rate else 0.0)

    def describe(self) -> str:
        if self.kind == "fixed":
            rate = f", {self.tokens_per_s:g} tokens/s" if self.tokens_per_s else ""
            return f"fixed {self.seconds:g} s{rate}"
        if self.kind == "hosted":
            return "hosted-API-like, ~1-3 s (TTFT ~0.6 s, ~40 tokens/s)"
        return "slow, ~6 s (TTFT ~2 s, ~12 tokens/s)"


FAILURE_KINDS = ("429", "500", "hang", "malformed")


@dataclass(frozen=True)
class FailureRates:
    """Injected failures, each a share of requests (0-1), drawn from a seeded sequence.

    `429` answers Too Many Requests with `Retry-After`; `500` a server error; `hang` never
    answers within `hang_s` (a timeout for the client); `malformed` a 200 whose body is not JSON.
    """

    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_hang: float = 0.0
    rate_malformed: float = 0.0
    retry_after_s: float = 1.0
    hang_s: float = 600.0
    seed: int = 7

    def __post_init__(self) -> None:
        rates = (self.rate_429, self.rate_500, self.rate_hang, self.rate_malformed)
        if any(not 0.0 <= r <= 1.0 for r in rates) or sum(rates) > 1.0:
            raise ValueError("failure rates must be between 0 and 1 and add up to at most 1")

    @property
    def any(self) -> bool:
        return any((self.rate_429, self.rate_500, self.rate_hang, self.rate_malformed))

    @classmethod
    def parse(cls, spec: str, seed: int = 7) -> FailureRates:
        """`"429=0.05,500=0.02,hang=0.01,malformed=0.01"` (also used by CREWDASH_DEMO_FAILURES)."""
        rates: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            kind, _, value = part.partition("=")
            if kind.strip() not in FAILURE_KINDS:
                raise ValueError(f"unknown failure {kind!r}; use {', '.join(FAILURE_KINDS)}")
            try:
                rates[kind.strip()] = float(value)
            except ValueError:
                raise ValueError(
                    f"failure rate for {kind} must be a number, got {value!r}"
                ) from None
        return cls(
            rate_429=rates.get("429", 0.0),
            rate_500=rates.get("500", 0.0),
            rate_hang=rates.get("hang", 0.0),
            rate_malformed=rates.get("malformed", 0.0),
            seed=seed,
        )

    def pick(self, n: int) -> str | None:
        """The failure for the n-th request, or None."""
        if not self.any:
            return None
        draw = random.Random(f"{self.seed}:fail:{n}").random()
        for kind, rate in zip(
            FAILURE_KINDS,
            (self.rate_429, self.rate_500, self.rate_hang, self.rate_malformed),
            strict=True,
        ):
            if draw < rate:
                return kind
            draw -= rate
        return None

    def describe(self) -> str:
        parts = [
            f"{k} {r:.0%}"
            for k, r in zip(
                FAILURE_KINDS,
                (self.rate_429, self.rate_500, self.rate_hang, self.rate_malformed),
                strict=True,
            )
            if r
        ]
        return ", ".join(parts) or "no failures"


def count_tokens(text: str) -> int:
    """A stable token count (words and punctuation), so usage figures are real sums of the text."""
    return len(_TOKEN.findall(text))


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal parts: keep the text ones
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def compose_tool_call(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> dict[str, Any] | None:
    """The tool call the demo model makes, if any: the tool a `[demo:tool=name]` marker in the
    prompt names, when that tool is offered and no tool has answered in this conversation yet.
    Its string arguments get the prompt's topic (or a short gist of the prompt)."""
    if not tools or any(m.get("role") == "tool" for m in messages):
        return None
    prompt = "\n".join(_message_text(m) for m in messages)
    marker = TOOL_MARKER.search(prompt)
    if marker is None:
        return None
    wanted = marker.group(1)
    for tool in tools:
        function = tool.get("function") or {}
        if function.get("name") != wanted:
            continue
        topic = _TOPIC_LINE.search(prompt)
        text = topic.group(1).strip() if topic else " ".join(prompt.split())[:200]
        params = function.get("parameters") or {}
        arguments = {
            name: text
            for name, spec in (params.get("properties") or {}).items()
            if isinstance(spec, dict) and spec.get("type", "string") == "string"
        }
        return {
            "id": f"call_{uuid.uuid4().hex[:12]}",
            "type": "function",
            "function": {"name": wanted, "arguments": json.dumps(arguments)},
        }
    return None


def compose_answer(messages: list[dict[str, Any]], model: str = DEMO_MODEL_NAME) -> str:
    """The deterministic answer to a conversation: an echo, a judge's verdict, bullets in the
    model's style, or a short note (after a tool call, the note starts with what the tool
    answered)."""
    prompt = "\n".join(_message_text(m) for m in messages)
    if messages and messages[-1].get("role") == "tool":
        said = " ".join(_message_text(messages[-1]).split())[:200]
        return f"The tool answered: {said}"
    if match := _REPLY_EXACTLY.search(prompt):
        return match.group(1).strip()
    if (verdict := judge_reply(prompt)) is not None:
        return verdict
    if match := _TOPIC_LINE.search(prompt):
        topic = match.group(1).strip()
        seed = int.from_bytes(hashlib.sha256(topic.encode("utf-8")).digest()[:8], "big")
        picks = random.Random(seed).sample(_BULLETS, 5)  # a prefix of it is the 3-sample
        return shape_answer(model, topic, [b.format(t=topic) for b in picks])
    last = next((_message_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
    gist = " ".join(last.split())[:80] or "the request"
    return f"Simulated answer (demo model) about: {gist}"


class ChatRequest(BaseModel):
    """The part of OpenAI's chat request the demo model reads; other fields are accepted."""

    model_config = ConfigDict(extra="allow")

    model: str = DEMO_MODEL_NAME
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None


class ServerStats:
    """Thread-safe request counters: total requests and peak in-flight calls; `marked` counts
    the requests a `[demo:fail-NNN]` marker answered (not in `requests`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.marked = 0
        self.requests = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.max_delay = 0.0
        self.failures = 0
        self.ttfts: dict[str, float] = {}  # configured TTFT per streamed completion id (recent)

    def record_ttft(self, completion_id: str, ttft: float) -> None:
        """Keep what a stream was told to wait, so a benchmark can compare what it measured."""
        with self._lock:
            if len(self.ttfts) >= 10_000:
                self.ttfts.pop(next(iter(self.ttfts)))
            self.ttfts[completion_id] = ttft

    def enter(self, delay: float = 0.0) -> None:
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            self.max_delay = max(self.max_delay, delay)

    def mark(self) -> None:
        with self._lock:
            self.marked += 1

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def reset_peak(self) -> None:
        """Start a new measurement: peak in-flight and slowest delay from now on."""
        with self._lock:
            self.peak_in_flight = self.in_flight
            self.max_delay = 0.0


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
        prompt = "\n".join(_message_text(m) for m in body.messages)
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
            chunks, render = _stream(
                completion_id, created, body.model, answer, tool_call, usage, include_usage
            )
            pace = _Pace(ttft=ttft, rate=rate, fault=broken.group(1) if broken else None)
            counters.record_ttft(completion_id, ttft)
            return StreamingResponse(
                _paced(counters, pace, chunks, render),
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


@dataclass(frozen=True)
class _Pace:
    ttft: float
    rate: float | None
    fault: str | None = None  # "cut" or "malformed": break the stream half-way


class StreamCut(Exception):
    """Raised inside a stream to drop the connection mid-answer (uvicorn closes it)."""


Chunk = tuple[str, str]  # ("event", an SSE event) or ("text", one token of the answer)


async def _paced(
    stats: ServerStats, pace: _Pace, chunks: list[Chunk], render: Callable[[str], str]
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


def _stream(
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


class DemoLLMServer:
    """Runs the demo model under uvicorn in a daemon thread of this process.

    It listens on 127.0.0.1 unless told otherwise: `host="0.0.0.0"` serves the Ray workers of
    a multi-machine cluster (`python -m crewdash demo-llm --host 0.0.0.0`).
    """

    def __init__(
        self,
        profile: LatencyProfile | None = None,
        port: int = 0,
        failures: FailureRates | None = None,
        host: str = "127.0.0.1",
        limits: ProviderLimits | None = None,
    ) -> None:
        self.host = host
        self.limits = limits or ProviderLimits()
        self.profile = profile or LatencyProfile()
        self.failures = failures or FailureRates()
        self.stats = ServerStats()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.port: int = self._sock.getsockname()[1]
        app = create_app(self.profile, self.stats, self.failures, self.limits)
        self.app_limits: LimitEmulator | None = app.state.limits  # its counters, for benchmarks
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_keep_alive=30,
            backlog=2048,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            daemon=True,
            name="crewdash-demo-llm",
        )

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (ends in /v1)."""
        host = socket.getfqdn() if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/v1"

    def start(self, timeout: float = 10.0) -> DemoLLMServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the demo model server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._sock.close()

    def __enter__(self) -> DemoLLMServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
