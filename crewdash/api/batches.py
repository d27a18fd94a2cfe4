"""The batch routes (`/batches`): start a batch (202 with its id at once), list the history,
read, cancel, resume and delete a batch, cancel one crew, export a batch and download a crew's
files.

`start` is also how `POST /research` runs its batch. Ids must have the shape the runner gives
them and topics go through `parse_topics`, before anything reaches the runner or the database.
(A batch's events are in `crewdash.api.events`.)
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import re
import tempfile
import unicodedata
from collections.abc import Iterator
from dataclasses import replace
from typing import IO, Literal
from urllib.parse import quote

from fastapi import APIRouter, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from crewdash.api.context import runtime_of, snapshot
from crewdash.api.people import audit, may_act_on, person_of
from crewdash.base.config import DEFAULT_BLUEPRINT, outputs_dir
from crewdash.base.errors import BatchElsewhereError, BatchRunningError, UnknownBatchError
from crewdash.base.run_context import crew_file
from crewdash.blueprints.catalog import list_blueprints
from crewdash.engine.budget import Budget
from crewdash.engine.plans import RunSettings
from crewdash.engine.resume import resume
from crewdash.engine.sheet_batches import SheetUpload
from crewdash.model.batch import check_batch_id
from crewdash.model.spend import SpendCapExceeded
from crewdash.model.topics import Topics, parse_topics
from crewdash.present.batch_sheet import (
    XLSX_MIME,
    download_name,
    sheet_csv,
    sheet_xlsx,
    topics_sheet,
)
from crewdash.present.exports import FORMATS, export
from crewdash.providers.preflight import preflight
from crewdash.schemas.batches import BatchDetail, BatchSummary
from crewdash.schemas.common import PROBLEMS, STARTS, IdempotencyKey, Problem, fingerprint
from crewdash.schemas.requests import (
    BatchAccepted,
    BatchRequest,
    CancelResult,
    ResearchRequest,
    RowValue,
)
from crewdash.schemas.resume import ResumeRequest, ResumeResult

router = APIRouter()

# The shapes the runner gives ids (`Runner.submit`, `Batch`): anything else is no batch of ours.
RUN_ID = re.compile(r"[0-9a-f]{12}-[0-9]{1,6}")
NO_CONTROL_CHARACTERS = r"^[^\u0000-\u001f\u007f-\u009f]*$"


def _budget(body: BaseModel) -> Budget | None:
    """The request's budget; both kinds at once is a `SettingsError` (a 400)."""
    usd, tokens = getattr(body, "budget_usd", None), getattr(body, "budget_tokens", None)
    return None if usd is None and tokens is None else Budget(usd=usd, tokens=tokens)


async def _may(request: Request, batch_id: str, action: str) -> None:
    """404 for no such batch; 403 (audited) unless the caller may `action` it."""
    owner = (await snapshot(request, batch_id)).created_by
    await may_act_on(request, owner, action, f"batch {batch_id}")


def _check_search(search: str | None) -> None:
    if search and any(unicodedata.category(c) == "Cc" for c in search):
        raise HTTPException(422, "search: must not contain control characters")


def _settings(request: Request, body: BaseModel) -> RunSettings:
    """A request's run settings over the server's defaults."""
    runtime = runtime_of(request)
    limit = getattr(body, "max_concurrency", None) or runtime.default_settings.max_concurrency
    llm = runtime.default_settings.llm
    if getattr(body, "stream", None) is not None:
        llm = replace(llm, stream=bool(getattr(body, "stream", None)))
    return RunSettings(
        llm=llm,
        max_concurrency=limit,
        crew_timeout_s=getattr(body, "crew_timeout_s", None),
        budget=_budget(body),
        response_cache=getattr(body, "cache", False),
    )


