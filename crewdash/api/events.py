"""`GET /batches/{id}/events`: a batch as server-sent events (`crew` on every state change,
`chunk` with new streamed text, `done` with the figures), and the event payloads' place in the
OpenAPI document, where the route's item schema points."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from pydantic.json_schema import models_json_schema
from sse_starlette.sse import EventSourceResponse

from crewdash.api.context import runtime_of, snapshot
from crewdash.base.errors import UnknownBatchError
from crewdash.model.batch import BatchSnapshot
from crewdash.schemas.common import PROBLEMS, WireModel
from crewdash.schemas.events import ChunkEvent, CrewEvent, DoneEvent

router = APIRouter()
LIVE_POLL_S = 0.1  # a batch of this process: its snapshot is in memory
STORED_POLL_S = 0.5  # a batch another server runs: read from the database, changes only


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


def with_event_schemas(app: FastAPI) -> None:
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


@router.get(
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
async def batch_events(request: Request, batch_id: str, chunks: bool = True) -> EventSourceResponse:
    """Server-sent events: `crew` on every state change, `chunk` with each crew's new
    streamed text (coalesced; `chunks=false` turns them off), `done` with the figures.

    Each `crew` event's data is a `CrewEvent` (its schema is in the components), the
    `done` event's a `DoneEvent`; both are JSON."""
    runtime = runtime_of(request)
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
