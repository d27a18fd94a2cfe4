"""Who runs which batch: owners and their leases, the end of a dead owner's batches, and the
resume claim that makes a live process a stopped batch's owner again.

Every batch belongs to an *owner*: one start of one process (a random id, with host and PID
only for messages). An owner renews a heartbeat in the `owners` table; one whose heartbeat is
older than the lease is presumed dead, and any process sweeping the store ends its unfinished
batches as interrupted. PIDs and host names are never trusted: in a container the server is
PID 1 at every start, and a replaced pod has a new host name. Heartbeats are compared on the
database's clock, so replicas on different hosts agree.

Resuming a batch claims it with conditional updates, so of several servers that try at once
exactly one wins; what a batch needs to run again (its settings, its blueprint's version) is
kept beside it in `resume_batches`.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Float,
    and_,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from crewdash.base.errors import BatchElsewhereError, UnknownBatchError
from crewdash.base.settings import default_of
from crewdash.model.batch import CrewState
from crewdash.store.rows import OPEN_STATES, ResumeRecord, resume_record
from crewdash.store.tables import BatchRow, CrewRow, OwnerRow, ResumeBatchRow, SpanRow

DEFAULT_LEASE_S: float = default_of("CREWDASH_OWNER_LEASE_S")
INTERRUPTED_ERROR = "interrupted: the server stopped before this crew finished"
INTERRUPTED_SPAN = "cut off: the crew was interrupted"


class Owners:
    """The store's owner side: this process's lease, the sweep of dead owners' batches and the
    resume claim. `Store` is one; it opens the engine and picks this start's owner id."""

    engine: Engine
    owner_id: str
    _owner_lock: threading.Lock
    _registered: bool

    # --- owners and their leases -------------------------------------------------------------

    def _now(self) -> Any:
        """The database's clock in epoch seconds: replicas compare heartbeats on one clock."""
        if self.engine.dialect.name == "postgresql":
            return sql_cast(func.extract("epoch", func.clock_timestamp()), Float)
        if self.engine.dialect.name == "sqlite":
            return (func.julianday("now") - 2440587.5) * 86400.0
        return literal(time.time(), Float)  # pragma: no cover - only SQLite and PostgreSQL

    def _renew(self, session: Session) -> bool:
        """Renew this owner's heartbeat; False if its row was missing (and is written now)."""
        connection = session.connection()
        renewed = connection.execute(
            update(OwnerRow).where(OwnerRow.id == self.owner_id).values(heartbeat_at=self._now())
        ).rowcount
        if renewed:
            return True
        connection.execute(
            insert(OwnerRow).values(
                id=self.owner_id,
                host=socket.gethostname()[:200],
                pid=os.getpid(),
                started_at=time.time(),
                heartbeat_at=self._now(),
            )
        )
        return False

    def beat(self) -> bool:
        """Renew this process's lease. False if another process had presumed it dead meanwhile
        (its heartbeat was late by more than the lease): its open batches were ended then."""
        with self._owner_lock, Session(self.engine) as session, session.begin():
            known = self._renew(session)
            registered, self._registered = self._registered, True
            return known or not registered

    def release(self) -> None:
        """Give the lease up on a clean exit: whatever this process left open is ended by the
        next sweep of any process, without waiting for the lease to run out."""
        with self._owner_lock, Session(self.engine) as session, session.begin():
            session.execute(
                update(OwnerRow).where(OwnerRow.id == self.owner_id).values(heartbeat_at=0.0)
            )

    def interrupt_orphans(self, lease_s: float = DEFAULT_LEASE_S) -> int:
        """End the batches of owners silent for longer than `lease_s`; returns how many crews.

        Their queued and running crews become interrupted and the batch gets its end; finished
        crews stay as they are. Batches written before owners had heartbeats count from their
        creation. This store's own batches are never touched, and owners with nothing left open
        are forgotten.
        """
        with Session(self.engine) as session, session.begin():
            expired = session.execute(select(self._now())).scalar_one() - lease_s
            dead = session.execute(
                select(BatchRow.id, BatchRow.created_at, OwnerRow.heartbeat_at)
                .outerjoin(OwnerRow, OwnerRow.id == BatchRow.owner)
                .where(
                    BatchRow.finished_at.is_(None),
                    BatchRow.owner != self.owner_id,
                    or_(
                        OwnerRow.heartbeat_at < expired,
                        and_(OwnerRow.id.is_(None), BatchRow.created_at < expired),
                    ),
                )
            ).all()
            changed = sum(
                end_batch(session, row.id, row.heartbeat_at or row.created_at) for row in dead
            )
            session.execute(
                delete(OwnerRow).where(
                    OwnerRow.heartbeat_at < expired,
                    OwnerRow.id != self.owner_id,
                    ~exists().where(BatchRow.owner == OwnerRow.id, BatchRow.finished_at.is_(None)),
                )
            )
            return changed

    def end_orphan(self, batch_id: str, lease_s: float = DEFAULT_LEASE_S) -> int:
        """Cancel a batch no running process holds, as far as the store can: its unfinished
        crews become interrupted at once (they stopped when their server did). Returns how many.

        Raises `UnknownBatchError` for an unknown id and `BatchElsewhereError` while the batch's
        owner is alive, i.e. another server runs it and only that server can stop its crews.
        """
        with Session(self.engine) as session, session.begin():
            batch = session.get(BatchRow, batch_id)
            if batch is None:
                raise UnknownBatchError(batch_id)
            open_crews = session.scalar(
                select(func.count())
                .select_from(CrewRow)
                .where(CrewRow.batch_id == batch_id, CrewRow.state.in_(OPEN_STATES))
            )
            if not open_crews and batch.finished_at is not None:
                return 0
            now = session.execute(select(self._now())).scalar_one()
            owner = session.get(OwnerRow, batch.owner)
            last_seen = (owner.heartbeat_at if owner is not None else 0.0) or batch.created_at
            if open_crews and (batch.owner == self.owner_id or now - last_seen <= lease_s):
                where = (
                    f"host {owner.host}, pid {owner.pid}, last heartbeat "
                    f"{max(now - last_seen, 0):.0f} s ago"
                    if owner is not None
                    else batch.owner
                )
                raise BatchElsewhereError(
                    f"batch {batch_id} runs on another server ({where}); cancel it there, or if "
                    f"that server has stopped, its crews end as interrupted once its "
                    f"{lease_s:g} s lease runs out"
                )
            return end_batch(session, batch_id, last_seen)

    # --- what resuming a batch needs, and its claim ---------------------------------------------

    def save_resume_record(self, batch_id: str, version: str, settings: str) -> None:
        """Keep what resuming this batch needs (its blueprint's version, its run settings as
        JSON without the key), beside its history row."""
        with Session(self.engine) as session, session.begin():
            session.merge(ResumeBatchRow(batch_id=batch_id, version=version, settings=settings))

    def resume_record(self, batch_id: str) -> ResumeRecord | None:
        """What `save_resume_record` kept for the batch; None for a batch that ran before resume
        existed, or an experiment's."""
        with Session(self.engine) as session:
            row = session.get(ResumeBatchRow, batch_id)
            return None if row is None else resume_record(row)

    def interrupted_batches_to_resume(self) -> list[str]:
        """Ended batches with interrupted crews that no server has resumed on its start yet,
        oldest first (`CREWDASH_AUTO_RESUME`)."""
        with Session(self.engine) as session:
            return list(
                session.scalars(
                    select(ResumeBatchRow.batch_id)
                    .join(BatchRow, BatchRow.id == ResumeBatchRow.batch_id)
                    .where(
                        ResumeBatchRow.auto_resumed_at.is_(None),
                        BatchRow.finished_at.is_not(None),
                        select(CrewRow.run_id)
                        .where(
                            CrewRow.batch_id == BatchRow.id,
                            CrewRow.state == CrewState.INTERRUPTED.value,
                        )
                        .exists(),
                    )
                    .order_by(BatchRow.created_at)
                ).all()
            )

    def claim_auto_resume(self, batch_id: str) -> bool:
        """Mark the batch resumed on a start, once: one conditional update, so of several
        servers starting together exactly one gets True."""
        with Session(self.engine) as session, session.begin():
            won = (
                session.connection()
                .execute(
                    update(ResumeBatchRow)
                    .where(
                        ResumeBatchRow.batch_id == batch_id,
                        ResumeBatchRow.auto_resumed_at.is_(None),
                    )
                    .values(auto_resumed_at=time.time())
                )
                .rowcount
            )
        return bool(won)

    def claim_crews(self, batch_id: str, run_ids: Sequence[str]) -> None:
        """Make this server the batch's owner and its crews queued again, in one transaction; a
        batch another live server still runs (or resumed first) is refused."""
        self.beat()  # this owner's row exists before the batch points at it
        with Session(self.engine) as session, session.begin():
            batch = session.get(BatchRow, batch_id)
            if batch is None:
                raise UnknownBatchError(batch_id)
            still_open = session.scalar(
                select(func.count())
                .select_from(CrewRow)
                .where(CrewRow.batch_id == batch_id, CrewRow.state.in_(OPEN_STATES))
            )
            if still_open:
                owner = session.get(OwnerRow, batch.owner)
                where = f"host {owner.host}, pid {owner.pid}" if owner else batch.owner
                raise BatchElsewhereError(
                    f"batch {batch_id} still has crews running on a server ({where}); resume it "
                    "once they have ended"
                )
            claimed = (
                session.connection()
                .execute(
                    update(CrewRow)
                    .where(
                        CrewRow.run_id.in_(run_ids),
                        CrewRow.state == CrewState.INTERRUPTED.value,
                    )
                    .values(state=CrewState.QUEUED.value, step="resuming", error=None)
                )
                .rowcount
            )
            if claimed != len(run_ids):
                raise BatchElsewhereError(f"batch {batch_id} is being resumed by another server")
            session.execute(
                update(BatchRow)
                .where(BatchRow.id == batch_id)
                .values(owner=self.owner_id, finished_at=None)
            )


