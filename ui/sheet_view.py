"""The Run page's sheet: upload a CSV, TSV or .xlsx, pick the sheet, map columns to the
blueprint's inputs (prefilled by name), see a preview, the estimate and the skipped rows, and run
one crew per row. The batch's enriched sheet is downloaded from its page (`sheet_downloads`).

The file stays in the uploader's own state; `st.session_state` holds the choices only."""

from __future__ import annotations

import io
from dataclasses import replace

import pandas as pd
import streamlit as st

from crewdash.base.config import MAX_SHEET_BYTES, MAX_SHEET_ROWS
from crewdash.base.errors import CrewdashError
from crewdash.blueprints.base import BaseBlueprint
from crewdash.engine.plans import RunSettings
from crewdash.engine.sheet_batches import SheetUpload, plan_sheet
from crewdash.model.batch import BatchSnapshot
from crewdash.model.spend import SpendCapExceeded
from crewdash.present.batch_sheet import (
    XLSX_MIME,
    download_name,
    sheet_csv,
    sheet_xlsx,
    topics_sheet,
)
from crewdash.providers.preflight import preflight
from crewdash.sheets.mapping import MappedRow, suggest_map
from crewdash.sheets.reader import read_sheet
from crewdash.sheets.sheet import Sheet, cell_text
from ui.governor_view import budget_choice, render_budget_inputs, render_daily_cap
from ui.people import audit, person
from ui.session import run_settings, runtime
from ui.text import plain

PREVIEW_ROWS = 20
FIXED = ""  # the mapping choice "a fixed value for every row"


@st.cache_resource(max_entries=4, show_spinner="Reading the sheet…")
def _read(data: bytes, filename: str, sheet_name: str | None) -> Sheet:
    """A sheet read once per file and sheet, shared by the reruns that draw its mapping."""
    return read_sheet(data, filename, sheet_name)


def render_sheet_setup(blueprint: BaseBlueprint) -> None:
    """The sheet section of the Run page, in place of the typed topics."""
    file = st.file_uploader(
        f"A sheet: CSV, TSV or Excel (.xlsx), at most {MAX_SHEET_BYTES // 2**20} MB and "
        f"{MAX_SHEET_ROWS:,} rows; one crew per row",
        type=["csv", "tsv", "txt", "xlsx"],
        key="run.sheet_file",
    )
    if file is None:
        return
    data = file.getvalue()
    try:
        sheet = _read(data, file.name, st.session_state.get("run.sheet_name"))
    except CrewdashError as exc:
        st.error(plain(exc), icon=":material/error:")
        return
    if len(sheet.sheet_names) > 1:
        st.selectbox("Sheet", sheet.sheet_names, key="run.sheet_name")
    st.caption(plain(f"{file.name}: {sheet.detected}; {len(sheet.rows):,} rows."))
    for note in sheet.notes:
        st.info(plain(note), icon=":material/info:")
    preview = [[cell_text(v) for v in row] for row in sheet.rows[:PREVIEW_ROWS]]
    st.dataframe(  # every cell as text: what was typed shows as typed
        pd.DataFrame(preview, columns=list(sheet.columns)), hide_index=True, height=240
    )
    upload = _mapping(blueprint, sheet, data, file.name)
    render_budget_inputs()
    try:
        settings = replace(run_settings(), budget=budget_choice())
        plan = plan_sheet(blueprint, sheet, upload.input_map(blueprint, sheet), settings)
    except CrewdashError as exc:
        st.warning(plain(exc), icon=":material/table_chart:")
        return
    skipped = [row for row in plan.rows if not row.runs]
    if skipped:
        lines = "\n".join(f"- row {r.number}: {plain(r.skipped)}" for r in skipped[:10])
        more = f"\n- … and {len(skipped) - 10:,} more" if len(skipped) > 10 else ""
        st.warning(
            f"{len(skipped):,} row(s) will be skipped (kept in the enriched sheet with the "
            f"reason):\n{lines}{more}",
            icon=":material/skip_next:",
        )
    try:
        est = runtime().runner.estimate_plans(plan.plans, settings)
        st.caption(plain(f"Estimate for {len(plan.plans):,} crew(s): {est.describe()}."))
        render_daily_cap(settings.llm.model, est)
    except CrewdashError:
        pass  # reported at Run
    label = f"Run {len(plan.plans):,} crew(s), one per row"
    if st.button(label, type="primary", icon=":material/play_arrow:", key="run.sheet_run"):
        _start(blueprint, upload, settings)