def rows_csv(rows: list[dict[str, RowValue]]) -> bytes:
    """A sheet sent as JSON rows, as the CSV file the batch keeps (columns in first-seen order;
    a number or a boolean as its JSON text, null as a blank cell)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if (v := row.get(c)) is None else _json_text(v) for c in columns])
    return out.getvalue().encode("utf-8")


def _json_text(value: RowValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


async def start_sheet(
    request: Request,
    body: BaseModel,
    upload: SheetUpload,
    blueprint: str,
    idempotency_key: str | None = None,
) -> tuple[str, list[str]]:
    """Submit a sheet batch (one crew per runnable row): its id and notes."""
    runtime = runtime_of(request)
    settings = _settings(request, body)
    await asyncio.to_thread(preflight, [settings.llm])
    notes: list[str] = []

    def submit() -> str:
        batch_id, plan = runtime.submit_sheet(
            blueprint, upload, settings, by=person_of(request), source="api"
        )
        notes.extend(plan.sheet.notes)
        if plan.skipped:
            notes.append(f"{plan.skipped} row(s) skipped (see the enriched sheet's state column)")
        return batch_id

    try:
        if idempotency_key is None:
            batch_id = await asyncio.to_thread(submit)
        else:
            key = f"batch:{idempotency_key}"
            once = runtime.runner.keys.once
            batch_id = await asyncio.to_thread(once, key, fingerprint(body), submit)
    except SpendCapExceeded as exc:
        await audit(request, "run", "a new batch", "refused", str(exc))
        raise
    crews = len(runtime.runner.batch(batch_id).run_ids)
    await audit(request, "run", f"batch {batch_id}", detail=f"{crews} crews from a sheet")
    return batch_id, notes


def accepted(batch_id: str, crews: int, notes: list[str], sheet: bool) -> BatchAccepted:
    base = f"/batches/{batch_id}"
    links = {
        "self": base,
        "events": f"{base}/events",
        "cancel": f"{base}/cancel",
        "export": f"{base}/export?format=json",
    }
    if sheet:
        links["sheet"] = f"{base}/export?format=xlsx"
    return BatchAccepted(batch_id=batch_id, crews=crews, notes=notes, links=links)


async def start(
    request: Request,
    body: BatchRequest | ResearchRequest,
    source: str,
    idempotency_key: str | None = None,
) -> tuple[str, Topics]:
    """Check a request's batch and submit it: its id, and its topics as parsed."""
    runtime = runtime_of(request)
    topics = parse_topics(body.topics or [], refuse_blanks=True)
    settings = _settings(request, body)
    blueprint = getattr(body, "blueprint", DEFAULT_BLUEPRINT)
    await asyncio.to_thread(preflight, [settings.llm])  # what cannot run is refused, not started
    try:
        batch_id = await asyncio.to_thread(
            runtime.runner.submit,
            blueprint,
            topics.items,
            settings,
            notes=topics.notes,
            source=source,
            inputs=getattr(body, "inputs", None),
            fan_out=getattr(body, "fan_out", None),
            idempotency_key=idempotency_key,
            fingerprint=fingerprint(body),
            by=person_of(request),
        )
    except SpendCapExceeded as exc:
        await audit(request, "run", "a new batch", "refused", str(exc))
        raise
    await audit(request, "run", f"batch {batch_id}", detail=f"{len(topics.items)} crews")
    return batch_id, topics


@router.post("/batches", status_code=202, response_model=BatchAccepted, responses=STARTS)
async def create_batch(
    request: Request, body: BatchRequest, idempotency_key: IdempotencyKey = None
) -> BatchAccepted:
    """Start a batch of `topics`, or of a sheet's `rows` (one crew per row), and answer at
    once with its id. A repeat with the same `Idempotency-Key` starts nothing and answers the
    batch the key started."""
    if body.rows is not None:
        rows = rows_csv(body.rows)
        upload = SheetUpload(rows, "rows.csv", None, body.input_map, body.inputs or {})
        batch_id, notes = await start_sheet(request, body, upload, body.blueprint, idempotency_key)
        crews = len(runtime_of(request).runner.batch(batch_id).run_ids)
        return accepted(batch_id, crews, notes, sheet=True)
    batch_id, topics = await start(request, body, "api", idempotency_key)
    crews = len(runtime_of(request).runner.batch(batch_id).run_ids)
    return accepted(batch_id, crews, list(topics.changes), sheet=False)


