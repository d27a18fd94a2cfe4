"""The wire models of `POST /batches/{id}/resume`: which interrupted crews continue, what the
resume started and which crews it offers to re-run from the start instead."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from crewdash.schemas.common import WireModel

if TYPE_CHECKING:
    from crewdash.engine.resume import CrewResume, ResumeOutcome


# A crew's id: its batch's id, a dash and its index (checked by the route, with a message).
RunId = Annotated[str, Field(json_schema_extra={"pattern": r"^[0-9a-f]{12}-[0-9]{1,6}$"})]


class ResumeRequest(WireModel):
    """`POST /batches/{id}/resume`: which interrupted crews continue (default: all)."""

    run_ids: list[RunId] | None = Field(
        default=None, max_length=1000, description="only these crews (default: every interrupted)"
    )
    from_start: list[RunId] = Field(
        default_factory=list,
        max_length=1000,
        description="crews offered a re-run (unusable checkpoint) to run from the start now",
    )


class ResumedCrew(WireModel):
    run_id: str
    topic: str
    restored_tasks: int = Field(description="finished tasks kept from its checkpoint")
    reason: str | None = Field(
        default=None, description="for an offer: why it cannot continue from its checkpoint"
    )


class ResumeResult(WireModel):
    """What a resume started, and which crews it offers to re-run from the start instead."""

    batch_id: str
    resumed: list[ResumedCrew]
    rerun_offers: list[ResumedCrew] = Field(
        description="crews that were not resumed; resume them with `from_start` to re-run"
    )
    message: str

    @classmethod
    def from_outcome(cls, outcome: ResumeOutcome) -> ResumeResult:
        def crew(plan: CrewResume) -> ResumedCrew:
            tasks = len(plan.restore.tasks) if plan.restore is not None else 0
            return ResumedCrew(
                run_id=plan.run_id, topic=plan.topic, restored_tasks=tasks, reason=plan.problem
            )

        return cls(
            batch_id=outcome.batch_id,
            resumed=[crew(p) for p in outcome.resumed],
            rerun_offers=[crew(p) for p in outcome.offers],
            message=outcome.describe(),
        )
