"""Process-wide admission: crews start in submission order, each batch within its own limit.

Two plain semaphores (one per batch, one global) interleave batches: a later batch's crews,
already waiting on the global one, would overtake an earlier batch's crews still waiting on their
batch's. The queue position the page shows ("N crews ahead of yours") then would not hold. Here
one ordered queue hands out slots: the earliest waiting crew whose batch is under its limit.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass(order=True)
class _Waiter:
    order: tuple[int, int]  # (batch number, crew index): submission order
    batch_id: str = field(compare=False)
    batch_limit: int = field(compare=False)
    granted: asyncio.Future[None] = field(compare=False)


class Admission:
    """Slots for running crews; use only on the runner's event loop."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._running = 0
        self._per_batch: Counter[str] = Counter()
        self._waiting: list[_Waiter] = []

    @asynccontextmanager
    async def slot(
        self, order: tuple[int, int], batch_id: str, batch_limit: int
    ) -> AsyncIterator[None]:
        """Hold a slot for the body's duration; waiting (and leaving the queue) is cancellable."""
        waiter = _Waiter(order, batch_id, batch_limit, asyncio.get_running_loop().create_future())
        bisect.insort(self._waiting, waiter)
        self._dispatch()
        try:
            await waiter.granted
        except asyncio.CancelledError:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
            elif waiter.granted.done() and not waiter.granted.cancelled():
                self._release(batch_id)  # granted just as it was cancelled
            raise
        try:
            yield
        finally:
            self._release(batch_id)

    def _release(self, batch_id: str) -> None:
        self._running -= 1
        self._per_batch[batch_id] -= 1
        if self._per_batch[batch_id] <= 0:
            del self._per_batch[batch_id]
        self._dispatch()

    def _dispatch(self) -> None:
        for waiter in list(self._waiting):
            if self._running >= self.limit:
                return
            if self._per_batch[waiter.batch_id] >= waiter.batch_limit:
                continue
            self._waiting.remove(waiter)
            self._running += 1
            self._per_batch[waiter.batch_id] += 1
            waiter.granted.set_result(None)
