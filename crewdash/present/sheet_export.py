"""The enriched sheet: the uploaded sheet with every original column and value as it was, in
its order, and the crews' results appended as new columns (state, output, the output's fields,
each task's output, latency, tokens, cost, error), as .xlsx or CSV.

Nothing crewdash writes is ever a formula. In .xlsx every text is a string cell, never a
formula (openpyxl makes any text starting with "=" a formula unless told), and text a
spreadsheet would take for one is also marked "quote prefix", as Excel does when one types an
apostrophe first. In CSV every cell goes through `csv_cell`, the one neutralisation of all
crewdash's CSV exports: an original cell that is a formula gets its leading `'` too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path, PurePath
from typing import IO, Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Font, PatternFill

from crewdash.base.config import MAX_SHEET_FIELD_COLUMNS
from crewdash.base.errors import SheetError
from crewdash.present.exports import CSV_DELIMITERS, CsvCell, csv_text, is_formula
from crewdash.present.sheet_results import FieldValue, RowResult
from crewdash.sheets.sheet import GENERAL, CellValue, Sheet, cell_text

# Every new column's name starts with this, and its header cell is filled in this colour: the
# crews' columns stand apart from the analyst's own.
PREFIX = "crew: "
NEW_HEADER_FILL = PatternFill("solid", fgColor="FFF2CC")
NEW_HEADER_FONT = Font(bold=True)
# Excel's limit for one cell; a longer output is cut there, saying so (CSV has it whole).
XLSX_CELL_CHARS = 32_767
SECONDS_FORMAT = "0.00"
COST_FORMAT = "0.000000"
_SHEET_TITLE = re.compile(r"[\[\]:*?/\\]")

Value = CellValue | Decimal
# A new column's value for one row: from its result, its output's fields, its tasks by name.
Getter = Callable[[RowResult, dict[str, FieldValue], dict[str, str]], Value]


@dataclass(frozen=True)
class _Column:
    name: str
    value: Getter
    number_format: str = GENERAL


def enriched_filename(filename: str, extension: str) -> str:
    """The enriched sheet's file name: `leads.xlsx` -> `leads.enriched.xlsx` (or `.csv`)."""
    stem = PurePath(filename).stem or "sheet"
    return f"{stem}.enriched.{extension.lstrip('.')}"


def enriched_columns(sheet: Sheet, results: Sequence[RowResult]) -> tuple[str, ...]:
    """Every column of the enriched sheet: the sheet's own, then the crews'."""
    return (*sheet.columns, *(c.name for c in _plan(sheet, results)))


def enriched_csv(
    sheet: Sheet,
    results: Sequence[RowResult],
    *,
    delimiter: str | None = None,
    bom: bool = True,
) -> Iterator[str]:
    """The enriched sheet as CSV lines (CRLF), streamed: a CSV's original cells as the same
    text, a workbook's as `cell_text`. The delimiter is the sheet's own when it is one of , ;
    TAB (else a comma); `bom` starts the text with a UTF-8 byte-order mark, so Excel reads
    UTF-8 as UTF-8."""
    plan = _plan(sheet, results)
    if delimiter is None:
        delimiter = sheet.delimiter if sheet.delimiter in CSV_DELIMITERS else ","
    header = csv_text([[*sheet.columns, *(c.name for c in plan)]], delimiter)
    yield ("\ufeff" if bom else "") + header
    for row, result in zip(sheet.rows, results, strict=True):
        fields, tasks = result.fields or {}, _tasks(result)
        cells: list[CsvCell] = [cell_text(v) for v in row]
        cells += [_csv(c.value(result, fields, tasks)) for c in plan]
        yield csv_text([cells], delimiter)


def enriched_xlsx(
    sheet: Sheet, results: Sequence[RowResult], target: str | Path | IO[bytes]
) -> None:
    """The enriched sheet as an .xlsx workbook of one sheet, written to `target` in
    openpyxl's write-only mode (rows stream to a temporary file: memory stays flat). The header
    row is frozen; the crews' headers are filled and bold; original cells keep their number
    formats (a date stays a date)."""
    plan = _plan(sheet, results)
    book = Workbook(write_only=True)
    ws = book.create_sheet(_title(sheet))
    ws.freeze_panes = "A2"
    header: list[Any] = [_text(ws, name) for name in sheet.columns]
    for column in plan:
        cell = _text(ws, column.name)
        cell.fill, cell.font = NEW_HEADER_FILL, NEW_HEADER_FONT
        header.append(cell)
    ws.append(header)
    for index, (row, result) in enumerate(zip(sheet.rows, results, strict=True)):
        fields, tasks = result.fields or {}, _tasks(result)
        cells = [_xlsx(ws, v, sheet.number_format(index, i)) for i, v in enumerate(row)]
        cells += [_xlsx(ws, c.value(result, fields, tasks), c.number_format) for c in plan]
        ws.append(cells)
    book.save(target)


