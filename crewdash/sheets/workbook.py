"""Excel .xlsx in, values only, streamed (openpyxl's read-only mode keeps memory flat).

What a cell holds is what the file saved: a formula's cached value, never a computation. A
formula with no cached value (a file written by a library, never opened and saved by a
spreadsheet program) is kept as its formula text, and a note says so. Macros are never loaded
and external links are not read. Merged cells in data rows keep their value in the range's first
cell and leave the others blank (a note lists them); merged cells in the header row are refused,
as every column needs its own name.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from datetime import time as time_of_day
from typing import Any

from openpyxl import load_workbook
from openpyxl.utils.cell import range_boundaries

from crewdash.base.config import MAX_SHEET_UNPACKED_BYTES
from crewdash.base.errors import SheetError
from crewdash.sheets.rows import RawRow, collect, megabytes
from crewdash.sheets.sheet import CellValue, Sheet

_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # Excel 97-2003, and any password-protected workbook
# In a worksheet's XML: a merged range, and a formula (`<f>`; not `<formula>`, `<fill>`...).
_MERGE = re.compile(rb'<(?:\w+:)?mergeCell\s[^>]*?ref="([A-Za-z]+\d+:[A-Za-z]+\d+)"')
_FORMULA = re.compile(rb"<(?:\w+:)?f[\s>/]")
# What a number format shows literally (quoted text, [colour] or [$-locale] tags, \x escapes).
_LITERALS = re.compile(r'"[^"]*"|\[[^\]]*]|\\.')


@dataclass
class _Seen:
    """What reading changed, for the notes."""

    formulas: list[str] = field(default_factory=list)
    merged_values: int = 0


def read_workbook(data: bytes, filename: str, sheet_name: str | None = None) -> Sheet:
    """Sheet `sheet_name` (default: the first) of the workbook in `data`."""
    archive = _archive(data, filename)
    book = _load(data, filename, data_only=True)
    formulas_book = None
    try:
        names = tuple(ws.title for ws in book.worksheets)
        if not names:
            raise SheetError(f"{filename} has no worksheet (only charts)")
        chosen = names[0] if sheet_name is None else sheet_name
        if chosen not in names:
            listed = ", ".join(repr(n) for n in names)
            raise SheetError(f"{filename} has no sheet {chosen!r}; its sheets: {listed}")
        where = f" (sheet {chosen!r})"
        sheet = book[chosen]
        # openpyxl's read-only sheet knows its part in the zip but has no public name for it
        merged, has_formulas = _scan(archive, sheet._worksheet_path.lstrip("/"))
        header_merges = [m for m in merged if range_boundaries(m)[1] == 1]
        if header_merges:
            raise SheetError(
                f"{filename}{where}: the header row has merged cells "
                f"({', '.join(sorted(header_merges))}): unmerge them so that every column "
                "has a name of its own"
            )
        if has_formulas:
            formulas_book = _load(data, filename, data_only=False)
        seen = _Seen()
        raw = _raw_rows(sheet, formulas_book[chosen] if formulas_book else None, merged, seen)
        columns, rows, formats, notes = collect(filename, raw, where, blank=None)
    finally:
        archive.close()
        book.close()
        if formulas_book is not None:
            formulas_book.close()
    notes += _notes(seen, merged)
    return Sheet(
        filename=filename,
        kind="xlsx",
        columns=columns,
        rows=tuple(rows),
        detected=f"Excel sheet {chosen!r} of {len(names)}",
        formats=formats,
        sheet_names=names,
        sheet_name=chosen,
        notes=tuple(notes),
    )


def _archive(data: bytes, filename: str) -> zipfile.ZipFile:
    """The zip inside an .xlsx, after checking it is one and what it unpacks to."""
    if data.startswith(_OLE):
        raise SheetError(
            f"{filename} is an Excel 97-2003 or password-protected workbook: "
            "save it as an .xlsx without a password"
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise SheetError(
            f"{filename} is not an Excel workbook: an .xlsx is a zip archive and this is not "
            "one (a CSV with the wrong extension?)"
        ) from None
    unpacked = sum(info.file_size for info in archive.infolist())
    if unpacked > MAX_SHEET_UNPACKED_BYTES:
        raise SheetError(
            f"{filename} unpacks to {megabytes(unpacked)}: the limit is "
            f"{megabytes(MAX_SHEET_UNPACKED_BYTES)}"
        )
    return archive


def _load(data: bytes, filename: str, *, data_only: bool) -> Any:
    try:
        return load_workbook(
            io.BytesIO(data), read_only=True, data_only=data_only, keep_links=False
        )
    except Exception as exc:  # noqa: BLE001 - a malformed part raises whatever its parser meets
        raise SheetError(
            f"{filename} is a zip archive but not an Excel workbook "
            f"({type(exc).__name__}: {str(exc)[:120]})"
        ) from None


def _scan(archive: zipfile.ZipFile, part: str) -> tuple[set[str], bool]:
    """The merged ranges of a worksheet's XML and whether it holds a formula, read as bytes in
    1 MiB blocks (openpyxl's read-only mode does not report merged cells)."""
    merged: set[str] = set()
    formulas = False
    tail = b""
    with archive.open(part) as stream:
        while chunk := stream.read(1 << 20):
            block = tail + chunk
            merged.update(m.decode("ascii").upper() for m in _MERGE.findall(block))
            formulas = formulas or _FORMULA.search(block) is not None
            tail = block[-512:]  # a tag cut by the block's end is whole in the next one
    return merged, formulas


def _raw_rows(sheet: Any, formulas: Any, merged: set[str], seen: _Seen) -> Iterator[RawRow]:
    """Each row's values and number formats; a formula without a cached value as its text."""
    ranges = [range_boundaries(m) for m in merged]  # (min_col, min_row, max_col, max_row)
    sheet.reset_dimensions()  # a writer's <dimension> may be wrong: read every row there is
    formula_rows = None
    if formulas is not None:
        formulas.reset_dimensions()
        formula_rows = iter(formulas.iter_rows())
    for number, row in enumerate(sheet.iter_rows(), start=1):
        formula_row = next(formula_rows, ()) if formula_rows is not None else ()
        values: list[CellValue] = []
        formats: list[str] = []
        for column, cell in enumerate(row, start=1):
            value = cell.value
            if value is None and column <= len(formula_row):
                source = formula_row[column - 1]
                if source.data_type == "f" and source.value is not None:
                    value = str(getattr(source.value, "text", source.value))
                    seen.formulas.append(source.coordinate)
            elif value is not None and ranges and _covered(ranges, column, number):
                value = None
                seen.merged_values += 1
            elif isinstance(value, datetime) and value.time() == time_of_day(0):
                if not _shows_time(cell.number_format):
                    value = value.date()
            values.append(value)
            formats.append(cell.number_format)
        yield values, formats


def _covered(ranges: list[tuple[int, int, int, int]], column: int, row: int) -> bool:
    """Whether a cell lies in a merged range without being its first cell."""
    return any(
        c1 <= column <= c2 and r1 <= row <= r2 and (column, row) != (c1, r1)
        for c1, r1, c2, r2 in ranges
    )


def _shows_time(number_format: str) -> bool:
    """Whether a date format shows a time of day (hours or seconds; "mm" alone is months)."""
    shown = _LITERALS.sub("", number_format).lower()
    return "h" in shown or "s" in shown


def _notes(seen: _Seen, merged: set[str]) -> list[str]:
    notes = []
    if seen.formulas:
        cells = ", ".join(seen.formulas[:5]) + (" ..." if len(seen.formulas) > 5 else "")
        notes.append(
            f"{len(seen.formulas)} formulas had no saved value ({cells}): kept as their formula "
            "text, never computed. Open and save the file in a spreadsheet program to store "
            "their values."
        )
    if merged:
        ranges = sorted(merged)
        shown = ", ".join(ranges[:5]) + (" ..." if len(ranges) > 5 else "")
        dropped = f" ({seen.merged_values} hidden values left out)" if seen.merged_values else ""
        notes.append(
            f"Merged cells {shown}: each range's value is in its first cell; the other cells "
            f"are blank{dropped}."
        )
    return notes
