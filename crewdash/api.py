"""The REST API on the same runner and store: `uvicorn crewdash.api:app` (127.0.0.1 by default).

`POST /research` is the tutorial's contract: it answers once every crew is done, with the crews
running concurrently on the runner's own loop, so this server's event loop is never blocked.
`/batches` is the asynchronous form: 202 with an id at once, then state, events and exports.

Every input is checked before it reaches the runner or the database: request bodies over
`MAX_BODY_BYTES` are refused with 413 before they are read whole, ids must have the shape the
runner gives them, and topics go through `parse_topics` like everywhere else.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import re
import unicodedata
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field, StringConstraints, field_validator
from pydantic.json_schema import models_json_schema
from sse_starlette.sse import EventSourceResponse

from crewdash.batch import BatchSnapshot, check_batch_id
from crewdash.blueprints import describe_blueprints, list_blueprints
from crewdash.budget import Budget
from crewdash.config import DEFAULT_BLUEPRINT, MAX_TOPIC_CHARS, MAX_TOPICS, outputs_dir
from crewdash.errors import BatchElsewhereError, CrewdashError, TopicError, UnknownBatchError
from crewdash.experiment_api import router as experiment_router
from crewdash.exports import FORMATS, export
from crewdash.run_context import crew_file
from crewdash.runner import RunSettings
from crewdash.runtime import Runtime
from crewdash.settings import load_settings
from crewdash.topics import Topics, parse_topics, visible_pattern
from crewdash.wire import (
    PROBLEMS,
    BatchDetail,
    BatchSummary,
    BlueprintDescription,
    ChunkEvent,
    CrewEvent,
    DoneEvent,
    Health,
    Problem,
    ResumeRequest,
    ResumeResult,
    WireModel,
)

log = logging.getLogger(__name__)
MAX_INPUT_CHARS = 2000
LIVE_POLL_S = 0.1  # a batch of this process: its snapshot is in memory
STORED_POLL_S = 0.5  # a batch another server runs: read from the database, changes only

MAX_BODY_BYTES = 1024 * 1024  # 1 MiB: 100 topics of 300 characters fit many times over
# The shapes the runner gives ids (`Runner.submit`, `Batch`): anything else is no batch of ours.
RUN_ID = re.compile(r"[0-9a-f]{12}-[0-9]{1,6}")


def _visible(schema: dict[str, Any]) -> None:
    """Say in the schema what `parse_topics` checks (with a plain message, not this regex)."""
    schema["pattern"] = visible_pattern()


Topic = Annotated[str, Field(json_schema_extra=_visible)]
NO_CONTROL_CHARACTERS = r"^[^\u0000-\u001f\u007f-\u009f]*$"
TOPICS_FIELD = Field(
    min_length=1,
    description=(
        f"One crew per distinct topic after cleaning (at most {MAX_TOPICS} topics of at most "
        f"{MAX_TOPIC_CHARS} characters); topics that clean to the same text, ignoring case, "
        "share one crew."
    ),
)


class ResearchRequest(BaseModel):
    topics: list[Topic] = TOPICS_FIELD


class ResearchResponse(BaseModel):
    results: dict[str, str] = Field(
        description="topic, exactly as sent -> the raw answer of the crew that ran it"
    )
    errors: dict[str, str] = Field(
        default_factory=dict, description="topic, exactly as sent -> why it failed"
    )
    notes: list[str] = Field(
        default_factory=list, description="which topics were cleaned or merged into another"
    )


def _blueprint_enum() -> dict[str, Any]:
    """The blueprints present at start, so generated clients and fuzzers know the choices."""
    return {"enum": list_blueprints()}


InputName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_\-]{0,99}$")]
InputValue = Annotated[str, StringConstraints(max_length=MAX_INPUT_CHARS)]


class BatchRequest(BaseModel):
    topics: list[Topic] = TOPICS_FIELD
    blueprint: str = Field(default=DEFAULT_BLUEPRINT, json_schema_extra=_blueprint_enum())
    max_concurrency: int | None = Field(default=None, ge=1, le=1000)
    crew_timeout_s: float | None = Field(default=None, gt=0, le=86_400)
    inputs: dict[InputName, InputValue] | None = Field(
        default=None,
        max_length=100,
        description="The blueprint's other inputs, the same for every crew (see GET /blueprints); "
        "inputs left out keep the blueprint's defaults.",
    )
    fan_out: InputName | None = Field(
        default=None,
        description="The input each topic fills (default: `topic`, else the only input).",
    )
    budget_usd: float | None = Field(
        default=None,
        gt=0,
        le=1_000_000,
        description="Stop starting crews before the batch would spend more (needs a priced model; "
        "the rest end budget_exceeded). At most one of budget_usd and budget_tokens.",
    )
    budget_tokens: int | None = Field(
        default=None, gt=0, le=10**12, description="The same budget in tokens."
    )
    stream: bool | None = Field(
        default=None,
        description="Stream each answer (TTFT, `chunk` events); default: the server's setting.",
    )
    cache: bool = Field(
        default=False, description="Answer model calls identical to earlier ones from the cache."
    )

    @field_validator("blueprint")
    @classmethod
    def _known_blueprint(cls, value: str) -> str:
        known = list_blueprints()
        if value not in known:
            raise ValueError(f"no blueprint named {value!r}; choose one of {', '.join(known)}")
        return value


def _budget(body: BaseModel) -> Budget | None:
    """The request's budget; both kinds at once is a `SettingsError` (a 400)."""
    usd, tokens = getattr(body, "budget_usd", None), getattr(body, "budget_tokens", None)
    return None if usd is None and tokens is None else Budget(usd=usd, tokens=tokens)


