"""A sheet as a batch: one crew per row that can run, each with its row's inputs, in row order.

The batch's crew `i` runs the sheet's `i`-th runnable row; a skipped row (blank, or a blank cell
a required input needs) runs nothing and keeps its reason for the enriched sheet. A crew's label
is its row's fan-out value (else its first input, else "row N"), cut to a topic's length: the
inputs themselves are whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from crewdash.base.config import MAX_TOPIC_CHARS
from crewdash.base.errors import SheetError
from crewdash.blueprints.base import BaseBlueprint
from crewdash.engine.plans import CrewPlan, RunSettings
from crewdash.sheets.mapping import InputMap, MappedRow, rows_to_inputs, suggest_map
from crewdash.sheets.sheet import Sheet


@dataclass(frozen=True)
class SheetUpload:
    """A sheet as the page, the API or the CLI received it: the file's bytes and name, which
    sheet of a workbook (None: the first), which column fills each input (None: each input the
    column of its name, `suggest_map`), and fixed values for inputs no column fills."""

    data: bytes
    filename: str
    sheet_name: str | None = None
    columns: Mapping[str, str] | None = None
    values: Mapping[str, str] = field(default_factory=dict)

    def input_map(self, blueprint: BaseBlueprint, sheet: Sheet) -> InputMap:
        columns = dict(
            suggest_map(blueprint.inputs, sheet.columns).columns
            if self.columns is None
            else self.columns
        )
        values = {k: v for k, v in self.values.items() if k not in columns}
        return InputMap(columns=columns, values=values)


@dataclass(frozen=True)
class SheetPlan:
    """The sheet's rows as the blueprint's inputs, and one crew plan per runnable row."""

    sheet: Sheet
    input_map: InputMap
    rows: tuple[MappedRow, ...]
    plans: tuple[CrewPlan, ...]

    @property
    def skipped(self) -> int:
        return sum(1 for row in self.rows if not row.runs)


def label(blueprint: BaseBlueprint, row: MappedRow) -> str:
    """What a row's crew is called on the pages: its fan-out value, else its first input."""
    text = row.inputs.get(blueprint.fan_out) or next(
        (v for v in row.inputs.values() if v.strip()), f"row {row.number}"
    )
    text = " ".join(text.split())
    return text if len(text) <= MAX_TOPIC_CHARS else text[: MAX_TOPIC_CHARS - 1] + "…"


def plan_sheet(
    blueprint: BaseBlueprint, sheet: Sheet, input_map: InputMap, settings: RunSettings
) -> SheetPlan:
    """One crew plan per runnable row; `SheetError` for a map that does not fit the sheet or the
    blueprint, or a sheet of which no row can run."""
    unknown = sorted(set(input_map.inputs) - set(blueprint.inputs))
    if unknown and blueprint.inputs:
        names = ", ".join("{" + n + "}" for n in unknown)
        known = ", ".join("{" + n + "}" for n in blueprint.inputs)
        raise SheetError(f"blueprint {blueprint.name!r} has no input {names}; its inputs: {known}")
    rows = rows_to_inputs(sheet, input_map, blueprint.required)
    fan_out = blueprint.fan_out
    plans = []
    for row in rows:
        if not row.runs:
            continue
        topic = row.inputs.get(fan_out, blueprint.inputs.get(fan_out, ""))
        extra = {k: v for k, v in row.inputs.items() if k != fan_out}
        inputs = blueprint.inputs_for(topic, extra, fan_out)
        plans.append(CrewPlan(label(blueprint, row), blueprint, settings, inputs))
    if not plans:
        first = next((r for r in rows), None)
        why = f" (row {first.number}: {first.skipped})" if first is not None else ""
        raise SheetError(f"no row of {sheet.filename} can run: every row is skipped{why}")
    return SheetPlan(sheet, input_map, rows, tuple(plans))