class SheetForm(BaseModel):
    """The form fields of `POST /batches/sheet` beside the file."""

    blueprint: str = DEFAULT_BLUEPRINT
    sheet_name: str | None = None
    input_map: dict[str, str] | None = None
    inputs: dict[str, str] | None = None
    max_concurrency: int | None = Field(default=None, ge=1, le=1000)
    digest: str = ""  # the file's, so an Idempotency-Key reused for another file is refused


def _json_object(field: str, text: str | None) -> dict[str, str] | None:
    if text is None or not text.strip():
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise HTTPException(
            422, f'{field}: not JSON; send an object such as {{"topic": "Company"}}'
        ) from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise HTTPException(422, f"{field}: must be a JSON object of text to text")
    return value


@router.post("/batches/sheet", status_code=202, response_model=BatchAccepted, responses=STARTS)
async def create_sheet_batch(
    request: Request,
    file: UploadFile,
    blueprint: str = Form(DEFAULT_BLUEPRINT, description="the blueprint every row runs"),
    sheet_name: str | None = Form(None, description="a workbook's sheet (default: the first)"),
    input_map: str | None = Form(
        None, description='JSON: input -> column, e.g. {"topic": "Company"} (default: by name)'
    ),
    inputs: str | None = Form(None, description="JSON: fixed values for inputs no column fills"),
    max_concurrency: int | None = Form(None, ge=1, le=1000),
    idempotency_key: IdempotencyKey = None,
) -> BatchAccepted:
    """Upload a sheet (CSV, TSV or .xlsx, at most 50 MB and 10,000 rows) and start one crew per
    row; the enriched sheet is GET /batches/{id}/export?format=xlsx (or csv)."""
    if blueprint not in list_blueprints():
        raise HTTPException(422, f"blueprint: no blueprint named {blueprint!r}")
    data = await file.read()
    form = SheetForm(
        blueprint=blueprint,
        sheet_name=sheet_name or None,
        input_map=_json_object("input_map", input_map),
        inputs=_json_object("inputs", inputs),
        max_concurrency=max_concurrency,
        digest=hashlib.sha256(data).hexdigest(),
    )
    upload = SheetUpload(
        data, file.filename or "sheet.csv", form.sheet_name, form.input_map, form.inputs or {}
    )
    batch_id, notes = await start_sheet(request, form, upload, blueprint, idempotency_key)
    crews = len(runtime_of(request).runner.batch(batch_id).run_ids)
    return accepted(batch_id, crews, notes, sheet=True)


@router.get("/batches", response_model=list[BatchSummary], responses=PROBLEMS)
async def list_batches(
    request: Request,
    search: str | None = Query(
        default=None, max_length=300, json_schema_extra={"pattern": NO_CONTROL_CHARACTERS}
    ),
    limit: int = Query(default=50, ge=1, le=500),
    offset: int = Query(default=0, ge=0, le=1_000_000),
) -> list[BatchSummary]:
    """The history, newest first (the dashboard's History page shows the same)."""
    _check_search(search)
    runtime = runtime_of(request)
    if runtime.store is None:
        runner = runtime.runner
        return [BatchSummary.from_snapshot(runner.snapshot(b)) for b in runner.batch_ids()]
    rows = await asyncio.to_thread(runtime.store.list_batches, search, limit, offset)
    return [BatchSummary.from_row(r) for r in rows]


@router.get("/batches/{batch_id}", response_model=BatchDetail, responses=PROBLEMS)
async def get_batch(request: Request, batch_id: str) -> BatchDetail:
    """Everything about one batch, crews and spans included."""
    return BatchDetail.from_snapshot(await snapshot(request, batch_id))


