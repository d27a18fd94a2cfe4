"""Retries and a shared rate limit for LLM HTTP calls, at the transport under the OpenAI client.

Transient failures (HTTP 429 honouring `Retry-After`, 5xx, connection errors, timeouts, a 200
whose JSON body is malformed) are retried by tenacity with exponential backoff and jitter;
permanent ones (400, 401, 403, 404, ...) pass straight through so they fail at once.

Inside a crew run the limit is the crew's `RetryBudget` (failed tries and seconds), not one call's:
CrewAI issues a failed call again (its agent re-runs the task, its rate-limit loop re-sends a 429),
so a per-call limit multiplied into dozens of requests. Once the crew's budget is spent, every
further call of that crew fails at once with `RetryBudgetSpent`, without a request. A per-call
timeout cuts a hung call so that it counts as one failed try. Outside a crew (a connection check, a
benchmark) each call gets a budget of its own from the transport's `RetryPolicy`.
"""

from __future__ import annotations

import contextvars
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    wait_exponential_jitter,
)

from crewdash.base.errors import RetryBudgetSpent

TRANSIENT_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 60.0
# With a per-crew timeout, one call may take at most this share of it: a hung call is cut in time
# for a retry to still fit in the crew's time.
CALL_TIMEOUT_SHARE = 1 / 3

RetryHook = Callable[[str, float], None]  # (why, seconds to wait) before each retry
WaitHook = Callable[[float], None]  # seconds a call just waited for the rate limit / governor


class Limiter(Protocol):
    """What the transport asks before each attempt and tells after it (`RateLimiter`, or the
    rate governor of `crewdash.providers.governor.core`)."""

    def acquire(self, request: httpx.Request) -> float:
        """Wait until `request` may go; the seconds waited."""
        ...

    def settle(self, request: httpx.Request, response: httpx.Response | None) -> None:
        """Learn from the answer (its headers; its body when already read); None: the attempt
        got no answer."""
        ...


@dataclass(frozen=True)
class RetryPolicy:
    """One call's limits, for calls made outside a crew run (no `RetryBudget` set)."""

    attempts: int = 5
    max_total_s: float = 90.0
    initial_s: float = 0.5
    max_wait_s: float = 8.0


class RetryBudget:
    """How much failing one crew run may do across all its calls: at most `tries` failed attempts
    and `seconds` spent in failed attempts and in waits before retries. Thread-safe: a crew's
    calls run on several threads."""

    def __init__(
        self,
        tries: int,
        seconds: float,
        *,
        call_timeout_s: float | None = None,
        on_retry: RetryHook | None = None,
        per_crew: bool = True,
        on_wait: WaitHook | None = None,
    ) -> None:
        if tries < 1 or seconds <= 0:
            raise ValueError("a retry budget needs at least 1 try and more than 0 seconds")
        self.tries = tries
        self.seconds = seconds
        self.call_timeout_s = call_timeout_s
        self.on_retry = on_retry
        self.on_wait = on_wait
        self.per_crew = per_crew
        self.failures = 0
        self.spent_s = 0.0
        self.last_failure: str | None = None
        self._closed = False
        self._lock = threading.Lock()

    @property
    def spent(self) -> bool:
        with self._lock:
            return self._closed or self.failures >= self.tries or self.spent_s >= self.seconds

    def fail(self, seconds: float, why: str) -> None:
        """One failed attempt that took `seconds`."""
        with self._lock:
            self.failures += 1
            self.spent_s += seconds
            self.last_failure = why

    def allows(self, wait_s: float) -> bool:
        """Whether a retry after waiting `wait_s` still fits; if not, the budget is closed."""
        with self._lock:
            if self.failures < self.tries and self.spent_s + wait_s < self.seconds:
                return True
            self._closed = True
            return False

    def wait(self, seconds: float) -> None:
        with self._lock:
            self.spent_s += seconds

    def error(self) -> RetryBudgetSpent:
        """The error every call of a crew gets once its budget is spent."""
        with self._lock:
            last = self.last_failure or "calls kept failing"
            return RetryBudgetSpent(
                f"{last[0].upper()}{last[1:]}; gave up after {self.failures} failed "
                f"{'try' if self.failures == 1 else 'tries'} in {self.spent_s:.0f} s (retry "
                f"budget per crew: {self.tries} tries, {self.seconds:g} s)"
            )


crew_budget: contextvars.ContextVar[RetryBudget | None] = contextvars.ContextVar(
    "crewdash_crew_budget", default=None
)


def call_timeout(per_call_s: float, crew_timeout_s: float | None) -> float:
    """One call's timeout: the configured one, at most `CALL_TIMEOUT_SHARE` of the crew's."""
    if crew_timeout_s is None:
        return per_call_s
    return min(per_call_s, crew_timeout_s * CALL_TIMEOUT_SHARE)


