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
several processes on one key share them). A per-minute limit L is enforced in quanta, as OpenAI
does (600 RPM as 60 per 6 seconds; see `per_minute_window`).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import httpx
from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter

log = logging.getLogger(__name__)

MAX_PAUSE_S = 60.0  # a retry-after or reset of hours is capped here (and said so)
TOKEN_MARGIN = 1.02  # estimates are charged 2% high: an answer may run longer than the average
# Each 429 that still comes makes the governor this much more careful (token charges and
# release jitter), up to SAFETY_MAX; each answer without one relaxes it by SAFETY_RELAX. A busy
# machine delays requests between our stamp and the provider's, and this absorbs it.
SAFETY_STEP = 1.05
SAFETY_MAX = 1.3
SAFETY_RELAX = 0.002
DEFAULT_OUTPUT_SHARE = 0.5  # before any answer is seen: an answer half the prompt's size
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


def per_minute_window(limit: int) -> tuple[int, int]:
    """(amount, seconds) of the quantum enforcing `limit` per minute exactly: a tenth of it per
    6 s when it divides (a quantum that holds dozens of calls' tokens, so whole calls fill it),
    else L/g per 60/g s with g = gcd(L, 60)."""
    if limit < 1:
        raise ValueError("a per-minute limit must be at least 1")
    if limit % 10 == 0:
        return limit // 10, 6
    g = math.gcd(limit, 60)
    return limit // g, 60 // g


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(text: str | None) -> float | None:
    """OpenAI's reset durations (`1s`, `6m0s`, `20ms`, `1h2m3.5s`) or plain seconds; None if
    garbled or negative."""
    if text is None:
        return None
    value = text.strip().lower()
    try:
        seconds = float(value)
        return seconds if seconds >= 0 and math.isfinite(seconds) else None
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * scale[u] for n, u in parts)


