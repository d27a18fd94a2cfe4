"""`GET /blueprints`: every blueprint on the search path, so a client knows what it can run."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from crewdash.blueprints.catalog import describe_blueprints
from crewdash.schemas.blueprints import BlueprintDescription

router = APIRouter()


@router.get("/blueprints", response_model=list[BlueprintDescription])
async def blueprints() -> list[BlueprintDescription]:
    """Every blueprint on the search path: its kind, inputs with their defaults, fan-out
    input and the agents that pin their own model, or why it cannot be used."""
    infos = await asyncio.to_thread(describe_blueprints)
    return [BlueprintDescription.from_info(i) for i in infos]
