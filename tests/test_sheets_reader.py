"""Reading sheets: real CSV and .xlsx files written here (csv, openpyxl), read back cell for cell,
and every bad input refused with its one line."""

import csv
import io
import zipfile
from datetime import date, datetime, time

import pytest
from openpyxl import Workbook

from crewdash.base.config import MAX_CELL_CHARS, MAX_SHEET_BYTES, MAX_SHEET_ROWS
from crewdash.base.errors import CrewdashError, SheetError
from crewdash.sheets import workbook
from crewdash.sheets.reader import read_sheet
from crewdash.sheets.sheet import cell_text

pytestmark = pytest.mark.timeout(60)

HEADER = ["Name", "Code", "Joined", "Seen at", "Score", "Notes", "Double"]


def xlsx(*sheets: tuple[str, list[list[object]]], merge: str | None = None) -> bytes:
    """A workbook of the given sheets (title, rows), saved as openpyxl saves: no cached values."""
    book = Workbook()
    book.remove(book.active)
    for title, rows in sheets:
        ws = book.create_sheet(title)
        for row in rows:
            ws.append(row)
        if merge and title == sheets[0][0]:
            ws.merge_cells(merge)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def csv_bytes(rows: list[list[str]], encoding: str = "utf-8", delimiter: str = ",") -> bytes:
    out = io.StringIO(newline="")
    csv.writer(out, delimiter=delimiter).writerows(rows)
    return out.getvalue().encode(encoding)


ROWS: list[list[object]] = [
    HEADER,
    ["Zoë Ünal", "007", date(2024, 1, 2), datetime(2024, 3, 4, 9, 30), 12, "日本語 ✓", "=E2*2"],
    ["Bob", "0042", date(1999, 12, 31), datetime(2024, 3, 5, 0, 0), 2.5, None, "=E3*2"],
    ["", None, None, None, None, "only a note", None],
]


def test_a_workbook_keeps_every_value_and_its_type_and_picks_the_second_sheet_by_name() -> None:
    data = xlsx(("Summary", [["x"], [1]]), ("Q3", ROWS))
    sheet = read_sheet(data, "leads.xlsx", "Q3")
    assert sheet.kind == "xlsx"
    assert sheet.sheet_names == ("Summary", "Q3") and sheet.sheet_name == "Q3"
    assert sheet.detected == "Excel sheet 'Q3' of 2"
    assert sheet.columns == tuple(HEADER)
    first, second, third = sheet.rows
    # a date is a date, a datetime keeps its time, text keeps its leading zeros
    assert first == (
        "Zoë Ünal",
        "007",
        date(2024, 1, 2),
        datetime(2024, 3, 4, 9, 30),
        12,
        "日本語 ✓",
        "=E2*2",
    )
    assert type(first[2]) is date and type(first[3]) is datetime and type(first[4]) is int
    # a datetime at midnight in a date-and-time format stays a datetime
    assert second[3] == datetime(2024, 3, 5, 0, 0) and type(second[3]) is datetime
    assert second[4] == 2.5 and second[5] is None
    # openpyxl saves "" as no cell at all
    assert third == (None, None, None, None, None, "only a note", None)
    assert sheet.number_format(0, 2) == "yyyy-mm-dd"
    assert sheet.number_format(0, 3) == "yyyy-mm-dd h:mm:ss"
    assert sheet.number_format(0, 0) == "General"
    # formulas without a saved value: their text, never computed, and a note says so
    assert any("2 formulas had no saved value (G2, G3)" in n for n in sheet.notes)


def test_the_first_sheet_is_the_default() -> None:
    sheet = read_sheet(xlsx(("Summary", [["x"], [1]]), ("Q3", ROWS)), "leads.xlsx")
    assert sheet.sheet_name == "Summary" and sheet.rows == ((1,),)
    assert sheet.detected == "Excel sheet 'Summary' of 2"
    assert sheet.notes == ()


