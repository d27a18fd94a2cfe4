"""`GET /healthz`: this server is up, with what it runs on and how many batches it is running
(open without the API token, for load balancers and orchestrators)."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Request

from crewdash.api.context import runtime_of
from crewdash.schemas.health import Health

router = APIRouter()


@router.get("/healthz", response_model=Health)
async def healthz(request: Request) -> dict[str, Any]:
    runtime = runtime_of(request)
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
