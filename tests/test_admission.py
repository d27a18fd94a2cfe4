"""The ordered admission queue, on a plain event loop."""

from __future__ import annotations

import asyncio

from crewdash.engine.admission import Admission, Ticket


async def _start_order(admission: Admission, plan: list[tuple[str, int, int]]) -> list[str]:
    """Queue every crew of `plan` (name, batch number, batch limit) first, as batches do, then
    run each for one tick; return the order in which they got a slot."""
    started: list[str] = []
    index: dict[int, int] = {}
    tickets = []
    for name, number, limit in plan:
        index[number] = index.get(number, -1) + 1
        tickets.append((name, admission.enqueue((number, index[number]), f"b{number}", limit)))

    async def crew(name: str, ticket: Ticket) -> None:
        async with admission.slot(ticket):
            started.append(name)
            await asyncio.sleep(0.01)

    await asyncio.gather(*(crew(name, ticket) for name, ticket in tickets))
    return started


def test_earlier_batches_go_first() -> None:
    plan = [("a1", 0, 9), ("a2", 0, 9), ("a3", 0, 9), ("b1", 1, 9), ("b2", 1, 9)]
    assert asyncio.run(_start_order(Admission(2), plan)) == ["a1", "a2", "a3", "b1", "b2"]


def test_the_queue_keeps_submission_order_whatever_the_arrival_order() -> None:
    plan = [("b1", 1, 9), ("c1", 2, 9), ("a1", 0, 9), ("b2", 1, 9), ("a2", 0, 9)]
    assert asyncio.run(_start_order(Admission(1), plan)) == ["b1", "a1", "a2", "b2", "c1"]


def test_a_batch_at_its_own_limit_is_passed_by_later_ones() -> None:
    plan = [("a1", 0, 1), ("a2", 0, 1), ("b1", 1, 9), ("b2", 1, 9)]
    order = asyncio.run(_start_order(Admission(3), plan))
    assert order.index("b1") < order.index("a2") and order.index("b2") < order.index("a2")


def test_leaving_frees_the_place_or_the_slot_once() -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        admission = Admission(1)
        first = admission.enqueue((0, 0), "a", 9)
        second = admission.enqueue((0, 1), "a", 9)
        third = admission.enqueue((0, 2), "a", 9)
        granted_first = first.granted.done()
        admission.leave(second)  # cancelled while waiting: its place goes
        admission.leave(first)  # the slot goes to the next in line, third
        admission.leave(first)  # twice is harmless: no slot is freed twice
        fourth = admission.enqueue((0, 3), "a", 9)
        return (
            granted_first,
            second.granted.cancelled(),
            third.granted.done(),
            fourth.granted.done(),
        )

    # the fourth waits: third holds the only slot, which a double leave would have freed twice
    assert asyncio.run(scenario()) == (True, True, True, False)


def test_a_crew_cancelled_while_waiting_gives_its_place_back() -> None:
    async def scenario() -> list[str]:
        admission = Admission(1)
        holder = admission.enqueue((0, 0), "a", 9)
        waiting = admission.enqueue((0, 1), "a", 9)
        later = admission.enqueue((1, 0), "b", 9)

        async def wait_in(ticket: Ticket) -> None:
            async with admission.slot(ticket):
                await asyncio.sleep(1)

        task = asyncio.create_task(wait_in(waiting))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        admission.leave(holder)
        return ["later" if later.granted.done() else "nobody"]

    assert asyncio.run(scenario()) == ["later"]