def test_a_formula_with_a_saved_value_is_read_as_that_value() -> None:
    data = xlsx(("S", [["a", "b"], [2, "=A2*21"]]))
    # What a spreadsheet program writes on save: the formula and its cached value.
    parts = {}
    with zipfile.ZipFile(io.BytesIO(data)) as zin:
        for info in zin.infolist():
            parts[info.filename] = zin.read(info)
    xml = parts["xl/worksheets/sheet1.xml"]
    assert b"<f>A2*21</f><v></v>" in xml
    parts["xl/worksheets/sheet1.xml"] = xml.replace(b"<v></v>", b"<v>42</v>")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zout:
        for name, body in parts.items():
            zout.writestr(name, body)
    sheet = read_sheet(out.getvalue(), "saved.xlsx")
    assert sheet.rows == ((2, 42),)
    assert sheet.notes == ()


def test_merged_cells_keep_the_value_in_the_first_cell_and_say_so() -> None:
    data = xlsx(("S", [["a", "b", "c"], ["joined", "", "x"], ["y", "z", "w"]]), merge="A2:B2")
    sheet = read_sheet(data, "m.xlsx")
    assert sheet.rows == (("joined", None, "x"), ("y", "z", "w"))
    assert sheet.notes == (
        "Merged cells A2:B2: each range's value is in its first cell; the other cells are blank.",
    )


def test_merged_cells_in_the_header_are_refused() -> None:
    data = xlsx(("S", [["Title", None, "c"], ["a", "b", "c"]]), merge="A1:B1")
    with pytest.raises(SheetError, match=r"header row has merged cells \(A1:B1\): unmerge"):
        read_sheet(data, "m.xlsx")


def test_blank_rows_between_data_stay_and_blank_rows_at_the_end_go() -> None:
    data = xlsx(("S", [["a"], ["1"], [None], ["2"], [None], [None]]))
    sheet = read_sheet(data, "b.xlsx")
    assert sheet.rows == (("1",), (None,), ("2",))
    # trailing empty rows of a workbook that are not in the file at all are no rows either
    assert read_sheet(csv_bytes([["a"], ["1"], [""], ["2"], [""]]), "b.csv").rows == (
        ("1",),
        ("",),
        ("2",),
    )


def test_workbook_columns_without_a_name_or_a_value_are_left_out() -> None:
    book = Workbook()
    ws = book.active
    ws.append(["a", "b"])
    ws.append([1, 2])
    ws["E1"].number_format = "0.00"  # a formatted, empty cell widens the sheet
    ws["E5"].number_format = "0.00"
    out = io.BytesIO()
    book.save(out)
    assert read_sheet(out.getvalue(), "w.xlsx").rows == ((1, 2),)


@pytest.mark.parametrize(
    ("encoding", "bom", "detected"),
    [
        ("utf-8", b"", "CSV, UTF-8, delimiter ','"),
        ("utf-8", b"\xef\xbb\xbf", "CSV, UTF-8 with BOM, delimiter ','"),
        ("latin-1", b"", "CSV, Windows-1252 (not valid UTF-8), delimiter ','"),
        ("utf-16-le", b"\xff\xfe", "CSV, UTF-16 with BOM, delimiter ','"),
    ],
)
def test_csv_encodings_are_detected_and_said(encoding: str, bom: bytes, detected: str) -> None:
    rows = [["name", "city"], ["Renée", "Straße 5"], ["José", "Ørsted"]]
    sheet = read_sheet(bom + csv_bytes(rows, encoding), "people.csv")
    assert sheet.detected == detected
    assert sheet.columns == ("name", "city")
    assert sheet.rows == (("Renée", "Straße 5"), ("José", "Ørsted"))


def test_bytes_that_are_not_windows_1252_fall_back_to_latin_1() -> None:
    data = b"a,b\n\x81x,\xe9\n" + b"plain,text\n" * 5  # 0x81: no Windows-1252 character
    sheet = read_sheet(data, "odd.csv")
    assert sheet.detected == "CSV, Latin-1 (not valid UTF-8), delimiter ','"
    assert sheet.rows[0] == ("\x81x", "é")