class RateLimiter:
    """Request starts spaced evenly, `60 / per_minute` seconds apart, across all threads (no
    bursts: a steady pace, not a sliding window)."""

    def __init__(self, per_minute: int) -> None:
        if per_minute < 1:
            raise ValueError("the rate limit must be at least 1 request per minute")
        self.interval = 60.0 / per_minute
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self, request: httpx.Request | None = None) -> float:
        """Wait for this caller's turn; returns how long it waited."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        wait = start - now
        if wait > 0:
            time.sleep(wait)
        return wait

    def settle(self, request: httpx.Request, response: httpx.Response | None) -> None:
        """A fixed pace learns nothing from answers."""


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


def _cap_timeout(request: httpx.Request, limit_s: float | None) -> None:
    """Make every phase of this request's timeout at most `limit_s`."""
    if limit_s is None:
        return
    current = request.extensions.get("timeout") or {}
    request.extensions["timeout"] = {
        phase: limit_s if current.get(phase) is None else min(current[phase], limit_s)
        for phase in ("connect", "read", "write", "pool")
    }


def _describe(error: BaseException, request: httpx.Request) -> str:
    """A failed attempt in words (no "rate limit" wording: CrewAI would re-send on that)."""
    limits = request.extensions.get("timeout") or {}
    if isinstance(error, httpx.ConnectTimeout):
        return f"no connection to the model within {limits.get('connect') or 0:g} s (timeout)"
    if isinstance(error, httpx.TimeoutException):
        return f"the model did not answer within {limits.get('read') or 0:g} s (timeout)"
    if isinstance(error, httpx.ConnectError):
        return "cannot connect to the model (connection refused or unknown host)"
    return f"the connection to the model failed ({type(error).__name__})"


def _malformed(response: httpx.Response) -> bool:
    """A 200 that claims JSON but is not (a body cut short): worth another try."""
    if response.status_code != 200 or "json" not in response.headers.get("content-type", ""):
        return False
    response.read()
    try:
        json.loads(response.content)
    except ValueError:
        return True
    return False


def _failure(response: httpx.Response) -> str | None:
    if response.status_code in TRANSIENT_STATUS:
        return f"HTTP {response.status_code} from the model"
    if _malformed(response):
        return "the model answered a malformed body (not JSON)"
    return None


class ResilientTransport(httpx.HTTPTransport):
    """An httpx transport that retries transient failures within a budget and honours a shared
    rate limit."""

    def __init__(
        self, policy: RetryPolicy | None = None, limiter: Limiter | None = None, **kwargs: Any
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

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        budget = crew_budget.get()
        if budget is None:
            budget = RetryBudget(self.policy.attempts, self.policy.max_total_s, per_crew=False)
        elif budget.spent:
            raise budget.error()  # a call CrewAI issues again: no request, no wait
        _cap_timeout(request, budget.call_timeout_s)
        failed: list[str | None] = [None]  # why this call's latest attempt failed, if it did

        def attempt() -> httpx.Response:
            if self.limiter is not None:
                waited = self.limiter.acquire(request)
                if waited > 0.01 and budget.on_wait is not None:
                    budget.on_wait(waited)
            started = time.monotonic()
            try:
                response = super(ResilientTransport, self).handle_request(request)
            except httpx.TransportError as exc:
                if self.limiter is not None:
                    self.limiter.settle(request, None)
                failed[0] = why = _describe(exc, request)
                budget.fail(time.monotonic() - started, why)
                raise
            if response.status_code in TRANSIENT_STATUS:
                response.read()
            failed[0] = _failure(response)
            if self.limiter is not None:
                self.limiter.settle(request, response)
            if failed[0] is not None:
                budget.fail(time.monotonic() - started, failed[0])
            return response

        def before_sleep(state: RetryCallState) -> None:
            wait = state.next_action.sleep if state.next_action else 0.0
            budget.wait(wait)
            if state.outcome is not None and not state.outcome.failed:
                state.outcome.result().close()
            if budget.on_retry is not None:
                budget.on_retry(failed[0] or "a failure", wait)

        def give_up(state: RetryCallState) -> httpx.Response:
            assert state.outcome is not None
            error = state.outcome.exception() if state.outcome.failed else None
            if budget.per_crew:  # this and every later call of the crew fail with one message
                raise budget.error() from error
            if error is not None:  # one call out of tries: its last exception as it was,
                raise error
            response: httpx.Response = state.outcome.result()
            return response  # or its last response, whose status the client raises

        retrying = Retrying(
            stop=lambda state: not budget.allows(state.upcoming_sleep),
            wait=self._wait,
            retry=retry_if_exception_type(httpx.TransportError)
            | retry_if_result(lambda _: failed[0] is not None),
            before_sleep=before_sleep,
            retry_error_callback=give_up,
        )
        return retrying(attempt)


_limiters: dict[tuple[str, int], RateLimiter] = {}
_limiters_lock = threading.Lock()


def shared_limiter(endpoint: str, per_minute: int | None) -> RateLimiter | None:
    """The process-wide limiter for one endpoint (None when no limit is set)."""
    if not per_minute:
        return None
    with _limiters_lock:
        return _limiters.setdefault((endpoint, per_minute), RateLimiter(per_minute))
