"""The one rule for every text crewdash stores: no NUL and no lone surrogate, on every database.

PostgreSQL refuses a NUL in text and neither database can encode a lone surrogate (what JSON's
`"\\ud800"` decodes to), while SQLite keeps a NUL: without a rule the same request was a 200 on
one and a 500 on the other. Topics are cleaned first (their control characters become spaces,
`topics.clean_topic`); every other text that holds one is refused with a message naming it.
"""

from __future__ import annotations

from collections.abc import Mapping

from crewdash.base.errors import SettingsError

NO_NUL_PATTERN = r"^[^\u0000]*$"  # for JSON schemas; the check itself is `unstorable`


class UnstorableTextError(SettingsError):
    """A text the database cannot store as it is."""


def unstorable(text: str) -> str | None:
    """Why `text` cannot be stored, or None."""
    if "\x00" in text:
        return "must not contain a NUL character (\\u0000)"
    if any("\ud800" <= c <= "\udfff" for c in text):
        return "must be valid Unicode (it holds a lone surrogate)"
    return None


def check_storable(text: str | None, what: str) -> str | None:
    """`text` as it is, or `UnstorableTextError` naming `what`."""
    if text is not None and (reason := unstorable(text)):
        raise UnstorableTextError(f"{what}: {reason}")
    return text


def check_storable_map(values: Mapping[str, str] | None, what: str) -> None:
    """Every key and value of `values` (e.g. a blueprint's inputs)."""
    for key, value in (values or {}).items():
        check_storable(key, f"{what} name")
        check_storable(value, f"{what} {key!r}" if unstorable(key) is None else what)
