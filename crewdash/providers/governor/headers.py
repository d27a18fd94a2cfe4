"""Reading a provider's answer for its limits: OpenAI's `x-ratelimit-*` and `retry-after`
headers, parsed defensively (a garbled or contradictory value is dropped and named, never
trusted and never fatal)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