def _count(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return value if value >= 0 else None


@dataclass(frozen=True)
class RateHeaders:
    """What one answer's `x-ratelimit-*` headers say; `problems` names what was unusable."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None
    retry_after_s: float | None = None
    problems: tuple[str, ...] = ()


def read_rate_headers(headers: Mapping[str, str]) -> RateHeaders:
    """The rate-limit headers of one answer; garbled or contradictory values are dropped (and
    named in `problems`), never trusted and never fatal."""
    problems: list[str] = []
    values: dict[str, Any] = {}
    for kind in ("requests", "tokens"):
        for part, parse in (("limit", _count), ("remaining", _count), ("reset", parse_duration)):
            name = f"x-ratelimit-{part}-{kind}"
            raw = headers.get(name)
            value = parse(raw)
            if raw is not None and value is None:
                problems.append(f"{name}: {raw[:40]!r} is not usable")
            key = f"{part}_{kind}" + ("_s" if part == "reset" else "")
            values[key] = value
        limit, remaining = values[f"limit_{kind}"], values[f"remaining_{kind}"]
        if limit == 0:
            problems.append(f"x-ratelimit-limit-{kind}: 0 ignored")
            values[f"limit_{kind}"] = None
        elif limit is not None and remaining is not None and remaining > limit:
            problems.append(f"x-ratelimit-remaining-{kind} {remaining} > limit {limit}: ignored")
            values[f"remaining_{kind}"] = None
    raw_after = headers.get("retry-after-ms")
    after = None if raw_after is None else parse_duration(raw_after)
    after = after / 1000 if after is not None else parse_duration(headers.get("retry-after"))
    if after is None and headers.get("retry-after") is not None:
        problems.append(f"retry-after: {headers['retry-after'][:40]!r} is not usable")
    return RateHeaders(**values, retry_after_s=after, problems=tuple(problems))


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


@dataclass
class _Limit:
    per_minute: int
    amount: int
    seconds: int
    item: RateLimitItemPerSecond = field(init=False)

    def __post_init__(self) -> None:
        self.item = RateLimitItemPerSecond(self.amount, self.seconds, namespace="crewdash-gov")


def _limit(per_minute: int | None) -> _Limit | None:
    if not per_minute:
        return None
    amount, seconds = per_minute_window(per_minute)
    return _Limit(per_minute, amount, seconds)


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
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        probe: bool = True,
    ) -> None:
        self.name = name
        self.probe = probe  # limits unknown: one call first, the others wait for its answer
        self.identity = identity  # a digest of endpoint + key: the windows' shared id
        self.storage = storage or MemoryStorage()
        self.shared = isinstance(self.storage, RedisStorage)
        self.windows = MovingWindowRateLimiter(self.storage)
        self.estimator = TokenEstimator()
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._admit = threading.Lock()  # one caller at a time asks the windows
        self._lock = threading.Lock()  # counters and learned values
        self._configured = (rpm, tpm)
        self._learned: tuple[int | None, int | None] = (None, None)
        self._requests = _limit(rpm)
        self._tokens = _limit(tpm)
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
            if not self.shared:
                self.storage = MemoryStorage()
                self.windows = MovingWindowRateLimiter(self.storage)
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
            self._requests = _limit(rpm)
        if (self._tokens.per_minute if self._tokens else None) != tpm:
            self._tokens = _limit(tpm)

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            log.warning("rate governor %s: %s", self.name, text)
            del self.notes[:-5]

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

    def _charge(self, estimate: Estimate, tokens: _Limit) -> int:
        """Tokens charged to the window: the estimate with its margin, at most one window (a
        request larger than a whole quantum takes all of it rather than waiting forever)."""
        charge = estimate.total * TOKEN_MARGIN * self.safety
        return min(tokens.amount, max(1, math.ceil(charge)))

    def _free_in(self, estimate: Estimate) -> tuple[float, float]:
        """(seconds until both windows admit this call, the larger window's length); 0 now."""
        with self._lock:
            requests, tokens = self._requests, self._tokens
        waits, window = [0.0], 0.0
        now = time.time()  # `limits` stamps entries with the wall clock
        for limit, cost in (
            (requests, 1),
            (tokens, self._charge(estimate, tokens) if tokens else 0),
        ):
            if limit is None:
                continue
            window = max(window, float(limit.seconds))
            if not self.windows.test(limit.item, self.identity, cost=cost):
                reset = self.windows.get_window_stats(limit.item, self.identity).reset_time
                waits.append(max(0.005, reset - now))
        return max(waits), window

    def _take(self, estimate: Estimate) -> bool:
        with self._lock:
            requests, tokens = self._requests, self._tokens
        if requests is not None and not self.windows.hit(requests.item, self.identity):
            return False
        if tokens is not None:
            # Another process may have taken the tokens since the test: then the request entry
            # is spent for nothing (conservative: it never lets more through).
            return self.windows.hit(tokens.item, self.identity, cost=self._charge(estimate, tokens))
        return True

    def acquire(self, request: httpx.Request) -> float:
        """Wait until this request may go; returns the seconds it waited."""
        estimate = request.extensions.get(ESTIMATE_KEY)
        if not isinstance(estimate, Estimate):
            estimate = self.estimator.estimate(_json_body(request))
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
        """Shared windows unreachable: govern this process alone rather than fail the calls."""
        if not self.shared:
            raise exc
        self._note(f"Redis unreachable ({type(exc).__name__}): governing this process alone")
        self.storage = MemoryStorage()
        self.windows = MovingWindowRateLimiter(self.storage)
        self.shared = False

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
            with contextlib.suppress(Exception):
                self._take(estimate)
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

            response.stream = _UsageTap(response.stream, on_usage)
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
            try:
                left.append(self.windows.get_window_stats(limit.item, self.identity).remaining)
            except Exception:  # noqa: BLE001 - Redis gone: the gauge says unknown
                left.append(None)
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
        )


class _UsageTap(httpx.SyncByteStream):
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


def _json_body(request: httpx.Request) -> dict[str, Any]:
    try:
        body = json.loads(request.content or b"{}")
    except (ValueError, httpx.RequestNotRead):
        return {}
    return body if isinstance(body, dict) else {}


def identity(endpoint: str, api_key: str) -> str:
    """The governor's id for one endpoint and key: a digest, so the key is never stored (nor
    sent to Redis)."""
    return hashlib.sha256(f"{endpoint}\n{api_key}".encode()).hexdigest()[:24]


_governors: dict[str, Governor] = {}
_governors_lock = threading.Lock()
_storages: dict[str, Storage] = {}


def _storage(redis_url: str | None) -> Storage:
    """Redis when a URL is given (shared by every process on it), else this process's memory."""
    key = redis_url or ""
    if key not in _storages:
        _storages[key] = RedisStorage(redis_url) if redis_url else MemoryStorage()
    return _storages[key]


def _loopback(endpoint: str) -> bool:
    host = (urlsplit(endpoint).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def governor_for(
    endpoint: str,
    api_key: str,
    rpm: int | None = None,
    tpm: int | None = None,
    redis_url: str | None = None,
    probe: bool | None = None,
) -> Governor:
    """The process-wide governor of one (endpoint, key); the limits given (settings) replace
    the ones it had from settings, learned ones stay.

    `probe` (limits unknown: the first call goes alone and its answer's headers teach the
    limits) defaults to on for remote endpoints and off for this machine's (a local model
    server rarely has limits, and waiting one call's latency at its first use would only
    slow it); the benchmark turns it on for the demo's emulated limits."""
    ident = identity(endpoint, api_key)
    with _governors_lock:
        gov = _governors.get(ident)
        if gov is None:
            try:
                storage = _storage(redis_url)
            except Exception as exc:  # noqa: BLE001 - a bad REDIS_URL must not stop the calls
                log.warning("rate governor: Redis unusable (%s); governing this process alone", exc)
                storage = _storage(None)
            wanted = not _loopback(endpoint) if probe is None else probe
            gov = Governor(endpoint, ident, rpm=rpm, tpm=tpm, storage=storage, probe=wanted)
            _governors[ident] = gov
            return gov
    if probe is not None:
        gov.probe = probe
    if (rpm or tpm) and gov.configured != (rpm, tpm):
        gov.configure(rpm, tpm)
    return gov


def governor_states() -> list[GovernorState]:
    """Every governor of this process, for the page's gauges."""
    with _governors_lock:
        governors = list(_governors.values())
    return [g.state() for g in governors]
