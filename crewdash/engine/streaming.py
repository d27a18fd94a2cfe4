"""Streamed model text, routed to its crew and coalesced, and what a broken stream means.

CrewAI emits one `LLMStreamChunkEvent` per chunk, synchronously on the thread that reads the
stream (one of the runner's executor threads, never its event loop). The event listener hands
each chunk here with the crew it belongs to; the chunk is only appended to that crew's pending
list under a short lock; when that crew's text last went to its `Batch` at least `COALESCE_S`
ago, the chunk's thread moves the new text there. So 100 streaming crews cost the batch record
a few hundred updates a second instead of one per token, with no thread of its own (a stream
sends a chunk every few tens of milliseconds, so no text waits long); a call's end and a crew's
end flush at once, so a reader always sees a crew's text before its final state.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field, replace

import httpx

from crewdash.base.errors import RetryBudgetSpent
from crewdash.model.batch import Batch, Span

COALESCE_S = 0.25
CALL_SEPARATOR = "\n\n"  # between the streamed answers of one crew's successive LLM calls


@dataclass
class _Pending:
    batch: Batch
    run_id: str
    call_id: str | None = None
    parts: list[str] = field(default_factory=list)
    wrote: bool = False  # some text of this crew already reached the batch (or is queued)
    last_flush: float = 0.0


class StreamTap:
    """Per-crew buffers of streamed text between the event listener and the batch record."""

    def __init__(self, interval_s: float = COALESCE_S) -> None:
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._pending: dict[tuple[int, str], _Pending] = {}

    def chunk(self, batch: Batch, run_id: str, call_id: str | None, text: str, at: float) -> None:
        """One chunk of a crew's model call (called on the thread reading the stream)."""
        first = False
        with self._lock:
            key = (id(batch), run_id)
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pending[key] = _Pending(batch, run_id, last_flush=time.monotonic())
            if pending.call_id != call_id:
                first = True
                if pending.wrote:
                    pending.parts.append(CALL_SEPARATOR)
                pending.call_id = call_id
            pending.parts.append(text)
            pending.wrote = True
            due = time.monotonic() - pending.last_flush >= self.interval_s
            ready = self._take(pending) if due else ""
        if first and call_id:
            batch.record_span(run_id, call_id, lambda s: _first_token(s, at))
        if ready:
            batch.append_text(run_id, ready)

    def flush(self, batch: Batch, run_id: str) -> None:
        """Move this crew's pending text into the batch now (a call or the crew ended)."""
        with self._lock:
            pending = self._pending.get((id(batch), run_id))
            text = self._take(pending) if pending else ""
        if text:
            batch.append_text(run_id, text)

    def forget(self, batch: Batch, run_id: str, *, drop_text: bool = False) -> None:
        """The crew's stream is over: flush what is left (or drop it and the crew's text)."""
        with self._lock:
            pending = self._pending.pop((id(batch), run_id), None)
            text = self._take(pending) if pending else ""
        if drop_text:
            batch.reset_text(run_id)
        elif text:
            batch.append_text(run_id, text)

    def _take(self, pending: _Pending) -> str:
        text = "".join(pending.parts)
        pending.parts.clear()
        pending.last_flush = time.monotonic()
        return text


def _first_token(span: Span, at: float) -> Span:
    return span if span.first_token_at is not None else replace(span, first_token_at=at)


_tap = StreamTap()


def stream_tap() -> StreamTap:
    """The one tap of this process (the event bus it hangs off is process-wide too)."""
    return _tap


def stream_failure(exc: BaseException) -> str | None:
    """Why a failed crew's failure came from streaming, in plain words, or None.

    A provider refusing `stream=true` (a 400 that names streaming), a stream cut off before its
    end, a chunk that is not JSON: each is worth one more run of that crew without streaming.
    """
    causes: list[BaseException] = [exc]
    while (nxt := causes[-1].__cause__ or causes[-1].__context__) and len(causes) < 8:
        causes.append(nxt)
    if any(isinstance(c, RetryBudgetSpent) for c in causes):
        return None  # the transport's failures (429, 5xx, a bad body): not streaming's
    for cause in causes:
        text = str(cause).lower()
        status = getattr(cause, "status_code", None)
        if (status == 400 or "error code: 400" in text) and "stream" in text:
            return "the provider does not accept streaming"
        if isinstance(cause, httpx.RemoteProtocolError | httpx.ReadError) or (
            "incomplete chunked read" in text or "peer closed connection" in text
        ):
            return "the stream was cut off before the answer ended"
        if isinstance(cause, json.JSONDecodeError):
            return "the stream sent a malformed chunk"
    return None