class BatchAccepted(BaseModel):
    batch_id: str
    crews: int
    notes: list[str]
    links: dict[str, str]


class CancelResult(BaseModel):
    batch_id: str
    cancelled: int


class BodyTooLargeError(HTTPException):
    """A request body over the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            status_code=413,
            detail=f"the request body is larger than the limit of {limit} bytes; "
            "send fewer or shorter topics",
        )


class BodyLimit:
    """ASGI middleware: refuse bodies over `max_bytes` with 413 without reading them whole.

    A declared Content-Length over the limit is refused before the app runs; a body without one
    (chunked) is counted as it streams in, and reading stops at the first chunk over the limit.
    It must sit inside any `BaseHTTPMiddleware`: those read the body in a task group, which
    would wrap the 413 in an exception group that FastAPI turns into a 400.
    """

    def __init__(self, app: Any, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _problem(BodyTooLargeError(self.max_bytes))(scope, receive, send)
            return
        seen = 0
        started = False

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    if started:  # e.g. an event stream listening for the client to leave
                        return {"type": "http.disconnect"}
                    raise BodyTooLargeError(self.max_bytes)  # FastAPI answers it via `_http`
            return message

        async def watched(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLargeError as exc:  # raised where nothing turned it into a response
            if started:
                raise
            await _problem(exc)(scope, receive, send)


def _problem(exc: HTTPException) -> JSONResponse:
    return JSONResponse(status_code=exc.status_code, content={"detail": str(exc.detail)})


def _check_search(search: str | None) -> None:
    if search and any(unicodedata.category(c) == "Cc" for c in search):
        raise HTTPException(422, "search: must not contain control characters")


def _token_matches(header: str, token: str) -> bool:
    """Starlette decodes header bytes as latin-1: compare the bytes sent with the token's own
    bytes (UTF-8, as the environment gave them), so a non-ASCII token works; constant time."""
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.encode("latin-1"), token.encode("utf-8", "surrogateescape")
    )


# The server-sent events of `GET /batches/{id}/events`: name -> the model of its JSON `data`.
SSE_EVENTS: dict[str, type[WireModel]] = {
    "crew": CrewEvent,
    "chunk": ChunkEvent,
    "done": DoneEvent,
}


def _sse_item(name: str, model: type[WireModel]) -> dict[str, Any]:
    """One kind of event, as OpenAPI 3.2 describes an event stream's items."""
    return {
        "type": "object",
        "description": (model.__doc__ or "").strip(),
        "required": ["event", "data"],
        "properties": {
            "event": {"const": name},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": f"#/components/schemas/{model.__name__}"},
            },
        },
    }


