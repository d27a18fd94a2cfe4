"""Turning what a user typed into a clean list of topics, or a clear refusal.

Every entry point (page, API, CLI) goes through `parse_topics`, so limits and messages match.
Limits apply to what would run: after cleaning and dropping duplicates.
"""

from __future__ import annotations

import functools
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from crewdash.base.config import MAX_TOPIC_CHARS, MAX_TOPICS
from crewdash.base.errors import TopicError


@dataclass(frozen=True)
class Topics:
    """Accepted topics in the order given, and notes on what was dropped (for the user).

    `runs_as` maps every distinct input string, exactly as given, to the accepted topic whose
    crew answers it ("" for a blank one), so a caller can key answers by what it was sent.
    `changes` says, one line per input, which inputs were cleaned or merged into another.
    """

    items: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())
    runs_as: Mapping[str, str] = field(default_factory=dict, hash=False)
    changes: tuple[str, ...] = field(default=())


def _edge(c: str) -> bool:
    # Invisible format characters (zero-width space and joiners, word joiner, BOM) at the edges
    # are no more a topic than spaces are; inside a topic (emoji sequences) they stay.
    return c.isspace() or unicodedata.category(c) == "Cf"


def clean_topic(raw: str) -> str:
    """One topic as it runs: control characters (NUL, escapes, tabs, newlines) become spaces,
    runs of spaces become one, and spaces and format characters at the edges go."""
    chars = (" " if unicodedata.category(c) == "Cc" else c for c in raw)
    text = " ".join("".join(chars).split())
    start, end = 0, len(text)
    while start < end and _edge(text[start]):
        start += 1
    while end > start and _edge(text[end - 1]):
        end -= 1
    return " ".join(text[start:end].split())


@functools.cache
def visible_pattern() -> str:
    """A regular expression (JSON Schema dialect) for one character that survives cleaning: a
    topic that holds none is blank. For the API's schema, so generated clients and fuzzers know;
    the check itself is `parse_topics`. Basic Multilingual Plane only (what `\\uXXXX` spells)."""
    ranges: list[tuple[int, int]] = []
    for code in range(0x10000):
        c = chr(code)
        if c.isspace() or unicodedata.category(c) in ("Cc", "Cf"):
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    spans = (f"\\u{a:04x}" + (f"-\\u{b:04x}" if b > a else "") for a, b in ranges)
    return "[^" + "".join(spans) + "]"


def _quote(text: str, limit: int = 60) -> str:
    """A topic for a message: quoted, invisible characters shown, long ones shortened."""
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _positions(numbers: list[int]) -> str:
    return ", ".join(str(n) for n in numbers[:5]) + ("…" if len(numbers) > 5 else "")


def parse_topics(
    text: str | Iterable[str],
    *,
    max_topics: int = MAX_TOPICS,
    max_chars: int = MAX_TOPIC_CHARS,
    refuse_blanks: bool = False,
) -> Topics:
    """Split one-per-line text (or take a list), drop blanks and duplicates, enforce the limits.

    Duplicates are the same topic after cleaning, ignoring case; the first one given runs.
    With `refuse_blanks` (the API), a blank entry is an error naming it instead of a note.
    Raises `TopicError` with a message meant for the user when nothing should start.
    """
    lines = text.splitlines() if isinstance(text, str) else list(text)
    if not all(isinstance(line, str) for line in lines):
        raise TopicError("Every topic must be text.")
    cleaned = [clean_topic(line) for line in lines]
    blank_at = [n for n, c in enumerate(cleaned, 1) if not c]
    if blank_at and refuse_blanks:
        raise TopicError(
            f"Topic {_positions(blank_at)} {'is' if len(blank_at) == 1 else 'are'} blank "
            "(only spaces, control or invisible characters); remove or fill in."
        )
    first: dict[str, str] = {}  # casefolded -> the accepted topic that runs
    too_long: list[int] = []
    for n, topic in enumerate(cleaned, 1):
        if topic and topic.casefold() not in first:
            first[topic.casefold()] = topic
            if len(topic) > max_chars:
                too_long.append(n)
    items = tuple(first.values())
    if not items:
        raise TopicError("Enter at least one topic, one per line.")
    if len(items) > max_topics:
        raise TopicError(
            f"{len(items)} topics is more than the limit of {max_topics}; "
            "split them into smaller batches."
        )
    if too_long:
        raise TopicError(
            f"Topic {_positions(too_long)} is longer than {max_chars} characters; "
            "shorten it and run again."
        )
    runs_as = {
        raw: first.get(topic.casefold(), "") for raw, topic in zip(lines, cleaned, strict=True)
    }
    blanks = len(blank_at)
    duplicates = len(cleaned) - blanks - len(items)
    notes = []
    if blanks and isinstance(text, str):
        notes.append(f"Dropped {blanks} blank line{'s' * (blanks != 1)}.")
    elif blanks:
        notes.append(f"Dropped {blanks} blank topic{'s' * (blanks != 1)}.")
    if duplicates:
        notes.append(f"Dropped {duplicates} duplicate topic{'s' * (duplicates != 1)}.")
    return Topics(
        items=items, notes=tuple(notes), runs_as=runs_as, changes=_changes(lines, runs_as)
    )


def _changes(lines: list[str], runs_as: Mapping[str, str]) -> tuple[str, ...]:
    """One line per input that does not run exactly as written, in the order given."""
    given = Counter(lines)
    changes = []
    for raw, answer in runs_as.items():
        if not answer:
            continue  # blank: counted in the notes (or refused)
        topic = clean_topic(raw)
        if topic != answer:
            changes.append(
                f"{_quote(raw)} is the same topic as {_quote(answer)}: one crew answers both."
            )
        elif raw != topic:
            changes.append(
                f"{_quote(raw)} runs as {_quote(topic)} "
                "(spaces, control or invisible characters tidied)."
            )
        if given[raw] > 1:
            changes.append(f"{_quote(raw)} was given {given[raw]} times: one crew answers it.")
    return tuple(changes)
