"""Any batch as an enriched sheet: a sheet batch as the sheet it ran from, a batch of typed
topics as a one-column sheet of its topics, with the crews' columns appended (`sheet_export`).
What the API, the CLI and the pages download as .xlsx (and, for a sheet batch, as CSV)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from crewdash.model.batch import BatchSnapshot
from crewdash.present.sheet_export import enriched_csv, enriched_filename, enriched_xlsx
from crewdash.present.sheet_results import row_results
from crewdash.sheets.mapping import MappedRow
from crewdash.sheets.sheet import Sheet

XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def topics_sheet(snap: BatchSnapshot) -> tuple[Sheet, tuple[MappedRow, ...]]:
    """A batch of typed topics as a sheet: one column, `topic`, a row per crew in order."""
    crews = sorted(snap.crews, key=lambda c: c.index)
    sheet = Sheet(
        filename=f"batch-{snap.batch_id}.csv",
        kind="csv",
        columns=("topic",),
        rows=tuple((crew.topic,) for crew in crews),
        detected="the batch's topics",
    )
    return sheet, tuple(MappedRow(i, {"topic": c.topic}) for i, c in enumerate(crews))


def sheet_xlsx(
    snap: BatchSnapshot,
    sheet: Sheet,
    rows: Sequence[MappedRow],
    target: str | Path | IO[bytes],
) -> None:
    """The enriched sheet as .xlsx into `target` (rows not done yet say their state)."""
    enriched_xlsx(sheet, row_results(snap, rows), target)


def sheet_csv(snap: BatchSnapshot, sheet: Sheet, rows: Sequence[MappedRow]) -> Iterator[str]:
    """The enriched sheet as CSV lines, streamed."""
    return enriched_csv(sheet, row_results(snap, rows))


def download_name(sheet: Sheet, snap: BatchSnapshot, extension: str) -> str:
    """`<the file's name>.enriched.<ext>` (`batch-<id>.enriched.<ext>` for typed topics)."""
    return enriched_filename(sheet.filename or f"batch-{snap.batch_id}", extension)
