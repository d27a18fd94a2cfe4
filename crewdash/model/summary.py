"""One line of the history, in one shape: the database's listing gives it, a live batch gives
it (a server without history), and the API's and the History page's lines are built from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from crewdash.model.batch import (
    BatchSnapshot,
    BatchState,
    CrewState,
    batch_speedup,
    batch_state,
    topics_preview,
)


@dataclass(frozen=True)
class BatchSummary:
    """One line of the history: what was run and how it went, without the crews' texts."""

    batch_id: str
    created_at: float
    finished_at: float | None
    blueprint: str
    model_label: str
    source: str | None  # page, api or cli; None for a batch of a server without history
    crews: int
    counts: dict[str, int]
    wall_s: float | None
    sum_crew_s: float
    tokens: int
    topics_preview: str
    kind: str = "yaml"
    created_by: str = ""  # who started it ("" before accounts)
    created_by_name: str = ""

    @property
    def state(self) -> BatchState:
        """`batch_state` of its crews' rows: the batch row stores no state of its own, so the
        history can never disagree with the rule."""
        return batch_state(self.counts, self.finished_at)

    @property
    def done(self) -> bool:
        return self.state != "running"

    @property
    def speedup(self) -> float | None:
        succeeded = self.counts.get(CrewState.SUCCEEDED.value, 0)
        return batch_speedup(self.sum_crew_s, self.wall_s, succeeded, self.done)

    @classmethod
    def of_snapshot(cls, snap: BatchSnapshot, source: str | None = None) -> BatchSummary:
        """A batch of this process as a line of the history (its wall time runs to now)."""
        return cls(
            batch_id=snap.batch_id,
            created_at=snap.created_at,
            finished_at=snap.finished_at,
            blueprint=snap.blueprint,
            model_label=snap.model_label,
            source=source,
            crews=len(snap.crews),
            counts=snap.counts,
            wall_s=snap.wall_s,
            sum_crew_s=snap.sum_crew_s,
            tokens=snap.tokens.total,
            topics_preview=topics_preview([c.topic for c in snap.crews]),
            kind=snap.kind,
            created_by=snap.created_by,
            created_by_name=snap.created_by_name,
        )
