"""The wire model of `GET /healthz`: this server is up, and what it runs on."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from crewdash.schemas.common import WireModel


class Health(WireModel):
    status: Literal["ok"]
    pid: int
    running_batches: int
    backend: str
    database: str = Field(description="sqlite, postgresql or none")