def _plan(sheet: Sheet, results: Sequence[RowResult]) -> list[_Column]:
    """The crews' columns, from what the results hold: one per structured field and one per
    task (when a crew has more than one) in order of first appearance, each kind capped."""
    if len(results) != len(sheet.rows):
        raise SheetError(f"{len(results)} results for the {len(sheet.rows)} rows of the sheet")
    taken = set(sheet.columns)

    def named(name: str) -> str:
        base = candidate = PREFIX + name
        n = 1
        while candidate in taken:  # an enriched sheet enriched again: "crew: state (2)"
            n += 1
            candidate = f"{base} ({n})"
        taken.add(candidate)
        return candidate

    keys: dict[str, None] = {}
    task_names: dict[str, None] = {}
    for result in results:
        for key in result.fields or {}:
            if len(keys) < MAX_SHEET_FIELD_COLUMNS:
                keys.setdefault(key)
        if len(result.tasks) > 1:
            for name in _tasks(result):
                if len(task_names) < MAX_SHEET_FIELD_COLUMNS:
                    task_names.setdefault(name)
    plan = [
        _Column(named("state"), lambda r, f, t: r.state),
        _Column(named("output"), lambda r, f, t: r.output),
    ]
    plan += [_Column(named(f"output.{key}"), _field(key)) for key in keys]
    plan += [_Column(named(f"task {name}"), _task(name)) for name in task_names]
    plan += [
        _Column(named("latency s"), lambda r, f, t: _fixed(r.latency_s, 3), SECONDS_FORMAT),
        _Column(named("tokens"), lambda r, f, t: r.tokens),
        _Column(named("cost USD"), lambda r, f, t: _fixed(r.cost_usd, 8), COST_FORMAT),
        _Column(named("error"), lambda r, f, t: r.error),
    ]
    return plan


def _field(key: str) -> Getter:
    return lambda result, fields, tasks: fields.get(key)


def _task(name: str) -> Getter:
    return lambda result, fields, tasks: tasks.get(name)


def _tasks(result: RowResult) -> dict[str, str]:
    """A row's task outputs by name; a name twice in one crew is `name (2)` the second time."""
    out: dict[str, str] = {}
    for name, output in result.tasks:
        key, n = name or "task", 1
        while key in out:
            n += 1
            key = f"{name or 'task'} ({n})"
        out[key] = output
    return out


def _fixed(value: float | None, places: int) -> Decimal | None:
    """A figure with a fixed count of decimals (a cost is never written as 1.5e-07)."""
    return None if value is None else Decimal(f"{value:.{places}f}")


def _csv(value: Value) -> CsvCell:
    """A new column's value for `csv_cell`: whole and fixed-point numbers as they are,
    everything else as its text (`cell_text`)."""
    if isinstance(value, Decimal) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return None if value is None else cell_text(value)


def _xlsx(ws: Any, value: Value, number_format: str) -> Any:
    if isinstance(value, str):
        return _text(ws, value)
    if number_format == GENERAL or value is None:
        return value
    cell = WriteOnlyCell(ws, value=value)
    cell.number_format = number_format
    return cell


def _text(ws: Any, text: str) -> WriteOnlyCell:
    """A string cell that is never a formula or an error code, whatever the text starts with."""
    text = ILLEGAL_CHARACTERS_RE.sub("\ufffd", text)  # control characters an .xlsx cannot hold
    if len(text) > XLSX_CELL_CHARS:
        cut = f" … [cut at Excel's limit of {XLSX_CELL_CHARS:,} characters of {len(text):,}]"
        text = text[: XLSX_CELL_CHARS - len(cut)] + cut
    cell = WriteOnlyCell(ws, value=text)
    cell.data_type = "s"  # openpyxl made "=..." a formula and "#N/A" an error: text it is
    if is_formula(text):
        cell.quotePrefix = True
    return cell


def _title(sheet: Sheet) -> str:
    """The sheet's own name, or for a CSV its file name (Excel: at most 31 characters, no
    []:*?/\\)."""
    title = sheet.sheet_name or PurePath(sheet.filename).stem or "Sheet1"
    return _SHEET_TITLE.sub("_", title)[:31] or "Sheet1"
