"""What a person spends a day, and the daily cap that bounds it (`CREWDASH_DAILY_CAP_USD`,
`CREWDASH_DAILY_CAP_TOKENS`).

A batch counts on the (UTC) day it starts, for the person who started it. Until it is done it
counts as at least its estimate (a reservation), so a person cannot start ten batches at once
that are each under the cap alone; once done, it counts what its crews really spent. A model
with a price counts in dollars against the USD cap; a model without one counts its tokens against
the token cap (with only a USD cap set, such a model cannot be kept under it and is refused).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from crewdash.base.errors import CrewdashError, SettingsError


class SpendCapExceeded(CrewdashError):
    """A batch that would take its person past their daily cap: refused before it starts."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s  # until the next UTC day


@dataclass(frozen=True)
class Spend:
    """One person's spend over a period: dollars on priced models, tokens on unpriced ones
    (and all tokens, for showing)."""

    usd: float = 0.0
    unpriced_tokens: int = 0
    tokens: int = 0
    batches: int = 0

    def __add__(self, other: Spend) -> Spend:
        return Spend(
            self.usd + other.usd,
            self.unpriced_tokens + other.unpriced_tokens,
            self.tokens + other.tokens,
            self.batches + other.batches,
        )


@dataclass(frozen=True)
class SpendCap:
    """At most `usd` dollars (priced models) and `tokens` tokens (unpriced models) per person and
    UTC day; None: no cap of that kind."""

    usd: float | None = None
    tokens: int | None = None

    def __post_init__(self) -> None:
        for value in (self.usd, self.tokens):
            if value is not None and (not math.isfinite(value) or value <= 0):
                raise SettingsError("a daily cap must be more than 0 (leave it unset for none)")

    @property
    def active(self) -> bool:
        return self.usd is not None or self.tokens is not None

    def describe(self) -> str:
        parts = [f"${self.usd:,.2f}" if self.usd is not None else ""]
        parts.append(f"{self.tokens:,} tokens of unpriced models" if self.tokens else "")
        return " and ".join(p for p in parts if p) or "no cap"

    def left(self, spent: Spend) -> tuple[float | None, int | None]:
        """What is left today in each unit (None: no cap of that kind)."""
        usd = None if self.usd is None else max(0.0, self.usd - spent.usd)
        tokens = None if self.tokens is None else max(0, self.tokens - spent.unpriced_tokens)
        return usd, tokens

    def refusal(self, spent: Spend, model: str, cost_usd: float | None, tokens: int) -> str | None:
        """Why a batch estimated at `cost_usd` (None: `model` has no price) and `tokens` would
        take a person who has spent `spent` today past this cap, or None."""
        usd_left, tokens_left = self.left(spent)
        if cost_usd is not None:
            if usd_left is None or cost_usd <= usd_left:
                return None
            return (
                f"this batch is estimated at ${cost_usd:,.4f} and you have ${usd_left:,.4f} left "
                f"of your daily cap of ${self.usd:,.2f} (spent today ${spent.usd:,.4f}); "
                "run fewer topics, set Max tokens, or wait for tomorrow (UTC)"
            )
        if tokens_left is None:
            if usd_left is None:
                return None
            return (
                f"model {model!r} has no price in prices.yaml, so your daily cap in dollars "
                "cannot be kept: add its price (CREWDASH_PRICES_FILE), or ask an admin to set "
                "CREWDASH_DAILY_CAP_TOKENS"
            )
        if tokens <= tokens_left:
            return None
        return (
            f"this batch is estimated at {tokens:,} tokens and you have {tokens_left:,} left of "
            f"your daily cap of {self.tokens:,} tokens on unpriced models (spent today "
            f"{spent.unpriced_tokens:,}); run fewer topics, set Max tokens, or wait for "
            "tomorrow (UTC)"
        )


def day_start(now: float | None = None) -> float:
    """The start of the UTC day holding `now` (a Unix time)."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def month_start(now: float | None = None) -> float:
    """The start of the UTC month holding `now`."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


def until_tomorrow(now: float | None = None) -> float:
    """Seconds until the next UTC day (a refusal's Retry-After)."""
    now = time.time() if now is None else now
    start = datetime.fromtimestamp(day_start(now), UTC) + timedelta(days=1)
    return max(1.0, start.timestamp() - now)
