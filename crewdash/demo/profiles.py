"""How the demo model behaves: its latency profiles (time to first token, writing speed) and the
failures it injects (429, 500, hangs, malformed bodies), both seeded so a run is repeatable."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import get_args

from crewdash.base.settings import DemoProfile

ProfileKind = DemoProfile
PROFILE_KINDS: tuple[ProfileKind, ...] = get_args(DemoProfile)
PROFILE_LABELS: dict[str, str] = {
    "fixed": "Fixed latency",
    "hosted": "Hosted-API-like (1–3 s, long tail)",
    "slow": "Slow (~6 s)",
}


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
