"""Process-wide admission: crews start in submission order, each batch within its own limit.

Two plain semaphores (one per batch, one global) interleave batches: a later batch's crews,
already waiting on the global one, would overtake an earlier batch's crews still waiting on their
batch's. The queue position the page shows ("N crews ahead of yours") then would not hold. Here
a batch puts all its crews in one ordered queue at once, when it starts, and a freed slot goes
to the earliest waiting crew whose batch is under its own limit.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass(order=True)
class Ticket:
    """One crew's place in the queue."""

    order: tuple[int, int]  # (batch number, crew index): submission order
    batch_id: str = field(compare=False)
    batch_limit: int = field(compare=False)
    granted: asyncio.Future[None] = field(compare=False, repr=False)
    done: bool = field(default=False, compare=False)


class Admission:
    """Slots for running crews; use only on the runner's event loop."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._running = 0
        self._per_batch: Counter[str] = Counter()
        self._waiting: list[Ticket] = []

    def enqueue(self, order: tuple[int, int], batch_id: str, batch_limit: int) -> Ticket:
        """Take a place in the queue now; the crew waits for its slot later, in `slot`."""
        ticket = Ticket(order, batch_id, batch_limit, asyncio.get_running_loop().create_future())
        bisect.insort(self._waiting, ticket)
        self._dispatch()
        return ticket

    @asynccontextmanager
    async def slot(self, ticket: Ticket) -> AsyncIterator[None]:
        """Wait for the ticket's slot and hold it for the body; cancellable while waiting."""
        try:
            await asyncio.shield(ticket.granted)
            yield
        finally:
            self.leave(ticket)

    def leave(self, ticket: Ticket) -> None:
        """Give the place or the slot back; safe to call more than once (crews cancelled before
        their first step never enter `slot`, so the batch calls this for every crew at its end)."""
        if ticket.done:
            return
        ticket.done = True
        if not ticket.granted.done():
            self._waiting.remove(ticket)
            ticket.granted.cancel()
            return
        self._running -= 1
        self._per_batch[ticket.batch_id] -= 1
        if self._per_batch[ticket.batch_id] <= 0:
            del self._per_batch[ticket.batch_id]
        self._dispatch()

    def _dispatch(self) -> None:
        for ticket in list(self._waiting):
            if self._running >= self.limit:
                return
            if self._per_batch[ticket.batch_id] >= ticket.batch_limit:
                continue
            self._waiting.remove(ticket)
            self._running += 1
            self._per_batch[ticket.batch_id] += 1
            ticket.granted.set_result(None)
