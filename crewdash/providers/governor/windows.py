"""The quantum windows a per-minute limit is enforced in, as OpenAI does (600 RPM as 60 per 6
seconds): shared by the governor and the demo model's limit emulator, so both count alike."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from limits import RateLimitItemPerSecond


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


@dataclass
class Limit:
    """One per-minute limit as its quantum window (`amount` per `seconds`)."""

    per_minute: int
    amount: int
    seconds: int
    item: RateLimitItemPerSecond = field(init=False)

    def __post_init__(self) -> None:
        self.item = RateLimitItemPerSecond(self.amount, self.seconds, namespace="crewdash-gov")


def limit_for(per_minute: int | None) -> Limit | None:
    """The window of a per-minute limit; None for no limit (None or 0)."""
    if not per_minute:
        return None
    amount, seconds = per_minute_window(per_minute)
    return Limit(per_minute, amount, seconds)
