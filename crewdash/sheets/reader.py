"""Reading an uploaded sheet: `read_sheet` picks the parser by the file's extension and checks
the size before any parsing; every parser's rows then pass the same checks (`sheets.rows`).

Every refusal is one `SheetError` line naming the file and the limit, row or column.
"""

from __future__ import annotations

from pathlib import PurePath

from crewdash.base.config import MAX_SHEET_BYTES
from crewdash.base.errors import SheetError
from crewdash.sheets.delimited import read_delimited
from crewdash.sheets.rows import megabytes
from crewdash.sheets.sheet import Sheet
from crewdash.sheets.workbook import read_workbook

# extension -> the kind of file it must be
EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".xlsx": "xlsx"}
OTHER_WORKBOOKS = (".xls", ".xlsm", ".xlsb", ".ods", ".numbers")


def read_sheet(data: bytes, filename: str, sheet_name: str | None = None) -> Sheet:
    """The sheet in `data`, read by `filename`'s extension (.csv, .tsv or .xlsx). `sheet_name`
    picks a workbook's sheet (default: the first); a CSV has none to pick."""
    name = PurePath(filename).name or "the file"
    suffix = PurePath(name).suffix.lower()
    if not suffix:
        raise SheetError(f"{name} has no extension: use a .csv, .tsv or .xlsx file")
    if suffix not in EXTENSIONS:
        hint = " (Excel saves any workbook as .xlsx)" if suffix in OTHER_WORKBOOKS else ""
        raise SheetError(f"{name}: unsupported file type {suffix!r}: use .csv, .tsv or .xlsx{hint}")
    if not data:
        raise SheetError(f"{name} is empty")
    if len(data) > MAX_SHEET_BYTES:
        raise SheetError(
            f"{name} is {megabytes(len(data))}: the limit is {megabytes(MAX_SHEET_BYTES)}"
        )
    if EXTENSIONS[suffix] == "xlsx":
        return read_workbook(data, name, sheet_name)
    if sheet_name is not None:
        raise SheetError(f"{name} is a {suffix[1:].upper()} file: it has no sheets to pick")
    return read_delimited(data, name, tab=EXTENSIONS[suffix] == "tsv")
