"""A call's tokens: estimated before it is sent (so the governor can charge the tokens window),
then learned from the `usage` the answer reports (a streamed answer's in its last chunk)."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import httpx

DEFAULT_OUTPUT_SHARE = 0.5  # before any answer is seen: an answer half the prompt's size


@lru_cache(maxsize=32)
def _encoding(model: str) -> Any:
    """tiktoken's encoding for a known OpenAI model, None when unknown or not loadable (its
    files come from the network on first use; offline the estimate falls back)."""
    try:
        import tiktoken

        return tiktoken.encoding_for_model(model.split("/", 1)[-1])
    except Exception:  # noqa: BLE001 - unknown model, no network: use the estimate
        return None


def _prompt_text(body: Mapping[str, Any]) -> str:
    parts: list[str] = []
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
        if message.get("tool_calls"):
            parts.append(json.dumps(message["tool_calls"]))
    if body.get("tools"):
        parts.append(json.dumps(body["tools"]))
    return "\n".join(parts)


@dataclass(frozen=True)
class Estimate:
    """One request's tokens before it is sent: prompt (`raw_prompt` before calibration) and
    output (`max_tokens` when given, else the running average)."""

    prompt: int
    output: int
    raw_prompt: int
    exact_prompt: bool  # counted with tiktoken
    bounded_output: bool  # from max_tokens

    @property
    def total(self) -> int:
        return self.prompt + self.output


class TokenEstimator:
    """Prompt tokens with tiktoken when the model is known to it; else characters / 4, scaled by
    the ratio the provider's `usage` showed so far. Output: `max_tokens`, else the running
    average of answers (half the prompt until one is seen). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.prompt_ratio = 1.0  # actual prompt tokens / raw estimate, learned
        self.output_avg: float | None = None
        self.seen = 0

    def estimate(self, body: Mapping[str, Any]) -> Estimate:
        text = _prompt_text(body)
        encoding = _encoding(str(body.get("model") or ""))
        if encoding is not None:
            raw, exact = len(encoding.encode(text)), True
        else:
            raw, exact = max(1, math.ceil(len(text) / 4)), False
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        output = cap if isinstance(cap, int) and cap > 0 else 0
        return self.update(Estimate(raw, output, raw, exact, output > 0))

    def update(self, estimate: Estimate) -> Estimate:
        """`estimate` with what was learned since it was made (a call may wait a while)."""
        with self._lock:
            ratio, average = self.prompt_ratio, self.output_avg
        raw = estimate.raw_prompt
        prompt = raw if estimate.exact_prompt else max(1, math.ceil(raw * ratio))
        if estimate.bounded_output:
            return replace(estimate, prompt=prompt)
        guess = average if average is not None else prompt * DEFAULT_OUTPUT_SHARE
        return replace(estimate, prompt=prompt, output=max(1, math.ceil(guess)))

    def learn(self, estimate: Estimate, usage: Mapping[str, Any]) -> None:
        """Fold one answer's `usage` in (exponential averages, so a changed prompt shape is
        followed within a few calls)."""
        prompt, output = usage.get("prompt_tokens"), usage.get("completion_tokens")
        with self._lock:
            self.seen += 1
            weight = max(0.1, 1 / self.seen)
            if isinstance(prompt, int) and prompt > 0 and not estimate.exact_prompt:
                ratio = prompt / max(1, estimate.raw_prompt)
                self.prompt_ratio += weight * (ratio - self.prompt_ratio)
            if isinstance(output, int) and output >= 0:
                avg = self.output_avg
                self.output_avg = output if avg is None else avg + weight * (output - avg)


class UsageTap(httpx.SyncByteStream):
    """A streamed answer passed through unchanged; the `usage` of the first SSE chunk that has
    one (OpenAI's `stream_options.include_usage`: the last before `[DONE]`) goes to `on_usage`,
    or None when the stream ends or is closed without one."""

    def __init__(self, inner: Any, on_usage: Callable[[Mapping[str, Any] | None], None]) -> None:
        self._inner = inner
        self._on_usage: Callable[[Mapping[str, Any] | None], None] | None = on_usage
        self._tail = b""

    def __iter__(self) -> Any:
        # The OpenAI SDK closes the stream at `[DONE]` without reading on: look as chunks pass.
        for chunk in self._inner:
            if self._on_usage is not None:
                self._tail = (self._tail + chunk)[-8192:]
                if b'"usage"' in self._tail:
                    self._look()
            yield chunk
        self._done()

    def _done(self) -> None:
        on_usage, self._on_usage = self._on_usage, None
        if on_usage is not None:
            on_usage(None)

    def _look(self) -> None:
        lines = self._tail.split(b"\n")
        for line in lines[:-1]:  # complete lines only
            if line.startswith(b"data: {") and b'"usage"' in line:
                try:
                    usage = json.loads(line[6:]).get("usage")
                except (ValueError, AttributeError):
                    continue
                if isinstance(usage, dict) and self._on_usage is not None:
                    self._on_usage(usage)
                    self._on_usage = None
                    return
        self._tail = lines[-1]

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if callable(close):
                close()
        finally:
            self._done()


def request_body(request: httpx.Request) -> dict[str, Any]:
    """A request's JSON body, for its estimate (empty when it has none or it is not JSON)."""
    try:
        body = json.loads(request.content or b"{}")
    except (ValueError, httpx.RequestNotRead):
        return {}
    return body if isinstance(body, dict) else {}
