"""A sheet as crewdash holds it: the column names, every row's cells exactly as read, and what
was detected. The reader makes one; the mapping reads it; the writers append to it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Literal

from openpyxl.utils import get_column_letter

# A cell's value: CSV cells are always `str` (the text as it was: "007" stays "007"); Excel
# cells are the Python value openpyxl reads, a date-only date as `date`.
CellValue = str | int | float | bool | datetime | date | time | timedelta | None
GENERAL = "General"


@dataclass(frozen=True)
class Sheet:
    """One sheet, rows in file order, each as wide as `columns` (short rows padded blank)."""

    filename: str
    kind: Literal["csv", "xlsx"]
    columns: tuple[str, ...]
    rows: tuple[tuple[CellValue, ...], ...]
    # What was detected, in words: "CSV, UTF-8 with BOM, delimiter ';'", "Excel sheet 'Q3' of 2".
    detected: str
    # Excel number formats other than General, by (row, column) index into `rows`: a date
    # written back keeps its format, "0.00%" stays a percentage.
    formats: Mapping[tuple[int, int], str] = field(default_factory=dict)
    sheet_names: tuple[str, ...] = ()  # every sheet of the workbook, in order (CSV: none)
    sheet_name: str | None = None  # the sheet read (CSV: None)
    delimiter: str = ","  # the CSV's; "," for a workbook
    notes: tuple[str, ...] = ()  # what the reader changed or left out, one line each

    def number_format(self, row: int, column: int) -> str:
        return self.formats.get((row, column), GENERAL)


def column_letter(column: int) -> str:
    """The spreadsheet's name of a 0-based column: 0 -> A, 27 -> AB."""
    return str(get_column_letter(column + 1))


def row_number(row: int) -> int:
    """The row number a spreadsheet shows for data row `row` (0-based): the header is row 1."""
    return row + 2


def cell_text(value: CellValue) -> str:
    """A cell as text, the way a person reads it: dates ISO (2024-01-02, 2024-01-02 09:30:00),
    whole numbers without a spurious ".0", booleans as Excel shows them, blank as ""."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return str(int(value)) if math.isfinite(value) and value.is_integer() else repr(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date | time):
        return value.isoformat()
    return str(value)


def is_blank(value: CellValue) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())
