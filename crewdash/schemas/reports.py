"""The figures `python -m crewdash run --json` writes: the batch and each of its crews, with
the absolute paths of the files they wrote."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from crewdash.model.batch import BatchState, CrewState
from crewdash.schemas.batches import TaskOutput
from crewdash.schemas.common import SPEEDUP_RULE, STATE_RULE, WireModel

if TYPE_CHECKING:
    from pathlib import Path

    from crewdash.model.batch import BatchSnapshot, CrewSnapshot


class CrewReport(WireModel):
    """One crew in the CLI's `--json` (`crews_detail[]`)."""

    run_id: str
    topic: str
    state: CrewState
    duration_s: float | None
    error: str | None
    inputs: dict[str, str]
    result: str | None
    tasks: list[TaskOutput]
    files: list[str] = Field(description="absolute paths of the files its tasks wrote")
    ttft_s: float | None = Field(None, description="time to first token; null unstreamed")
    tokens_per_s: float | None = Field(None, description="output tokens per second writing")

    @classmethod
    def from_snapshot(cls, crew: CrewSnapshot, folder: Path) -> CrewReport:
        return cls(
            run_id=crew.run_id,
            topic=crew.topic,
            state=crew.state,
            duration_s=None if crew.duration is None else round(crew.duration, 3),
            error=crew.error,
            inputs=dict(crew.inputs),
            result=crew.result,
            tasks=[TaskOutput(name=t.name, agent=t.agent, output=t.output) for t in crew.tasks],
            files=[str(folder / f) for f in crew.files],
            ttft_s=None if crew.ttft_s is None else round(crew.ttft_s, 3),
            tokens_per_s=None if crew.tokens_per_s is None else round(crew.tokens_per_s, 1),
        )


class RunReport(WireModel):
    """The figures `python -m crewdash run --json` writes."""

    batch_id: str
    blueprint: str
    model: str = Field(description="the model's label")
    state: BatchState = Field(description=STATE_RULE)
    crews: int
    counts: dict[str, int] = Field(description="crews per state")
    succeeded: int
    failed: int
    budget_exceeded: int = Field(0, description="crews not started: the budget would be passed")
    max_concurrency: int
    wall_s: float
    slowest_crew_s: float
    sum_crew_s: float
    speedup: float | None = Field(description=SPEEDUP_RULE)
    wall_over_slowest: float | None
    tokens: int = Field(description="total tokens")
    kind: str
    crews_detail: list[CrewReport]

    @classmethod
    def from_snapshot(cls, snap: BatchSnapshot, outputs: Path) -> RunReport:
        """`outputs`: the folder the crews' files are in (one folder per batch and crew)."""
        return cls(
            batch_id=snap.batch_id,
            blueprint=snap.blueprint,
            model=snap.model_label,
            state=snap.state,
            crews=len(snap.crews),
            counts=snap.counts,
            succeeded=snap.count(CrewState.SUCCEEDED),
            failed=snap.count(CrewState.FAILED),
            budget_exceeded=snap.count(CrewState.BUDGET_EXCEEDED),
            max_concurrency=snap.max_concurrency,
            wall_s=round(snap.wall_s, 3),
            slowest_crew_s=round(snap.slowest_crew_s, 3),
            sum_crew_s=round(snap.sum_crew_s, 3),
            speedup=None if snap.speedup is None else round(snap.speedup, 2),
            wall_over_slowest=round(snap.wall_s / snap.slowest_crew_s, 3)
            if snap.slowest_crew_s
            else None,
            tokens=snap.tokens.total,
            kind=snap.kind,
            crews_detail=[
                CrewReport.from_snapshot(c, outputs / snap.batch_id / c.run_id) for c in snap.crews
            ],
        )