@router.post(
    "/batches/{batch_id}/cancel",
    response_model=CancelResult,
    responses={**PROBLEMS, 409: {"model": Problem}},
)
async def cancel(request: Request, batch_id: str) -> CancelResult:
    """Cancel the crews still queued or running; finished results stay. `cancelled` is how
    many crews this call stopped (0 when they had ended or another cancel got there first).
    A batch of a server that has stopped ends at once (its crews as interrupted); one another
    live server runs is a 409: only that server can stop its crews."""
    runtime = runtime_of(request)
    await _may(request, batch_id, "cancel")
    try:
        cancelled = await asyncio.to_thread(runtime.runner.cancel, batch_id)
        await audit(request, "cancel", f"batch {batch_id}", detail=f"{cancelled} crews stopped")
        return CancelResult(batch_id=batch_id, cancelled=cancelled)
    except UnknownBatchError:
        if runtime.store is None:
            raise
        try:
            ended = await asyncio.to_thread(
                runtime.store.end_orphan, batch_id, runtime.liveness.lease_s
            )
        except BatchElsewhereError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        await audit(request, "cancel", f"batch {batch_id}", detail=f"{ended} crews ended")
        return CancelResult(batch_id=batch_id, cancelled=ended)


@router.delete(
    "/batches/{batch_id}", status_code=204, responses={**PROBLEMS, 409: {"model": Problem}}
)
async def delete_batch(request: Request, batch_id: str) -> Response:
    """Delete an ended batch and everything of it: its crews, spans, checkpoints, files and,
    for an experiment, its grid's scores and marks (the audit log keeps what was done). Its
    starter or an admin only (others get a 403); a batch still running is a 409: cancel it
    first."""
    await _may(request, batch_id, "delete")
    target = f"batch {batch_id}"
    try:
        crews = await asyncio.to_thread(runtime_of(request).delete_batch, batch_id)
    except BatchRunningError as exc:
        await audit(request, "delete", target, "refused", str(exc))
        raise HTTPException(status_code=409, detail=str(exc)) from None
    except UnknownBatchError:  # deleted meanwhile by another request
        await audit(request, "delete", target, "failed", "no such batch")
        raise
    await audit(request, "delete", target, detail=f"{crews} crews")
    return Response(status_code=204)


@router.post(
    "/batches/{batch_id}/resume",
    response_model=ResumeResult,
    responses={**PROBLEMS, 409: {"model": Problem}},
)
async def resume_batch(
    request: Request, batch_id: str, body: ResumeRequest | None = None
) -> ResumeResult:
    """Resume the batch's interrupted crews (or those of `run_ids`) from their last
    checkpoints, under the same ids, inputs and model settings: finished tasks are kept
    (`restored`), not paid again. Crews whose checkpoint is unusable (unreadable, missing, or
    their blueprint changed) are not resumed but listed in `rerun_offers` with the reason;
    name them in `from_start` to re-run them from the start. 409 while another server
    still runs the batch."""
    check_batch_id(batch_id)
    body = body or ResumeRequest()
    for field, ids in (("run_ids", body.run_ids or []), ("from_start", body.from_start)):
        for run_id in ids:
            if not RUN_ID.fullmatch(run_id):
                raise HTTPException(
                    422,
                    f"{field}: {run_id!r} is not a crew id (the crews of this batch are "
                    f"{batch_id}-0, {batch_id}-1, …)",
                )
    await _may(request, batch_id, "resume")
    try:
        outcome = await asyncio.to_thread(
            resume, runtime_of(request), batch_id, body.run_ids, body.from_start
        )
    except BatchElsewhereError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    await audit(request, "resume", f"batch {batch_id}", detail=f"{len(outcome.resumed)} crews")
    return ResumeResult.from_outcome(outcome)


@router.post(
    "/batches/{batch_id}/crews/{run_id}/cancel", response_model=CancelResult, responses=PROBLEMS
)
async def cancel_crew(request: Request, batch_id: str, run_id: str) -> CancelResult:
    """Cancel one crew; the batch's other crews go on."""
    runtime = runtime_of(request)
    check_batch_id(batch_id)
    if not RUN_ID.fullmatch(run_id):
        raise UnknownBatchError(f"{batch_id}/{run_id}")
    await _may(request, batch_id, "cancel")
    try:
        done = await asyncio.to_thread(runtime.runner.cancel_crew, batch_id, run_id)
    except UnknownBatchError:
        snap = await snapshot(request, batch_id)  # 404 if unknown anywhere
        if run_id not in {c.run_id for c in snap.crews}:
            raise UnknownBatchError(f"{batch_id}/{run_id}") from None
        done = False
    await audit(request, "cancel", f"crew {run_id}", detail=f"{int(done)} crews stopped")
    return CancelResult(batch_id=batch_id, cancelled=int(done))


