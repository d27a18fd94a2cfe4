"""The checks every parser's rows pass, whatever the format: a header of distinct names, at most
so many rows, columns and characters a cell, nothing outside the named columns. The parsers
(`delimited`, `workbook`) stream raw rows in; a file over a limit stops being read there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from crewdash.base.config import MAX_CELL_CHARS, MAX_SHEET_COLUMNS, MAX_SHEET_ROWS
from crewdash.base.errors import SheetError
from crewdash.sheets.sheet import GENERAL, CellValue, cell_text, column_letter, is_blank

# One raw row from a parser: the cells, and (Excel) each cell's number format.
RawRow = tuple[Sequence[CellValue], Sequence[str] | None]


def megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def collect(
    filename: str, raw: Iterable[RawRow], where: str = "", blank: CellValue = ""
) -> tuple[tuple[str, ...], list[tuple[CellValue, ...]], dict[tuple[int, int], str], list[str]]:
    """The header's names, the data rows (padded to the header's width with `blank`), their
    number formats and notes, from a parser's raw rows, checking every limit as it goes (a file
    over the row limit stops being read there). Blank rows at the end are left out; blank rows
    between data rows stay (the mapping skips them, saying so). `where` names a workbook's
    sheet in messages."""
    source = f"{filename}{where}"
    rows_in = iter(raw)
    first = next(rows_in, None)
    if first is None:
        raise SheetError(f"{source} is empty")
    columns = _header(source, first[0])
    rows: list[tuple[CellValue, ...]] = []
    formats: dict[tuple[int, int], str] = {}
    blank_rows = 0  # blank rows not yet known to be followed by data (a count: they hold nothing)
    short = 0
    for values, cell_formats in rows_in:
        if all(is_blank(v) for v in values):
            blank_rows += 1
            continue
        if len(rows) + blank_rows >= MAX_SHEET_ROWS:
            raise SheetError(
                f"{source} has more than {MAX_SHEET_ROWS:,} rows: "
                f"the limit is {MAX_SHEET_ROWS:,} rows below the header"
            )
        rows.extend([(blank,) * len(columns)] * blank_rows)
        blank_rows = 0
        short += len(values) < len(columns)
        rows.append(_row(source, columns, len(rows), values, cell_formats, formats, blank))
    if not rows:
        raise SheetError(f"{source} has column names but no rows below them")
    notes = []
    if short and blank == "":  # a CSV's short row; Excel stores no empty cells at a row's end
        noun = "row has" if short == 1 else "rows have"
        notes.append(f"{short} {noun} fewer cells than the header: the missing cells are blank.")
    if blank_rows:
        noun = "row" if blank_rows == 1 else "rows"
        notes.append(f"Left out {blank_rows} blank {noun} at the end.")
    return columns, rows, formats, notes


def _header(source: str, cells: Sequence[CellValue]) -> tuple[str, ...]:
    names = [cell_text(v) for v in cells]
    while names and not names[-1].strip():
        names.pop()  # columns without a name: checked as rows come (a value there is refused)
    if not names:
        raise SheetError(f"{source}: the first row is empty; it must name the columns")
    if len(names) > MAX_SHEET_COLUMNS:
        raise SheetError(
            f"{source} has {len(names)} columns: the limit is {MAX_SHEET_COLUMNS} columns"
        )
    blank = [column_letter(i) for i, n in enumerate(names) if not n.strip()]
    if blank:
        raise SheetError(
            f"{source}: the header row has no name in column {', '.join(blank)}; "
            "the first row must name every column"
        )
    for i, n in enumerate(names):
        _check_length(source, 1, i, n)
    seen: dict[str, list[str]] = {}
    for i, n in enumerate(names):
        seen.setdefault(n.strip(), []).append(column_letter(i))
    duplicates = [f"{n!r} (columns {' and '.join(c)})" for n, c in seen.items() if len(c) > 1]
    if duplicates:
        raise SheetError(f"{source}: duplicate column names: {', '.join(duplicates)}")
    return tuple(names)


def _row(
    source: str,
    columns: tuple[str, ...],
    index: int,
    values: Sequence[CellValue],
    cell_formats: Sequence[str] | None,
    formats: dict[tuple[int, int], str],
    blank: CellValue,
) -> tuple[CellValue, ...]:
    """Data row `index`, checked, padded to the header's width; its formats go to `formats`."""
    width = len(columns)
    number = index + 2  # the spreadsheet's row number: the header is row 1
    for column in range(width, len(values)):
        if not is_blank(values[column]):
            raise SheetError(
                f"{source}: row {number} has a value in column {column_letter(column)}, "
                "which has no name in the header row"
            )
    cells = tuple(values[:width])
    for column, value in enumerate(cells):
        if isinstance(value, str):
            _check_length(source, number, column, value, columns)
        if cell_formats is not None and cell_formats[column] != GENERAL:
            formats[(index, column)] = cell_formats[column]
    return cells + (blank,) * (width - len(cells))


def _check_length(
    source: str, number: int, column: int, text: str, columns: Sequence[str] = ()
) -> None:
    if len(text) > MAX_CELL_CHARS:
        named = f" ({columns[column]!r})" if columns else ""
        raise SheetError(
            f"{source}: row {number}, column {column_letter(column)}{named} has "
            f"{len(text):,} characters: the limit is {MAX_CELL_CHARS:,} a cell"
        )
