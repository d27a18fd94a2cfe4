"""The bodies of `POST /research` and `POST /batches` and their answers (and a cancel's).

Only the API imports this module: `BatchRequest` lists the blueprints on the search path in its
schema, read once, when this module loads (as the server starts).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from crewdash.base.config import DEFAULT_BLUEPRINT, MAX_SHEET_ROWS, MAX_TOPIC_CHARS, MAX_TOPICS
from crewdash.blueprints.catalog import list_blueprints
from crewdash.schemas.common import InputName, InputValue, Topic

TOPICS_FIELD = Field(
    min_length=1,
    description=(
        f"One crew per distinct topic after cleaning (at most {MAX_TOPICS} topics of at most "
        f"{MAX_TOPIC_CHARS} characters); topics that clean to the same text, ignoring case, "
        "share one crew."
    ),
)


class ResearchRequest(BaseModel):
    topics: list[Topic] = TOPICS_FIELD


class ResearchResponse(BaseModel):
    results: dict[str, str] = Field(
        description="topic, exactly as sent -> the raw answer of the crew that ran it"
    )
    errors: dict[str, str] = Field(
        default_factory=dict, description="topic, exactly as sent -> why it failed"
    )
    notes: list[str] = Field(
        default_factory=list, description="which topics were cleaned or merged into another"
    )


def _blueprint_enum() -> dict[str, Any]:
    """The blueprints present at start, so generated clients and fuzzers know the choices."""
    return {"enum": list_blueprints()}


# A cell of `rows`: JSON's scalars (a number or a boolean is written as its text).
RowValue = str | int | float | bool | None


class BatchRequest(BaseModel):
    topics: list[Topic] | None = Field(
        default=None,
        min_length=1,
        description=f"{TOPICS_FIELD.description} Either `topics` or `rows`.",
    )
    rows: list[dict[str, RowValue]] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SHEET_ROWS,
        description=f"A sheet, one object per row (at most {MAX_SHEET_ROWS:,}): one crew per row "
        "whose mapped inputs are not blank; the enriched sheet is GET "
        "/batches/{id}/export?format=xlsx or csv. Either `topics` or `rows`.",
    )
    input_map: dict[InputName, str] | None = Field(
        default=None,
        max_length=100,
        description="With `rows`: input -> the row key (column) that fills it; by default each "
        "input takes the column of its name (case, spaces, _ and - ignored). Fixed values for "
        "every row go in `inputs`.",
    )
    blueprint: str = Field(default=DEFAULT_BLUEPRINT, json_schema_extra=_blueprint_enum())
    max_concurrency: int | None = Field(default=None, ge=1, le=1000, strict=True)
    crew_timeout_s: float | None = Field(default=None, gt=0, le=86_400, strict=True)
    inputs: dict[InputName, InputValue] | None = Field(
        default=None,
        max_length=100,
        description="The blueprint's other inputs, the same for every crew (see GET /blueprints); "
        "inputs left out keep the blueprint's defaults.",
    )
    fan_out: InputName | None = Field(
        default=None,
        description="The input each topic fills (default: `topic`, else the only input).",
    )
    budget_usd: float | None = Field(
        default=None,
        strict=True,
        gt=0,
        le=1_000_000,
        description="Stop starting crews before the batch would spend more (needs a priced model; "
        "the rest end budget_exceeded). At most one of budget_usd and budget_tokens.",
    )
    budget_tokens: int | None = Field(
        default=None, gt=0, le=10**12, strict=True, description="The same budget in tokens."
    )
    stream: bool | None = Field(
        default=None,
        strict=True,
        description="Stream each answer (TTFT, `chunk` events); default: the server's setting.",
    )
    cache: bool = Field(
        default=False,
        strict=True,
        description="Answer model calls identical to earlier ones from the cache.",
    )

    @model_validator(mode="after")
    def _topics_or_rows(self) -> BatchRequest:
        if (self.topics is None) == (self.rows is None):
            raise ValueError("send either `topics` or `rows` (a sheet), not both or neither")
        if self.input_map is not None and self.rows is None:
            raise ValueError("`input_map` maps the columns of `rows`: send `rows` with it")
        return self

    @field_validator("blueprint")
    @classmethod
    def _known_blueprint(cls, value: str) -> str:
        known = list_blueprints()
        if value not in known:
            raise ValueError(f"no blueprint named {value!r}; choose one of {', '.join(known)}")
        return value


class BatchAccepted(BaseModel):
    batch_id: str
    crews: int
    notes: list[str]
    links: dict[str, str]


class CancelResult(BaseModel):
    batch_id: str
    cancelled: int
