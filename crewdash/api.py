"""The REST API on the same runner and store: `uvicorn crewdash.api:app` (127.0.0.1 by default).

`POST /research` is the tutorial's contract: it answers once every crew is done, with the crews
running concurrently on the runner's own loop, so this server's event loop is never blocked.
`/batches` is the asynchronous form: 202 with an id at once, then state, events and exports.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, StringConstraints, field_validator
from sse_starlette.sse import EventSourceResponse

from crewdash.batch import BatchSnapshot, CrewSnapshot
from crewdash.blueprints import list_blueprints
from crewdash.config import DEFAULT_BLUEPRINT, MAX_TOPIC_CHARS, MAX_TOPICS
from crewdash.errors import BatchElsewhereError, CrewdashError, UnknownBatchError
from crewdash.exports import FORMATS, batch_dict, export
from crewdash.runner import RunSettings
from crewdash.runtime import Runtime
from crewdash.topics import TOPIC_PATTERN, parse_topics

log = logging.getLogger(__name__)
LIVE_POLL_S = 0.1  # a batch of this process: its snapshot is in memory
STORED_POLL_S = 0.5  # a batch another server runs: read from the database, changes only
Topic = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_TOPIC_CHARS, pattern=TOPIC_PATTERN),
]
TOPICS_FIELD = Field(
    min_length=1,
    max_length=MAX_TOPICS,
    description=f"One crew per topic (at most {MAX_TOPICS}); duplicates are dropped.",
)


class ResearchRequest(BaseModel):
    topics: list[Topic] = TOPICS_FIELD


class ResearchResponse(BaseModel):
    results: dict[str, str] = Field(description="topic -> the crew's raw answer")
    errors: dict[str, str] = Field(default_factory=dict, description="topic -> why it failed")


def _blueprint_enum() -> dict[str, Any]:
    """The blueprints present at start, so generated clients and fuzzers know the choices."""
    return {"enum": list_blueprints()}


class BatchRequest(BaseModel):
    topics: list[Topic] = TOPICS_FIELD
    blueprint: str = Field(default=DEFAULT_BLUEPRINT, json_schema_extra=_blueprint_enum())
    max_concurrency: int | None = Field(default=None, ge=1, le=1000)
    crew_timeout_s: float | None = Field(default=None, gt=0, le=86_400)

    @field_validator("blueprint")
    @classmethod
    def _known_blueprint(cls, value: str) -> str:
        known = list_blueprints()
        if value not in known:
            raise ValueError(f"no blueprint named {value!r}; choose one of {', '.join(known)}")
        return value


class BatchAccepted(BaseModel):
    batch_id: str
    crews: int
    notes: list[str]
    links: dict[str, str]


class CancelResult(BaseModel):
    batch_id: str
    cancelled: int


class Problem(BaseModel):
    detail: str


PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem},
    404: {"model": Problem},
    422: {"model": Problem},
}


def _crew_event(crew: CrewSnapshot) -> dict[str, Any]:
    return {
        "run_id": crew.run_id,
        "index": crew.index,
        "topic": crew.topic,
        "state": crew.state.value,
        "result": crew.result,
        "error": crew.error,
        "duration_s": crew.duration,
    }


def _summary(snap: BatchSnapshot) -> dict[str, Any]:
    return {
        "batch_id": snap.batch_id,
        "done": snap.done,
        "crews": len(snap.crews),
        "wall_s": snap.wall_s,
        "sum_crew_s": snap.sum_crew_s,
        "speedup": snap.speedup,
        "counts": {s.value: snap.count(s) for s in {c.state for c in snap.crews}},
    }


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

    open_paths = {"/healthz", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"}

    @app.middleware("http")
    async def bearer_token(request: Request, call_next: Any) -> Response:
        """With CREWDASH_API_TOKEN set, every call but health and docs needs that bearer token."""
        token = os.environ.get("CREWDASH_API_TOKEN", "")
        if token and request.url.path not in open_paths:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.encode(), token.encode()
            ):
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

    @app.exception_handler(UnknownBatchError)
    async def _unknown(_: Request, exc: UnknownBatchError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(CrewdashError)
    async def _bad(_: Request, exc: CrewdashError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    async def snapshot(request: Request, batch_id: str) -> BatchSnapshot:
        return await asyncio.to_thread(rt(request).snapshot, batch_id)

    async def start(
        request: Request, body: BatchRequest | ResearchRequest, source: str
    ) -> tuple[str, list[str]]:
        runtime = rt(request)
        topics = parse_topics(body.topics)
        limit = getattr(body, "max_concurrency", None) or runtime.default_settings.max_concurrency
        settings = RunSettings(
            llm=runtime.default_settings.llm,
            max_concurrency=limit,
            crew_timeout_s=getattr(body, "crew_timeout_s", None),
        )
        blueprint = getattr(body, "blueprint", DEFAULT_BLUEPRINT)
        batch_id = await asyncio.to_thread(
            runtime.runner.submit,
            blueprint,
            topics.items,
            settings,
            notes=topics.notes,
            source=source,
        )
        return batch_id, list(topics.notes)

    @app.post("/research", response_model=ResearchResponse, responses=PROBLEMS)
    async def research(request: Request, body: ResearchRequest) -> ResearchResponse:
        """The tutorial's endpoint: one crew per topic, concurrently; answers when all are done."""
        batch_id, _ = await start(request, body, "api")
        batch = rt(request).runner.batch(batch_id)
        while not batch.wait(0):
            await asyncio.sleep(0.05)  # wait without holding a thread or the loop
        snap = batch.snapshot()
        return ResearchResponse(
            results={c.topic: c.result or "" for c in snap.crews if c.result is not None},
            errors={c.topic: c.error or c.state.value for c in snap.crews if c.result is None},
        )

    @app.post("/batches", status_code=202, response_model=BatchAccepted, responses=PROBLEMS)
    async def create_batch(request: Request, body: BatchRequest) -> BatchAccepted:
        """Start a batch and answer at once with its id."""
        batch_id, notes = await start(request, body, "api")
        base = f"/batches/{batch_id}"
        return BatchAccepted(
            batch_id=batch_id,
            crews=len(rt(request).runner.batch(batch_id).run_ids),
            notes=notes,
            links={
                "self": base,
                "events": f"{base}/events",
                "cancel": f"{base}/cancel",
                "export": f"{base}/export?format=json",
            },
        )

    @app.get("/batches")
    async def list_batches(
        request: Request,
        search: str | None = Query(default=None, max_length=300),
        limit: int = Query(default=50, ge=1, le=500),
        offset: int = Query(default=0, ge=0, le=1_000_000),
    ) -> list[dict[str, Any]]:
        """The history, newest first (the dashboard's History page shows the same)."""
        runtime = rt(request)
        if runtime.store is None:
            return [_summary(runtime.runner.snapshot(b)) for b in runtime.runner.batch_ids()]
        rows = await asyncio.to_thread(runtime.store.list_batches, search, limit, offset)
        return [
            {
                "batch_id": r.batch_id,
                "created_at": r.created_at,
                "finished_at": r.finished_at,
                "state": r.state,
                "blueprint": r.blueprint,
                "model": r.model_label,
                "source": r.source,
                "crews": r.crews,
                "counts": r.counts,
                "wall_s": r.wall_s,
                "speedup": r.speedup,
                "tokens": r.tokens,
                "topics": r.topics_preview,
            }
            for r in rows
        ]

    @app.get("/batches/{batch_id}", responses=PROBLEMS)
    async def get_batch(request: Request, batch_id: str) -> dict[str, Any]:
        """Everything about one batch, crews and spans included."""
        return batch_dict(await snapshot(request, batch_id))

    @app.get(
        "/batches/{batch_id}/events",
        response_class=EventSourceResponse,
        responses={
            **PROBLEMS,
            200: {"content": {"text/event-stream": {}}, "description": "crew and done events"},
        },
    )
    async def batch_events(request: Request, batch_id: str) -> EventSourceResponse:
        """Server-sent events: `crew` on every state change, `done` with the figures at the end."""
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
            async for snap in snapshots():
                for crew in snap.crews:
                    if sent.get(crew.run_id) != crew.state.value:
                        sent[crew.run_id] = crew.state.value
                        yield {"event": "crew", "data": json.dumps(_crew_event(crew))}
                if snap.done:
                    yield {"event": "done", "data": json.dumps(_summary(snap))}
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
        """Cancel the crews still queued or running; finished results stay. A batch of a server
        that has stopped ends at once (its crews as interrupted); one another live server runs
        is a 409: only that server can stop its crews."""
        runtime = rt(request)
        try:
            return CancelResult(batch_id=batch_id, cancelled=runtime.runner.cancel(batch_id))
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
        "/batches/{batch_id}/crews/{run_id}/cancel", response_model=CancelResult, responses=PROBLEMS
    )
    async def cancel_crew(request: Request, batch_id: str, run_id: str) -> CancelResult:
        """Cancel one crew; the batch's other crews go on."""
        runtime = rt(request)
        try:
            done = runtime.runner.cancel_crew(batch_id, run_id)
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
            200: {"content": {m: {} for m, _ in FORMATS.values()}, "description": "the export"},
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

    @app.get("/healthz")
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
        return JSONResponse(status_code=exc.status_code, content={"detail": str(exc.detail)})

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
