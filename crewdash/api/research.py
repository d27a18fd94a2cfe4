"""`POST /research`, the tutorial's contract: one crew per topic, run concurrently on the
runner's own loop, answered once every crew is done, so this server's event loop is never
blocked while it waits."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from crewdash.api.batches import start
from crewdash.api.context import runtime_of
from crewdash.schemas.common import STARTS
from crewdash.schemas.requests import ResearchRequest, ResearchResponse

router = APIRouter()


@router.post("/research", response_model=ResearchResponse, responses=STARTS)
async def research(request: Request, body: ResearchRequest) -> ResearchResponse:
    """The tutorial's endpoint: one crew per topic, concurrently; answers when all are done.

    Answers are keyed by each topic exactly as sent; topics that clean to the same text
    share one crew, and `notes` says which.
    """
    batch_id, topics = await start(request, body, "api")
    batch = runtime_of(request).runner.batch(batch_id)
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
