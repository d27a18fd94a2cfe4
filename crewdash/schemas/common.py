"""What every wire model shares: the strict base model, the checked kinds of text a request
may hold, the `Idempotency-Key` header, the token counts, the rules the schema states in words,
and the error answer (`Problem`) every route documents.

The JSON crewdash sends has each shape defined once: the API (and so its OpenAPI schema), the
JSON export and the CLI's `--json` build the models of this package from the core's frozen
snapshots, so a field added to one shows up in all of them and in generated clients.

Every model forbids fields it does not name: JSON read back into one (a client, a test) that
holds anything else is an error, not silently dropped.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Header
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from crewdash.engine.idempotency import KEY_PATTERN
from crewdash.model.storable import NO_NUL_PATTERN, unstorable
from crewdash.model.topics import visible_pattern

if TYPE_CHECKING:
    from crewdash.model.batch import TokenUsage

MAX_INPUT_CHARS = 2000  # one input's value, on /batches and in an experiment's variants


STATE_RULE = (
    "how the batch went, from its crews (first match wins): running (a crew queued or running), "
    "succeeded (all succeeded), interrupted (a crew's server stopped), cancelled (a user "
    "cancelled crews), budget_exceeded (the budget stopped all that did not succeed), failed "
    "(none succeeded), partial (some succeeded, some did not)"
)
SPEEDUP_RULE = "sum of crew times / wall time; null once over with no crew that succeeded"


# The `Idempotency-Key` header of POST /batches and POST /experiments (`idempotency.py`).
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=KEY_PATTERN,
        description="Send the same key again (a retry) to get the batch it started, not a "
        "second one; reused for a different request it is a 422.",
    ),
]


def _storable(value: str) -> str:
    if reason := unstorable(value):
        raise ValueError(reason)
    return value


def _valid_unicode(value: str) -> str:
    if any("\ud800" <= c <= "\udfff" for c in value):
        raise ValueError("must be valid Unicode (it holds a lone surrogate)")
    return value


def _visible(schema: dict[str, Any]) -> None:
    """Say in the schema what `parse_topics` checks (with a plain message, not this regex)."""
    schema["pattern"] = visible_pattern()


# Every text a request stores follows one rule (`storable.py`): a NUL or a lone surrogate is a
# 422 naming the field, on SQLite and PostgreSQL alike. A topic's control characters are
# cleaned to spaces first (`parse_topics`), so only a lone surrogate is refused in one.
StoredText = Annotated[
    str, AfterValidator(_storable), Field(json_schema_extra={"pattern": NO_NUL_PATTERN})
]
Topic = Annotated[str, AfterValidator(_valid_unicode), Field(json_schema_extra=_visible)]
InputName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_\-]{0,99}$")]
InputValue = Annotated[StoredText, StringConstraints(max_length=MAX_INPUT_CHARS)]


def fingerprint(body: BaseModel) -> str:
    """What a request asked for, to tell a retry from another request under the same key."""
    return hashlib.sha256(body.model_dump_json().encode()).hexdigest()


class WireModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tokens(WireModel):
    prompt: int = 0
    completion: int = 0
    total: int = 0

    @classmethod
    def from_usage(cls, usage: TokenUsage) -> Tokens:
        return cls(prompt=usage.prompt, completion=usage.completion, total=usage.total)


class Problem(BaseModel):
    """Every error answer of the API: one line a person can act on."""

    detail: str


# The error answers every route documents (a route adds 409 where another server may own it).
PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem},
    401: {"model": Problem},
    403: {"model": Problem},
    404: {"model": Problem},
    413: {"model": Problem},
    422: {"model": Problem},
}
# ...and a route that starts a batch: past the caller's daily cap (Retry-After: the next UTC day).
STARTS: dict[int | str, dict[str, Any]] = {
    **PROBLEMS,
    429: {"model": Problem, "description": "past the caller's daily cap; try again tomorrow"},
}
