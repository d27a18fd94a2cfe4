"""Retries and a shared rate limit for LLM HTTP calls, at the transport under the OpenAI client.

Transient failures (HTTP 429 honouring `Retry-After`, 5xx, connection errors, timeouts) are
retried by tenacity with exponential backoff and jitter, bounded in tries and total time;
permanent ones (400, 401, 403, 404, ...) pass straight through so they fail at once. Every retry
is recorded as a span on the crew whose call it was, so it shows in the timeline. An optional
requests-per-minute limit per endpoint is shared by every crew and batch in the process.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from crewdash.events import current_run

TRANSIENT_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 60.0


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    max_total_s: float = 90.0
    initial_s: float = 0.5
    max_wait_s: float = 8.0


class RateLimiter:
    """At most `per_minute` request starts per sliding minute, across all threads."""

    def __init__(self, per_minute: int) -> None:
        if per_minute < 1:
            raise ValueError("the rate limit must be at least 1 request per minute")
        self.interval = 60.0 / per_minute
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Wait for this caller's turn; returns how long it waited."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        wait = start - now
        if wait > 0:
            time.sleep(wait)
        return wait


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(value)))
    except ValueError:
        try:
            return min(
                MAX_RETRY_AFTER_S, max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
            )
        except (TypeError, ValueError):
            return None


def _record_retry(reason: str, wait_s: float) -> None:
    ref = current_run.get()
    if ref is None:
        return
    batch, run_id = ref
    now = time.time()
    batch.record_span(
        run_id,
        f"retry-{uuid.uuid4().hex[:8]}",
        lambda s: replace(
            s, kind="retry", name=f"retry after {reason}", started_at=now, finished_at=now + wait_s
        ),
    )
    batch.note_step(run_id, f"retrying after {reason} (in {wait_s:.1f} s)")


class ResilientTransport(httpx.HTTPTransport):
    """An httpx transport that retries transient failures and honours a shared rate limit."""

    def __init__(
        self, policy: RetryPolicy | None = None, limiter: RateLimiter | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.policy = policy or RetryPolicy()
        self.limiter = limiter
        self._backoff = wait_exponential_jitter(
            initial=self.policy.initial_s, max=self.policy.max_wait_s, jitter=self.policy.initial_s
        )

    def _wait(self, state: RetryCallState) -> float:
        outcome = state.outcome
        if outcome is not None and not outcome.failed:
            after = _retry_after(outcome.result())
            if after is not None:
                return after
        return float(self._backoff(state))

    def _before_sleep(self, state: RetryCallState) -> None:
        outcome = state.outcome
        wait = state.next_action.sleep if state.next_action else 0.0
        if outcome is None:
            return
        if outcome.failed:
            reason = type(outcome.exception()).__name__
        else:
            response = outcome.result()
            reason = f"HTTP {response.status_code}"
            response.close()
        _record_retry(reason, wait)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        def attempt() -> httpx.Response:
            if self.limiter is not None:
                self.limiter.acquire()
            response = super(ResilientTransport, self).handle_request(request)
            if response.status_code in TRANSIENT_STATUS:
                response.read()
            return response

        retrying = Retrying(
            stop=stop_after_attempt(self.policy.attempts)
            | stop_after_delay(self.policy.max_total_s),
            wait=self._wait,
            retry=retry_if_exception_type(httpx.TransportError)
            | retry_if_result(lambda r: r.status_code in TRANSIENT_STATUS),
            before_sleep=self._before_sleep,
            retry_error_callback=_give_up,
        )
        return retrying(attempt)


def _give_up(state: RetryCallState) -> httpx.Response:
    """Out of tries: the last response goes to the client (which raises its status error), or
    the last exception is raised as it was."""
    assert state.outcome is not None
    if state.outcome.failed:
        error = state.outcome.exception()
        assert error is not None
        raise error
    response: httpx.Response = state.outcome.result()
    return response


_limiters: dict[tuple[str, int], RateLimiter] = {}
_limiters_lock = threading.Lock()


def shared_limiter(endpoint: str, per_minute: int | None) -> RateLimiter | None:
    """The process-wide limiter for one endpoint (None when no limit is set)."""
    if not per_minute:
        return None
    with _limiters_lock:
        return _limiters.setdefault((endpoint, per_minute), RateLimiter(per_minute))
