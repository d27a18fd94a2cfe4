"""A sheet from the Run page, in headless Chromium (issue 23): upload a 200-row workbook, map
two of its columns to a CrewAI project's two inputs, run one crew per row, and download the
enriched .xlsx: every original cell as it was, in order, with the crews' columns appended."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from openpyxl import Workbook, load_workbook
from playwright.sync_api import Browser, Page, expect

from tests.browser import streamlit_app

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]
PROJECTS = Path(__file__).resolve().parent / "projects"
ROWS = 200
LOAD = 60_000


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    log = tmp_path_factory.mktemp("sheet-app") / "server.log"
    env = {"CREWDASH_DEMO_LATENCY": "0.2", "CREWDASH_CREWS_DIR": str(PROJECTS)}
    with streamlit_app(log, env) as url:
        yield url, log


def workbook(path: Path) -> list[list[object]]:
    """200 leads: text, a reader, a date and a code with leading zeros; returns the cells."""
    book = Workbook()
    sheet = book.active
    sheet.title = "Leads"
    header = ["Company", "Who reads it", "Since", "Code"]
    rows = [
        [
            f"Company {i} <b>",
            "CFOs" if i % 2 else "CTOs",
            datetime(2024, 1, 1) + timedelta(i),
            f"{i:05d}",
        ]
        for i in range(ROWS)
    ]
    for row in [header, *rows]:
        sheet.append(row)
    for cell in sheet["C"][1:]:
        cell.number_format = "yyyy-mm-dd"
    book.save(path)
    return [header, *rows]


def choose(page: Page, label: str, option: str) -> None:
    box = page.get_by_role("combobox", name=label)
    box.click()
    page.get_by_role("option", name=option, exact=True).click()


def test_a_200_row_sheet_runs_one_crew_per_row_and_downloads_enriched(
    browser: Browser, app: tuple[str, Path], tmp_path: Path
) -> None:
    url, log = app
    path = tmp_path / "leads.xlsx"
    cells = workbook(path)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.wait_for_selector("[data-testid='stApp']")
    expect(page.get_by_role("button", name="Run")).to_be_visible(timeout=LOAD)
    picker = page.get_by_test_id("stSidebar").get_by_role("combobox", name="Crew blueprint")
    picker.click()
    picker.fill("analyst_crew")
    page.get_by_role("option", name=re.compile(r"^analyst_crew · ")).click()
    expect(page.get_by_text("Blueprint analyst_crew")).to_be_visible(timeout=LOAD)
    page.get_by_role("radio", name="A sheet (CSV, TSV, Excel)").click()
    page.locator("[data-testid='stFileUploader'] input[type='file']").set_input_files(path)
    expect(page.get_by_text(re.compile(r"leads\.xlsx: .*200 rows"))).to_be_visible(timeout=LOAD)
    choose(page, "{topic} (required)", "Company")
    choose(page, "{audience} (required)", "Who reads it")
    run = page.get_by_role("button", name=f"Run {ROWS} crew(s), one per row")
    expect(run).to_be_enabled(timeout=LOAD)
    run.click()
    page.wait_for_url(re.compile(r".*[?&]batch=[0-9a-f]{12}"), timeout=LOAD)
    expect(page.get_by_text(re.compile(r"finished: succeeded"))).to_be_visible(timeout=300_000)
    button = page.get_by_role("button", name="Enriched sheet (.xlsx)")
    expect(button).to_have_count(1, timeout=LOAD)  # the live view's last frame has gone
    with page.expect_download(timeout=LOAD) as got:
        button.click()
    download = got.value
    assert download.suggested_filename == "leads.enriched.xlsx"
    saved = tmp_path / "enriched.xlsx"
    download.save_as(saved)
    sheet = load_workbook(saved).active
    table = [[c.value for c in row] for row in sheet.iter_rows()]
    assert len(table) == ROWS + 1
    assert [row[:4] for row in table] == cells  # every original cell, in order
    assert table[0][4] == "crew: state"
    assert {row[4] for row in table[1:]} == {"succeeded"}
    assert sheet["C2"].number_format == "yyyy-mm-dd"
    assert "Traceback" not in log.read_text()
