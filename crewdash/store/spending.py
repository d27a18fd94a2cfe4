"""Spend per person in the history database: the database is the truth, so a daily cap holds
across replicas.

A batch's claim on its person's cap is checked in the transaction that stores it, after its row
is written: on PostgreSQL under an advisory lock per person (two replicas starting batches for
one person take turns), on SQLite under the database's single write lock (the row's insert takes
it before the spend is read). Either way a second batch sees the first one's reservation. What a
deleted batch spent is kept (`kept_spend`), so deleting batches is no way around a cap.
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
from crewdash.store.tables import BatchRow, CrewRow, KeptSpendRow


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


def _done_spend(model: str, usage: TokenUsage) -> Spend:
    """What an ended batch on `model` spent."""
    price = price_for(model)
    if price is not None:
        return Spend(usd=price.cost(usage), tokens=usage.total, batches=1)
    return Spend(unpriced_tokens=usage.total, tokens=usage.total, batches=1)


def _spend(row: BatchRow, usage: TokenUsage) -> Spend:
    """One batch's spend: what its crews spent, and at least its estimate until it is done."""
    if row.finished_at is not None:
        return _done_spend(row.model, usage)
    price = price_for(row.model)
    if price is not None:
        usd = max(price.cost(usage), row.estimate_usd or 0.0)
        return Spend(usd=usd, tokens=usage.total, batches=1)
    tokens = max(usage.total, row.estimate_tokens or 0)
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
        kept = select(KeptSpendRow).where(KeptSpendRow.created_at >= since)
        if user_id is not None:
            kept = kept.where(KeptSpendRow.user_id == user_id.replace("\x00", ""))
        spent: dict[str, Spend] = {}
        with Session(self.engine) if session is None else nullcontext(session) as s:
            for row, prompt, completion, total in s.execute(query):
                tokens = TokenUsage(int(prompt or 0), int(completion or 0), int(total or 0))
                one = _spend(row, tokens)
                spent[row.created_by] = spent.get(row.created_by, Spend()) + one
            for gone in s.scalars(kept):
                kept_usage = TokenUsage(
                    gone.prompt_tokens, gone.completion_tokens, gone.total_tokens
                )
                one = _done_spend(gone.model, kept_usage)
                spent[gone.user_id] = spent.get(gone.user_id, Spend()) + one
        return spent

    def keep_spend(self, session: Session, batch_id: str) -> None:
        """Inside the transaction deleting batch `batch_id`: keep what it spent."""
        row = session.execute(
            select(
                BatchRow.created_by,
                BatchRow.created_at,
                BatchRow.model,
                func.coalesce(func.sum(CrewRow.prompt_tokens), 0),
                func.coalesce(func.sum(CrewRow.completion_tokens), 0),
                func.coalesce(func.sum(CrewRow.total_tokens), 0),
            )
            .outerjoin(CrewRow, CrewRow.batch_id == BatchRow.id)
            .where(BatchRow.id == batch_id)
            .group_by(BatchRow.id, BatchRow.created_by, BatchRow.created_at, BatchRow.model)
        ).first()
        if row is None or not row[5]:
            return  # nothing spent: nothing to keep
        session.add(
            KeptSpendRow(
                batch_id=batch_id,
                user_id=row[0],
                created_at=row[1],
                model=row[2],
                prompt_tokens=int(row[3]),
                completion_tokens=int(row[4]),
                total_tokens=int(row[5]),
            )
        )

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