def _mapping(blueprint: BaseBlueprint, sheet: Sheet, data: bytes, filename: str) -> SheetUpload:
    """For each input of the blueprint, the column that fills it or a fixed value."""
    st.markdown("**Which column fills each input**")
    suggested = suggest_map(blueprint.inputs, sheet.columns).columns
    columns: dict[str, str] = {}
    values: dict[str, str] = {}
    for name in blueprint.inputs:
        key = f"run.sheet_map.{name}"
        if st.session_state.get(key) not in (FIXED, *sheet.columns):
            st.session_state[key] = suggested.get(name, FIXED)
        left, right = st.columns([1, 1])
        needed = " (required)" if name in blueprint.required else ""
        chosen = left.selectbox(
            f"{{{plain(name)}}}{needed}",
            [FIXED, *sheet.columns],
            key=key,
            format_func=lambda c: "a fixed value for every row" if c == FIXED else c,
        )
        if chosen == FIXED:
            values[name] = right.text_input(
                f"{{{plain(name)}}} for every row",
                value=blueprint.inputs.get(name, ""),
                key=f"run.sheet_value.{name}",
            )
        else:
            columns[name] = chosen
    return SheetUpload(data, filename, sheet.sheet_name, columns, values)


def _start(blueprint: BaseBlueprint, upload: SheetUpload, settings: RunSettings) -> None:
    rt = runtime()
    try:
        preflight([settings.llm])  # a missing key or a dead URL: refused here, not started
        batch_id, plan = rt.submit_sheet(blueprint, upload, settings, by=person())
    except SpendCapExceeded as exc:
        audit("run", "a new batch", "refused", str(exc))
        st.error(plain(f"Past your daily cap: {exc}."), icon=":material/savings:")
        return
    except CrewdashError as exc:
        st.error(plain(exc), icon=":material/error:")
        return
    audit("run", f"batch {batch_id}", detail=f"{len(plan.plans)} crews from {upload.filename}")
    st.session_state["run.batch_id"] = batch_id
    st.query_params["batch"] = batch_id
    st.rerun()


def sheet_downloads(snap: BatchSnapshot, where: str) -> None:
    """The enriched sheet as .xlsx (and CSV for a sheet batch), built when clicked."""
    batch_id = snap.batch_id

    def found() -> tuple[Sheet, tuple[MappedRow, ...]]:
        got = runtime().sheet_of(batch_id)
        return got if got is not None else topics_sheet(runtime().snapshot(batch_id))

    def xlsx() -> bytes:
        sheet, rows = found()
        out = io.BytesIO()
        sheet_xlsx(runtime().snapshot(batch_id), sheet, rows, out)
        return out.getvalue()

    def csv() -> str:
        sheet, rows = found()
        return "".join(sheet_csv(runtime().snapshot(batch_id), sheet, rows))

    sheet, _ = found()
    left, right = st.columns(2)
    left.download_button(
        "Enriched sheet (.xlsx)",
        xlsx,
        file_name=download_name(sheet, snap, "xlsx"),
        mime=XLSX_MIME,
        key=f"{where}.sheet.xlsx.{batch_id}",
        icon=":material/table_view:",
        help="The sheet with the crews' columns appended; rows not done yet say their state.",
    )
    if runtime().sheet_of(batch_id) is not None:
        right.download_button(
            "Enriched sheet (.csv)",
            csv,
            file_name=download_name(sheet, snap, "csv"),
            mime="text/csv",
            key=f"{where}.sheet.csv.{batch_id}",
            icon=":material/download:",
        )
