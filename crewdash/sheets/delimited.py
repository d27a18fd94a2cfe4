"""CSV and TSV text in: the encoding and the delimiter detected (and said), every cell kept as
the text it was ("007" stays "007", a quoted field keeps its line breaks).

Encoding: a byte-order mark decides (UTF-8 or UTF-16); otherwise strict UTF-8, else
Windows-1252, else Latin-1. No guessing library: a short Latin-1 file guessed as some other
code page would change letters silently, while this order always says which one it took.
Delimiter: `.tsv` is tab; otherwise the most frequent of , ; TAB | on the header line outside
quotes (a tie goes to that order), a comma when there is none.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import unicodedata
from collections.abc import Iterator

from crewdash.base.config import MAX_CELL_CHARS
from crewdash.base.errors import SheetError
from crewdash.sheets.rows import RawRow, collect
from crewdash.sheets.sheet import Sheet

DELIMITERS = (",", ";", "\t", "|")
DELIMITER_NAMES = {",": "','", ";": "';'", "\t": "tab", "|": "'|'"}
# Magic numbers of what is often renamed .csv by mistake.
_ZIP = b"PK\x03\x04"
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # Excel 97-2003 (.xls) and other OLE2 files
_QUOTED = re.compile(r'"(?:[^"]|"")*"?')
# Share of control characters (not TAB, CR, LF) in the first 64 KiB above which text is binary.
_CONTROL_SHARE = 0.05


def decode(data: bytes, filename: str) -> tuple[str, str]:
    """The text of `data` and its encoding in words; refuses what is not text."""
    if data.startswith(_ZIP):
        raise SheetError(
            f"{filename} is a zip archive (an Excel .xlsx?), not CSV text: "
            "upload it with its own extension"
        )
    if data.startswith(_OLE):
        raise SheetError(
            f"{filename} is an Excel 97-2003 workbook, not CSV text: save it as .xlsx or .csv"
        )
    if data.startswith(codecs.BOM_UTF8):
        text, encoding = _strict(data[3:], "utf-8", filename), "UTF-8 with BOM"
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text, encoding = _strict(data, "utf-16", filename), "UTF-16 with BOM"
    else:
        if b"\x00" in data:
            raise SheetError(f"{filename} holds NUL bytes: it is binary, not CSV text")
        try:
            text, encoding = data.decode("utf-8"), "UTF-8"
        except UnicodeDecodeError:
            try:
                text, encoding = data.decode("cp1252"), "Windows-1252 (not valid UTF-8)"
            except UnicodeDecodeError:
                text, encoding = data.decode("latin-1"), "Latin-1 (not valid UTF-8)"
    if "\x00" in text:
        raise SheetError(f"{filename} holds NUL characters: it is binary, not CSV text")
    sample = text[: 64 * 1024]
    control = sum(1 for c in sample if unicodedata.category(c) == "Cc" and c not in "\t\r\n")
    if sample and control / len(sample) > _CONTROL_SHARE:
        raise SheetError(f"{filename} is mostly control characters: it is binary, not CSV text")
    return text, encoding


def _strict(data: bytes, encoding: str, filename: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise SheetError(
            f"{filename} starts with a {encoding.upper()} byte-order mark but is not "
            f"{encoding.upper()} (byte {exc.start + 1})"
        ) from None


def sniff_delimiter(text: str) -> str:
    """The delimiter of the header line: the most frequent candidate outside quotes."""
    head = _QUOTED.sub("", text[: 64 * 1024]).split("\n", 1)[0]
    counts = [head.count(d) for d in DELIMITERS]
    best = max(counts)
    return DELIMITERS[counts.index(best)] if best else ","


def read_delimited(data: bytes, filename: str, *, tab: bool = False) -> Sheet:
    text, encoding = decode(data, filename)
    if not text.strip():
        raise SheetError(f"{filename} is empty")
    delimiter = "\t" if tab else sniff_delimiter(text)
    columns, rows, _, notes = collect(filename, _records(text, delimiter, filename))
    kind = "TSV" if tab else "CSV"
    return Sheet(
        filename=filename,
        kind="csv",
        columns=columns,
        rows=tuple(rows),
        detected=f"{kind}, {encoding}, delimiter {DELIMITER_NAMES[delimiter]}",
        delimiter=delimiter,
        notes=tuple(notes),
    )


def _records(text: str, delimiter: str, filename: str) -> Iterator[RawRow]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        for record in reader:
            yield record, None
    except csv.Error as exc:
        # the csv module's own cap (131,072 characters) is far above ours: name ours
        if "field limit" in str(exc):
            raise SheetError(
                f"{filename}: a cell near line {reader.line_num} is over "
                f"{MAX_CELL_CHARS:,} characters: the limit is {MAX_CELL_CHARS:,} a cell"
            ) from None
        raise SheetError(f"{filename}: line {reader.line_num}: {exc}") from None
