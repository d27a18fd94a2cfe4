"""What a route takes from the app: the runtime the app's start-up put on `app.state`, and a
batch's snapshot by id (live from this server's runner, else from the history)."""

from __future__ import annotations

import asyncio

from fastapi import Request

from crewdash.model.batch import BatchSnapshot, check_batch_id
from crewdash.runtime import Runtime


def runtime_of(request: Request) -> Runtime:
    """The app's runtime (built at start-up, closed at shutdown)."""
    runtime: Runtime = request.app.state.runtime
    return runtime


async def snapshot(request: Request, batch_id: str) -> BatchSnapshot:
    """The batch, or a 404 (`UnknownBatchError`) for an id of the wrong shape or no batch."""
    check_batch_id(batch_id)
    return await asyncio.to_thread(runtime_of(request).snapshot, batch_id)
