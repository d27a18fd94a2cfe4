"""Spend per person in the history database: the database is the truth, so a daily cap holds
across replicas.

A batch's claim on its person's cap is checked in the transaction that stores it, after its row
is written: on PostgreSQL under an advisory lock per person (two replicas starting batches for
one person take turns), on SQLite under the database's single write lock (the row's insert takes
it before the spend is read). Either way a second batch sees the first one's reservation.
"""

from __future__ import annotations

import hashlib
from contextlib import nullcontext
from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from crewdash.model.batch import TokenUsage
from crewdash.model.pricing import price_for
from crewdash.model.spend import Spend, SpendCap, SpendCapExceeded, day_start, until_tomorrow
from crewdash.store.tables import BatchRow, CrewRow


@dataclass(frozen=True)
class Reservation:
    """A new batch's claim on its person's daily cap: its estimate, checked as it is stored."""

    user_id: str
    cap: SpendCap
    model: str
    cost_usd: float | None  # None: the model has no price
    tokens: int


def _lock_key(user_id: str) -> int:
    """A signed 64-bit advisory lock key for one person."""
    return int.from_bytes(hashlib.sha256(user_id.encode()).digest()[:8], "big", signed=True)


def _spend(row: BatchRow, usage: TokenUsage) -> Spend:
    """One batch's spend: what its crews spent, and at least its estimate until it is done."""
    done = row.finished_at is not None
    price = price_for(row.model)
    if price is not None:
        usd = price.cost(usage) if done else max(price.cost(usage), row.estimate_usd or 0.0)
        return Spend(usd=usd, tokens=usage.total, batches=1)
    tokens = usage.total if done else max(usage.total, row.estimate_tokens or 0)
    return Spend(unpriced_tokens=tokens, tokens=tokens, batches=1)


class Spending:
    """The store's spend side: `Store` is one."""

    engine: Engine

    def spend_by_user(
        self,
        since: float,
        user_id: str | None = None,
        *,
        session: Session | None = None,
        exclude: str | None = None,
    ) -> dict[str, Spend]:
        """Each person's spend on batches started since `since` (or one person's), without
        batch `exclude`."""
        usage = (
            select(
                CrewRow.batch_id,
                func.sum(CrewRow.prompt_tokens).label("prompt"),
                func.sum(CrewRow.completion_tokens).label("completion"),
                func.sum(CrewRow.total_tokens).label("total"),
            )
            .group_by(CrewRow.batch_id)
            .subquery()
        )
        query = (
            select(BatchRow, usage.c.prompt, usage.c.completion, usage.c.total)
            .outerjoin(usage, usage.c.batch_id == BatchRow.id)
            .where(BatchRow.created_at >= since)
        )
        if user_id is not None:
            query = query.where(BatchRow.created_by == user_id.replace("\x00", ""))
        if exclude is not None:
            query = query.where(BatchRow.id != exclude)
        spent: dict[str, Spend] = {}
        with Session(self.engine) if session is None else nullcontext(session) as s:
            for row, prompt, completion, total in s.execute(query):
                tokens = TokenUsage(int(prompt or 0), int(completion or 0), int(total or 0))
                one = _spend(row, tokens)
                spent[row.created_by] = spent.get(row.created_by, Spend()) + one
        return spent

    def spend_of(self, user_id: str, since: float) -> Spend:
        """One person's spend on batches started since `since`."""
        return self.spend_by_user(since, user_id).get(user_id, Spend())

    def check_reservation(self, session: Session, batch_id: str, reserve: Reservation) -> None:
        """Inside the transaction storing batch `batch_id` (its row written): refuse it with
        `SpendCapExceeded` if it takes its person past their cap today."""
        spent = self.spend_by_user(day_start(), reserve.user_id, session=session, exclude=batch_id)
        before = spent.get(reserve.user_id, Spend())
        why = reserve.cap.refusal(before, reserve.model, reserve.cost_usd, reserve.tokens)
        if why is not None:
            raise SpendCapExceeded(why, until_tomorrow())

    def lock_person(self, session: Session, user_id: str) -> None:
        """PostgreSQL: one transaction at a time per person until commit (SQLite's write lock
        already serializes writers)."""
        if self.engine.dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(user_id)})
