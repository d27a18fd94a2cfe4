"""Experiments and cached model answers in the history database (tables of migration 0008,
in `crewdash.store.tables`).

An experiment's batch and crews are stored like any batch (`crewdash.store.history`); this adds its
spec (topics, variants, rubric), each cell's judge score and the analyst's mark and note, and
the response cache that every process on the same database shares.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crewdash.model.batch import TokenUsage
from crewdash.providers.response_cache import CachedResponse
from crewdash.store.history import Store
from crewdash.store.tables import CacheRow, CellRow, ExperimentRow


@dataclass(frozen=True)
class CellNotes:
    """What the judge and the analyst said about one cell (by its crew's index)."""

    score: int | None = None
    reason: str | None = None
    judge_error: str | None = None
    mark: str | None = None  # "good" or "bad"
    note: str | None = None


class ExperimentStore:
    """Experiments' specs and cell notes, on the history database's engine."""

    def __init__(self, store: Store) -> None:
        self.engine = store.engine

    def save_spec(self, experiment_id: str, created_at: float, spec: dict[str, Any]) -> None:
        with Session(self.engine) as session, session.begin():
            row = ExperimentRow(id=experiment_id, created_at=created_at, spec=json.dumps(spec))
            session.add(row)

    def spec(self, experiment_id: str) -> dict[str, Any] | None:
        with Session(self.engine) as session:
            row = session.get(ExperimentRow, experiment_id)
            return None if row is None else dict(json.loads(row.spec))

    def list_ids(self, limit: int = 200) -> list[tuple[str, float, dict[str, Any]]]:
        """(id, created_at, spec), newest first."""
        with Session(self.engine) as session:
            rows = session.scalars(
                select(ExperimentRow).order_by(ExperimentRow.created_at.desc()).limit(limit)
            )
            return [(r.id, r.created_at, dict(json.loads(r.spec))) for r in rows]

    def save_cell(self, experiment_id: str, idx: int, **changes: Any) -> None:
        """Set some fields of one cell's notes (the judge's, or the analyst's)."""
        with Session(self.engine) as session, session.begin():
            row = session.get(CellRow, (experiment_id, idx))
            if row is None:
                row = CellRow(experiment_id=experiment_id, idx=idx)
                session.add(row)
            for name, value in changes.items():
                setattr(row, name, value)

    def cells(self, experiment_id: str) -> dict[int, CellNotes]:
        with Session(self.engine) as session:
            rows = session.scalars(select(CellRow).where(CellRow.experiment_id == experiment_id))
            return {
                r.idx: CellNotes(r.score, r.reason, r.judge_error, r.mark, r.note) for r in rows
            }


class StoredResponses:
    """The response cache's table: one row per distinct request."""

    def __init__(self, store: Store) -> None:
        self.engine = store.engine

    def get(self, key: str) -> CachedResponse | None:
        """A read only: many crews hit the cache at once, and SQLite serialises writers."""
        with Session(self.engine) as session:
            row = session.get(CacheRow, key)
            if row is None:
                return None
            tokens = TokenUsage(row.prompt_tokens, row.completion_tokens, row.total_tokens)
            return CachedResponse(row.body.encode("utf-8"), row.content_type, row.model, tokens)

    def put(self, key: str, response: CachedResponse) -> None:
        try:
            with Session(self.engine) as session, session.begin():
                session.add(
                    CacheRow(
                        key=key,
                        created_at=time.time(),
                        model=response.model[:200],
                        content_type=response.content_type[:100],
                        body=response.body.decode("utf-8", "replace"),
                        prompt_tokens=response.tokens.prompt,
                        completion_tokens=response.tokens.completion,
                        total_tokens=response.tokens.total,
                    )
                )
        except IntegrityError:
            pass  # the same request answered twice at once: the first one stays

    def count(self) -> int:
        with Session(self.engine) as session:
            return len(session.scalars(select(CacheRow.key)).all())

    def clear(self) -> None:
        with Session(self.engine) as session, session.begin():
            session.query(CacheRow).delete()
