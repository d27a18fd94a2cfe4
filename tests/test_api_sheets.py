"""Sheets through the real API (`uvicorn crewdash.api:app`): rows as JSON or a file upload, one
crew per row, and the enriched sheet back as .xlsx and CSV with every original cell unchanged."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from openpyxl import Workbook, load_workbook

from tests.api_server import api_server

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    workdir = tmp_path_factory.mktemp("sheets")
    with (
        api_server(workdir, CREWDASH_DEMO_LATENCY="0.1") as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        yield client


def ended(api: httpx.Client, batch_id: str) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + 120
    while True:
        body = api.get(f"/batches/{batch_id}").json()
        if body["state"] != "running":
            return body  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, body
        time.sleep(0.2)


def test_json_rows_run_one_crew_per_row_and_come_back_as_the_same_sheet_enriched(
    api: httpx.Client,
) -> None:
    rows = [
        {"Company": "Acme", "id": "007", "note": "=1+1"},
        {"Company": "", "id": "008", "note": "no company: skipped"},
        {"Company": "Ünïcode GmbH", "id": "009", "note": None},
    ]
    made = api.post("/batches", json={"rows": rows, "input_map": {"topic": "Company"}})
    assert made.status_code == 202, made.text
    batch_id = made.json()["batch_id"]
    assert made.json()["crews"] == 2 and "sheet" in made.json()["links"]
    assert any("1 row(s) skipped" in n for n in made.json()["notes"])
    body = ended(api, batch_id)
    assert [c["topic"] for c in body["crews"]] == ["Acme", "Ünïcode GmbH"]

    got = api.get(f"/batches/{batch_id}/export", params={"format": "xlsx"})
    assert got.status_code == 200
    assert 'filename="rows.enriched.xlsx"' in got.headers["content-disposition"]
    sheet = load_workbook(io.BytesIO(got.content)).active
    table = [[c.value for c in row] for row in sheet.iter_rows()]
    assert table[0][:3] == ["Company", "id", "note"] and table[0][3] == "crew: state"
    assert [r[:3] for r in table[1:]] == [
        ["Acme", "007", "=1+1"],  # text, not a formula, leading zeros kept
        [None, "008", "no company: skipped"],
        ["Ünïcode GmbH", "009", None],
    ]
    assert [r[3] for r in table[1:]] == ["succeeded", "skipped", "succeeded"]
    assert sheet["C2"].data_type == "s"

    lines = api.get(f"/batches/{batch_id}/export", params={"format": "csv"})
    assert lines.status_code == 200 and "rows.enriched.csv" in lines.headers["content-disposition"]
    read = list(csv.reader(io.StringIO(lines.text.lstrip("\ufeff"))))
    assert read[0][:4] == ["Company", "id", "note", "crew: state"]
    assert [r[1] for r in read[1:]] == ["007", "008", "009"]
    assert read[1][2] == "'=1+1"  # neutralised for spreadsheets


def test_an_uploaded_workbook_runs_its_chosen_sheet_and_keeps_its_dates(
    api: httpx.Client, tmp_path: Path
) -> None:
    book = Workbook()
    first = book.active
    first.title = "Notes"
    first.append(["nothing", "here"])
    leads = book.create_sheet("Leads")
    leads.append(["Name", "Since", "Amount"])
    leads.append(["Globex", datetime(2024, 1, 2, 9, 30), 1200.5])
    leads.append(["Initech", datetime(2023, 5, 6), 7])
    leads["B2"].number_format = "yyyy-mm-dd hh:mm"
    path = tmp_path / "leads.xlsx"
    book.save(path)
    made = api.post(
        "/batches/sheet",
        files={"file": ("leads.xlsx", path.read_bytes())},
        data={"sheet_name": "Leads", "input_map": json.dumps({"topic": "Name"})},
    )
    assert made.status_code == 202, made.text
    batch_id = made.json()["batch_id"]
    assert made.json()["crews"] == 2
    ended(api, batch_id)
    got = api.get(f"/batches/{batch_id}/export", params={"format": "xlsx"})
    sheet = load_workbook(io.BytesIO(got.content)).active
    assert sheet["A2"].value == "Globex" and sheet["B2"].value == datetime(2024, 1, 2, 9, 30)
    assert sheet["B2"].number_format == "yyyy-mm-dd hh:mm" and sheet["C2"].value == 1200.5
    assert sheet["D2"].value == "succeeded" and sheet["D3"].value == "succeeded"
    assert sheet.freeze_panes == "A2"


@pytest.mark.parametrize(
    "files, data, message",
    [
        ({"file": ("x.xlsx", b"not a zip at all")}, {}, "x.xlsx"),
        ({"file": ("empty.csv", b"")}, {}, "empty"),
        (
            {"file": ("a.csv", b"Name\nAcme\n")},
            {"input_map": json.dumps({"topic": "Nope"})},
            "'Nope'",
        ),
        ({"file": ("a.csv", b"Name\nAcme\n")}, {"input_map": "{not json"}, "input_map: not JSON"),
        ({"file": ("a.csv", b"Name\nAcme\n")}, {"sheet_name": "Other"}, ""),
    ],
)
def test_a_bad_sheet_is_a_4xx_that_says_why_and_starts_nothing(
    api: httpx.Client,
    files: dict,
    data: dict,
    message: str,  # type: ignore[type-arg]
) -> None:
    before = len(api.get("/batches").json())
    refused = api.post("/batches/sheet", files=files, data=data)
    assert 400 <= refused.status_code < 500, refused.text
    assert message in refused.json()["detail"]
    assert len(api.get("/batches").json()) == before


def test_topics_or_rows_not_both_and_a_topic_batch_is_a_sheet_too(api: httpx.Client) -> None:
    both = api.post("/batches", json={"topics": ["a"], "rows": [{"topic": "a"}]})
    assert both.status_code == 422 and "either `topics` or `rows`" in both.json()["detail"]
    made = api.post("/batches", json={"topics": ["alpha", "beta"]})
    batch_id = made.json()["batch_id"]
    ended(api, batch_id)
    got = api.get(f"/batches/{batch_id}/export", params={"format": "xlsx"})
    sheet = load_workbook(io.BytesIO(got.content)).active
    assert [c.value for c in sheet[1]][:2] == ["topic", "crew: state"]
    assert [sheet["A2"].value, sheet["A3"].value] == ["alpha", "beta"]