@router.get(
    "/batches/{batch_id}/export",
    response_class=Response,
    responses={
        **PROBLEMS,
        200: {
            "content": {
                **{
                    m: {"schema": {"$ref": "#/components/schemas/BatchDetail"}}
                    if m == "application/json"
                    else {"schema": {"type": "string"}}
                    for m, _ in FORMATS.values()
                },
                XLSX_MIME: {"schema": {"type": "string", "format": "binary"}},
            },
            "description": "the export (JSON: the same `BatchDetail` as GET /batches/{id}; "
            "xlsx: the enriched sheet; csv: the enriched sheet of a sheet batch, else a row "
            "per crew)",
        },
    },
)
async def export_batch(
    request: Request,
    batch_id: str,
    format: Literal["csv", "json", "md", "xlsx"] = Query(default="json"),
) -> Response:
    """The batch as JSON (everything), a Markdown report, the enriched sheet as .xlsx (a sheet
    batch: its sheet with the crews' columns; typed topics: a sheet of the topics), or CSV (a
    sheet batch: its enriched sheet, streamed; typed topics: a row per crew)."""
    snap = await snapshot(request, batch_id)
    runtime = runtime_of(request)
    if format in ("xlsx", "csv"):
        found = await asyncio.to_thread(runtime.sheet_of, batch_id)
        if format == "csv" and found is not None:
            sheet, rows = found
            name = download_name(sheet, snap, "csv")
            lines = sheet_csv(snap, sheet, rows)
            return StreamingResponse(
                (line.encode("utf-8") for line in lines),
                media_type="text/csv; charset=utf-8",
                headers={"content-disposition": attachment(name)},
            )
        if format == "xlsx":
            sheet, rows = found if found is not None else topics_sheet(snap)
            spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
            await asyncio.to_thread(sheet_xlsx, snap, sheet, rows, spool)
            spool.seek(0)
            return StreamingResponse(
                _chunks(spool),
                media_type=XLSX_MIME,
                headers={"content-disposition": attachment(download_name(sheet, snap, "xlsx"))},
            )
    mime, ext = FORMATS[format]
    return Response(
        export(snap, format),
        media_type=f"{mime}; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="crewdash-{batch_id}.{ext}"'},
    )


SPOOL_BYTES = 8 * 1024 * 1024  # an enriched .xlsx is written to memory up to this, then to disk


def _chunks(spool: IO[bytes], size: int = 256 * 1024) -> Iterator[bytes]:
    """The file in chunks, closed at the end (a spooled file on disk is then removed)."""
    with spool:
        while chunk := spool.read(size):
            yield chunk


def attachment(filename: str) -> str:
    """A Content-Disposition for a download named `filename` (RFC 6266: an ASCII fallback and
    the UTF-8 name)."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename)}"


@router.get(
    "/batches/{batch_id}/crews/{run_id}/files/{path:path}",
    response_class=FileResponse,
    responses={
        **PROBLEMS,
        200: {"content": {"application/octet-stream": {}}, "description": "the file"},
    },
)
async def crew_file_download(
    request: Request, batch_id: str, run_id: str, path: str
) -> FileResponse:
    """A file one crew's tasks wrote (listed in that crew's `files`)."""
    snap = await snapshot(request, batch_id)  # 404 for an unknown batch
    crew = next((c for c in snap.crews if c.run_id == run_id), None)
    if crew is None:
        raise UnknownBatchError(f"{batch_id}/{run_id}")
    if path not in crew.files:
        raise HTTPException(404, f"crew {run_id} wrote no file {path!r}")
    try:
        target = crew_file(outputs_dir() / batch_id / run_id, path)
    except FileNotFoundError:
        raise HTTPException(404, f"file {path!r} is no longer on the server") from None
    return FileResponse(target, filename=target.name)
