"""The sheets batches ran from, in the history database: the file itself (at most 50 MB, the
reader's limit) with the sheet's name and the input map, so the enriched sheet is rebuilt from
the record (reading the file again) after a restart, a resume or on another replica."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from crewdash.store.tables import SheetRow


@dataclass(frozen=True)
class StoredSheet:
    """What a sheet batch was started from."""

    filename: str
    sheet_name: str | None
    data: bytes
    columns: dict[str, str]  # input -> column
    values: dict[str, str]  # input -> fixed value
    required: tuple[str, ...]


class Sheets:
    """The store's sheets: `Store` is one."""

    engine: Engine

    def save_sheet(self, batch_id: str, sheet: StoredSheet) -> None:
        row = SheetRow(
            batch_id=batch_id,
            filename=sheet.filename[:300],
            sheet_name=sheet.sheet_name,
            data=sheet.data,
            input_map=json.dumps({"columns": sheet.columns, "values": sheet.values}),
            required=json.dumps(list(sheet.required)),
        )
        with Session(self.engine) as session, session.begin():
            session.merge(row)

    def sheet_of(self, batch_id: str) -> StoredSheet | None:
        """The sheet batch `batch_id` ran from, or None (a batch of typed topics)."""
        if len(batch_id) > 40 or "\x00" in batch_id:
            return None
        with Session(self.engine) as session:
            row = session.get(SheetRow, batch_id)
            if row is None:
                return None
            mapping = json.loads(row.input_map)
            return StoredSheet(
                row.filename,
                row.sheet_name,
                bytes(row.data),
                dict(mapping.get("columns", {})),
                dict(mapping.get("values", {})),
                tuple(json.loads(row.required or "[]")),
            )
