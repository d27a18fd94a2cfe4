"""A sheet's rows as a blueprint's inputs: each input comes from a column (a value per row) or
is one fixed value for every row. A row whose required input is blank is skipped with its
reason, never dropped in silence, so the enriched sheet can say why that row has no answer.

Values are the cells as text (`cell_text`): dates ISO, whole numbers without ".0". A blank cell
of an optional input leaves that input out, so the blueprint's default applies (as
`BaseBlueprint.inputs_for` does for a blank extra input). The fan-out input
(`BaseBlueprint.fan_out`) is an input like the others here: its value is the row's topic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from crewdash.base.errors import SheetError
from crewdash.sheets.sheet import Sheet, cell_text, is_blank, row_number


@dataclass(frozen=True)
class InputMap:
    """Where each input's value comes from: `columns` maps an input to a column name of the
    sheet, `values` to one fixed value for every row. An input is in one of them at most."""

    columns: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        both = sorted(set(self.columns) & set(self.values))
        if both:
            names = ", ".join("{" + n + "}" for n in both)
            raise SheetError(f"input {names} has both a column and a fixed value: pick one")

    @property
    def inputs(self) -> frozenset[str]:
        """Every input that has a source."""
        return frozenset(self.columns) | frozenset(self.values)


@dataclass(frozen=True)
class MappedRow:
    """One data row of the sheet as a crew's inputs, or the reason it does not run."""

    row: int  # index into `Sheet.rows`
    inputs: Mapping[str, str] = field(default_factory=dict)
    skipped: str = ""  # why this row runs no crew ("" when it runs)

    @property
    def runs(self) -> bool:
        return not self.skipped

    @property
    def number(self) -> int:
        """The row number a spreadsheet shows (the header is row 1)."""
        return row_number(self.row)


_LOOSE = re.compile(r"[\s_\-]+")


def loose_name(name: str) -> str:
    """A name for matching: case, spaces, `_` and `-` ignored ("Company Name" = company_name)."""
    return _LOOSE.sub("", name).casefold()


def suggest_map(inputs: Iterable[str], columns: Sequence[str]) -> InputMap:
    """A first map: each input whose name matches a column's (`loose_name`) takes that column;
    the others are left for the person to choose."""
    by_name: dict[str, str] = {}
    for column in columns:
        by_name.setdefault(loose_name(column), column)  # the first of two loose twins
    found = {name: by_name[loose_name(name)] for name in inputs if loose_name(name) in by_name}
    return InputMap(columns=found)


def rows_to_inputs(
    sheet: Sheet, input_map: InputMap, required: Iterable[str] = ()
) -> tuple[MappedRow, ...]:
    """Every data row of `sheet`, in order, with its inputs or the reason it is skipped (a blank
    row; a blank cell for a required input). Refuses a map naming a column the sheet does not
    have, and a required input without a column or a non-blank fixed value."""
    needed = frozenset(required)
    missing = sorted(name for name in needed if name not in input_map.inputs)
    if missing:
        names = ", ".join("{" + n + "}" for n in missing)
        raise SheetError(f"input {names} needs a value: map it to a column or give a fixed value")
    blank_fixed = sorted(n for n in needed & set(input_map.values) if is_blank(input_map.values[n]))
    if blank_fixed:
        names = ", ".join("{" + n + "}" for n in blank_fixed)
        raise SheetError(f"input {names} needs a value: its fixed value is blank")
    position = {name: i for i, name in enumerate(sheet.columns)}
    for name, column in input_map.columns.items():
        if column not in position:
            listed = ", ".join(repr(c) for c in sheet.columns)
            raise SheetError(
                f"input {{{name}}} is mapped to column {column!r}, which {sheet.filename} "
                f"does not have; its columns: {listed}"
            )
    fixed = {name: value for name, value in input_map.values.items() if value.strip()}
    mapped = [(name, position[column], column) for name, column in input_map.columns.items()]
    out = []
    for index, cells in enumerate(sheet.rows):
        if all(is_blank(v) for v in cells):
            out.append(MappedRow(index, skipped="the row is blank"))
            continue
        inputs = dict(fixed)
        blank = []
        for name, at, column in mapped:
            if not is_blank(cells[at]):
                inputs[name] = cell_text(cells[at])
            elif name in needed:
                blank.append(f"{column!r} is blank and input {{{name}}} needs a value")
        if blank:
            out.append(MappedRow(index, skipped="; ".join(blank)))
        else:
            out.append(MappedRow(index, inputs=inputs))
    return tuple(out)
