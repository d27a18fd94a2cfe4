"""Turning what a user typed into a clean list of topics, or a clear refusal.

Every entry point (page, API, CLI) goes through `parse_topics`, so limits and messages match.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

from crewdash.config import MAX_TOPIC_CHARS, MAX_TOPICS
from crewdash.errors import TopicError


@dataclass(frozen=True)
class Topics:
    """Accepted topics in the order given, and notes on what was dropped (for the user)."""

    items: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())


# A topic must hold at least one character that survives cleaning (the API's schema says so).
TOPIC_PATTERN = r"[^\s\x00-\x1f\x7f-\x9f]"


def _clean(raw: str) -> str:
    # Control characters (NUL, escapes, tabs, newlines) become spaces; everything else is text.
    chars = (" " if unicodedata.category(c) == "Cc" else c for c in raw)
    return " ".join("".join(chars).split())


def parse_topics(
    text: str | Iterable[str],
    *,
    max_topics: int = MAX_TOPICS,
    max_chars: int = MAX_TOPIC_CHARS,
) -> Topics:
    """Split one-per-line text (or take a list), drop blanks and duplicates, enforce the limits.

    Raises `TopicError` with a message meant for the user when nothing should start.
    """
    lines = text.splitlines() if isinstance(text, str) else list(text)
    if not all(isinstance(line, str) for line in lines):
        raise TopicError("Every topic must be text.")
    cleaned = [_clean(line) for line in lines]
    blanks = sum(1 for c in cleaned if not c)
    keys: set[str] = set()
    accepted: list[str] = []
    for topic in cleaned:
        if not topic:
            continue
        if topic.casefold() in keys:
            continue
        keys.add(topic.casefold())
        accepted.append(topic)
    duplicates = len(cleaned) - blanks - len(accepted)
    items = tuple(accepted)
    if not items:
        raise TopicError("Enter at least one topic, one per line.")
    if len(items) > max_topics:
        raise TopicError(
            f"{len(items)} topics is more than the limit of {max_topics}; "
            "split them into smaller batches."
        )
    too_long = [i for i, t in enumerate(items, 1) if len(t) > max_chars]
    if too_long:
        where = ", ".join(str(i) for i in too_long[:5]) + ("…" if len(too_long) > 5 else "")
        raise TopicError(
            f"Topic {where} is longer than {max_chars} characters; shorten it and run again."
        )
    notes = []
    if blanks and isinstance(text, str):
        notes.append(f"Dropped {blanks} blank line{'s' * (blanks != 1)}.")
    elif blanks:
        notes.append(f"Dropped {blanks} blank topic{'s' * (blanks != 1)}.")
    if duplicates:
        notes.append(f"Dropped {duplicates} duplicate topic{'s' * (duplicates != 1)}.")
    return Topics(items=items, notes=tuple(notes))
