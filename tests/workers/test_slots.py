"""Calls in flight per worker process: a cap, and profile calls served before ratings."""

from __future__ import annotations

import asyncio

from lusifer.llm import ChatRequest
from workers.slots import PrioritySlots


def _request(schema_name: str) -> ChatRequest:
    return ChatRequest(model="m", messages=(("user", "hi"),), schema_name=schema_name)


def test_an_urgent_waiter_gets_the_next_slot_before_one_that_came_first() -> None:
    order: list[str] = []

    async def scenario() -> None:
        slots = PrioritySlots(1)
        await slots.acquire(urgent=False)

        async def waiter(name: str, urgent: bool) -> None:
            await slots.acquire(urgent=urgent)
            order.append(name)
            slots.release()

        rating = asyncio.create_task(waiter("rating", False))
        await asyncio.sleep(0.01)  # the rating waits first
        profile = asyncio.create_task(waiter("profile", True))
        await asyncio.sleep(0.01)
        slots.release()
        await asyncio.wait_for(asyncio.gather(rating, profile), 5)

    asyncio.run(scenario())
    assert order == ["profile", "rating"]


def test_a_process_never_has_more_calls_in_flight_than_its_slots() -> None:
    in_flight = [0, 0]  # now, most

    async def scenario() -> None:
        slots = PrioritySlots(3)

        async def call(kind: str) -> None:
            async with slots.hold(_request(kind)):
                in_flight[0] += 1
                in_flight[1] = max(in_flight[1], in_flight[0])
                await asyncio.sleep(0.02)
                in_flight[0] -= 1

        await asyncio.gather(*(call(kind) for kind in ["profile", "ratings"] * 6))

    asyncio.run(scenario())
    assert in_flight == [0, 3]


def test_a_waiter_cancelled_while_it_waits_leaves_no_slot_behind() -> None:
    async def scenario() -> int:
        slots = PrioritySlots(1)
        await slots.acquire(urgent=True)
        waiting = asyncio.create_task(slots.acquire(urgent=False))
        await asyncio.sleep(0.01)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        slots.release()
        # The slot is free again: two acquisitions in a row, the second must wait.
        await asyncio.wait_for(slots.acquire(urgent=False), 1)
        second = asyncio.create_task(slots.acquire(urgent=False))
        await asyncio.sleep(0.01)
        blocked = not second.done()
        second.cancel()
        await asyncio.gather(second, return_exceptions=True)
        return int(blocked)

    assert asyncio.run(scenario()) == 1