def end_batch(session: Session, batch_id: str, last_seen: float) -> int:
    """Interrupt a dead owner's unfinished crews and end the batch; returns how many crews.

    Conditional updates, so two processes sweeping at once never count a crew twice. The crews
    ran until the owner's last sign of life at most; that (or the latest crew's end) is their end.
    """
    connection = session.connection()
    latest = session.scalar(
        select(func.max(CrewRow.finished_at)).where(CrewRow.batch_id == batch_id)
    )
    stamp = max(last_seen, latest or 0.0)
    open_crews = select(CrewRow.run_id).where(
        CrewRow.batch_id == batch_id, CrewRow.state.in_(OPEN_STATES)
    )
    connection.execute(  # their open spans end with them (see batch.ended_spans)
        update(SpanRow)
        .where(SpanRow.run_id.in_(open_crews), SpanRow.finished_at.is_(None))
        .values(finished_at=stamp, error=func.coalesce(SpanRow.error, INTERRUPTED_SPAN))
    )
    ended = connection.execute(
        update(CrewRow)
        .where(CrewRow.batch_id == batch_id, CrewRow.state.in_(OPEN_STATES))
        .values(
            state=CrewState.INTERRUPTED.value,
            error=INTERRUPTED_ERROR,
            step="interrupted",
            finished_at=func.coalesce(CrewRow.finished_at, stamp),
            started_at=func.coalesce(CrewRow.started_at, CrewRow.finished_at, stamp),
        )
    ).rowcount
    connection.execute(
        update(BatchRow)
        .where(BatchRow.id == batch_id, BatchRow.finished_at.is_(None))
        .values(finished_at=stamp)
    )
    return ended
