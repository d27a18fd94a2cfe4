"""What each row of a sheet got from its crew: a small typed `RowResult` per row, the writers'
input (`sheet_export`). `row_results` reads them off a batch whose crews ran the sheet's
runnable rows in order, live or finished, so a sheet can be written while the batch runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from crewdash.base.errors import SheetError
from crewdash.model.batch import BatchSnapshot, CrewSnapshot
from crewdash.model.pricing import crew_cost
from crewdash.sheets.mapping import MappedRow

# A crew's state (`CrewState` values), or a row's that ran no crew: `skipped` by the mapping
# (a blank required cell), `not started` (the batch holds no crew for it, or not yet).
RowState = Literal[
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "timed_out",
    "interrupted",
    "budget_exceeded",
    "skipped",
    "not started",
]
# A structured output's field: a JSON scalar as it is; a nested object or list as JSON text.
FieldValue = str | int | float | bool | None
_FENCED = re.compile(r"\A```[\w-]*\s*\n(.*)\n\s*```\Z", re.S)


@dataclass(frozen=True)
class RowResult:
    """One row's crew: its state, final output, each task's output (name, output) in order,
    latency, tokens, cost and error. A row that ran no crew has only a state (and, skipped, its
    reason as the error)."""

    state: RowState = "not started"
    output: str | None = None
    tasks: tuple[tuple[str, str], ...] = ()
    latency_s: float | None = None
    tokens: int | None = None
    cost_usd: float | None = None
    error: str | None = None

    @property
    def fields(self) -> dict[str, FieldValue] | None:
        return structured_fields(self.output)


def structured_fields(output: str | None) -> dict[str, FieldValue] | None:
    """The fields of an output that is a JSON object (a pydantic output's JSON, or JSON in one
    Markdown code fence), flattened one level; None for any other output."""
    if not output:
        return None
    text = output.strip()
    fenced = _FENCED.match(text)
    if fenced:
        text = fenced.group(1).strip()
    if not text.startswith("{"):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    return {
        str(key): value
        if value is None or isinstance(value, str | int | float | bool)
        else json.dumps(value, ensure_ascii=False)
        for key, value in data.items()
    }


def skipped(reason: str) -> RowResult:
    return RowResult(state="skipped", error=reason)


def crew_result(snap: BatchSnapshot, crew: CrewSnapshot) -> RowResult:
    """One crew as its row's result (a running crew's latency is its time so far)."""
    started = crew.started_at is not None
    return RowResult(
        state=crew.state.value,
        output=crew.result,
        tasks=tuple((task.name, task.output) for task in crew.tasks),
        latency_s=crew.duration,
        tokens=crew.tokens.total if started else None,
        cost_usd=crew_cost(snap, crew) if started else None,
        error=crew.error,
    )


def row_results(snap: BatchSnapshot, rows: Sequence[MappedRow]) -> tuple[RowResult, ...]:
    """A result for every row: a skipped row's reason, and the runnable rows' crews in order
    (the batch's crew `i` ran the `i`-th runnable row); a runnable row beyond the batch's crews
    is `not started`."""
    runnable = sum(1 for row in rows if row.runs)
    if len(snap.crews) > runnable:
        raise SheetError(
            f"batch {snap.batch_id} has {len(snap.crews)} crews for {runnable} rows that run"
        )
    crews = iter(sorted(snap.crews, key=lambda c: c.index))
    results = []
    for row in rows:
        if not row.runs:
            results.append(skipped(row.skipped))
            continue
        crew = next(crews, None)
        results.append(RowResult() if crew is None else crew_result(snap, crew))
    return tuple(results)