def _event(name: str, payload: WireModel) -> dict[str, str]:
    return {"event": name, "data": json.dumps(payload.model_dump(mode="json"))}


def _with_event_schemas(app: FastAPI) -> None:
    """Put the SSE payload models in the schema's components, where the events route points:
    no route returns them as JSON, so FastAPI would leave them out."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            _, defs = models_json_schema(
                [(m, "serialization") for m in SSE_EVENTS.values()],
                ref_template="#/components/schemas/{model}",
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(runtime_factory: Callable[[], Runtime] = Runtime.from_env) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            app.state.runtime = await asyncio.to_thread(runtime_factory)
        except CrewdashError as exc:  # e.g. DATABASE_URL unreachable
            raise StartupError(f"crewdash cannot start: {exc}") from None
        try:
            yield
        finally:
            await asyncio.to_thread(app.state.runtime.close)

    app = FastAPI(
        title="crewdash API",
        version="1.0",
        description="Run CrewAI crews concurrently; the same runner and history as the dashboard.",
        lifespan=lifespan,
    )

    app.add_middleware(BodyLimit)  # before (inside) the bearer check below: see BodyLimit

    open_paths = {"/healthz", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"}

    @app.middleware("http")
    async def bearer_token(request: Request, call_next: Any) -> Response:
        """With CREWDASH_API_TOKEN set, every call but health and docs needs that bearer token."""
        token = load_settings(only={"CREWDASH_API_TOKEN"}).secret("CREWDASH_API_TOKEN")
        if token and request.url.path not in open_paths:
            if not _token_matches(request.headers.get("authorization", ""), token):
                return JSONResponse(
                    status_code=401,
                    headers={"www-authenticate": "Bearer"},
                    content={"detail": "missing or wrong bearer token (CREWDASH_API_TOKEN)"},
                )
        response: Response = await call_next(request)
        return response

    def rt(request: Request) -> Runtime:
        runtime: Runtime = request.app.state.runtime
        return runtime

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",))
            parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
        return JSONResponse(status_code=422, content={"detail": "; ".join(parts)})

    @app.exception_handler(TopicError)
    async def _topics(_: Request, exc: TopicError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": f"topics: {exc}"})

    @app.exception_handler(UnknownBatchError)
    async def _unknown(_: Request, exc: UnknownBatchError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(CrewdashError)
    async def _bad(_: Request, exc: CrewdashError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    async def snapshot(request: Request, batch_id: str) -> BatchSnapshot:
        check_batch_id(batch_id)
        return await asyncio.to_thread(rt(request).snapshot, batch_id)

    async def start(
        request: Request, body: BatchRequest | ResearchRequest, source: str
    ) -> tuple[str, Topics]:
        runtime = rt(request)
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
        batch_id = await asyncio.to_thread(
            runtime.runner.submit,
            blueprint,
            topics.items,
            settings,
            notes=topics.notes,
            source=source,
            inputs=getattr(body, "inputs", None),
            fan_out=getattr(body, "fan_out", None),
        )
        return batch_id, topics

    @app.post("/research", response_model=ResearchResponse, responses=PROBLEMS)
    async def research(request: Request, body: ResearchRequest) -> ResearchResponse:
        """The tutorial's endpoint: one crew per topic, concurrently; answers when all are done.

        Answers are keyed by each topic exactly as sent; topics that clean to the same text
        share one crew, and `notes` says which.
        """
        batch_id, topics = await start(request, body, "api")
        batch = rt(request).runner.batch(batch_id)
        while not batch.wait(0):
            await asyncio.sleep(0.05)  # wait without holding a thread or the loop
        crews = {c.topic: c for c in batch.snapshot().crews}
        results: dict[str, str] = {}
        errors: dict[str, str] = {}
        for sent, runs_as in topics.runs_as.items():
            crew = crews[runs_as]
            if crew.result is not None:
                results[sent] = crew.result
            else:
                errors[sent] = crew.error or crew.state.value
        return ResearchResponse(results=results, errors=errors, notes=list(topics.changes))

    @app.post("/batches", status_code=202, response_model=BatchAccepted, responses=PROBLEMS)
    async def create_batch(request: Request, body: BatchRequest) -> BatchAccepted:
        """Start a batch and answer at once with its id."""
        batch_id, topics = await start(request, body, "api")
        base = f"/batches/{batch_id}"
        return BatchAccepted(
            batch_id=batch_id,
            crews=len(rt(request).runner.batch(batch_id).run_ids),
            notes=list(topics.changes),
            links={
                "self": base,
                "events": f"{base}/events",
                "cancel": f"{base}/cancel",
                "export": f"{base}/export?format=json",
            },
        )

    @app.get("/blueprints", response_model=list[BlueprintDescription])
    async def blueprints() -> list[BlueprintDescription]:
        """Every blueprint on the search path: its kind, inputs with their defaults, fan-out
        input and the agents that pin their own model, or why it cannot be used."""
        infos = await asyncio.to_thread(describe_blueprints)
        return [BlueprintDescription.from_info(i) for i in infos]

    @app.get("/batches", response_model=list[BatchSummary], responses=PROBLEMS)
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
        runtime = rt(request)
        if runtime.store is None:
            runner = runtime.runner
            return [BatchSummary.from_snapshot(runner.snapshot(b)) for b in runner.batch_ids()]
        rows = await asyncio.to_thread(runtime.store.list_batches, search, limit, offset)
        return [BatchSummary.from_row(r) for r in rows]

    @app.get("/batches/{batch_id}", response_model=BatchDetail, responses=PROBLEMS)
    async def get_batch(request: Request, batch_id: str) -> BatchDetail:
        """Everything about one batch, crews and spans included."""
        return BatchDetail.from_snapshot(await snapshot(request, batch_id))

    @app.get(
        "/batches/{batch_id}/events",
        response_class=EventSourceResponse,
        responses={
            **PROBLEMS,
            200: {
                "description": "`crew` events (data: a `CrewEvent`), `chunk` events of streamed "
                "text (data: a `ChunkEvent`, before that crew's final `crew` event; "
                "`chunks=false` leaves them out), then one `done` event (data: a `DoneEvent`); "
                "each event's data is JSON",
                "content": {
                    "text/event-stream": {
                        "itemSchema": {"oneOf": [_sse_item(n, m) for n, m in SSE_EVENTS.items()]}
                    }
                },
            },
        },
    )
    async def batch_events(
        request: Request, batch_id: str, chunks: bool = True
    ) -> EventSourceResponse:
        """Server-sent events: `crew` on every state change, `chunk` with each crew's new
        streamed text (coalesced; `chunks=false` turns them off), `done` with the figures.

        Each `crew` event's data is a `CrewEvent` (its schema is in the components), the
        `done` event's a `DoneEvent`; both are JSON."""
        runtime = rt(request)
        first = await snapshot(request, batch_id)  # 404 before the stream starts
        try:
            live = runtime.runner.batch(batch_id)
        except UnknownBatchError:
            live = None  # another server's (or a finished) batch: its rows in the store

        async def snapshots() -> AsyncIterator[BatchSnapshot]:
            snap, store = first, runtime.store
            while True:
                yield snap
                if live is not None:
                    await asyncio.sleep(LIVE_POLL_S)
                    snap = live.snapshot()
                elif store is not None:
                    await asyncio.sleep(STORED_POLL_S)
                    snap = await asyncio.to_thread(store.refresh, snap)
                else:  # pragma: no cover - without a store every batch is this runner's
                    return

        async def stream() -> AsyncIterator[dict[str, str]]:
            sent: dict[str, str] = {}
            written: dict[str, int] = {}  # characters of each crew's streamed text sent
            async for snap in snapshots():
                for crew in snap.crews:
                    if chunks and len(crew.live_text) > written.get(crew.run_id, 0):
                        new = crew.live_text[written.get(crew.run_id, 0) :]
                        written[crew.run_id] = len(crew.live_text)
                        yield _event("chunk", ChunkEvent(run_id=crew.run_id, text=new))
                    if sent.get(crew.run_id) != crew.state.value:
                        sent[crew.run_id] = crew.state.value
                        yield _event("crew", CrewEvent.from_snapshot(crew))
                if snap.done:
                    yield _event("done", DoneEvent.from_snapshot(snap))
                    return
                if await request.is_disconnected():
                    return

        return EventSourceResponse(stream(), ping=15)

    @app.post(
        "/batches/{batch_id}/cancel",
        response_model=CancelResult,
        responses={**PROBLEMS, 409: {"model": Problem}},
    )
    async def cancel(request: Request, batch_id: str) -> CancelResult:
        """Cancel the crews still queued or running; finished results stay. `cancelled` is how
        many crews this call stopped (0 when they had ended or another cancel got there first).
        A batch of a server that has stopped ends at once (its crews as interrupted); one another
        live server runs is a 409: only that server can stop its crews."""
        runtime = rt(request)
        check_batch_id(batch_id)
        try:
            cancelled = await asyncio.to_thread(runtime.runner.cancel, batch_id)
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
            return CancelResult(batch_id=batch_id, cancelled=ended)

    @app.post(
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
        from crewdash.resume import resume

        check_batch_id(batch_id)
        body = body or ResumeRequest()
        for run_id in [*(body.run_ids or []), *body.from_start]:
            if not RUN_ID.fullmatch(run_id):
                raise UnknownBatchError(f"{batch_id}/{run_id}")
        try:
            outcome = await asyncio.to_thread(
                resume, rt(request), batch_id, body.run_ids, body.from_start
            )
        except BatchElsewhereError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        return ResumeResult.from_outcome(outcome)

    @app.post(
        "/batches/{batch_id}/crews/{run_id}/cancel", response_model=CancelResult, responses=PROBLEMS
    )
    async def cancel_crew(request: Request, batch_id: str, run_id: str) -> CancelResult:
        """Cancel one crew; the batch's other crews go on."""
        runtime = rt(request)
        check_batch_id(batch_id)
        if not RUN_ID.fullmatch(run_id):
            raise UnknownBatchError(f"{batch_id}/{run_id}")
        try:
            done = await asyncio.to_thread(runtime.runner.cancel_crew, batch_id, run_id)
        except UnknownBatchError:
            snap = await snapshot(request, batch_id)  # 404 if unknown anywhere
            if run_id not in {c.run_id for c in snap.crews}:
                raise UnknownBatchError(f"{batch_id}/{run_id}") from None
            done = False
        return CancelResult(batch_id=batch_id, cancelled=int(done))

    @app.get(
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

    @app.get(
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

    @app.get("/healthz", response_model=Health)
    async def healthz(request: Request) -> dict[str, Any]:
        runtime = rt(request)
        running = sum(1 for b in runtime.runner.batch_ids() if not runtime.runner.snapshot(b).done)
        return {
            "status": "ok",
            "pid": os.getpid(),
            "running_batches": running,
            "backend": runtime.runner.backend.name,
            "database": "sqlite"
            if runtime.store and runtime.store.url.startswith("sqlite")
            else ("postgresql" if runtime.store else "none"),
        }

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        return _problem(exc)

    app.include_router(experiment_router)
    _with_event_schemas(app)
    return app


class StartupError(RuntimeError):
    """The API cannot start; the message says why and which setting to fix."""


class CleanStartupErrors:
    """ASGI wrapper: a failed start is logged as its message alone, not a stack trace."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_short(message: Any) -> None:
            if message.get("type") == "lifespan.startup.failed" and message.get("message"):
                lines = [line for line in message["message"].splitlines() if line.strip()]
                message = {**message, "message": lines[-1].split(": ", 1)[-1] if lines else ""}
            await send(message)

        await self.app(scope, receive, send_short)


fastapi_app = create_app()
app = CleanStartupErrors(fastapi_app)
