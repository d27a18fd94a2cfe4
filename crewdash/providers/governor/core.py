"""The rate governor: one per (endpoint, API key), shared by every crew, batch and session.

A provider limits requests and tokens per minute per key and answers a 429 past them. Sending
blind either wastes capacity (a limit set too low) or sets off a storm of 429s and retry waits.
The governor instead estimates each request's tokens before sending it, and sends only when both
the requests window and the tokens window have room; otherwise the call waits here, not in a
429. It learns the limits from OpenAI's `x-ratelimit-*` headers (or takes them from settings),
pauses everyone after a 429's `retry-after`, and releases waiting calls with a little jitter
after a window frees, so they do not arrive as a herd (and land after the provider's own window
moved, whose clock is a few milliseconds behind ours).

The windows are `limits`' moving windows (in memory, or in Redis when `REDIS_URL` is set, so
several processes on one key share them; while Redis is down or silent, in memory, see
`crewdash.base.redis_link`). A per-minute limit L is enforced in quanta, as OpenAI does (600 RPM as
60 per 6 seconds; see `windows.per_minute_window`).

One governor per key is kept by `registry`; what it reads from answers is in `headers`
(limits) and `estimate` (tokens).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from limits.storage import MemoryStorage, Storage
from limits.strategies import MovingWindowRateLimiter
from redis.exceptions import RedisError

from crewdash.base.redis_link import RedisLink
from crewdash.providers.governor.estimate import Estimate, TokenEstimator, UsageTap, request_body
from crewdash.providers.governor.headers import read_rate_headers
from crewdash.providers.governor.windows import Limit, limit_for

log = logging.getLogger(__name__)

MAX_PAUSE_S = 60.0  # a retry-after or reset of hours is capped here (and said so)
TOKEN_MARGIN = 1.02  # estimates are charged 2% high: an answer may run longer than the average
# Each 429 that still comes makes the governor this much more careful (token charges and
# release jitter), up to SAFETY_MAX; each answer without one relaxes it by SAFETY_RELAX. A busy
# machine delays requests between our stamp and the provider's, and this absorbs it.
SAFETY_STEP = 1.05
SAFETY_MAX = 1.3
SAFETY_RELAX = 0.002
# Waiting calls are released this long after the window frees (seconds: base + share of the
# window, times 1..2 at random), so they are spread out and reach the provider after its window
# moved too (its clock reads our request a few ms later than we stamped it).
JITTER_BASE_S = 0.05
JITTER_SHARE = 0.01
# Limits unknown (no settings, no answer yet): one call goes first and the others wait for its
# answer's headers, at most this long, instead of all bursting into 429s.
PROBE_WAIT_S = 30.0
ESTIMATE_KEY = "crewdash_estimate"  # where a request carries its estimate, across retries
PROBE_KEY = "crewdash_probe"  # the call sent before the limits were known


@dataclass(frozen=True)
class GovernorState:
    """One governor as the page shows it (a snapshot)."""

    name: str  # the endpoint (never the key)
    rpm: int | None
    tpm: int | None
    requests_left: int | None  # in the current quantum window
    tokens_left: int | None
    window_s: float | None
    waiting: int
    calls: int
    waits: int
    wait_s: float
    http_429: int
    paused_s: float  # how long every call still waits after a 429 / an empty window
    shared: bool  # through Redis
    notes: tuple[str, ...] = ()
    redis_problem: str | None = None  # Redis configured but down or silent: governing alone


class Governor:
    """Paces one (endpoint, key)'s calls under its requests and tokens per minute.

    `clock` and `sleep` (wall-clock seconds) and `rng` are parameters so tests can drive the
    arithmetic with a fake clock; the windows themselves are `limits`'.
    """

    def __init__(
        self,
        name: str,
        identity: str,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        storage: Storage | None = None,
        link: RedisLink | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        probe: bool = True,
    ) -> None:
        self.name = name
        self.probe = probe  # limits unknown: one call first, the others wait for its answer
        self.identity = identity  # a digest of endpoint + key: the windows' shared id
        # this process's windows; the shared ones in Redis (`link`) whenever it answers
        self._link = link
        self._local_windows = MovingWindowRateLimiter(storage or MemoryStorage())
        self._shared_windows = MovingWindowRateLimiter(link.storage) if link else None
        self.estimator = TokenEstimator()
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._admit = threading.Lock()  # one caller at a time asks the windows
        self._lock = threading.Lock()  # counters and learned values
        self._configured = (rpm, tpm)
        self._learned: tuple[int | None, int | None] = (None, None)
        self._requests = limit_for(rpm)
        self._tokens = limit_for(tpm)
        self._paused_until = 0.0
        self.safety = 1.0  # grows with 429s, shrinks with answers (SAFETY_*)
        self._answered = False  # an answer (or a failed attempt) came back on this key
        self._probe_since: float | None = None
        # the first call's answer streams: its headers came, its usage (last chunk) not yet
        self._usage_since: float | None = None
        self.waiting = 0
        self.calls = 0
        self.waits = 0
        self.wait_s = 0.0
        self.http_429 = 0
        self.notes: list[str] = []

    def reset(self) -> None:
        """Forget what was learned and counted (a benchmark's fresh start; a new server on a
        port an old one used). Windows kept in Redis are shared and stay."""
        with self._lock:
            self._learned = (None, None)
            self._apply()
            self._paused_until = 0.0
            self.safety = 1.0
            self._answered = False
            self._probe_since = None
            self._usage_since = None
            self.calls = self.waits = self.http_429 = 0
            self.wait_s = 0.0
            self.notes.clear()
            self._local_windows = MovingWindowRateLimiter(MemoryStorage())
            self.estimator = TokenEstimator()

    # -- limits ------------------------------------------------------------------------------

    def configure(self, rpm: int | None, tpm: int | None) -> None:
        """Limits from settings (the sidebar, the environment); None: learn from headers."""
        with self._lock:
            self._configured = (rpm, tpm)
            self._apply()

    def _apply(self) -> None:
        """Effective limits: where settings and headers both give one, the lower wins (a
        contradiction is noted once)."""
        effective = []
        for kind, set_, learned in zip(
            ("requests", "tokens"), self._configured, self._learned, strict=True
        ):
            if set_ and learned and learned < set_:
                self._note(f"the provider allows {learned} {kind}/min, below the setting {set_}")
            values = [v for v in (set_, learned) if v]
            effective.append(min(values) if values else None)
        rpm, tpm = effective
        if (self._requests.per_minute if self._requests else None) != rpm:
            self._requests = limit_for(rpm)
        if (self._tokens.per_minute if self._tokens else None) != tpm:
            self._tokens = limit_for(tpm)

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            log.warning("rate governor %s: %s", self.name, text)
            del self.notes[:-5]

    @property
    def link(self) -> RedisLink | None:
        """The Redis its windows are shared through (None: this process's alone)."""
        return self._link

    def relink(self, link: RedisLink | None) -> None:
        """Share the windows through another Redis, or none: the process's `REDIS_URL` is
        not the one this governor was made with (a later runtime of the same process)."""
        # no lock: a caller may hold `_admit` for a long wait; for one call in flight either
        # Redis is right, both are valid objects
        self._shared_windows = MovingWindowRateLimiter(link.storage) if link else None
        self._link = link

    @property
    def shared(self) -> bool:
        """Whether the windows are in Redis now (configured, and answering)."""
        return self._link is not None and self._link.problem is None

    @property
    def windows(self) -> MovingWindowRateLimiter:
        """The shared windows while Redis answers, else this process's (asking while Redis is
        down may start a probe in the background, never waited for)."""
        if self._shared_windows is not None and self._link is not None and self._link.usable():
            return self._shared_windows
        return self._local_windows

    @property
    def configured(self) -> tuple[int | None, int | None]:
        return self._configured

    @property
    def limits(self) -> tuple[int | None, int | None]:
        with self._lock:
            return (
                self._requests.per_minute if self._requests else None,
                self._tokens.per_minute if self._tokens else None,
            )

    # -- admission ---------------------------------------------------------------------------

    def jitter(self, window_s: float) -> float:
        """The delay after a window frees before a waiting call goes: base + share, × 1..2."""
        base = (JITTER_BASE_S + JITTER_SHARE * window_s) * self.safety
        return base * (1 + self._rng.random())

    def _charge(self, estimate: Estimate, tokens: Limit) -> int:
        """Tokens charged to the window: the estimate with its margin, at most one window (a
        request larger than a whole quantum takes all of it rather than waiting forever)."""
        charge = estimate.total * TOKEN_MARGIN * self.safety
        return min(tokens.amount, max(1, math.ceil(charge)))

    def _free_in(self, estimate: Estimate) -> tuple[float, float]:
        """(seconds until both windows admit this call, the larger window's length); 0 now."""
        with self._lock:
            requests, tokens = self._requests, self._tokens
        windows = self.windows
        waits, window = [0.0], 0.0
        now = time.time()  # `limits` stamps entries with the wall clock
        for limit, cost in (
            (requests, 1),
            (tokens, self._charge(estimate, tokens) if tokens else 0),
        ):
            if limit is None:
                continue
            window = max(window, float(limit.seconds))
            if not windows.test(limit.item, self.identity, cost=cost):
                reset = windows.get_window_stats(limit.item, self.identity).reset_time
                waits.append(max(0.005, reset - now))
        return max(waits), window

    def _take(self, estimate: Estimate) -> bool:
        with self._lock:
            requests, tokens = self._requests, self._tokens
        windows = self.windows
        if requests is not None and not windows.hit(requests.item, self.identity):
            return False
        if tokens is not None:
            # Another process may have taken the tokens since the test: then the request entry
            # is spent for nothing (conservative: it never lets more through).
            return windows.hit(tokens.item, self.identity, cost=self._charge(estimate, tokens))
        return True

    def acquire(self, request: httpx.Request) -> float:
        """Wait until this request may go; returns the seconds it waited."""
        estimate = request.extensions.get(ESTIMATE_KEY)
        if not isinstance(estimate, Estimate):
            estimate = self.estimator.estimate(request_body(request))
            request.extensions[ESTIMATE_KEY] = estimate
        started = self._clock()
        with self._lock:
            self.waiting += 1
        try:
            with self._admit:
                waited_for_window = False
                while True:
                    probe = self._probe()
                    if probe == "go":
                        request.extensions[PROBE_KEY] = True
                        break
                    if probe == "wait":
                        self._sleep(0.02)
                        waited_for_window = True
                        continue
                    paused = self._paused_until - self._clock()
                    if paused > 0:
                        self._sleep(paused)
                        waited_for_window = True
                        continue
                    estimate = self.estimator.update(estimate)
                    try:
                        free_in, window = self._free_in(estimate)
                    except Exception as exc:  # noqa: BLE001 - Redis gone mid-batch
                        self._fall_back(exc)
                        continue
                    if free_in > 0:
                        self._sleep(free_in)
                        waited_for_window = True
                        continue
                    if waited_for_window:  # released after a reset: spread out, then go
                        self._sleep(self.jitter(window))
                        waited_for_window = False
                    try:
                        if self._take(estimate):
                            request.extensions[ESTIMATE_KEY] = estimate
                            break
                    except Exception as exc:  # noqa: BLE001 - Redis gone mid-batch
                        self._fall_back(exc)
        finally:
            waited = self._clock() - started
            with self._lock:
                self.waiting -= 1
                self.calls += 1
                if waited > 0.001:
                    self.waits += 1
                    self.wait_s += waited
        return waited

    def _probe(self) -> str:
        """ "go" for the first call while the limits are unknown, "wait" for the others until
        its answer (at most `PROBE_WAIT_S`), "" once limits are known or the answer came.

        A streamed first answer teaches the limits with its headers but its tokens only with
        its last chunk: the others wait for that too, else they all go charged at the blind
        guess (measured 27% above the true cost), which underfilled the first window and cost
        the streamed benchmark a whole extra 6-s quantum (1.18x the bound instead of ~1.05)."""
        with self._lock:
            if self._usage_since is not None:
                if self._clock() - self._usage_since < PROBE_WAIT_S:
                    return "wait"
                self._usage_since = None  # the stream never ended: stop holding the others
            if not self.probe or self._answered or self._requests or self._tokens:
                return ""
            now = self._clock()
            if self._probe_since is None:
                self._probe_since = now
                return "go"
            if now - self._probe_since < PROBE_WAIT_S:
                return "wait"
            self._answered = True  # the first call never came back: stop holding the others
            return ""

    def _fall_back(self, exc: BaseException) -> None:
        """Shared windows unreachable or silent (past the timeout): govern this process alone
        rather than fail or hold the calls; the link warns once and probes for Redis."""
        if self._link is None or not isinstance(exc, RedisError):
            raise exc
        self._link.failed(exc)

    # -- learning from answers ---------------------------------------------------------------

    def pause(self, seconds: float, why: str) -> None:
        """Hold every call of this key for `seconds` (capped at `MAX_PAUSE_S`), plus jitter."""
        if seconds > MAX_PAUSE_S:
            self._note(f"{why} of {seconds:.0f} s capped at {MAX_PAUSE_S:g} s")
            seconds = MAX_PAUSE_S
        until = self._clock() + seconds + self.jitter(1.0)
        with self._lock:
            self._paused_until = max(self._paused_until, until)

    def settle(self, request: httpx.Request, response: httpx.Response | None) -> None:
        """Learn from one answer: limits from its headers, a pause after a 429 or an empty
        window, and (for a JSON body already read) the true token counts. None: the attempt
        failed without an answer."""
        with self._lock:
            self._answered = True
        if response is None:
            return
        headers = read_rate_headers(response.headers)
        for problem in headers.problems:
            self._note(f"rate-limit header {problem}")
        with self._lock:
            learned = (
                headers.limit_requests or self._learned[0],
                headers.limit_tokens or self._learned[1],
            )
            if learned != self._learned:
                self._learned = learned
                self._apply()
        estimate = request.extensions.get(ESTIMATE_KEY)
        probe = bool(request.extensions.pop(PROBE_KEY, False))
        if probe and isinstance(estimate, Estimate):
            # the first call went before the windows knew the limits: count it now (late, so
            # on the safe side), else the provider's window holds one call more than ours
            try:
                self._take(estimate)
            except Exception as exc:  # noqa: BLE001 - counted late or not at all, never fatal
                with contextlib.suppress(Exception):
                    self._fall_back(exc)
        if response.status_code == 429:
            with self._lock:
                self.http_429 += 1
                self.safety = min(SAFETY_MAX, self.safety * SAFETY_STEP)
            self.pause(
                headers.retry_after_s
                if headers.retry_after_s is not None
                else headers.reset_requests_s or 1.0,
                "a retry-after",
            )
        else:
            with self._lock:
                self.safety = max(1.0, self.safety - SAFETY_RELAX)
        # `remaining` and `reset` of a 200 are not turned into pauses: they describe the
        # provider's window when it answered (ours already paced this key into it), and pausing
        # on them held every call for a whole quantum (measured: 1.44x the bound instead of ~1).
        streamed = "text/event-stream" in response.headers.get("content-type", "")
        if response.status_code == 200 and isinstance(estimate, Estimate) and streamed:
            # a stream's usage comes in its last chunk: read it as the caller reads the stream
            if probe and self.estimator.seen == 0:
                with self._lock:
                    self._usage_since = self._clock()

            def on_usage(usage: Mapping[str, Any] | None) -> None:
                if usage is not None:
                    self.estimator.learn(estimate, usage)
                with self._lock:
                    self._usage_since = None

            response.stream = UsageTap(response.stream, on_usage)
        elif (
            response.status_code == 200
            and isinstance(estimate, Estimate)
            and "json" in response.headers.get("content-type", "")
            and response.is_stream_consumed
        ):
            try:
                usage = response.json().get("usage")
            except (ValueError, AttributeError):
                usage = None
            if isinstance(usage, dict):
                self.estimator.learn(estimate, usage)

    def state(self) -> GovernorState:
        with self._lock:
            requests, tokens = self._requests, self._tokens
            paused = max(0.0, self._paused_until - self._clock())
            counters = (self.waiting, self.calls, self.waits, self.wait_s, self.http_429)
            notes = tuple(self.notes)
        left: list[int | None] = []
        for limit in (requests, tokens):
            if limit is None:
                left.append(None)
                continue
            try:  # after a failure the next limit is read from this process's windows
                left.append(self.windows.get_window_stats(limit.item, self.identity).remaining)
            except Exception as exc:  # noqa: BLE001 - Redis gone: the gauge says unknown
                with contextlib.suppress(Exception):
                    self._fall_back(exc)
                left.append(None)
        problem = self._link.problem if self._link is not None else None
        windows = [float(lim.seconds) for lim in (requests, tokens) if lim is not None]
        return GovernorState(
            name=self.name,
            rpm=requests.per_minute if requests else None,
            tpm=tokens.per_minute if tokens else None,
            requests_left=left[0],
            tokens_left=left[1],
            window_s=max(windows) if windows else None,
            waiting=counters[0],
            calls=counters[1],
            waits=counters[2],
            wait_s=round(counters[3], 3),
            http_429=counters[4],
            paused_s=round(paused, 3),
            shared=self.shared,
            notes=notes,
            redis_problem=problem,
        )
