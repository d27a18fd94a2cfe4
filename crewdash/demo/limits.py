"""A provider's rate limits, emulated by the demo model: requests and tokens per minute per key.

Like OpenAI: a request past either limit gets a 429 with `retry-after`, and every answer carries
`x-ratelimit-limit-requests`, `-remaining-requests`, `-reset-requests` and the same three for
tokens. The per-minute limits are enforced in quanta (600 RPM as 10 per second; see
`governor.windows.per_minute_window`), as OpenAI says it may, so a burst of a whole minute's
worth in one second is refused. `remaining` is what the current quantum still admits and `reset`
the time until its oldest entry frees. A request costs its prompt tokens plus `max_tokens` when
given (else its answer's tokens), as OpenAI counts it; one larger than a whole quantum takes all
of it.
Off unless limits are set (`CREWDASH_DEMO_LIMITS="rpm=600,tpm=60000"`, sidebar, CLI).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Mapping

from fastapi.responses import JSONResponse
from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from crewdash.providers.governor.windows import per_minute_window
from crewdash.providers.limits import ProviderLimits


def _fmt(seconds: float) -> str:
    return f"{max(0.0, seconds):.3f}s"


class LimitEmulator:
    """The demo server's windows, per API key (a digest of it). Thread-safe: `admit` runs on the
    server's event loop, the counters are read from other threads."""

    def __init__(self, limits: ProviderLimits) -> None:
        self.limits = limits
        self._windows = MovingWindowRateLimiter(MemoryStorage())
        self._items = {
            kind: RateLimitItemPerSecond(*per_minute_window(value), namespace="demo-limits")
            for kind, value in (("requests", limits.rpm), ("tokens", limits.tpm))
            if value
        }
        self._lock = threading.Lock()
        self.admitted = 0
        self.rejected = 0
        self.tokens = 0

    @staticmethod
    def key_of(authorization: str | None) -> str:
        token = (authorization or "").removeprefix("Bearer ").strip()
        return hashlib.sha256(token.encode()).hexdigest()[:16]

    def cost(self, prompt_tokens: int, completion_tokens: int, max_tokens: int | None) -> int:
        """What a request counts against the tokens limit (at most one whole quantum)."""
        cost = prompt_tokens + (max_tokens if max_tokens and max_tokens > 0 else completion_tokens)
        item = self._items.get("tokens")
        return max(1, min(cost, item.amount)) if item else cost

    def admit(self, key: str, cost: int) -> dict[str, str] | None:
        """Count one request; None when admitted, else the 429's headers (`retry-after`)."""
        with self._lock:
            blocked = [
                kind
                for kind, item in self._items.items()
                if not self._windows.test(item, key, cost=cost if kind == "tokens" else 1)
            ]
            if not blocked:
                for kind, item in self._items.items():
                    self._windows.hit(item, key, cost=cost if kind == "tokens" else 1)
                self.admitted += 1
                self.tokens += cost
                return None
            self.rejected += 1
            now = time.time()
            after = max(
                self._windows.get_window_stats(self._items[k], key).reset_time - now
                for k in blocked
            )
        headers = self.headers(key)
        headers["retry-after"] = f"{max(0.001, after):.3f}"
        headers["retry-after-ms"] = str(max(1, round(after * 1000)))
        return headers

    def refusal(
        self, key: str, usage: Mapping[str, int], max_tokens: int | None
    ) -> JSONResponse | None:
        """Count one request; None when admitted, else the 429 to answer."""
        cost = self.cost(usage["prompt_tokens"], usage["completion_tokens"], max_tokens)
        headers = self.admit(key, cost)
        if headers is None:
            return None
        message = "simulated provider rate limit (demo limits): slow down"
        content = {"error": {"message": message, "type": "rate_limit_error"}}
        return JSONResponse(status_code=429, headers=headers, content=content)

    def headers(self, key: str) -> dict[str, str]:
        """OpenAI's six `x-ratelimit-*` headers for this key, now."""
        out: dict[str, str] = {}
        now = time.time()
        for kind, per_minute in (("requests", self.limits.rpm), ("tokens", self.limits.tpm)):
            item = self._items.get(kind)
            if item is None or per_minute is None:
                continue
            stats = self._windows.get_window_stats(item, key)
            out[f"x-ratelimit-limit-{kind}"] = str(per_minute)
            out[f"x-ratelimit-remaining-{kind}"] = str(max(0, stats.remaining))
            used = stats.remaining < item.amount
            out[f"x-ratelimit-reset-{kind}"] = _fmt(stats.reset_time - now if used else 0.0)
        return out
