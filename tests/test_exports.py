import csv
import io
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from crewdash.batch import Batch, TokenUsage
from crewdash.exports import csv_cell, export

ROOT = Path(__file__).resolve().parent.parent
FORMULAS = [
    '=HYPERLINK("http://evil.example","x")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A9)",
    "\t=1+1",
    "\r=1+1",
]


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_a_spreadsheet_never_sees_a_formula_in_topics_results_or_errors() -> None:
    topics = [f"topic {i}" for i in range(len(FORMULAS))]
    batch = Batch("b", "timing", FORMULAS, model_label="m", max_concurrency=2, model="gpt-4o")
    for run_id, formula, topic in zip(batch.run_ids, FORMULAS, topics, strict=True):
        batch.mark_running(run_id)
        if formula.startswith("@"):
            batch.mark_failed(run_id, formula)
        else:
            batch.mark_succeeded(run_id, formula, TokenUsage(10, 5, 15))
    parsed = rows(export(batch.snapshot(), "csv"))
    assert [r["topic"] for r in parsed] == ["'" + f for f in FORMULAS]
    for row, formula in zip(parsed, FORMULAS, strict=True):
        cell = row["error"] if formula.startswith("@") else row["result"]
        assert cell == "'" + formula
        # numeric columns are still plain numbers
        assert row["index"].isdigit() and float(row["duration_s"]) >= 0
    assert parsed[0]["cost_usd"] == "0.00007500"


def test_text_with_a_separator_is_quoted_so_no_spreadsheet_splits_it() -> None:
    assert csv_cell("a;=1+1") == '"a;=1+1"'
    assert csv_cell("a\t=1+1") == '"a\t=1+1"'
    assert csv_cell('say "hi", then go') == '"say ""hi"", then go"'
    assert csv_cell("plain words") == "plain words"


def test_numbers_stay_numbers_even_when_negative() -> None:
    assert csv_cell(-3) == "-3"
    assert csv_cell(-1.5) == "-1.5"
    assert csv_cell(Decimal("-2.000")) == "-2.000"
    assert csv_cell(Decimal("0.00000015")) == "0.00000015"
    assert csv_cell(None) == ""
    assert csv_cell("-3") == "'-3"  # text is text: a topic "-3" is not a number column


def test_the_dashboards_table_download_is_off() -> None:
    """st.dataframe's own "Download as CSV" writes cells as they are (formulas included): the
    dashboard offers the batch's Download CSV button (neutralised) instead."""
    code = "from streamlit import config; print(config.get_option('client.disableDataExport'))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "True"


@pytest.mark.parametrize("value", ["", "a", "ok, fine", "line\nbreak", "x" * 50])
def test_ordinary_text_reads_back_unchanged(value: str) -> None:
    batch = Batch("b", "r", ["t"], model_label="m", max_concurrency=1)
    batch.mark_running(batch.run_ids[0])
    batch.mark_succeeded(batch.run_ids[0], value, None)
    assert rows(export(batch.snapshot(), "csv"))[0]["result"] == value