@pytest.mark.parametrize(
    ("delimiter", "name", "filename"),
    [(";", "';'", "x.csv"), ("\t", "tab", "x.csv"), ("|", "'|'", "x.csv"), ("\t", "tab", "x.tsv")],
)
def test_csv_delimiters_are_detected(delimiter: str, name: str, filename: str) -> None:
    rows = [["id", "text, with a comma", "n"], ["007", "a; b, c", "1,5"]]
    sheet = read_sheet(csv_bytes(rows, delimiter=delimiter), filename)
    assert sheet.detected.endswith(f"delimiter {name}")
    assert sheet.detected.startswith("TSV" if filename.endswith(".tsv") else "CSV")
    assert sheet.delimiter == delimiter
    assert sheet.rows == (("007", "a; b, c", "1,5"),)


def test_every_csv_cell_is_kept_as_the_text_it_was() -> None:
    long_text = "word " * (MAX_CELL_CHARS // 5)
    rows = [
        ["id", "note", "amount", "when"],
        ["007", 'two\nlines, and "quotes"', "1.50", "02/01/2024"],
        ["0", long_text, "-3", "  spaced  "],
        ["=1+1", "\r\nCRLF inside\r\n", "1e5", ""],
    ]
    sheet = read_sheet(csv_bytes(rows), "cells.csv")
    assert sheet.rows == tuple(tuple(r) for r in rows[1:])
    assert len(sheet.rows[1][1]) == MAX_CELL_CHARS


def test_short_csv_rows_are_padded_with_a_note_and_trailing_empty_cells_ignored() -> None:
    sheet = read_sheet(b"a,b,c\n1,2\n4,5,6,,\n", "short.csv")
    assert sheet.rows == (("1", "2", ""), ("4", "5", "6"))
    assert sheet.notes == ("1 row has fewer cells than the header: the missing cells are blank.",)


def test_cell_text_reads_as_a_person_would() -> None:
    assert cell_text(3.0) == "3" and cell_text(2.5) == "2.5" and cell_text(12) == "12"
    assert cell_text(date(2024, 1, 2)) == "2024-01-02"
    assert cell_text(datetime(2024, 1, 2, 9, 30)) == "2024-01-02 09:30:00"
    assert cell_text(time(9, 30)) == "09:30:00"
    assert cell_text(True) == "TRUE" and cell_text(None) == "" and cell_text("007") == "007"
    assert cell_text(float("inf")) == "inf"


BAD_INPUTS = [
    (b"", "a.csv", r"^a\.csv is empty$"),
    (b"\xef\xbb\xbf \n\n", "a.csv", r"^a\.csv is empty$"),
    (b"", "a.xlsx", r"^a\.xlsx is empty$"),
    (b"\n\na,b\n1,2\n", "a.csv", r"the first row is empty; it must name the columns"),
    (b"a,,c\n1,2,3\n", "a.csv", r"the header row has no name in column B"),
    (b"a,b\n1,2,3\n", "a.csv", r"row 2 has a value in column C, which has no name"),
    (
        b"Name,b,Name,b ,c\n1,2,3,4,5\n",
        "a.csv",
        r"duplicate column names: 'Name' \(columns A and C\), 'b' \(columns B and D\)",
    ),
    (b"a,b\n", "a.csv", r"has column names but no rows below them"),
    (b"a,b\x00c\n1,2\n", "a.csv", r"holds NUL bytes: it is binary, not CSV text"),
    (bytes(range(1, 32)) * 40, "a.csv", r"mostly control characters: it is binary"),
    (b"PK\x03\x04rest", "a.csv", r"is a zip archive \(an Excel \.xlsx\?\), not CSV text"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1rest", "a.csv", r"Excel 97-2003 workbook, not CSV text"),
    (b"a,b\n1,2\n", "a.xlsx", r"^a\.xlsx is not an Excel workbook: an \.xlsx is a zip archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1rest", "a.xlsx", r"Excel 97-2003 or password-protected"),
    (b"a,b\n1,2\n", "a.xls", r"unsupported file type '\.xls': use \.csv, \.tsv or \.xlsx \(Excel"),
    (
        b"a,b\n1,2\n",
        "a.json",
        (r"^a\.json: unsupported file type '\.json': use \.csv, \.tsv or \.xlsx$"),
    ),
    (b"a,b\n1,2\n", "notes", r"^notes has no extension"),
]


@pytest.mark.parametrize(("data", "filename", "message"), BAD_INPUTS)
def test_bad_input_is_refused_in_one_line(data: bytes, filename: str, message: str) -> None:
    with pytest.raises(SheetError, match=message) as caught:
        read_sheet(data, filename)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, CrewdashError)


def test_a_zip_that_is_not_a_workbook_is_refused() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(SheetError, match=r"^z\.xlsx is a zip archive but not an Excel workbook"):
        read_sheet(out.getvalue(), "z.xlsx")


def test_an_unknown_sheet_is_refused_listing_the_sheets() -> None:
    data = xlsx(("Summary", [["x"], [1]]), ("Q3", ROWS))
    message = r"^l\.xlsx has no sheet 'Q4'; its sheets: 'Summary', 'Q3'$"
    with pytest.raises(SheetError, match=message):
        read_sheet(data, "l.xlsx", "Q4")
    with pytest.raises(SheetError, match=r"l\.csv is a CSV file: it has no sheets to pick"):
        read_sheet(b"a\n1\n", "l.csv", "Q4")


def test_an_empty_worksheet_and_an_empty_first_row_are_refused() -> None:
    with pytest.raises(SheetError, match=r"^e\.xlsx \(sheet 'S'\) is empty$"):
        read_sheet(xlsx(("S", [])), "e.xlsx")
    with pytest.raises(SheetError, match=r"\(sheet 'S'\): the header row has no name in column B"):
        read_sheet(xlsx(("S", [["a", None, "c"], [1, 2, 3]])), "e.xlsx")
    with pytest.raises(SheetError, match=r"duplicate column names: 'a' \(columns A and B\)"):
        read_sheet(xlsx(("S", [["a", "a"], [1, 2]])), "e.xlsx")


def test_a_file_over_the_size_limit_is_refused_before_parsing() -> None:
    data = b"a,b\n" + b"x" * MAX_SHEET_BYTES
    with pytest.raises(SheetError, match=r"^big\.csv is 50\.0 MB: the limit is 50\.0 MB$"):
        read_sheet(data, "big.csv")
    with pytest.raises(SheetError, match=r"^big\.xlsx is 50\.0 MB: the limit is 50\.0 MB$"):
        read_sheet(data, "big.xlsx")  # no zip check ran: the size came first


def test_more_rows_than_the_limit_are_refused_in_csv_and_xlsx() -> None:
    rows = [["n"]] + [[str(i)] for i in range(MAX_SHEET_ROWS)]
    assert len(read_sheet(csv_bytes(rows), "ok.csv").rows) == MAX_SHEET_ROWS
    message = r"more than 10,000 rows: the limit is 10,000 rows below the header"
    with pytest.raises(SheetError, match=r"^many\.csv has " + message):
        read_sheet(csv_bytes([*rows, ["one more"]]), "many.csv")
    with pytest.raises(SheetError, match=r"^many\.xlsx \(sheet 'S'\) has " + message):
        read_sheet(xlsx(("S", [*rows, ["one more"]])), "many.xlsx")


def test_a_cell_over_the_character_limit_is_refused_naming_row_and_column() -> None:
    big = "x" * (MAX_CELL_CHARS + 1)
    message = r"row 3, column B \('notes'\) has 10,001 characters: the limit is 10,000 a cell"
    with pytest.raises(SheetError, match=message):
        read_sheet(csv_bytes([["id", "notes"], ["1", "ok"], ["2", big]]), "long.csv")
    with pytest.raises(SheetError, match=message):
        read_sheet(xlsx(("S", [["id", "notes"], [1, "ok"], [2, big]])), "long.xlsx")
    with pytest.raises(SheetError, match=r"a cell near line 2 is over 10,000 characters"):
        read_sheet(b"a\n" + b"y" * 200_000 + b"\n", "huge.csv")  # past the csv module's own cap


def test_a_workbook_that_unpacks_past_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    data = xlsx(("S", [["a"], ["b" * 5000]]))
    monkeypatch.setattr(workbook, "MAX_SHEET_UNPACKED_BYTES", 4096)
    with pytest.raises(SheetError, match=r"^u\.xlsx unpacks to 0\.0 MB: the limit is 0\.0 MB$"):
        read_sheet(data, "u.xlsx")
