"""The `data` of each server-sent event of `GET /batches/{id}/events`: `crew`, `chunk` and
`done`. No route returns them as JSON; the API puts them in its schema's components."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from crewdash.model.batch import BatchState, CrewState
from crewdash.schemas.common import SPEEDUP_RULE, STATE_RULE, WireModel

if TYPE_CHECKING:
    from crewdash.model.batch import BatchSnapshot, CrewSnapshot


class CrewEvent(WireModel):
    """The `data` of an SSE `crew` event: one crew changed state."""

    run_id: str
    index: int
    topic: str
    state: CrewState
    result: str | None
    error: str | None
    duration_s: float | None

    @classmethod
    def from_snapshot(cls, crew: CrewSnapshot) -> CrewEvent:
        return cls(
            run_id=crew.run_id,
            index=crew.index,
            topic=crew.topic,
            state=crew.state,
            result=crew.result,
            error=crew.error,
            duration_s=crew.duration,
        )


class ChunkEvent(WireModel):
    """The `data` of an SSE `chunk` event: new streamed text of a running crew (coalesced, a few
    times a second); a crew's chunks come before its final `crew` event."""

    run_id: str
    text: str


class DoneEvent(WireModel):
    """The `data` of the SSE `done` event: every crew has ended; the batch's figures."""

    batch_id: str
    done: bool
    state: BatchState = Field(description=STATE_RULE)
    crews: int
    wall_s: float
    sum_crew_s: float
    speedup: float | None = Field(description=SPEEDUP_RULE)
    counts: dict[str, int] = Field(description="crews per state")

    @classmethod
    def from_snapshot(cls, snap: BatchSnapshot) -> DoneEvent:
        return cls(
            batch_id=snap.batch_id,
            done=snap.done,
            state=snap.state,
            crews=len(snap.crews),
            wall_s=snap.wall_s,
            sum_crew_s=snap.sum_crew_s,
            speedup=snap.speedup,
            counts=snap.counts,
        )
