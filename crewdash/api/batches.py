"""The batch routes (`/batches`): start a batch (202 with its id at once), list the history,
read, cancel, resume and delete a batch, cancel one crew, export a batch and download a crew's
files.

`start` is also how `POST /research` runs its batch. Ids must have the shape the runner gives
them and topics go through `parse_topics`, before anything reaches the runner or the database.
(A batch's events are in `crewdash.api.events`.)
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from dataclasses import replace
from typing import Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel

from crewdash.api.context import runtime_of, snapshot
from crewdash.api.people import audit, may_act_on, person_of
from crewdash.base.config import DEFAULT_BLUEPRINT, outputs_dir
from crewdash.base.errors import BatchElsewhereError, BatchRunningError, UnknownBatchError
from crewdash.base.run_context import crew_file
from crewdash.engine.budget import Budget
from crewdash.engine.plans import RunSettings
from crewdash.engine.resume import resume
from crewdash.model.batch import check_batch_id
from crewdash.model.spend import SpendCapExceeded
from crewdash.model.topics import Topics, parse_topics
from crewdash.present.exports import FORMATS, export
from crewdash.providers.preflight import preflight
from crewdash.schemas.batches import BatchDetail, BatchSummary
from crewdash.schemas.common import PROBLEMS, STARTS, IdempotencyKey, Problem, fingerprint
from crewdash.schemas.requests import BatchAccepted, BatchRequest, CancelResult, ResearchRequest
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


async def start(
    request: Request,
    body: BatchRequest | ResearchRequest,
    source: str,
    idempotency_key: str | None = None,
) -> tuple[str, Topics]:
    """Check a request's batch and submit it: its id, and its topics as parsed."""
    runtime = runtime_of(request)
    topics = parse_topics(body.topics, refuse_blanks=True)
    limit = getattr(body, "max_concurrency", None) or runtime.default_settings.max_concurrency
    llm = runtime.default_settings.llm
    if getattr(body, "stream", None) is not None:
        llm = replace(llm, stream=bool(body.stream))  # type: ignore[union-attr]
    settings = RunSettings(
        llm=llm,
        max_concurrency=limit,
        crew_timeout_s=getattr(body, "crew_timeout_s", None),
        budget=_budget(body),
        response_cache=getattr(body, "cache", False),
    )
    blueprint = getattr(body, "blueprint", DEFAULT_BLUEPRINT)
    await asyncio.to_thread(preflight, [llm])  # what cannot run is refused, not started
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
    """Start a batch and answer at once with its id. A repeat with the same
    `Idempotency-Key` starts nothing and answers the batch the key started."""
    batch_id, topics = await start(request, body, "api", idempotency_key)
    base = f"/batches/{batch_id}"
    return BatchAccepted(
        batch_id=batch_id,
        crews=len(runtime_of(request).runner.batch(batch_id).run_ids),
        notes=list(topics.changes),
        links={
            "self": base,
            "events": f"{base}/events",
            "cancel": f"{base}/cancel",
            "export": f"{base}/export?format=json",
        },
    )


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
                m: {"schema": {"$ref": "#/components/schemas/BatchDetail"}}
                if m == "application/json"
                else {"schema": {"type": "string"}}
                for m, _ in FORMATS.values()
            },
            "description": "the export (JSON: the same `BatchDetail` as GET /batches/{id})",
        },
    },
)
async def export_batch(
    request: Request,
    batch_id: str,
    format: Literal["csv", "json", "md"] = Query(default="json"),
) -> Response:
    """The batch as CSV (a row per crew), JSON (everything) or a Markdown report."""
    snap = await snapshot(request, batch_id)
    mime, ext = FORMATS[format]
    return Response(
        export(snap, format),
        media_type=f"{mime}; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="crewdash-{batch_id}.{ext}"'},
    )


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
